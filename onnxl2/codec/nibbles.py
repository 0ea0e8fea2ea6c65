"""ONNX's int4 byte layout: element 2k in the low nibble of byte k, element 2k+1 in the high one."""
from __future__ import annotations

import numpy as np


def unpack_nibbles(packed: np.ndarray, count: int, signed: bool) -> np.ndarray:
    """The ``count`` 4-bit values of ``packed`` bytes, as int16 (sign-extended when ``signed``)."""
    pairs = np.empty((packed.size, 2), dtype=np.uint8)
    pairs[:, 0] = packed & 0x0F
    pairs[:, 1] = packed >> 4
    values = pairs.reshape(-1)[:count].astype(np.int16)
    if signed:
        values = np.where(values >= 8, values - 16, values)
    return values


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_nibbles`; an odd count leaves a zero high nibble. (An integer
    cast to uint8 keeps its low byte in two's complement, so the low nibble is the value's.)"""
    nib = np.asarray(values).reshape(-1).astype(np.uint8) & np.uint8(0x0F)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return nib[0::2] | (nib[1::2] << 4)
