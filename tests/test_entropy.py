"""The rANS symbol coder: exact round trips, sizes near the entropy, damage detected."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.codec.entropy import (CodecError, coded_size_bits, decode_symbols, empirical_entropy_bits,
                                  encode_symbols, estimate_bits, quantize_frequencies)
from onnxl2.codec.varint import decode_varints, encode_varints

RNG = np.random.default_rng(7)
CASES = {
    "gaussian_int8": np.clip(np.rint(RNG.normal(0, 10, 200_000)), -127, 127).astype(np.int8),
    "laplace_4bit": np.clip(np.rint(RNG.laplace(0, 1.2, 50_000)), -7, 7).astype(np.int8),
    "sparse": (RNG.random(100_000) < 0.03).astype(np.int8) * RNG.integers(-3, 4, 100_000).astype(np.int8),
    "uniform_uint8": RNG.integers(0, 256, 70_000).astype(np.uint8),
    "constant": np.full(1000, -5, np.int16),
    "empty": np.zeros(0, np.int8),
    "single": np.array([42], np.int64),
    "wide_sparse_alphabet": np.array([-(10**9), 0, 10**9, 0, 0, 7] * 50, np.int64),
}


@pytest.mark.parametrize("name", CASES)
def test_round_trip(name):
    symbols = CASES[name]
    coded = encode_symbols(symbols)
    np.testing.assert_array_equal(decode_symbols(coded), symbols.astype(np.int64))
    assert coded_size_bits(symbols) == 8 * len(coded)


def test_within_one_percent_of_entropy_plus_side_information():
    symbols = np.clip(np.rint(RNG.normal(0, 10, 1_000_000)), -127, 127).astype(np.int8)
    coded = encode_symbols(symbols)
    values = np.unique(symbols)
    # side information: everything but the rANS words, i.e. count, alphabet and frequency table
    side_bytes = len(encode_symbols(symbols[:0])) + 2 + len(values) * 2 + 1
    bound = (empirical_entropy_bits(symbols) / 8 + side_bytes) * 1.01
    assert len(coded) <= bound
    assert len(coded) * 8 >= empirical_entropy_bits(symbols)  # no coder beats the entropy


def test_estimate_tracks_real_size():
    for symbols in (CASES["gaussian_int8"], CASES["laplace_4bit"], CASES["sparse"]):
        real = coded_size_bits(symbols)
        assert abs(estimate_bits(symbols) - real) <= 0.005 * real + 64


def test_frequency_quantization_sums_and_keeps_every_symbol():
    counts = np.array([1, 1, 1, 10**6, 5, 3])
    for precision in (8, 12, 16):
        freqs = quantize_frequencies(counts, precision)
        assert freqs.sum() == 1 << precision and (freqs >= 1).all()


@pytest.mark.parametrize("cut", [1, 3, 7, 40])
def test_truncation_is_detected(cut):
    coded = encode_symbols(CASES["gaussian_int8"])
    with pytest.raises(CodecError):
        decode_symbols(coded[:-cut])


def test_non_integers_are_refused():
    with pytest.raises(TypeError):
        encode_symbols(np.zeros(3, np.float32))


def test_varints_round_trip():
    values = np.array([0, 1, 127, 128, 300, 2**40, 2**64 - 1], dtype=np.uint64)
    decoded, end = decode_varints(encode_varints(values) + b"tail", len(values))
    np.testing.assert_array_equal(decoded, values)
    assert end == len(encode_varints(values))
