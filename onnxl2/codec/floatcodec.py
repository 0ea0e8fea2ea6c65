"""Lossless coding of numeric arrays (float weights, norms, biases, integer tables).

A float32 weight looks random byte by byte, but not plane by plane: the sign-and-exponent byte
takes only a few values, and the mantissa bytes are near uniform. So the words are rotated to
put the sign next to the mantissa (the top byte is then the exponent alone), split into byte
planes, and each plane is coded on its own with rANS, lzma or stored raw, whichever is smallest;
the whole array as one lzma stream competes too. Bit patterns are kept exactly (NaN payloads,
-0.0, denormals).

Stream: dtype str (u8 length + ascii) | varint ndim | varint dims | u8 method | body.
"""
from __future__ import annotations

import lzma

import numpy as np

from .entropy import CodecError, decode_symbols, encode_symbols
from .lzma_raw import compress as _lzma, decompress as _unlzma
from .varint import decode_varints, encode_varints

_RAW, _LZMA, _PLANES, _SYMBOLS = 0, 1, 2, 3
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
#: lzma is tried on inputs up to this size; past it, it costs seconds and rANS wins anyway.
_LZMA_MAX_BYTES = 1 << 16


def _rotate(words: np.ndarray, bits: int, left: bool) -> np.ndarray:
    """Move the sign bit to the bottom (left=True) or back to the top."""
    one, top = words.dtype.type(1), words.dtype.type(bits - 1)
    if left:
        return (words << one) | (words >> top)
    return (words >> one) | (words << top)


def _planes(arr: np.ndarray) -> np.ndarray:
    """(itemsize, n) byte planes, most significant first; floats with the sign rotated down."""
    size = arr.dtype.itemsize
    words = arr.reshape(-1).view(_UINT[size])
    if arr.dtype.kind == "f":
        words = _rotate(words, 8 * size, left=True)
    return words.astype(f">u{size}").view(np.uint8).reshape(-1, size).T


def _unplanes(planes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    size = dtype.itemsize
    words = np.ascontiguousarray(planes.T).view(f">u{size}").reshape(-1).astype(_UINT[size])
    if dtype.kind == "f":
        words = _rotate(words, 8 * size, left=False)
    return words.view(dtype)


def _best_plane_coding(plane: np.ndarray) -> bytes:
    raw = plane.tobytes()
    options = [bytes([_RAW]) + raw, bytes([_SYMBOLS]) + encode_symbols(plane)]
    if plane.size <= _LZMA_MAX_BYTES:
        options.append(bytes([_LZMA]) + _lzma(raw))
    return min(options, key=len)


def encode_array(arr: np.ndarray) -> bytes:
    """Code any numeric array so that :func:`decode_array` gives back the same bits."""
    arr = np.asarray(arr)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        arr = arr.copy()
    if arr.dtype.kind not in "fiub" or arr.dtype.itemsize not in _UINT:
        raise TypeError(f"unsupported dtype {arr.dtype}")
    name = arr.dtype.str.encode()
    head = bytes([len(name)]) + name + encode_varints(np.array([arr.ndim, *arr.shape]))
    raw = arr.tobytes()
    options = [bytes([_RAW]) + raw]
    if arr.size:
        if arr.dtype.itemsize == 1:
            options.append(bytes([_SYMBOLS]) + encode_symbols(arr.view(np.uint8)))
        else:
            body = bytearray([_PLANES])
            for plane in _planes(arr):
                coded = _best_plane_coding(plane)
                body += encode_varints(np.array([len(coded)])) + coded
            options.append(bytes(body))
        if arr.nbytes <= _LZMA_MAX_BYTES or len(min(options, key=len)) > 0.97 * arr.nbytes:
            options.append(bytes([_LZMA]) + _lzma(raw))
    return head + min(options, key=len)


def _decode_plane(data: bytes, n: int) -> np.ndarray:
    method, body = data[0], data[1:]
    if method == _RAW:
        plane = np.frombuffer(body, dtype=np.uint8)
    elif method == _LZMA:
        plane = np.frombuffer(_unlzma(body), dtype=np.uint8)
    elif method == _SYMBOLS:
        plane = decode_symbols(body).astype(np.uint8)
    else:
        raise CodecError(f"unknown plane method {method}")
    if plane.size != n:
        raise CodecError("byte plane has the wrong length")
    return plane


def decode_array(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    try:
        name_len = data[0]
        dtype = np.dtype(data[1:1 + name_len].decode("ascii"))
        (ndim,), pos = decode_varints(data, 1, 1 + name_len)
        dims, pos = decode_varints(data, int(ndim), pos)
        shape = tuple(int(d) for d in dims)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        method, body = data[pos], data[pos + 1:]
        if method == _RAW:
            flat = np.frombuffer(body, dtype=dtype)
        elif method == _LZMA:
            flat = np.frombuffer(_unlzma(body), dtype=dtype)
        elif method == _SYMBOLS:
            flat = decode_symbols(body).astype(np.uint8).view(dtype)
        elif method == _PLANES:
            planes = np.empty((dtype.itemsize, n), dtype=np.uint8)
            cursor = 0
            for k in range(dtype.itemsize):
                (length,), cursor = decode_varints(body, 1, cursor)
                planes[k] = _decode_plane(body[cursor:cursor + int(length)], n)
                cursor += int(length)
            if cursor != len(body):
                raise CodecError("trailing bytes after the byte planes")
            flat = _unplanes(planes, dtype)
        else:
            raise CodecError(f"unknown array method {method}")
        if flat.size != n:
            raise CodecError("array decoded to the wrong number of elements")
        return flat.reshape(shape).copy()
    except CodecError:
        raise
    except (ValueError, IndexError, TypeError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise CodecError(f"array stream is corrupted ({type(exc).__name__}: {exc})") from None
