"""Adaptive (table-free) order-0 coder: exact round trips, and cheaper than a stored table on
the short streams it is for."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.codec.adaptive import MAX_SPAN, block_bounds, decode_adaptive, encode_adaptive
from onnxl2.codec.classed import decode_stream, encode_stream
from onnxl2.codec.entropy import CodecError, encode_symbols

RNG = np.random.default_rng(3)

CASES = {
    "int8_gauss": np.clip(np.rint(RNG.normal(0, 30, 2200)), -127, 127).astype(np.int8),
    "int4_laplace": np.clip(np.rint(RNG.laplace(0, 1.5, 900)), -7, 7).astype(np.int8),
    "skewed": RNG.integers(0, 5, 3000) ** 2,
    "long": np.clip(np.rint(RNG.normal(0, 3, 70_000)), -7, 7).astype(np.int8),
    "trailing_minimum": np.concatenate((RNG.integers(-3, 4, 100), np.full(5000, -3))),
    "one": np.array([5]),
    "two": np.array([5, -5]),
    "constant": np.full(300, 7),
    "empty": np.zeros(0, np.int64),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip(name, symmetric):
    symbols = CASES[name]
    used, coded = encode_adaptive(symbols, symmetric)
    assert used == symmetric
    back = decode_adaptive(coded, symbols.size, symmetric)
    assert np.array_equal(back, symbols.astype(np.int64))


@pytest.mark.parametrize("name", ["int8_gauss", "int4_laplace"])
def test_short_streams_beat_a_stored_table(name):
    assert len(encode_adaptive(CASES[name])[1]) < len(encode_symbols(CASES[name]))


def test_pooling_signs_is_chosen_where_it_pays():
    for name, pooled in (("int4_laplace", True), ("skewed", False)):
        symmetric, coded = encode_adaptive(CASES[name])
        assert symmetric == pooled
        assert len(coded) <= len(encode_adaptive(CASES[name], not pooled)[1])


def test_blocks_double_then_stay():
    bounds = block_bounds(20_000)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == 20_000
    assert list(sizes[:4]) == [16, 32, 64, 128] and sizes.max() == 4096


def test_stream_picks_the_shorter_coder_and_round_trips():
    for symbols in CASES.values():
        coded = encode_stream(symbols)
        assert len(coded) <= len(encode_symbols(symbols)) + 1
        assert np.array_equal(decode_stream(coded, symbols.size), symbols.astype(np.int64))


def test_too_wide_range_is_refused_and_damage_raises():
    with pytest.raises(ValueError):
        encode_adaptive(np.array([0, MAX_SPAN + 1]))
    symbols = CASES["int8_gauss"]
    _, coded = encode_adaptive(symbols, True)
    for damaged in (coded[:-3], coded[:5], b"\x00\xff\xff\x7f" + coded[4:]):
        with pytest.raises(CodecError):
            decode_adaptive(damaged, symbols.size, True)
    with pytest.raises(CodecError):
        decode_adaptive(coded, 7, True)
