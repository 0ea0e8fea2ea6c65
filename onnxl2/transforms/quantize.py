"""Uniform symmetric quantization per output channel.

Each channel gets its own step. The clipping range is searched per channel (a grid of fractions
of the channel's largest magnitude) to minimise the squared weight error: for 2..4 bits clipping
a few outliers lowers the error of everything else far more than it costs them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codec.loggrid import nearest_on_grid

#: Bit-widths of integer symbols: 2..8 in int4/int8 containers, 9..12 in int16 ones. Above 8
#: bits a weight is finer than int8 and, entropy-coded, 2-5 bits cheaper than float16 at an
#: error float16 itself does not undercut by much (recogniser: 10.5 bits a weight at 12 bits
#: against 13.5 for float16); that is the regime of plans that may not lose any accuracy.
INTEGER_BITS = tuple(range(2, 13))
#: Fractions of max|w| tried as the clipping bound; more and lower ones for fewer bits. Above 8
#: bits clipping gains almost nothing, while a step put on the grid (``round_scale``) can land
#: 1.1% short of max|w| / qmax and clip the largest weight by that, many steps at 12 bits: a few
#: fractions around 1, some above, so that the step just past the largest weight is tried.
_CLIP_GRID = {b: np.linspace(0.35 if b <= 3 else 0.5 if b <= 5 else 0.75, 1.0, 24) if b <= 8
              else np.linspace(0.96, 1.03, 8) for b in INTEGER_BITS}


@dataclass
class QuantizedWeight:
    """Integer symbols and per-channel steps; ``symbols * scale`` rebuilds the weight."""

    key: str
    bits: int
    axis: int
    symbols: np.ndarray  # symbol_dtype(bits), same shape as the weight
    scales: np.ndarray  # 1-D, one step per channel along ``axis``, in the weight's float dtype
    #: channels run over every axis up to ``axis`` (a recurrent layer's direction and gate row:
    #: ``[directions, gates * hidden, inputs]`` gets a step per row of each direction)
    merged: bool = False
    #: symbols run to the container's range (``container_qmax``) rather than the width's: the
    #: width chose the step, and a weight past its clipping bound takes a level of its own
    wide: bool = False

    @property
    def qmax(self) -> int:
        return container_qmax(self.bits) if self.wide else qmax_for(self.bits)

    def reconstruct(self) -> np.ndarray:
        """The weight as the compressed model computes it (in the scale's dtype)."""
        return self.symbols.astype(self.scales.dtype) * self.scales.reshape(self.channel_shape())

    def channel_shape(self) -> list[int]:
        """The shape that broadcasts one step per channel along ``axis`` over the symbols."""
        return channel_shape(self.symbols.shape, self.axis, self.merged)


def channel_shape(shape: tuple[int, ...], axis: int, merged: bool = False) -> list[int]:
    """The shape of one step per channel, broadcast over a weight of ``shape``."""
    out = [1] * len(shape)
    if merged:
        out[:axis + 1] = shape[:axis + 1]
    else:
        out[axis] = shape[axis]
    return out


def round_scale(scale: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Scales on a coarse grid: float32 steps on the logarithmic grid ``2^(k/32)`` (at most
    1.1% away), float16 steps as float16 rounds them.

    A step needs no more precision than that (the clip search moves it by 1-3% between its own
    fractions, and picks among steps already on the grid), and the lossless coder stores a
    float32 array on that grid as small integers (``codec.loggrid``), 5-7 bits a step instead
    of 10-13 as floats.
    """
    if np.dtype(dtype) == np.float16:
        return scale.astype(np.float16).astype(np.float32)
    return nearest_on_grid(np.maximum(np.asarray(scale, dtype=np.float64), 2.0 ** -126))


def qmax_for(bits: int) -> int:
    """Largest symbol magnitude: symmetric levels -qmax..qmax (ternary at 2 bits)."""
    if bits not in INTEGER_BITS:
        raise ValueError(f"bits must be in {INTEGER_BITS[0]}..{INTEGER_BITS[-1]}, got {bits}")
    return (1 << (bits - 1)) - 1


def container_qmax(bits: int) -> int:
    """Largest symbol magnitude the container of ``bits``-bit symbols holds symmetrically."""
    return {"int4": 7, "int8": 127, "int16": 32767}[container_type(bits)]


def has_wide_form(bits: int) -> bool:
    """Whether ``bits``-bit symbols sit in a container with room for more levels (2, 3 in int4;
    5..7 in int8; 9..12 in int16), so that a wide form differs from the clipped one."""
    return container_qmax(bits) > qmax_for(bits)


def container_type(bits: int) -> str:
    """The ONNX integer type that stores ``bits``-bit symbols in the compressed model: int4 (two
    to a byte) up to 4 bits, int8 up to 8, int16 above. Every rule that depends on it (the
    symbols' numpy type, the raw bytes, the emitted nodes, the opset) asks this function."""
    return "int4" if bits <= 4 else "int8" if bits <= 8 else "int16"


def symbol_dtype(bits: int) -> np.dtype:
    """The numpy type that holds ``bits``-bit symbols (int4 ones in int8 until they are packed)."""
    return np.dtype(np.int16) if container_type(bits) == "int16" else np.dtype(np.int8)


#: Elements of the rows one pass of the clip search holds at a time: its intermediates stay in
#: cache instead of streaming the whole weight through memory four times per trial step.
_ERROR_BLOCK = 1 << 18


def _rounding_error(rows: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """Per row, the squared error of nearest rounding (clipped) at these steps:
    ``s^2 * sum (clip(rint(x / s)) - x / s)^2``, a block of rows at a time."""
    inverse = np.float32(1.0) / scale
    n_rows, n_cols = rows.shape
    # never a block of one row out of several: einsum sums a lone long row in another order
    per = max(2, _ERROR_BLOCK // max(n_cols, 1))
    starts = list(range(0, n_rows, per))
    if len(starts) > 1 and n_rows - starts[-1] == 1:
        starts.pop()
    ends = starts[1:] + [n_rows]
    sums = np.empty(n_rows, dtype=np.float64)
    u_block = np.empty((min(per + 1, n_rows), n_cols), dtype=np.float32)
    q_block = np.empty_like(u_block)
    for start, end in zip(starts, ends):
        u, q = u_block[:end - start], q_block[:end - start]
        np.multiply(rows[start:end], inverse[start:end, None], out=u)
        np.rint(u, out=q)
        np.clip(q, -qmax, qmax, out=q)
        q -= u
        sums[start:end] = np.einsum("ij,ij->i", q, q)
    return sums * np.square(scale.astype(np.float64))


def quantize_per_channel(weight: np.ndarray, bits: int, axis: int, key: str = "",
                         search_clip: bool = True, merged: bool = False, one_step: bool = False) -> QuantizedWeight:
    """Quantize ``weight`` with one step per slice along ``axis`` (with ``merged``, per slice
    along every axis up to ``axis``); with ``one_step``, the same step for every slice, its clip
    searched on the whole tensor.

    One step spends the same error on every weight, which is what entropy-coded rounding wants
    for a plain squared error (channels of small range then take few levels and code short);
    a step per channel spends the same number of levels on each, which suits channels whose
    outputs matter in proportion to their scale. Which one a layer takes is the knapsack's."""
    qmax = qmax_for(bits)
    store_dtype = weight.dtype if weight.dtype == np.float16 else np.dtype(np.float32)
    rows = np.asarray(weight, dtype=np.float32) if merged else np.moveaxis(np.asarray(weight, dtype=np.float32), axis, 0)
    moved_shape = rows.shape
    rows = rows.reshape(int(np.prod(moved_shape[:axis + 1])) if merged else moved_shape[0], -1)
    amax = np.abs(rows).max(axis=1)
    if one_step:
        amax = np.full_like(amax, amax.max(initial=0.0))
    amax = np.where(amax > 0, amax, 1.0).astype(np.float32)
    fractions = _CLIP_GRID[bits] if search_clip else np.ones(1)
    best_err = np.full(rows.shape[0], np.inf, dtype=np.float64)
    best_scale = amax / qmax
    previous = None
    for fraction in fractions:
        scale = round_scale(amax * np.float32(fraction) / qmax, store_dtype)
        scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        if previous is not None and np.array_equal(scale, previous):
            continue  # the grid took this fraction to the steps already tried
        previous = scale
        err = _rounding_error(rows, scale, qmax)
        if one_step:  # one clip for the tensor: its total error decides
            err = np.full_like(err, err.sum())
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
    q = np.clip(np.rint(rows / best_scale[:, None]), -qmax, qmax).astype(symbol_dtype(bits))
    symbols = q.reshape(moved_shape) if merged else np.moveaxis(q.reshape(moved_shape), 0, axis)
    return QuantizedWeight(key, bits, axis, np.ascontiguousarray(symbols),
                           best_scale.astype(store_dtype), merged)


def widened(q: QuantizedWeight, weight: np.ndarray) -> QuantizedWeight:
    """``q``'s wide form: the same steps (those the clip search picked for its width), the
    weight rounded with symbols up to the container's range instead of clipped at the width's
    (``q`` itself where the width fills its container).

    Why: clipping minimises the error of a fixed number of levels, which is what a fixed-rate
    code wants; an entropy code pays for a level by how often it is used, so a rare weight past
    the bound costs a few bits once instead of a large error. At the same layer-output error
    the wide form codes 6-8% smaller at 2-3 bits and about 1% at 5 bits (compensated rounding,
    the largest layers of the detector and the recogniser; the design notes)."""
    if q.wide or not has_wide_form(q.bits):
        return q
    limit = container_qmax(q.bits)
    steps = q.scales.astype(np.float32).reshape(q.channel_shape())
    symbols = np.clip(np.rint(np.asarray(weight, dtype=np.float32) / steps), -limit, limit)
    return QuantizedWeight(q.key, q.bits, q.axis, symbols.astype(symbol_dtype(q.bits)), q.scales, q.merged, True)
