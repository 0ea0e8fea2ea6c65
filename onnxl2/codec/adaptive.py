"""Order-0 rANS coding with a model learnt on the way: no frequency table in the stream.

Why: a stored table costs about a byte per symbol value, which on a small tensor (a depthwise
kernel, an 8-bit layer of a few thousand weights) is several percent of the payload. Here the
coder codes the symbols block by block, each under the counts of everything before it (plus
half a count per value, the Krichevsky-Trofimov prior), so the decoder rebuilds every model from
what it has already decoded and the stream carries only the value range. Blocks start small and
double (16, 32, ... up to 4096 symbols), so the model is learnt quickly; what the learning costs
is about half a log2(n) bits per value in use, well under a table's cost for short streams.

``symmetric`` pools the counts of v and -v (weights are symmetric about zero far more often
than not), which halves what must be learnt; the encoder picks the smaller variant and the
caller records the choice (and the count) outside the stream.

Stream (count known to the caller)::

    (count > 0) zigzag low | varint span | (span > 1) rANS words

Blocks are coded last-first, so the decoder pops them first-first; each decode is one
constriction call per block, never one per symbol.
"""
from __future__ import annotations

import constriction
import numpy as np

from .entropy import CodecError, Planned, narrow_int_dtype, quantize_frequency_rows, read_varints
from .varint import encode_varints, unzigzag, zigzag

FIRST_BLOCK = 16
LAST_BLOCK = 4096
#: Widest value range coded adaptively (a table of this many slots is rebuilt per block).
MAX_SPAN = 1 << 12
_PRECISION_SLACK = 4  # model precision: at least 16x the span (so pseudo-counts stay resolvable)


def block_bounds(count: int) -> np.ndarray:
    """Start of every block and the end: 0, 16, 48, 112, ... then steps of LAST_BLOCK."""
    bounds, size, pos = [0], FIRST_BLOCK, 0
    while pos < count:
        pos = min(count, pos + size)
        bounds.append(pos)
        size = min(LAST_BLOCK, size * 2)
    return np.array(bounds, dtype=np.int64)


def _precision(span: int) -> int:
    return max(12, int(np.ceil(np.log2(span))) + _PRECISION_SLACK)


def _model(seen: np.ndarray, low: int, symmetric: bool, precision: int) -> np.ndarray:
    """Integer frequencies of the next block from the counts ``seen`` so far (one per slot)."""
    return _models_of_seen(seen[None, :], low, symmetric, precision)[0]


def _models_of_seen(seen: np.ndarray, low: int, symmetric: bool, precision: int) -> np.ndarray:
    """:func:`_model` of every row of ``seen`` (blocks, span), in one pass."""
    if symmetric:
        values = low + np.arange(seen.shape[1])
        mirror = -values - low
        inside = (mirror >= 0) & (mirror < seen.shape[1])
        pooled = seen.copy()
        pooled[:, inside] += seen[:, mirror[inside]]
        seen = pooled
    return quantize_frequency_rows(2 * seen + 1, np.full(seen.shape[0], precision))  # half a count of prior


def _models(history: np.ndarray, low: int, symmetric: bool, precision: int) -> np.ndarray:
    """Frequencies (blocks, span) of every block, from the block histograms ``history``."""
    return _models_of_seen(np.cumsum(history, axis=0) - history, low, symmetric, precision)  # earlier blocks


def _block_histograms(offsets: np.ndarray, bounds: np.ndarray, span: int) -> np.ndarray:
    block_of = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    return np.bincount(block_of * span + offsets, minlength=(bounds.size - 1) * span).reshape(-1, span)


def encode_adaptive(symbols: np.ndarray, symmetric: bool | None = None) -> tuple[bool, bytes]:
    """Code integers (flattened) without a table; their count is the caller's to keep.

    Returns whether v and -v were pooled, and the stream. ``symmetric=None`` picks the variant
    whose ideal cost is lower (both models come from the same block histograms).
    Raises ValueError when the value range exceeds ``MAX_SPAN`` (use the table coder).
    """
    symmetric, planned = plan_adaptive(symbols, symmetric)
    return symmetric, planned.code()


