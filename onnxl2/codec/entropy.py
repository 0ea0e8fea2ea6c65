"""Order-0 rANS coding of integer symbols under an integer frequency table kept in the stream.

The table is the symbols' histogram scaled to a power-of-two total (at least 1 per symbol that
occurs), so the decoder builds exactly the model the encoder used from integers alone; the
arithmetic is constriction's ``AnsCoder``. Only symbols that occur get a slot, so a sparse
alphabet (say 9 distinct int8 values) costs nothing for the 247 that never appear. The table's
precision is chosen per stream to minimise table bytes plus payload bytes.

Stream: varint count | [varint distinct | zigzag first value + varint gaps | u8 precision |
varint (freq - 1) per value | uint32 rANS words].
"""
from __future__ import annotations

import numpy as np
import constriction

from .varint import decode_varints, encode_varints, unzigzag, zigzag

_PRECISIONS = (8, 10, 12, 14, 16, 18, 20)
#: More distinct values than this is not a job for an order-0 table (float bytes are <= 256).
MAX_ALPHABET = 1 << 16


class CodecError(ValueError):
    """Coded data that cannot be decoded: truncated, corrupted, or not ours."""


def _histogram(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values, their counts, and each symbol's index into the distinct values."""
    flat = np.asarray(symbols).reshape(-1).astype(np.int64, copy=False)
    low, high = int(flat.min()), int(flat.max())
    if high - low < 1 << 20:  # dense: bincount is much faster than unique
        counts = np.bincount(flat - low, minlength=high - low + 1)
        present = np.flatnonzero(counts)
        index = np.zeros(counts.size, dtype=np.int32)
        index[present] = np.arange(present.size, dtype=np.int32)
        return present + low, counts[present], index[flat - low]
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return values, counts, inverse.astype(np.int32)


def quantize_frequencies(counts: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies summing to 2**precision, each >= 1, close to ``counts`` in proportion."""
    total = 1 << precision
    exact = counts.astype(np.float64) * total / counts.sum()
    freqs = np.maximum(1, np.floor(exact)).astype(np.int64)
    short = total - int(freqs.sum())
    if short > 0:  # hand the remainder to the largest fractional parts
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        freqs[order[:short]] += 1
    while short < 0:  # forced ones overshot: take from the largest that can give
        order = np.argsort(-freqs, kind="stable")
        give = order[freqs[order] > 1][: -short]
        freqs[give] -= 1
        short += give.size
    return freqs


def _cost_bits(counts: np.ndarray, freqs: np.ndarray, precision: int) -> float:
    return float(np.sum(counts * (precision - np.log2(freqs))))


def _choose_table(counts: np.ndarray) -> tuple[int, np.ndarray]:
    best = None
    for precision in _PRECISIONS:
        if (1 << precision) < counts.size:
            continue
        freqs = quantize_frequencies(counts, precision)
        bits = _cost_bits(counts, freqs, precision) + 8 * len(encode_varints(freqs - 1))
        if best is None or bits < best[0]:
            best = (bits, precision, freqs)
    if best is None:
        raise ValueError(f"{counts.size} distinct symbols exceed the coder's table")
    return best[1], best[2]


def _model(freqs: np.ndarray):
    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Code an integer array (any shape; the caller keeps the shape) losslessly."""
    flat = np.asarray(symbols).reshape(-1)
    if flat.dtype.kind not in "iub":
        raise TypeError(f"encode_symbols needs integers, got {flat.dtype}")
    head = bytearray(encode_varints(np.array([flat.size])))
    if flat.size == 0:
        return bytes(head)
    values, counts, index = _histogram(flat)
    if values.size > MAX_ALPHABET:
        raise ValueError(f"{values.size} distinct symbols: too many for an order-0 table")
    head += encode_varints(np.array([values.size]))
    gaps = np.diff(values) - 1
    head += encode_varints(np.concatenate((zigzag(values[:1]), gaps.astype(np.uint64))))
    if values.size == 1:
        return bytes(head)
    precision, freqs = _choose_table(counts)
    head.append(precision)
    head += encode_varints(freqs - 1)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(index, _model(freqs))
    return bytes(head) + coder.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: the flat int64 array."""
    try:
        (count,), pos = decode_varints(data, 1)
        count = int(count)
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        (distinct,), pos = decode_varints(data, 1, pos)
        distinct = int(distinct)
        if not 1 <= distinct <= min(count, MAX_ALPHABET):
            raise CodecError("symbol table is corrupted")
        raw, pos = decode_varints(data, distinct, pos)
        values = unzigzag(raw[:1])[0] + np.concatenate(([0], np.cumsum(raw[1:].astype(np.int64) + 1)))
        if distinct == 1:
            if pos != len(data):
                raise CodecError("trailing bytes after a constant symbol stream")
            return np.full(count, values[0], dtype=np.int64)
        precision = data[pos]
        freqs, pos = decode_varints(data, distinct, pos + 1)
        freqs = freqs.astype(np.int64) + 1
        if precision not in _PRECISIONS or int(freqs.sum()) != 1 << precision:
            raise CodecError("frequency table is corrupted")
        if (len(data) - pos) % 4:
            raise CodecError("rANS payload is truncated")
        words = np.frombuffer(data, dtype="<u4", offset=pos).astype(np.uint32)
        coder = constriction.stream.stack.AnsCoder(words)
        index = coder.decode(_model(freqs), count)
        if not coder.is_empty():
            raise CodecError("rANS payload does not end where it should (corrupted)")
        return values[index]
    except CodecError:
        raise
    except (ValueError, IndexError, OverflowError, RuntimeError) as exc:
        raise CodecError(f"symbol stream is corrupted ({exc})") from None


def coded_size_bits(symbols: np.ndarray) -> int:
    """Exact size in bits of ``encode_symbols(symbols)``: computed by coding them."""
    return 8 * len(encode_symbols(symbols))


def estimate_bits(symbols: np.ndarray) -> float:
    """Fast smooth estimate: table bytes plus the symbols' cost under the quantized table."""
    flat = np.asarray(symbols).reshape(-1)
    if flat.size == 0:
        return 8.0
    values, counts, _ = _histogram(flat)
    side = 8 * len(encode_varints(np.array([flat.size, values.size])))
    side += 8 * len(encode_varints(np.concatenate((zigzag(values[:1]), np.diff(values) - 1))))
    if values.size == 1:
        return float(side)
    side += 8  # precision byte
    precision, freqs = _choose_table(counts)
    return side + 8 * len(encode_varints(freqs - 1)) + _cost_bits(counts, freqs, precision)


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """n times the order-0 entropy of the symbols: the bound an order-0 coder approaches."""
    _, counts, _ = _histogram(np.asarray(symbols).reshape(-1))
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
