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


def test_short_and_long_arrays_encode_alike():
    """A few values go one at a time, many vectorised: the bytes must not depend on which."""
    rng = np.random.default_rng(3)
    widths = rng.integers(0, 65, 400)
    values = np.array([int(rng.integers(0, 2**63, dtype=np.uint64)) >> (63 - min(int(w), 63)) if w else 0
                       for w in widths] + [2**64 - 1], dtype=np.uint64)
    whole = encode_varints(values)  # long: the vectorised path
    assert whole == b"".join(encode_varints(values[i:i + 1]) for i in range(values.size))
    for size in (2, 5, 16, 17):
        part = values[:size]
        assert decode_varints(encode_varints(part), size)[0].tolist() == part.tolist()
