"""Classed (row/column context) coder: exact round trips, never worse than order-0, and below
the order-0 entropy (side information included) on tensors whose rows and columns differ."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.codec.classed import choose_classes, decode_classed, decode_stream, encode_classed, encode_stream
from onnxl2.codec.entropy import CODED_SPREAD_BITS, CodecError, empirical_entropy_bits, encode_symbols
from onnxl2.codec.varint import varint_length

RNG = np.random.default_rng(5)


def _layer(rows: int, cols: int) -> np.ndarray:
    """Symbols of a layer whose rows have different spreads and some columns are nearly dead."""
    spread = RNG.choice([0.6, 2.0, 6.0], rows)[:, None] * RNG.choice([0.2, 1.0], cols, p=[0.3, 0.7])[None, :]
    return np.clip(np.rint(RNG.laplace(0, 1, (rows, cols)) * spread), -8, 7).astype(np.int8)


CASES = {
    "layer": _layer(96, 288),
    "conv": _layer(32, 16 * 9).reshape(32, 16, 3, 3),
    "iid": np.clip(np.rint(RNG.normal(0, 3, (128, 128))), -128, 127).astype(np.int8),
    "small": RNG.integers(-3, 4, (8, 9)).astype(np.int8),
    "vector": RNG.integers(-3, 4, 5000).astype(np.int8),
    "constant": np.zeros((64, 100), np.int8),
    "one_row": RNG.integers(-3, 4, (1, 9000)).astype(np.int8),
}


@pytest.mark.parametrize("name", CASES)
def test_round_trip_and_never_much_worse_than_order0(name):
    symbols = CASES[name]
    coded = encode_classed(symbols)
    assert np.array_equal(decode_classed(coded, symbols.shape), symbols.reshape(-1))
    assert len(coded) <= len(encode_symbols(symbols)) + 2  # a byte for the layout, one for the method


def test_contexts_beat_order0_entropy_with_side_information():
    symbols = CASES["layer"]
    kr, kc, _, _ = choose_classes(symbols)
    assert kr > 1 and kc > 1
    assert 8 * len(encode_classed(symbols)) < 0.95 * empirical_entropy_bits(symbols)


def test_iid_symbols_keep_one_table():
    assert choose_classes(CASES["iid"])[:2] == (1, 1)


@pytest.mark.parametrize("cut", [0, 1, 5, -3])
def test_damage_raises_codec_error(cut):
    coded = encode_classed(CASES["layer"])
    damaged = coded[:cut] if cut > 0 else coded[:len(coded) + cut] if cut < 0 else b""
    with pytest.raises(CodecError):
        decode_classed(damaged, CASES["layer"].shape)


def test_wrong_shape_raises_codec_error():
    coded = encode_classed(CASES["layer"])
    with pytest.raises(CodecError):
        decode_classed(coded, (2, 96 * 144))


def test_memo_codes_equal_arrays_once_and_tells_shapes_and_dtypes_apart():
    from onnxl2.codec.memo import memoized

    calls = []

    def code(arr):
        calls.append(arr.shape)
        return arr.tobytes() + bytes(arr.shape)

    a = RNG.integers(-3, 4, (6, 10)).astype(np.int8)
    assert memoized("test", a, code) == memoized("test", a.copy(), code)
    assert len(calls) == 1
    memoized("test", a.reshape(10, 6), code)
    memoized("test", a.astype(np.int16), code)
    memoized("other", a, code)
    assert len(calls) == 4


def test_context_estimates_in_one_pass_equal_one_at_a_time():
    from onnxl2.codec.classed import MAX_ADAPTIVE_SYMBOLS, stream_estimate_rows
    from onnxl2.codec.entropy import estimate_bits_of_histogram
    from onnxl2.codec.varint import varint_length
    values = np.arange(-8, 8)
    joint = np.stack([RNG.poisson(RNG.random(16) * scale) for scale in (3, 40, 900, 70000, 0)]
                     + [np.eye(16, dtype=np.int64)[3] * 100])
    expected = []
    for row in joint:  # a stored table, or the adaptive code's entropy plus half log2(n) a value
        n, c = int(row.sum()), row[row > 0].astype(np.float64)
        table = estimate_bits_of_histogram(values, row, quick=True)
        if n == 0 or n > MAX_ADAPTIVE_SYMBOLS:
            expected.append(8 + table)
            continue
        adaptive = (c * np.log2(n / c)).sum() + 0.5 * (c.size - 1) * np.log2(n) + 32
        expected.append(8 + min(table - 8 * varint_length(n), adaptive))
    np.testing.assert_allclose(stream_estimate_rows(values, joint), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
def test_class_bins_by_raw_bits_equal_those_by_value(dtype):
    """8- and 16-bit symbols find their class-fitting bins through their raw bits; every dtype
    must land in the bins its values give."""
    from onnxl2.codec.classed import _assign_bins
    info = np.iinfo(dtype)
    low, high = max(int(info.min), -3000), min(int(info.max), 3000)
    symbols = RNG.integers(low, high + 1, (400, 200)).astype(dtype)  # past 16-bit codes: the raw-bits path
    symbols.flat[:2] = low, high
    lo, span = int(symbols.min()), int(symbols.max()) - int(symbols.min()) + 1
    by_value = _assign_bins(symbols.astype(np.int64), lo, span)  # the int64 path: a direct lookup
    np.testing.assert_array_equal(_assign_bins(symbols, lo, span), by_value)


def test_class_sums_equal_a_sum_per_class():
    from onnxl2.codec.classed import _sum_by_class
    hist = RNG.integers(0, 1 << 40, (300, 4, 7))
    classes = RNG.integers(0, 5, 300)
    classes[classes == 3] = 4  # a class without members sums to zeros
    expected = np.stack([hist[classes == k].sum(axis=0) for k in range(6)])
    np.testing.assert_array_equal(_sum_by_class(hist, classes, 6), expected)


def _both_coded(symbols: np.ndarray) -> bytes:
    """The stream coding both the table and the adaptive code gives: the shorter, the table on a tie."""
    from onnxl2.codec.adaptive import encode_adaptive
    flat = symbols.reshape(-1)
    table = bytes([0]) + encode_symbols(flat)[varint_length(flat.size):]
    symmetric, stream = encode_adaptive(flat)
    adaptive = bytes([2 if symmetric else 1]) + stream
    return adaptive if len(adaptive) < len(table) else table


@pytest.mark.parametrize("size", [16, 100, 700, 3000, 20000, 60000])
@pytest.mark.parametrize("spread", [0.5, 3.0, 40.0])
def test_a_stream_sized_first_is_the_one_coding_both_would_keep(size, spread):
    symbols = np.rint(RNG.laplace(0, spread, size)).astype(np.int16)
    stream = encode_stream(symbols)
    assert stream == _both_coded(symbols)
    assert np.array_equal(decode_stream(stream, size), symbols)


def test_coded_streams_lie_within_the_spread_of_their_ideal_costs():
    from onnxl2.codec.adaptive import plan_adaptive
    from onnxl2.codec.entropy import plan_symbols
    for size in (16, 64, 500, 4000, 30000):
        for spread in (0.3, 2.0, 30.0):
            symbols = np.rint(RNG.laplace(0, spread, size)).astype(np.int64)
            for planned in (plan_symbols(symbols), plan_adaptive(symbols)[1]):
                over = 8 * len(planned.code()) - planned.ideal_bits
                assert -8 <= over <= CODED_SPREAD_BITS - 32, (size, spread, over)


def test_a_stream_that_cannot_beat_a_shorter_one_is_not_coded():
    from onnxl2.codec.adaptive import plan_adaptive
    from onnxl2.codec.entropy import plan_symbols
    symbols = np.rint(RNG.laplace(0, 5.0, 5000)).astype(np.int16)
    cheapest = min(plan_symbols(symbols).ideal_bits - 8 * varint_length(symbols.size),
                   plan_adaptive(symbols)[1].ideal_bits)
    coded = encode_stream(symbols)
    assert encode_stream(symbols, to_beat_bits=cheapest - CODED_SPREAD_BITS - 1) is None
    assert encode_stream(symbols, to_beat_bits=cheapest - CODED_SPREAD_BITS) == coded
