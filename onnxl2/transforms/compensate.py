"""Rate-aware rounding with error compensation: one transform, its knobs per weight.

Knobs: the step per output channel (from the clip search of ``quantize``), the bit-width, and
``rate``, the price of a bit in units of the rounding noise. Every element's integer is chosen
to minimise ``(w / step - q)^2 + rate * bits(q)``, where ``bits(q)`` is the code length of ``q``
under the coder's own order-0 model of this weight's symbols (the histogram, refined by
re-running with the histogram of the previous result). ``rate = 0`` is nearest rounding;
larger rates round towards frequent symbols, zero above all, which is pruning by the same rule.

The error of each rounded column is then spread onto the columns not yet rounded with the
inverse of the layer Hessian ``X^T X`` (the GPTQ / OBQ scheme), so that the layer's *output*
on calibration inputs stays close even where single weights move. Columns go in order of
decreasing input energy (the Hessian's diagonal; GPTQ's "act-order"): the columns that matter
most are rounded while many others remain to absorb their error, and the last, least
important ones carry what is left. Conv kernels are handled as im2col rows with one Hessian
per group; embeddings and weights without a Hessian are rounded without compensation (their
"Hessian" is diagonal: nothing to spread onto).

Column loops are over one column of all rows and all groups at a time, in blocks whose
cross-block update is one matrix product, so a layer costs K small vector steps plus one
matrix product per ``BLOCK`` columns.
"""
from __future__ import annotations

import numpy as np

from ..layers.layouts import from_rows, to_rows
from ..layers.moments import LayerHessian
from .quantize import QuantizedWeight, symbol_dtype

#: Least shrinkage towards the diagonal, and the ridge added to it as a fraction of its mean:
#: keeps the inverse well posed for inputs nearly collinear or never active on calibration data.
DAMPING = 0.01
#: Columns a sweep rounds before it updates the rest with one matrix product (measured: 64
#: is about twice as fast as 128 on 384..2304 columns, the results equal).
BLOCK = 64
#: Triangular factors up to this size are inverted in one batched call (depthwise kernels give
#: thousands of tiny ones); larger ones by LAPACK's triangular inverse, one group at a time.
BATCHED_INVERSE_MAX = 64
#: Passes of (rounding, re-estimated symbol model) when rate > 0; the first model is the
#: histogram of plain rounding.
MODEL_PASSES = 2


def code_lengths(symbols: np.ndarray, qmax: int) -> np.ndarray:
    """Bits of each level -qmax..qmax under the symbols' order-0 histogram (unseen: one count)."""
    counts = np.bincount((symbols.ravel().astype(np.int64) + qmax), minlength=2 * qmax + 1).astype(np.float64)
    counts = np.maximum(counts, 0.5)
    return -np.log2(counts / counts.sum())


def rate_aware_round(t: np.ndarray, qmax: int, rate: float | np.ndarray,
                     lengths: np.ndarray | None) -> np.ndarray:
    """argmin over q in {floor t, ceil t, 0} of (t - q)^2 + rate * lengths[q] (clipped to +-qmax)."""
    nearest = np.clip(np.rint(t), -qmax, qmax)
    if lengths is None or np.all(np.asarray(rate) <= 0):
        return nearest
    low = np.clip(np.floor(t), -qmax, qmax)
    options = np.stack([low, np.clip(low + 1, -qmax, qmax), np.zeros_like(t)])
    cost = (t[None] - options) ** 2 + rate * lengths[(options + qmax).astype(np.int64)]
    return np.take_along_axis(options, cost.argmin(axis=0)[None], axis=0)[0]


def _shrinkage(hessian: LayerHessian) -> tuple[float, np.ndarray]:
    """(a, d): the shrunk Hessian is ``(1 - a) H + diag(d)``, a = max(DAMPING, K / rows)."""
    h = hessian.matrix
    k = h.shape[-1]
    diag = np.einsum("gkk->gk", h)
    shrink = min(1.0, max(DAMPING, k / max(hessian.rows, 1)))
    ridge = DAMPING * np.maximum(diag.mean(axis=1, keepdims=True), 1e-12)
    return shrink, shrink * diag + np.where(diag <= 0, 1.0, 0.0) + ridge


