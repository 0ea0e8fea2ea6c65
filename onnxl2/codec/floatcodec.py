"""Lossless coding of numeric arrays (float weights, norms, biases, integer tables).

A float32 weight looks random byte by byte, but not plane by plane: the sign-and-exponent byte
takes only a few values, and the mantissa bytes are near uniform. So the words are rotated to
put the sign next to the mantissa (the top byte is then the exponent alone), split into byte
planes, and each plane is coded on its own with rANS, lzma or stored raw, whichever is smallest;
the whole array raw or as one lzma stream competes too (small arrays, integer tables with long
repeats). Integers are split into planes without rotation, complex numbers as their float
parts. Bit patterns are kept exactly (NaN payloads, -0.0, denormals). A float32 array whose
values all lie on the quantization steps' logarithmic grid (``loggrid``) is also offered as
its grid indices.

Stream: dtype str (u8 length + ascii) | varint ndim | varint dims | u8 method | body, where a
plane body is, per plane (most significant first): varint length | u8 method | coded plane.
"""
from __future__ import annotations

import lzma
import math
import re

import numpy as np

from .entropy import CodecError, decode_symbols, encode_symbols, estimate_bits, read_varints
from .loggrid import decode_grid, encode_grid, grid_indices
from .lzma_raw import compress as _lzma, decompress as _unlzma
from .memo import memoized
from .varint import encode_varints

_RAW, _LZMA, _PLANES, _SYMBOLS, _GRID = 0, 1, 2, 3, 4
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_KINDS = "fiubc"
_DTYPE_NAME = re.compile(r"[<>|=][fiubc][1-9][0-9]?")
#: lzma is tried on inputs up to this size; past it, it costs seconds and rANS wins anyway.
_LZMA_MAX_BYTES = 1 << 16
#: Whole-array lzma is also tried when planes save less than this fraction of the raw size.
_LZMA_IF_ABOVE = 0.97
#: Grid indices coded in at most this fraction of the raw size are kept without trying planes
#: and lzma (a float32 has 8 bits of exponent and 23 of mantissa that the planes must carry).
_GRID_SURE = 0.375
#: rANS can beat its own ideal estimate by at most the coder state's bits (plus rounding).
_ESTIMATE_SLACK_BITS = 128


def _component(dtype: np.dtype) -> np.dtype:
    """The dtype whose words are split into planes: complex numbers are split into floats."""
    if dtype.kind == "c":
        return np.dtype(f"f{dtype.itemsize // 2}")
    return dtype


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _KINDS or _component(dtype).itemsize not in _UINT:
        raise TypeError(f"unsupported dtype {dtype}")
    return dtype


def _rotate(words: np.ndarray, bits: int, left: bool) -> np.ndarray:
    """Move the sign bit to the bottom (left=True) or back to the top."""
    one, top = words.dtype.type(1), words.dtype.type(bits - 1)
    if left:
        return (words << one) | (words >> top)
    return (words >> one) | (words << top)


def _planes(arr: np.ndarray) -> np.ndarray:
    """(itemsize, n) byte planes, most significant first; floats with the sign rotated down."""
    part = _component(arr.dtype)
    size = part.itemsize
    words = arr.reshape(-1).view(part).view(_UINT[size])
    if part.kind == "f":
        words = _rotate(words, 8 * size, left=True)
    return words.astype(f">u{size}").view(np.uint8).reshape(-1, size).T


