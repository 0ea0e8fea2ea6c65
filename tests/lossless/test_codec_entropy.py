"""rANS symbol coder: exact round trips, exact sizes, near-entropy output, damage raises cleanly."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.codec import entropy
from onnxl2.codec.entropy import (CodecError, coded_size_bits, decode_symbols, empirical_entropy_bits,
                                  encode_symbols, estimate_bits)
from onnxl2.codec.varint import decode_varints, encode_varints

RNG = np.random.default_rng(11)


def _gaussian(n: int, std: float) -> np.ndarray:
    return np.clip(np.rint(RNG.normal(0, std, n)), -128, 127).astype(np.int8)


CASES = {
    "uniform_int8": RNG.integers(-128, 128, 50_000).astype(np.int8),
    "uniform_uint8": RNG.integers(0, 256, 50_000).astype(np.uint8),
    "gaussian": _gaussian(100_000, 10),
    "laplacian": np.rint(RNG.laplace(0, 3, 60_000)).astype(np.int16),
    "sparse_zeros": np.where(RNG.random(80_000) < 0.02, RNG.integers(-5, 6, 80_000), 0).astype(np.int8),
    "negative_only": -RNG.integers(1000, 1010, 5_000).astype(np.int32),
    "trailing_minimum_run": np.concatenate((RNG.integers(0, 4, 100), np.zeros(5000, int))),
    "int8_extremes": np.array([-128, 127] * 30 + [0], np.int8),
    "two_values": np.array([3, 3, 3, 9], np.int64),
    "wide_alphabet": RNG.integers(-(2**40), 2**40, 3000).astype(np.int64),
    "int64_extremes": np.array([-(2**63), 2**63 - 1, 0, 0], np.int64),
    "uint64_high_bit": np.array([2**64 - 1, 2**63, 5, 5], np.uint64),
    "bool": RNG.random(1000) < 0.1,
    "matrix": RNG.integers(0, 16, (64, 33)).astype(np.uint8),
    "single": np.array([-7], np.int16),
    "constant": np.full(10_000, 42, np.int32),
    "empty": np.zeros(0, np.int8),
}


@pytest.mark.parametrize("name", CASES)
def test_round_trip_and_exact_size(name):
    symbols = CASES[name]
    coded = encode_symbols(symbols)
    back = decode_symbols(coded, symbols.size)
    assert back.shape == (symbols.size,)
    assert np.array_equal(back.astype(symbols.dtype), symbols.reshape(-1))
    assert coded_size_bits(symbols) == 8 * len(coded)


def test_constant_and_empty_streams_have_no_payload():
    assert len(encode_symbols(CASES["empty"])) == 1
    assert len(encode_symbols(CASES["constant"])) <= 4


@pytest.mark.parametrize("name", ["gaussian", "trailing_minimum_run", "wide_alphabet", "sparse_zeros"])
def test_chunked_coding_matches_one_shot(monkeypatch, name):
    """Chunking is an implementation detail: same bytes, and decoding across chunk edges works
    (including a trailing run of the smallest value, which the coder stores for free)."""
    symbols = CASES[name]
    whole = encode_symbols(symbols)
    monkeypatch.setattr(entropy, "_CHUNK", 1000)
    assert encode_symbols(symbols) == whole
    assert np.array_equal(decode_symbols(whole), symbols)


def test_dense_and_sparse_tables_are_both_used():
    count_bytes = len(encode_varints(np.array([CASES["gaussian"].size])))
    assert encode_symbols(CASES["gaussian"])[count_bytes] == 0  # contiguous values: dense table
    spread = np.array([-100, 0, 100] * 100, np.int16)
    assert encode_symbols(spread)[len(encode_varints(np.array([spread.size])))] == 3  # sparse


def test_size_is_within_one_percent_of_entropy_plus_side_information():
    symbols = _gaussian(1_000_000, 10)
    coded = encode_symbols(symbols)
    side = entropy._plan(symbols).head_size()  # count, alphabet and frequency table
    entropy_bytes = empirical_entropy_bits(symbols) / 8
    assert len(coded) <= 1.01 * (entropy_bytes + side)
    assert len(coded) - side >= entropy_bytes - 8  # no coder beats the entropy (bar the state)


@pytest.mark.parametrize("name", ["gaussian", "laplacian", "sparse_zeros", "uniform_uint8"])
def test_estimate_tracks_exact_size(name):
    exact = coded_size_bits(CASES[name])
    assert abs(estimate_bits(CASES[name]) - exact) <= 0.002 * exact + 64


def test_more_distinct_values_than_the_table_allows_are_refused():
    with pytest.raises(ValueError):
        encode_symbols(np.arange(entropy.MAX_ALPHABET + 1))


def test_non_integers_are_refused():
    with pytest.raises(TypeError):
        encode_symbols(np.zeros(3, np.float32))


def test_every_truncation_raises():
    coded = encode_symbols(CASES["laplacian"][:3000])
    for cut in range(len(coded)):
        with pytest.raises(CodecError):
            decode_symbols(coded[:cut])


def test_byte_flips_raise_codec_error_or_decode():
    """Damage must surface as CodecError (or undetected garbage), never another error or a hang."""
    coded = bytearray(encode_symbols(CASES["sparse_zeros"][:4000]))
    detected = 0
    for pos in range(0, len(coded), 3):
        bad = coded.copy()
        bad[pos] ^= 0x5A
        try:
            decode_symbols(bytes(bad))
        except CodecError:
            detected += 1
    assert detected > len(coded) // 3 * 0.9


def test_absurd_count_raises_without_allocating():
    body = encode_symbols(CASES["gaussian"][:1000])
    (_, ), pos = decode_varints(body, 1)
    for count in (2**40, entropy.MAX_COUNT - 1):
        with pytest.raises(CodecError):
            decode_symbols(encode_varints(np.array([count])) + body[pos:], 1000)
    with pytest.raises(CodecError):
        decode_symbols(encode_varints(np.array([2**40])) + body[pos:])


def test_expected_count_is_checked():
    coded = encode_symbols(CASES["two_values"])
    with pytest.raises(CodecError):
        decode_symbols(coded, 5)


def test_codec_error_is_a_value_error():
    assert issubclass(CodecError, ValueError)


def _largest_remainder(counts: np.ndarray, precision: int) -> np.ndarray:
    """One row's frequencies the plain way: floor the shares (at least 1), hand the missing
    units to the largest fractional parts (first on ties), take overshoot from the largest."""
    total = 1 << precision
    exact = counts * total / counts.sum()
    freqs = np.maximum(1, np.floor(exact)).astype(np.int64)
    fraction = exact - np.floor(exact)
    for _ in range(total - int(freqs.sum())):
        i = int(np.argmax(fraction))
        freqs[i] += 1
        fraction[i] = -1.0
    while freqs.sum() > total:
        freqs[int(np.argmax(freqs))] -= 1
    return freqs


def test_frequency_rows_equal_one_row_at_a_time():
    rows = [RNG.integers(1, 50, 40), RNG.integers(1, 3, 300), (RNG.pareto(1.0, 60) * 1000).astype(np.int64) + 1,
            np.array([1, 1, 10**9]), np.ones(256, np.int64)]
    for precision in (8, 12, 16):
        for counts in (r for r in rows if r.size <= 1 << precision):  # the coder's tables give each a unit
            batched = entropy.quantize_frequency_rows(np.stack([counts, counts]), np.array([precision, 20]))
            assert batched[0].sum() == 1 << precision and batched[0].min() >= 1
            assert np.array_equal(batched[0], entropy.quantize_frequencies(counts, precision))
            assert np.array_equal(batched[1], entropy.quantize_frequencies(counts, 20))
            if counts.size * 2 <= 1 << precision:
                assert np.array_equal(batched[0], _largest_remainder(counts, precision))


def test_table_choice_is_the_best_single_precision():
    for counts in ((RNG.pareto(1.2, 90) * 500).astype(np.int64) + 1, RNG.integers(1, 4, 700), np.array([5, 10**6])):
        values = np.cumsum(RNG.integers(1, 4, counts.size))
        best = entropy._plan_bits(entropy._plan_of_histogram(values, counts))
        singles = []
        for precision in (p for p in entropy._PRECISIONS if 1 << p >= counts.size):
            table, layout = entropy._choose_table(values, counts, (precision,))
            singles.append(entropy._plan_bits(entropy._Plan(int(counts.sum()), table, values, counts, layout)))
        assert best == min(singles)


def test_quick_estimates_of_many_histograms_equal_one_at_a_time():
    values = np.arange(-40, 40)
    hist = np.stack([RNG.poisson(RNG.random(80) * 50) * (RNG.random(80) < 0.6) for _ in range(30)]
                    + [np.zeros(80, np.int64), np.eye(80, dtype=np.int64)[7] * 9])
    rows = entropy.quick_estimate_bits_of_histograms(values, hist)
    one = [entropy.estimate_bits_of_histogram(values, h, quick=True) for h in hist]
    np.testing.assert_allclose(rows, one, rtol=1e-12)
