"""How a weight maps onto rows (output channels) by columns (the inputs it multiplies, in the
Hessian's order), per layout; the name of a layout is what ``LayerHessian.layout`` and the
caches store."""
from __future__ import annotations

import numpy as np


class Layout:
    """One layout: rows of a weight, its output channels, and its factors' shapes."""

    name = ""
    factorisable = False  # can the layer be replaced by two (low rank)
    factor_axis = 0  # output-channel axis of both factors (the same as the weight's)

    def to_rows(self, w: np.ndarray, groups: int) -> np.ndarray:
        """[groups, output channels per group, K] (a copy, float64 in, as given)."""
        return w.reshape(groups, w.shape[0] // groups, -1).copy()

    def from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return rows.reshape(shape)

    def outputs(self, shape: tuple[int, ...]) -> int:
        """Output channels of a weight of ``shape``."""
        return shape[0]

    def inputs(self, shape: tuple[int, ...]) -> int:
        """Inputs each output channel multiplies (K), ungrouped."""
        return int(np.prod(shape)) // self.outputs(shape)

    def factor_shapes(self, shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise ValueError(f"a {self.name} weight cannot be factorised")


class InputsByOutputs(Layout):
    """[K, N]: the right operand of a MatMul, or of a Gemm without transB."""

    name, factorisable, factor_axis = "kn", True, 1

    def to_rows(self, w: np.ndarray, groups: int) -> np.ndarray:
        return w.T[None].copy()

    def from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return rows[0].T.reshape(shape)

    def outputs(self, shape: tuple[int, ...]) -> int:
        return shape[1]

    def factor_shapes(self, shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (shape[0], rank), (rank, shape[1])


class OutputsByInputs(Layout):
    """[N, K]: a Gemm's right operand with transB."""

    name, factorisable = "nk", True

    def to_rows(self, w: np.ndarray, groups: int) -> np.ndarray:
        return w[None].copy()

    def from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return rows[0].reshape(shape)

    def factor_shapes(self, shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (rank, shape[1]), (shape[0], rank)


class Kernel(Layout):
    """[O, C/g, *kernel]: a Conv kernel, a group of output channels per group."""

    name, factorisable = "conv", True

    def factor_shapes(self, shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A Conv with ``rank`` outputs and the original window, then a 1x1 Conv."""
        return (rank,) + tuple(shape[1:]), (shape[0], rank) + (1,) * (len(shape) - 2)


class RecurrentGates(Layout):
    """[directions, gates * hidden, K]: an LSTM/GRU/RNN ``W`` or ``R``, a group per direction."""

    name = "rnn"

    def to_rows(self, w: np.ndarray, groups: int) -> np.ndarray:
        return w.reshape(groups, -1, w.shape[-1]).copy()

    def outputs(self, shape: tuple[int, ...]) -> int:
        return shape[0] * shape[1]


LAYOUTS = {layout.name: layout for layout in (InputsByOutputs(), OutputsByInputs(), Kernel(), RecurrentGates())}


def layout(name: str) -> Layout:
    """The layout called ``name``."""
    return LAYOUTS[name]


def to_rows(weight: np.ndarray, name: str, groups: int) -> np.ndarray:
    """The weight as [groups, output channels per group, K] (K in the Hessian's order), float64."""
    return LAYOUTS[name].to_rows(np.asarray(weight, dtype=np.float64), groups)


def from_rows(rows: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    return LAYOUTS[name].from_rows(rows, shape)