def _unplanes(planes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_planes`: the flat array of ``dtype``."""
    size = _component(dtype).itemsize
    words = np.ascontiguousarray(planes.T).view(f">u{size}").reshape(-1).astype(_UINT[size])
    if _component(dtype).kind == "f":
        words = _rotate(words, 8 * size, left=False)
    return words.view(dtype)


def _rans_worth_trying(plane: np.ndarray) -> bool:
    """Skip coding near-uniform planes (low mantissa bytes) that rANS cannot shrink."""
    return estimate_bits(plane) < 8 * plane.size + _ESTIMATE_SLACK_BITS


def _best_plane_coding(plane: np.ndarray) -> bytes:
    """u8 method + the plane coded raw, with rANS or with lzma: whichever is smallest."""
    raw = plane.tobytes()
    options = [bytes([_RAW]) + raw]
    if _rans_worth_trying(plane):
        options.append(bytes([_SYMBOLS]) + encode_symbols(plane))
    if plane.size <= _LZMA_MAX_BYTES:
        options.append(bytes([_LZMA]) + _lzma(raw))
    return min(options, key=len)


def _plane_body(arr: np.ndarray) -> bytes:
    """u8 _PLANES + each plane as varint length | coded plane."""
    if arr.dtype.itemsize == 1:  # one plane: the bytes themselves
        return bytes([_SYMBOLS]) + encode_symbols(arr.reshape(-1).view(np.uint8))
    body = bytearray([_PLANES])
    for plane in _planes(arr):
        coded = _best_plane_coding(plane)
        body += encode_varints(np.array([len(coded)])) + coded
    return bytes(body)


def _header(arr: np.ndarray) -> bytes:
    name = arr.dtype.str.encode()
    return bytes([len(name)]) + name + encode_varints(np.array([arr.ndim, *arr.shape]))


def encode_array(arr: np.ndarray) -> bytes:
    """Code any numeric array so that :func:`decode_array` gives back the same bits and shape.

    Supports bool, int8..int64, uint8..uint64, float16/32/64 and complex64/128; values of a
    byte-swapped array are kept but come back in native byte order. Raises TypeError for other
    dtypes (strings, objects, structured, float128).
    """
    arr = np.asarray(arr)
    _check_dtype(arr.dtype)
    if not arr.dtype.isnative:  # planes are taken from numeric words, in native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        arr = arr.copy()
    return memoized("array", arr, _encode_array)


def _encode_array(arr: np.ndarray) -> bytes:
    raw = arr.tobytes()
    options = [bytes([_RAW]) + raw]
    indices = grid_indices(arr)
    if indices is not None:  # quantization steps: their grid indices, far below what planes reach
        options.append(bytes([_GRID]) + encode_grid(indices))
        if len(options[-1]) <= _GRID_SURE * arr.nbytes:
            return _header(arr) + min(options, key=len)
    if arr.size:
        options.append(_plane_body(arr))
        if arr.nbytes <= _LZMA_MAX_BYTES or len(min(options, key=len)) > _LZMA_IF_ABOVE * arr.nbytes:
            options.append(bytes([_LZMA]) + _lzma(raw))
    return _header(arr) + min(options, key=len)


# --------------------------------------------------------------------------- decoding


def _read_header(data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and the position of the method byte."""
    name_len = data[0]
    name = bytes(data[1:1 + name_len]).decode("ascii")
    if not _DTYPE_NAME.fullmatch(name):  # np.dtype() parses far more than dtype names
        raise CodecError(f"array header has a bad dtype {name!r}")
    dtype = _check_dtype(np.dtype(name))
    (ndim,), pos = read_varints(data, 1, 1 + name_len)
    if ndim > 64:
        raise CodecError(f"array header claims {ndim} dimensions (corrupted)")
    dims, pos = read_varints(data, int(ndim), pos)
    if (dims > np.uint64(1 << 40)).any():
        raise CodecError("array header has an implausible dimension (corrupted)")
    return dtype, tuple(int(d) for d in dims), pos


def _decode_bytes(method: int, body: bytes, n: int) -> np.ndarray:
    """One coded byte stream of ``n`` bytes (a plane, or a one-byte dtype's data)."""
    if method == _RAW:
        plane = np.frombuffer(body, dtype=np.uint8)
    elif method == _LZMA:
        plane = np.frombuffer(_unlzma(body, n), dtype=np.uint8)
    elif method == _SYMBOLS:
        plane = decode_symbols(body, n).astype(np.uint8)
    else:
        raise CodecError(f"unknown plane method {method}")
    if plane.size != n:
        raise CodecError("byte plane has the wrong length")
    return plane


def _decode_planes(body: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    """Inverse of the plane part of :func:`_plane_body` for ``n`` elements of ``dtype``."""
    part = _component(dtype)
    words = n * (dtype.itemsize // part.itemsize)
    planes = np.empty((part.itemsize, words), dtype=np.uint8)
    cursor = 0
    for k in range(part.itemsize):
        (length,), cursor = read_varints(body, 1, cursor)
        end = cursor + int(length)
        if length == 0 or end > len(body):
            raise CodecError("byte plane is truncated")
        planes[k] = _decode_bytes(body[cursor], body[cursor + 1:end], words)
        cursor = end
    if cursor != len(body):
        raise CodecError("trailing bytes after the byte planes")
    return _unplanes(planes, dtype)


def _decode_body(method: int, body: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    if method == _RAW:
        return np.frombuffer(body, dtype=dtype)
    if method == _LZMA:
        return np.frombuffer(_unlzma(body, n * dtype.itemsize), dtype=dtype)
    if method == _SYMBOLS and dtype.itemsize == 1:
        return _decode_bytes(_SYMBOLS, body, n).view(dtype)
    if method == _PLANES and dtype.itemsize > 1:
        return _decode_planes(body, dtype, n)
    if method == _GRID and dtype == np.float32:
        return decode_grid(body, n)
    raise CodecError(f"unknown array method {method} for {dtype}")


def decode_array(data: bytes, nbytes: int) -> np.ndarray:
    """Inverse of :func:`encode_array`: a new, writable array. Raises :class:`CodecError`.

    ``nbytes`` is the size the caller expects the array to have (a bitstream's span says it):
    the header's dims must multiply to exactly that before anything is allocated, so that a
    header claiming 2^40 elements costs nothing.
    """
    try:
        data = memoryview(data).cast("B")
        dtype, shape, pos = _read_header(data)
        n = math.prod(shape)
        if n * dtype.itemsize != nbytes:
            raise CodecError(f"array header declares {n * dtype.itemsize} bytes where {nbytes} are expected")
        if pos >= len(data):
            raise CodecError("array stream is truncated (no method byte)")
        flat = _decode_body(data[pos], data[pos + 1:], dtype, n)
        if flat.size != n:
            raise CodecError("array decoded to the wrong number of elements")
        out = flat.reshape(shape)
        return out if out.flags.writeable else out.copy()
    except CodecError:
        raise
    except MemoryError:
        raise CodecError("array header asks for more memory than there is (corrupted)") from None
    except (ValueError, IndexError, TypeError, OverflowError, lzma.LZMAError,
            UnicodeDecodeError) as exc:
        raise CodecError(f"array stream is corrupted ({type(exc).__name__}: {exc})") from None