def plan_adaptive(symbols: np.ndarray, symmetric: bool | None = None) -> tuple[bool, Planned]:
    """:func:`encode_adaptive` as a plan: the variant, its ideal size, its bytes on demand."""
    flat = np.asarray(symbols).reshape(-1).astype(np.int64)
    if flat.size == 0:
        return bool(symmetric), Planned(0.0, lambda: b"")
    low = int(flat.min())
    offsets = flat - low
    span = int(offsets.max()) + 1
    if span > MAX_SPAN:
        raise ValueError(f"value range {span} is too wide for the adaptive coder (limit {MAX_SPAN})")
    head = encode_varints(zigzag(np.array([low]))) + encode_varints(np.array([span]))
    if span == 1:
        return bool(symmetric), Planned(8.0 * len(head), lambda: head)
    precision = _precision(span)
    bounds = block_bounds(flat.size)
    history = _block_histograms(offsets, bounds, span)
    variants = (symmetric,) if symmetric is not None else (False, True)  # a tie keeps the plain model
    costs = {}
    for variant in variants:
        freqs = _models(history, low, variant, precision)
        costs[variant] = (float((history * (precision - np.log2(freqs))).sum()), freqs)
    symmetric = min(costs, key=lambda v: costs[v][0])
    cost, freqs = costs[symmetric]

    def code() -> bytes:
        coder = constriction.stream.stack.AnsCoder()
        slots = offsets.astype(np.int32)
        for j in reversed(range(bounds.size - 1)):
            model = constriction.stream.model.Categorical(freqs[j].astype(np.float64), perfect=False)
            coder.encode_reverse(slots[bounds[j]:bounds[j + 1]], model)
        return head + coder.get_compressed().astype("<u4").tobytes()
    return symmetric, Planned(8.0 * len(head) + cost, code)


def decode_adaptive(data: bytes, count: int, symmetric: bool) -> np.ndarray:
    """Inverse of :func:`encode_adaptive`: the flat array of ``count`` symbols, in the narrowest
    signed integer dtype that holds the stream's value range."""
    try:
        if count == 0:
            if data:
                raise CodecError("trailing bytes after an empty adaptive stream")
            return np.zeros(0, np.int64)
        (zlow, span), pos = read_varints(data, 2)
        low, span = int(unzigzag(np.array([zlow]))[0]), int(span)
        if not 1 <= span <= MAX_SPAN:
            raise CodecError("adaptive stream has an impossible value range")
        dtype = narrow_int_dtype(low, low + span - 1)
        if span == 1:
            if pos != len(data):
                raise CodecError("trailing bytes after a constant adaptive stream")
            return np.full(count, low, dtype)
        precision = _precision(span)
        payload = data[pos:]
        if len(payload) % 4:
            raise CodecError("adaptive stream payload is truncated")
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        bounds = block_bounds(count)
        seen = np.zeros(span, np.int64)
        out = np.empty(count, narrow_int_dtype(0, span - 1))
        for j in range(bounds.size - 1):
            if coder.is_empty():  # a trailing run of the lowest value is coded for free
                out[bounds[j]:] = 0
                break
            freqs = _model(seen, low, symmetric, precision)
            model = constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)
            slots = coder.decode(model, int(bounds[j + 1] - bounds[j]))
            seen += np.bincount(slots, minlength=span)
            out[bounds[j]:bounds[j + 1]] = slots
        if not coder.is_empty():
            raise CodecError("adaptive stream does not end where it should (corrupted)")
        values = out.astype(dtype, copy=False)  # dtype holds [low, low + span - 1]: no overflow
        values += dtype.type(low)
        return values
    except CodecError:
        raise
    except (ValueError, IndexError, OverflowError, RuntimeError, TypeError, MemoryError) as exc:
        raise CodecError(f"adaptive stream is corrupted ({exc})") from None
