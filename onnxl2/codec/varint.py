"""LEB128 varints for whole integer arrays at once (side information of the coders)."""
from __future__ import annotations

import numpy as np


#: Arrays up to this many values are encoded one value at a time.
_SHORT = 16


def encode_varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of every value, concatenated; vectorised over the array."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if v.size == 0:
        return b""
    if v.size <= _SHORT:  # a stream's few header numbers: plain Python beats a dozen array passes
        out = bytearray()
        for x in v.tolist():
            while x >= 0x80:
                out.append(x & 0x7F | 0x80)
                x >>= 7
            out.append(x)
        return bytes(out)
    groups = np.ones(v.size, dtype=np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        groups += rest > 0
        rest >>= np.uint64(7)
    starts = np.concatenate(([0], np.cumsum(groups)[:-1]))
    out = np.zeros(int(groups.sum()), dtype=np.uint8)
    for k in range(int(groups.max())):
        live = groups > k
        chunk = ((v[live] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (groups[live] > k + 1).astype(np.uint8) << 7
        out[starts[live] + k] = chunk | more
    return out.tobytes()


def decode_varints(buf: bytes, count: int, pos: int = 0) -> tuple[np.ndarray, int]:
    """``count`` varints starting at ``pos``; returns them and the position after the last."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), pos
    data = np.frombuffer(buf, dtype=np.uint8, offset=pos)
    ends = np.flatnonzero(data < 0x80)
    if ends.size < count:
        raise ValueError("truncated varints")
    ends = ends[:count]
    used = int(ends[-1]) + 1
    body = data[:used]
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise ValueError("malformed varint")
    owner = np.repeat(np.arange(count), lengths)
    shift = (np.arange(used) - np.repeat(starts, lengths)) * 7
    parts = (body & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    values = np.zeros(count, dtype=np.uint64)
    np.add.at(values, owner, parts)
    return values, pos + used


_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def varint_length(value: int) -> int:
    """Bytes one value takes as a LEB128 varint, without encoding it."""
    return max(1, (int(value).bit_length() + 6) // 7)


def varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes each value takes as a LEB128 varint, vectorised."""
    return 1 + np.searchsorted(_LIMITS, np.asarray(values, dtype=np.uint64), side="right")


def zigzag(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64)
    return ((v << 1) ^ (v >> 63)).astype(np.uint64)


def unzigzag(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.uint64)
    return ((v >> np.uint64(1)).astype(np.int64)) ^ -((v & np.uint64(1)).astype(np.int64))
