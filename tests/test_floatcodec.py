"""Lossless array coding: every bit back, and real savings on float weights."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.codec.entropy import CodecError
from onnxl2.codec.floatcodec import decode_array, encode_array

RNG = np.random.default_rng(3)
ARRAYS = {
    "weights_f32": (RNG.standard_normal((256, 512)) * 0.05).astype(np.float32),
    "special_f32": np.array([np.nan, -np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-45, 3.4e38], np.float32),
    "nan_payload": np.array([0x7FC00001, 0xFFFFFFFF], np.uint32).view(np.float32),
    "f16": RNG.standard_normal(5000).astype(np.float16),
    "f64": RNG.standard_normal((30, 7)),
    "int64_shape": np.array([1, -1, 256, 3], np.int64),
    "int8": RNG.integers(-128, 128, 1000).astype(np.int8),
    "uint16": RNG.integers(0, 2**16, 300).astype(np.uint16),
    "bool": RNG.random(100) < 0.5,
    "scalar": np.array(2.5, np.float32),
    "empty": np.zeros((0, 4), np.float32),
    "fortran_order": np.asfortranarray(RNG.standard_normal((8, 9)).astype(np.float32)),
}


@pytest.mark.parametrize("name", ARRAYS)
def test_bit_exact(name):
    array = ARRAYS[name]
    back = decode_array(encode_array(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array).tobytes()


def test_gaussian_weights_shrink():
    weights = (RNG.standard_normal(1_000_000) * 0.02).astype(np.float32)
    assert len(encode_array(weights)) < 0.9 * weights.nbytes


@pytest.mark.parametrize("cut", [1, 5, 100])
def test_damage_raises(cut):
    coded = encode_array(ARRAYS["weights_f32"])
    with pytest.raises(CodecError):
        decode_array(coded[:-cut])
