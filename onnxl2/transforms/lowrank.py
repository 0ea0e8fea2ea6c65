"""Low-rank factorisation of a layer, fitted to what its outputs need, then quantized.

A layer's weight, as rows (output channels) by columns (inputs, in the Hessian's order), is
replaced by two layers ``W ~ P Q``: ``Q`` (rank x inputs) runs first, ``P`` (outputs x rank)
second. The SVD is taken of ``W L`` where ``L L^T`` is the (shrunk) input Hessian ``X^T X``,
not of ``W`` alone: truncating it drops the directions the calibration inputs excite least, and
the squared singular values dropped are exactly the layer-output error the truncation adds.

Both factors are integers per output channel. ``Q`` is rounded first (error-compensated through
``X^T X`` when asked); ``P`` is then refitted by least squares to the rounded ``Q``, so that
``X Q^T P^T`` stays close to ``X W^T``, and rounded through the second layer's own input moments
``Q X^T X Q^T``. A factor keeps the original weight's layout: MatMul/Gemm ``[K, N]`` gives
``[K, r]`` then ``[r, N]``, Gemm with transB ``[N, K]`` gives ``[r, K]`` then ``[N, r]``, and a
Conv kernel ``[O, C, *k]`` gives a Conv with ``r`` output channels and the original window,
then a 1x1 Conv to ``O`` channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers.layouts import LAYOUTS, from_rows, layout as layout_named, to_rows
from ..layers.moments import LayerHessian
from .compensate import compensated_round, shrunk_hessian
from .quantize import QuantizedWeight, quantize_per_channel

#: Layouts that can be factorised (grouped and depthwise convolutions are left alone).
FACTORISABLE = tuple(name for name, kind in LAYOUTS.items() if kind.factorisable)
#: Factorised sizes tried, as fractions of the weight's own number of parameters (at three quarters
#: a pair was never chosen on the zoo models: one bit less at full rank costs as much).
RANK_FRACTIONS = (0.25, 0.5)
#: Bit-widths a factor pair is offered at (those the user allows): a truncation's error is
#: only worth its saving where the rounding error is small.
FACTOR_BITS = (4, 5, 6, 8)
#: Layers with fewer inputs or outputs than this keep their full rank.
MIN_SIDE = 16


@dataclass
class FactorPair:
    """Two integer factors whose product is the layer's weight, in the weight's layout."""

    rank: int
    layout: str
    shape: tuple[int, ...]  # the original weight's shape
    first: QuantizedWeight  # runs on the layer's input: [K, r], [r, K] or [r, C, *k]
    second: QuantizedWeight  # makes the outputs: [r, N], [N, r] or [O, r, 1, ...]

    @property
    def bits(self) -> int:
        return self.first.bits

    def reconstruct(self) -> np.ndarray:
        """The factors' product in the weight's layout: what the sensitivity probe feeds in place
        of the weight (the two emitted layers compute the same function up to float rounding)."""
        q = to_rows(self.first.reconstruct(), self.layout, 1)[0]  # [r, K]
        p = to_rows(self.second.reconstruct(), self.layout, 1)[0]  # [R, r]
        return from_rows((p @ q)[None], self.shape, self.layout)


def _to_layout(rows: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    return from_rows(rows[None], shape, layout)


def candidate_ranks(shape: tuple[int, ...], layout: str, groups: int,
                    fractions: tuple[float, ...] = RANK_FRACTIONS) -> list[int]:
    """Ranks whose factor pair holds about ``fractions`` of the weight's parameters."""
    if layout not in FACTORISABLE or groups != 1 or len(shape) < 2:
        return []
    outputs, inputs = layout_named(layout).outputs(shape), layout_named(layout).inputs(shape)
    if min(outputs, inputs) < MIN_SIDE:
        return []
    ranks = []
    for fraction in fractions:
        rank = int(fraction * outputs * inputs / (outputs + inputs))
        rank = rank - rank % 8 if rank >= 16 else rank  # multiples of 8 run better
        if 1 <= rank < min(outputs, inputs) and rank not in ranks:
            ranks.append(rank)
    return ranks


