"""Byte-plane array codec: bit-exact for every numeric dtype, real savings, clean failures."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.codec.entropy import CodecError
from onnxl2.codec.floatcodec import decode_array, encode_array

RNG = np.random.default_rng(5)


def _bits(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).tobytes()


ARRAYS = {
    "weights_f32": (RNG.standard_normal((128, 300)) * 0.05).astype(np.float32),
    "specials_f32": np.array([np.nan, -np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-45, -1e-40, 3.4e38],
                             np.float32),
    "nan_payloads": np.array([0x7FC00001, 0xFFFFFFFF, 0x7F800001, 0x00000001], np.uint32).view(np.float32),
    "f16": RNG.standard_normal(4000).astype(np.float16),
    "f16_specials": np.array([0x7E01, 0xFC00, 0x8000, 0x0001], np.uint16).view(np.float16),
    "f64": RNG.standard_normal((20, 9)),
    "f64_nan_payload": np.array([0x7FF0000000000001, 0x8000000000000000], np.uint64).view(np.float64),
    "c64": (RNG.standard_normal(300) + 1j * RNG.standard_normal(300)).astype(np.complex64),
    "c128": RNG.standard_normal(40) * (1 - 2j),
    "int8": RNG.integers(-128, 128, 500).astype(np.int8),
    "uint8": RNG.integers(0, 256, 500).astype(np.uint8),
    "int16": RNG.integers(-300, 300, 700).astype(np.int16),
    "uint16": RNG.integers(0, 2**16, 300).astype(np.uint16),
    "int32": RNG.integers(-(2**31), 2**31, 200).astype(np.int32),
    "uint32": RNG.integers(0, 2**32, 200).astype(np.uint32),
    "int64_shape": np.array([1, -1, 256, 3], np.int64),
    "int64_big": np.arange(100_000, dtype=np.int64) * 3 - 7,
    "uint64": np.array([2**64 - 1, 0, 2**63], np.uint64),
    "bool": RNG.random(100) < 0.5,
    "scalar": np.array(2.5, np.float32),
    "scalar_int": np.array(-3, np.int64),
    "empty": np.zeros((0, 4), np.float32),
    "empty_int8": np.zeros(0, np.int8),
    "fortran_order": np.asfortranarray(RNG.standard_normal((8, 9)).astype(np.float32)),
    "strided_view": RNG.standard_normal((10, 10)).astype(np.float32)[::2, 1::3],
    "constant": np.full((50, 50), 0.125, np.float32),
}


@pytest.mark.parametrize("name", ARRAYS)
def test_bit_exact(name):
    array = ARRAYS[name]
    back = decode_array(encode_array(array), array.nbytes)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert _bits(back) == _bits(array)
    assert back.flags.writeable


def test_big_endian_input_keeps_values():
    array = np.array([1.5, -0.0, np.nan, 1e-42], ">f4")
    back = decode_array(encode_array(array), array.nbytes)
    assert back.dtype.isnative
    assert _bits(back.view(np.uint32)) == _bits(array.astype("<f4").view(np.uint32))


def test_gaussian_float32_weights_shrink():
    weights = (RNG.standard_normal(1_000_000) * 0.02).astype(np.float32)
    coded = encode_array(weights)
    assert len(coded) < 0.9 * weights.nbytes
    assert _bits(decode_array(coded, weights.nbytes)) == _bits(weights)


def test_regular_integer_tables_shrink():
    assert len(encode_array(ARRAYS["int64_big"])) < 0.5 * ARRAYS["int64_big"].nbytes


def test_incompressible_data_costs_little_more_than_raw():
    noise = RNG.integers(0, 2**32, 10_000, dtype=np.uint32).view(np.float32)
    assert len(encode_array(noise)) <= noise.nbytes + 16


@pytest.mark.parametrize("dtype", [np.str_, object, np.longdouble if np.dtype(np.longdouble).itemsize > 8
                                   else np.dtype("V4")])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(TypeError):
        encode_array(np.zeros(3, dtype))


@pytest.mark.parametrize("name", ["weights_f32", "f16", "int64_shape", "scalar", "empty", "int8"])
def test_every_truncation_raises(name):
    coded = encode_array(ARRAYS[name])
    for cut in range(0, len(coded), max(1, len(coded) // 300)):
        with pytest.raises(CodecError):
            decode_array(coded[:cut], ARRAYS[name].nbytes)


def test_trailing_bytes_raise():
    with pytest.raises(CodecError):
        decode_array(encode_array(ARRAYS["weights_f32"]) + b"\x01", ARRAYS["weights_f32"].nbytes)


def test_header_damage_raises_codec_error_or_keeps_the_expected_size():
    """The codec has no checksum of its own (the container's sha256 catches wrong values), but
    no header damage may make it return an array of another size than the caller expects."""
    array = ARRAYS["weights_f32"]
    coded = bytearray(encode_array(array))
    caught = 0
    for pos in range(12):
        for flip in (0x01, 0x40, 0xFF):
            bad = coded.copy()
            bad[pos] ^= flip
            try:
                back = decode_array(bytes(bad), array.nbytes)
            except CodecError:
                caught += 1
                continue
            assert back.nbytes == array.nbytes
    assert caught >= 30


def test_header_declaring_more_than_expected_is_refused_before_allocating():
    """A header of 2^40 x 2^40 elements is refused by its size alone, whatever follows."""
    from onnxl2.codec.varint import encode_varints
    name = np.dtype("<f4").str.encode()
    huge = bytes([len(name)]) + name + encode_varints(np.array([2, 1 << 40, 1 << 40])) + bytes([2])
    with pytest.raises(CodecError, match="declares"):
        decode_array(huge, 400)


def test_bad_dtype_name_raises():
    coded = encode_array(ARRAYS["int8"])
    for name in (b"|O", b"<U4", b"xx", b"<f9"):
        with pytest.raises(CodecError):
            decode_array(bytes([len(name)]) + name + coded[1 + coded[0]:], ARRAYS["int8"].nbytes)


# ----------------------------------------------------------------------------- logarithmic grid

def test_grid_table_is_float32_of_the_powers_it_names():
    from onnxl2.codec.loggrid import STEPS_PER_OCTAVE, grid_values
    k = np.arange(-3 * STEPS_PER_OCTAVE, 3 * STEPS_PER_OCTAVE)
    assert np.array_equal(grid_values(k), (2.0 ** (k / STEPS_PER_OCTAVE)).astype(np.float32))


def test_steps_on_the_grid_round_trip_as_indices_and_cost_far_less_than_floats():
    from onnxl2.codec.loggrid import HIGHEST, LOWEST, grid_indices, grid_values, nearest_on_grid
    from onnxl2.transforms.quantize import round_scale
    wanted = np.exp(RNG.normal(-5.0, 0.6, 300))
    steps = round_scale(wanted, np.float32)
    assert steps.dtype == np.float32
    assert np.abs(steps / wanted - 1).max() <= 2 ** (1 / 64) - 1 + 1e-7
    assert grid_indices(steps) is not None
    coded = encode_array(steps)
    assert np.array_equal(_bits(decode_array(coded, steps.nbytes)), _bits(steps))
    as_words = encode_array(steps.view(np.uint32))  # the same bits, coded as plain integers
    assert len(coded) < 0.6 * len(as_words)
    extremes = grid_values(np.array([LOWEST, HIGHEST, 0, -1]))
    assert np.array_equal(_bits(decode_array(encode_array(extremes), extremes.nbytes)), _bits(extremes))
    assert np.array_equal(nearest_on_grid(extremes), extremes)


@pytest.mark.parametrize("values", [np.array([1.0, 1.01], np.float32),  # 1.01 is off the grid
                                    np.array([1.0, -1.0], np.float32),
                                    np.array([1.0, 0.0], np.float32),
                                    np.array([1.0, np.inf], np.float32),
                                    np.array([1.0, 1e-40], np.float32),  # denormal
                                    np.array([1.0, 2.0], np.float64)])
def test_values_off_the_grid_are_not_taken_for_it(values):
    from onnxl2.codec.loggrid import grid_indices
    assert grid_indices(values) is None
    assert np.array_equal(_bits(decode_array(encode_array(values), values.nbytes)), _bits(values))


def test_corrupted_grid_streams_raise():
    from onnxl2.codec.loggrid import decode_grid, encode_grid
    data = encode_grid(np.array([-100, -90, -95] * 20))
    for bad in (data[:1], data[:-3], b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01" + data[1:]):
        with pytest.raises(CodecError):
            decode_grid(bad, 60)
