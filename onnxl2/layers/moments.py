"""A layer's input moments, the type every lossy stage reads (gathered by ``hessian.py``).

Kept apart from the code that runs ONNX Runtime to gather them, so that rounding, low rank and
the candidates depend on the type alone.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from ..fileio import write_files_atomically
from ..model import Weight


@dataclass
class LayerHessian:
    """``X^T X`` of the inputs one weight multiplies, per group, and how the weight maps onto it.

    ``layout`` says how the weight becomes rows (output channels) by columns (inputs):
    "kn" for a [K, N] right operand (MatMul, Gemm), "nk" for Gemm with transB, "conv" for a
    [O, C/g, *kernel] kernel, "rnn" for a recurrent weight [directions, gates * hidden, K] (a
    group per direction); ``layers.layouts`` holds each.
    """

    key: str
    layout: str
    groups: int
    matrix: np.ndarray  # [groups, K, K], float64
    rows: int
    mean: np.ndarray | None = None  # [groups, K]: mean input row
    bias: str | None = None  # key of the 1-D constant added to this layer's output, if any
    #: output positions per calibration sample (input rows before sampling: tokens, pixels),
    #: which with the output channels give the layer's multiply-adds per sample
    positions: float | None = None
    _derived: dict = field(default_factory=dict, repr=False, compare=False)
    _open: int = field(default=0, repr=False, compare=False)  # reusing() blocks open

    def centred(self) -> "LayerHessian":
        """``X^T X - n mu mu^T``: the output error that remains once a bias has absorbed the
        mean output shift (bias correction)."""
        outer = np.einsum("gk,gl->gkl", self.mean, self.mean) * self.rows
        return LayerHessian(self.key, self.layout, self.groups, self.matrix - outer, self.rows, self.mean, self.bias,
                            self.positions)

    def derived(self, name: str, make: Callable[[], object]) -> object:
        """A factor derived from ``matrix`` (shrunk form, inverse Cholesky factor, whitened SVD),
        made once and reused while :meth:`reusing` is open: each bit-width, rate and rank of one
        weight's candidates needs the same ones, and they are K x K, too large to keep past it.
        Outside such a block nothing is kept (a factor keyed by an object's id could otherwise
        outlive the object)."""
        if not self._open:
            return make()
        if name not in self._derived:
            self._derived[name] = make()
        return self._derived[name]

    @contextmanager
    def reusing(self) -> Iterator["LayerHessian"]:
        """Derived factors live until this block ends."""
        self._open += 1
        try:
            yield self
        finally:
            self._open -= 1
            if not self._open:
                self._derived.clear()


def save_hessians(path: Path, hessians: Mapping[str, LayerHessian]) -> None:
    """Keep Hessians beside a sweep cache (one .npz, written atomically)."""
    arrays = {}
    for i, h in enumerate(hessians.values()):
        arrays[f"{i}_matrix"] = h.matrix
        arrays[f"{i}_mean"] = h.mean if h.mean is not None else np.zeros(0)
        arrays[f"{i}_meta"] = np.array([h.key, h.layout, str(h.groups), str(h.rows), h.bias or "",
                                        repr(h.positions)])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_files_atomically({Path(path): buffer.getvalue()})


def load_hessians(path: Path) -> dict[str, LayerHessian] | None:
    """Hessians kept by :func:`save_hessians`, or None (absent, or of an older kind)."""
    if not Path(path).is_file():
        return None
    out = {}
    with np.load(path) as z:
        metas = [z[f] for f in z.files if f.endswith("_meta")]
        if any(f.endswith("_meta") and f"{f[:-5]}_mean" not in z.files for f in z.files) or \
                any(len(m) < 6 for m in metas):
            return None  # without input means or output positions: gather again
        for i in range(len(z.files) // 3):
            key, layout, groups, rows, bias, positions = (str(v) for v in z[f"{i}_meta"])
            mean = z[f"{i}_mean"]
            out[key] = LayerHessian(key, layout, int(groups), z[f"{i}_matrix"], int(rows),
                                    mean if mean.size else None, bias or None,
                                    None if positions == "None" else float(positions))
    return out


def output_positions(hessians: Mapping[str, LayerHessian]) -> dict[str, float]:
    """Output positions per sample of every layer whose inputs were gathered."""
    return {k: h.positions for k, h in hessians.items() if h.positions}


def bias_weights(every: list[Weight], hessians: Mapping[str, LayerHessian]) -> dict[str, Weight]:
    """Layer key -> the bias its Hessian names: what bias correction moves with the weight."""
    by_key = {w.key: w for w in every}
    return {key: by_key[h.bias] for key, h in hessians.items() if h.bias is not None}