def _whitened_svd(weight: np.ndarray, hessian: LayerHessian) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(U, s, V^T, L) with ``W L = U diag(s) V^T`` and ``L L^T`` the shrunk input Hessian."""
    def make() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lower = np.linalg.cholesky(shrunk_hessian(hessian)[0])
        u, s, vt = np.linalg.svd(to_rows(weight, hessian.layout, 1)[0] @ lower, full_matrices=False)
        return u, s, vt, lower
    return hessian.derived(("svd", id(weight)), make)  # the spectrum, then the factors, of one weight


def _truncate(svd, rank: int) -> tuple[np.ndarray, np.ndarray]:
    u, s, vt, lower = svd
    root = np.sqrt(s[:rank])
    p = u[:, :rank] * root
    # Q = sqrt(S) V^T L^-1: solve L^T Q^T = V sqrt(S)
    q = np.linalg.solve(lower.T, vt[:rank].T * root).T
    return p, q


def whitened_factors(weight: np.ndarray, hessian: LayerHessian, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(P [R, r], Q [r, K]) minimising the layer-output error ``||X (W - P Q)^T||`` (float64)."""
    return _truncate(_whitened_svd(weight, hessian), rank)


def truncated(weight: np.ndarray, hessian: LayerHessian, rank: int) -> np.ndarray:
    """``P Q`` before rounding, in the weight's layout: what the cut alone leaves of the layer."""
    p, q = whitened_factors(weight, hessian, rank)
    return from_rows((p @ q)[None], tuple(weight.shape), hessian.layout)


def _factor_hessian(hessian: LayerHessian, layout: str, q_rows: np.ndarray) -> LayerHessian:
    """Input moments of the second factor: those of ``Q x`` for the layer's inputs ``x``."""
    matrix = q_rows @ hessian.matrix[0] @ q_rows.T
    mean = hessian.mean[0] @ q_rows.T if hessian.mean is not None else None
    return LayerHessian(hessian.key, layout, 1, matrix[None], hessian.rows,
                        None if mean is None else mean[None], hessian.bias)


def _refit_second(weight_rows: np.ndarray, hessian: LayerHessian, q_rows: np.ndarray) -> np.ndarray:
    """P minimising ``||X W^T - X Q^T P^T||`` for the rounded Q (least squares, ridged)."""
    h = shrunk_hessian(hessian)[0]
    hq = q_rows @ h
    gram = hq @ q_rows.T
    gram[np.diag_indices_from(gram)] += 1e-9 * max(float(np.trace(gram)) / len(gram), 1e-30)
    return np.linalg.solve(gram, hq @ weight_rows.T).T


def factorise(weight: np.ndarray, hessian: LayerHessian, rank: int, bits_choices: tuple[int, ...],
              compensate: bool = True) -> list[FactorPair]:
    """The weight at ``rank``, one integer factor pair per bit-width (both factors alike). The
    SVD is kept on ``hessian`` for the weight's other ranks (and its spectrum)."""
    layout = hessian.layout
    if layout not in FACTORISABLE or hessian.groups != 1:
        raise ValueError(f"cannot factorise a {layout} weight with {hessian.groups} groups")
    shape = tuple(weight.shape)
    axis = layout_named(layout).factor_axis
    first_shape, second_shape = layout_named(layout).factor_shapes(shape, rank)
    w_rows = to_rows(weight, layout, 1)[0]
    _, q = _truncate(_whitened_svd(weight, hessian), rank)
    first_float = _to_layout(q, first_shape, layout).astype(weight.dtype)
    bases = [quantize_per_channel(first_float, b, axis) for b in bits_choices]
    firsts = compensated_round(first_float, axis, bases, hessian) if compensate else bases
    pairs = []
    for first in firsts:
        q_hat = to_rows(first.reconstruct(), layout, 1)[0]
        second_float = _to_layout(_refit_second(w_rows, hessian, q_hat), second_shape, layout).astype(weight.dtype)
        base = quantize_per_channel(second_float, first.bits, axis)
        if compensate:
            (second,) = compensated_round(second_float, axis, [base], _factor_hessian(hessian, layout, q_hat))
        else:
            second = base
        pairs.append(FactorPair(rank, layout, shape, first, second))
    return pairs
