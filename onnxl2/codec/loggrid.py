"""Positive float32 values on a logarithmic grid, ``2^(k / 32)``, stored as the integers ``k``.

Why: a per-channel quantization step needs a percent or so of precision, not float32's 24 bits,
and a small model has as many steps as it has output channels: coded as floats they were a
tenth of its bitstream. The quantizer puts float32 steps on this grid
(``transforms.quantize.round_scale``: at most 1.1% from the step it wanted, finer than the clip
search's own spacing), and the array codec stores any float32 array whose values all lie on it
as grid indices, a narrow range of integers that the order-0 coders take at 5-7 bits each.

Bit-exact on any platform: a value is rebuilt from a table of 32 mantissas written out below as
float32 bit patterns (no ``pow`` of any C library is involved) times an exact power of two.

Stream (count known to the caller): zigzag lowest index | stream of ``k - lowest`` (the
classed coder's single-stream form: a stored table or an adaptive model, whichever is shorter).
"""
from __future__ import annotations

import numpy as np

from .classed import decode_stream, encode_stream
from .entropy import CodecError, read_varints
from .varint import encode_varints, unzigzag, zigzag

STEPS_PER_OCTAVE = 32
#: float32(2 ** (i / 32)) for i in 0..31, as bit patterns.
_MANTISSAS = np.array([
    0x3F800000, 0x3F82CD87, 0x3F85AAC3, 0x3F88980F, 0x3F8B95C2, 0x3F8EA43A, 0x3F91C3D3, 0x3F94F4F0,
    0x3F9837F0, 0x3F9B8D3A, 0x3F9EF532, 0x3FA27043, 0x3FA5FED7, 0x3FA9A15B, 0x3FAD583F, 0x3FB123F6,
    0x3FB504F3, 0x3FB8FBAF, 0x3FBD08A4, 0x3FC12C4D, 0x3FC5672A, 0x3FC9B9BE, 0x3FCE248C, 0x3FD2A81E,
    0x3FD744FD, 0x3FDBFBB8, 0x3FE0CCDF, 0x3FE5B907, 0x3FEAC0C7, 0x3FEFE4BA, 0x3FF5257D, 0x3FFA83B3,
], dtype=np.uint32).view(np.float32)
#: Indices whose values are normal float32 numbers (2^-126 .. 2^127 and a bit).
LOWEST, HIGHEST = -126 * STEPS_PER_OCTAVE, 128 * STEPS_PER_OCTAVE - 1


def grid_values(indices: np.ndarray) -> np.ndarray:
    """float32 ``2^(k / 32)`` for integer ``k`` in [LOWEST, HIGHEST]."""
    k = np.asarray(indices, dtype=np.int64)
    octave, step = np.divmod(k, STEPS_PER_OCTAVE)
    return np.ldexp(_MANTISSAS[step], octave.astype(np.int32)).astype(np.float32)


def nearest_on_grid(values: np.ndarray) -> np.ndarray:
    """Positive ``values`` moved to the grid (float32), within 2^(1/64) - 1 = 1.1% of each."""
    v = np.asarray(values, dtype=np.float64)
    k = np.clip(np.rint(STEPS_PER_OCTAVE * np.log2(v)), LOWEST, HIGHEST)
    return grid_values(k)


def grid_indices(arr: np.ndarray) -> np.ndarray | None:
    """The indices of a float32 array whose every value lies exactly on the grid, else None."""
    if arr.dtype != np.float32 or arr.size == 0:
        return None
    flat = arr.reshape(-1)
    if not (flat.min() >= np.float32(2.0 ** -126) and flat.max() < np.inf):  # NaN fails both
        return None
    k = np.clip(np.rint(STEPS_PER_OCTAVE * np.log2(flat.astype(np.float64))), LOWEST, HIGHEST).astype(np.int64)
    if not np.array_equal(grid_values(k).view(np.uint32), flat.view(np.uint32)):
        return None
    return k


def encode_grid(indices: np.ndarray) -> bytes:
    """Grid indices (non-empty) as a stream: zigzag lowest | stream of offsets."""
    low = int(indices.min())
    return encode_varints(zigzag(np.array([low]))) + encode_stream(indices - low)


def decode_grid(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`encode_grid` then :func:`grid_values`: ``count`` float32 values."""
    try:
        (zlow,), pos = read_varints(data, 1)
        low = int(unzigzag(np.array([zlow]))[0])
        if not LOWEST <= low <= HIGHEST:
            raise CodecError("grid indices are out of range (corrupted)")
        k = decode_stream(bytes(data[pos:]), count).astype(np.int64) + low
    except CodecError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise CodecError(f"grid stream is corrupted ({exc})") from None
    if k.size != count or (k.size and k.max() > HIGHEST):
        raise CodecError("grid indices are out of range (corrupted)")
    return grid_values(k)
