"""Varints: the side information of every coded stream."""
from __future__ import annotations

import numpy as np

from onnxl2.codec.varint import decode_varints, encode_varints, unzigzag, zigzag


def test_varints_round_trip():
    values = np.array([0, 1, 127, 128, 300, 2**40, 2**64 - 1], dtype=np.uint64)
    decoded, end = decode_varints(encode_varints(values) + b"tail", len(values))
    np.testing.assert_array_equal(decoded, values)
    assert end == len(encode_varints(values))


def test_zigzag_round_trip():
    values = np.array([0, -1, 1, -(2**40), 2**40, -(2**62)], dtype=np.int64)
    np.testing.assert_array_equal(unzigzag(zigzag(values)), values)