def shrunk_hessian(hessian: LayerHessian) -> np.ndarray:
    """``(1 - a) H + a diag(H)`` plus a small ridge, a = max(DAMPING, K / rows).

    With few calibration rows per input (a pooled squeeze-excite input, a classifier head: one
    row per sample) ``X^T X`` is nearly singular, and compensation would hide every error in its
    null space: a perfect fit on the calibration data that breaks on any other input, including
    the calibration data once earlier layers are quantized. Shrinking towards the diagonal
    fades compensation out where the data cannot support it (a = 1 is plain rounding).
    """
    def make() -> np.ndarray:
        shrink, added = _shrinkage(hessian)
        h = hessian.matrix * (1.0 - shrink)
        idx = np.arange(h.shape[-1])
        h[:, idx, idx] += added
        h.flags.writeable = False  # shared by every candidate of the weight
        return h
    return hessian.derived("shrunk", make)


def column_order(hessian: LayerHessian, by_energy: bool = True) -> np.ndarray:
    """[G, K]: each group's columns by decreasing diagonal of the shrunk Hessian (stable), or as
    stored (``by_energy=False``, for comparison)."""
    def make() -> np.ndarray:
        diag = np.einsum("gkk->gk", shrunk_hessian(hessian))
        return (np.argsort(-diag, axis=1, kind="stable") if by_energy
                else np.broadcast_to(np.arange(diag.shape[1]), diag.shape).copy())
    return hessian.derived(("order", by_energy), make)


def _upper_inverse_factor(hessian: LayerHessian, by_energy: bool = True) -> np.ndarray:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), per group, H shrunk and its rows and
    columns in :func:`column_order` (computed once per Hessian object).

    With J the reversal of rows and columns, ``J H J = L L^T`` gives ``H^-1 = U^T U`` for the
    upper triangular ``U = J L^-1 J``: one Cholesky factor and one triangular inverse, the
    least cubic work that gives the factor."""
    def make() -> np.ndarray:
        order = column_order(hessian, by_energy)
        groups = np.arange(order.shape[0])[:, None, None]
        h = shrunk_hessian(hessian)[groups, order[:, :, None], order[:, None, :]]
        lower = np.linalg.cholesky(np.ascontiguousarray(h[:, ::-1, ::-1]))
        return np.ascontiguousarray(_lower_inverse(lower)[:, ::-1, ::-1])
    return hessian.derived(("upper", by_energy), make)


def _lower_inverse(lower: np.ndarray) -> np.ndarray:
    """The inverse of each lower triangular [K, K] matrix of a [G, K, K] stack (LAPACK's
    triangular inverse for large K; small ones, as depthwise kernels give, in one batched call)."""
    if lower.shape[-1] <= BATCHED_INVERSE_MAX:
        return np.tril(np.linalg.inv(lower))
    from scipy.linalg.lapack import dtrtri
    out = np.empty_like(lower)
    for g, block in enumerate(lower):
        inverse, info = dtrtri(block, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"triangular factor is singular (dtrtri info {info})")
        out[g] = inverse
    return out


def _compensated_pass(rows: np.ndarray, steps: np.ndarray, upper: np.ndarray, qmax: int | np.ndarray,
                      rate: float, lengths: np.ndarray | None) -> np.ndarray:
    """One GPTQ sweep over the columns of B variants at once (bit-widths of one weight).

    rows [B, G, R, K] and upper [G, K, K] (shared) with columns in the sweep's order, steps
    [B, G, R], qmax an int or [B, 1, 1]. The sweep holds the columns first ([K, B, G, R]), so
    that the column it rounds and the block it updates are contiguous: the per-column work is
    what a Python loop can afford only when it touches memory in order.
    """
    w = np.ascontiguousarray(np.moveaxis(rows, -1, 0))  # [K, B, G, R]
    q = np.empty_like(w)
    k = w.shape[0]
    diag = np.einsum("gkk->gk", upper)  # [G, K]
    # a column's rounding error reaches the output with weight 1 / U_ii^2: the price of a bit
    # is set against that, so that rounding away costs more where the layer is sensitive
    importance = 1.0 / diag ** 2
    price = rate / (importance / importance.mean(axis=1, keepdims=True))  # [G, K]
    for start in range(0, k, BLOCK):
        stop = min(start + BLOCK, k)
        errors = np.empty((stop - start,) + w.shape[1:])
        for i in range(start, stop):
            column = w[i]
            q[i] = rate_aware_round(column / steps, qmax, price[None, :, i:i + 1], lengths)
            err = (column - q[i] * steps) / diag[None, :, i, None]
            errors[i - start] = err
            if i + 1 < stop:
                w[i + 1:stop] -= upper[:, i, i + 1:stop].T[:, None, :, None] * err[None]
        if stop < k:
            update = np.matmul(np.moveaxis(errors, 0, -1), upper[None, :, start:stop, stop:])  # [B, G, R, M]
            w[stop:] -= np.moveaxis(update, -1, 0)
    return np.moveaxis(q, 0, -1)


def compensated_round(weight: np.ndarray, axis: int, bases: list[QuantizedWeight], hessian: LayerHessian,
                      rate: float = 0.0, by_energy: bool = True) -> list[QuantizedWeight]:
    """GPTQ at each base's bit-width and steps, sharing one factor of the Hessian; columns in
    order of decreasing input energy (``by_energy=False``: as stored, for comparison).

    Nearest rounding (rate 0) runs all bit-widths in one column sweep; rate-aware rounding has a
    symbol model per bit-width and runs a sweep each, re-estimating the model after each pass.
    """
    order = column_order(hessian, by_energy)[:, None, :]  # [G, 1, K]
    rows = np.take_along_axis(to_rows(weight, hessian.layout, hessian.groups), order, axis=-1)
    upper = _upper_inverse_factor(hessian, by_energy)

    def steps(base: QuantizedWeight) -> np.ndarray:
        return base.scales.astype(np.float64).reshape(rows.shape[:2])

    if rate <= 0:
        qmax = np.array([b.qmax for b in bases], dtype=np.float64).reshape(-1, 1, 1)
        q = _compensated_pass(np.broadcast_to(rows, (len(bases),) + rows.shape),
                              np.stack([steps(b) for b in bases]), upper, qmax, 0.0, None)
    else:
        q = []
        for base in bases:
            symbols = np.take_along_axis(to_rows(base.symbols, hessian.layout, hessian.groups), order, axis=-1)
            for _ in range(MODEL_PASSES):
                symbols = _compensated_pass(rows[None], steps(base)[None], upper, base.qmax, rate,
                                            code_lengths(symbols, base.qmax))[0]
            q.append(symbols)
    back = np.argsort(order, axis=-1)
    return [QuantizedWeight(b.key, b.bits, axis, np.ascontiguousarray(
                from_rows(np.take_along_axis(q[i], back, axis=-1), weight.shape, hessian.layout)
                .astype(symbol_dtype(b.bits))), b.scales, b.merged, b.wide) for i, b in enumerate(bases)]


def rate_aware_quantize(weight: np.ndarray, axis: int, base: QuantizedWeight, rate: float) -> QuantizedWeight:
    """Rate-aware rounding of each element on its own (no Hessian: nothing to compensate through)."""
    t = np.asarray(weight, dtype=np.float64) / base.scales.astype(np.float64).reshape(base.channel_shape())
    symbols = base.symbols
    for _ in range(MODEL_PASSES):
        symbols = rate_aware_round(t, base.qmax, rate, code_lengths(symbols, base.qmax))
    return QuantizedWeight(base.key, base.bits, axis, symbols.astype(symbol_dtype(base.bits)), base.scales,
                           base.merged, base.wide)


def output_error(weight: np.ndarray, approx: np.ndarray, hessian: LayerHessian) -> float:
    """Summed squared layer-output error on the calibration inputs: sum_g tr(dW_g H_g dW_g^T)."""
    return float(channel_output_errors(weight, approx, hessian).sum())


def _difference_rows(weight: np.ndarray, approx: np.ndarray, hessian: LayerHessian) -> np.ndarray:
    return to_rows(np.asarray(approx, dtype=np.float64) - weight, hessian.layout, hessian.groups)


def _errors_of(d: np.ndarray, hessian: LayerHessian) -> np.ndarray:
    return np.einsum("grk,gkl,grl->gr", d, hessian.matrix, d, optimize=True).reshape(-1)


def _shift_of(d: np.ndarray, hessian: LayerHessian) -> np.ndarray:
    return -np.einsum("grk,gk->gr", d, hessian.mean).reshape(-1)


def channel_output_errors(weight: np.ndarray, approx: np.ndarray, hessian: LayerHessian) -> np.ndarray:
    """Per output channel (in the bias's order), the squared output error summed over the
    calibration inputs: the diagonal of dW H dW^T (same cost as its trace)."""
    return _errors_of(_difference_rows(weight, approx, hessian), hessian)


def shift_and_errors(weight: np.ndarray, approx: np.ndarray, hessian: LayerHessian,
                     centred: LayerHessian) -> tuple[np.ndarray, np.ndarray]:
    """(What to add to the layer's bias so that its mean output on the calibration inputs
    stays, ``-dW mu`` per output channel (bias correction); :func:`channel_output_errors` under
    ``centred``, the same layer's centred moments), both in the bias's channel order and from
    one weight difference: what bias correction needs for every candidate of a layer with a bias."""
    d = _difference_rows(weight, approx, hessian)
    return _shift_of(d, hessian), _errors_of(d, centred)


#: A moved bias is kept on a power-of-two grid no coarser than 2^-BIAS_PRECISION_BITS of the
#: larger of its channel's output spread on the calibration data and a sixteenth of itself, or
#: than a quarter of the output error its layer's rounding already leaves in that channel
#: (``BIAS_ERROR_SHARE``), up to 2^-BIAS_COARSEST_BITS of the spread.
BIAS_PRECISION_BITS = 10
BIAS_ERROR_SHARE = 0.25
BIAS_COARSEST_BITS = 5


def channel_spread(weight: np.ndarray, centred: LayerHessian) -> np.ndarray:
    """Per output channel, the standard deviation of the layer's output about its mean on the
    calibration inputs (from the centred ``X^T X``)."""
    energy = _errors_of(to_rows(weight, centred.layout, centred.groups), centred)  # the whole weight as the "error"
    return np.sqrt(np.maximum(energy, 0.0) / max(centred.rows, 1))


def bias_quanta(spread: np.ndarray, bias: np.ndarray, error_rms: np.ndarray | None = None) -> np.ndarray:
    """Per output channel, the power of two a moved bias is rounded to (0: kept as it is).

    Why: a float32 bias costs about 30 bits in the bitstream, far more than the weights of a
    small layer's channel; what the output needs of it is a small fraction of the channel's own
    ``spread``, and less still next to the error the rounding of the layer's weights already
    leaves there (``error_rms``, per channel, per calibration row): an error a quarter of that
    adds a sixteenth to its energy. A power-of-two grid leaves the low mantissa bits zero, which
    the lossless float coder stores almost for free. A bias far above its channel's spread (one
    that decides whether a ReLU passes anything) keeps 14 bits of its own.
    """
    allowed = spread * 2.0 ** -BIAS_PRECISION_BITS
    if error_rms is not None:
        allowed = np.maximum(allowed, np.minimum(BIAS_ERROR_SHARE * error_rms, spread * 2.0 ** -BIAS_COARSEST_BITS))
    magnitude = np.abs(np.asarray(bias, dtype=np.float64)).reshape(-1)
    floor = np.maximum(allowed, magnitude / 16.0 * 2.0 ** -BIAS_PRECISION_BITS)
    quanta = np.zeros_like(floor)
    positive = floor > 0
    quanta[positive] = 2.0 ** np.floor(np.log2(floor[positive]))
    return quanta


def round_bias(values: np.ndarray, quanta: np.ndarray) -> np.ndarray:
    """``values`` on their channels' grids (``bias_quanta``), in their own dtype."""
    v = np.asarray(values, dtype=np.float64)
    kept = quanta <= 0
    rounded = np.rint(v / np.where(kept, 1.0, quanta)) * np.where(kept, 1.0, quanta)
    return np.where(kept, v, rounded).astype(np.asarray(values).dtype)
