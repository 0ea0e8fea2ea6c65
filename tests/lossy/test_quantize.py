"""Per-channel quantization at every integer width, the int16 ones (9..12 bits) included."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2.candidates import integer_payload_bytes, parse_label
from onnxl2.transforms.quantize import INTEGER_BITS, container_type, qmax_for, quantize_per_channel


def _weights(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((48, 16, 3, 3)) * rng.uniform(0.1, 2.0, (48, 1, 1, 1))).astype(np.float32)


@pytest.mark.parametrize("bits", [10, 12])
def test_fine_widths_round_every_weight_to_its_channel_grid(bits):
    """Above 8 bits no weight ends up more than a step or so away: the clip search may trade the
    largest weight's last step for a finer grid, but a step put on the logarithmic grid below
    max|w| / qmax with no fraction above 1 to try clipped it by up to 1.1% of max|w| (20 steps
    at 12 bits)."""
    w = _weights()
    q = quantize_per_channel(w, bits, 0)
    assert q.symbols.dtype == np.int16 and np.abs(q.symbols).max() <= qmax_for(bits)
    err = np.abs(q.reconstruct() - w).reshape(w.shape[0], -1).max(axis=1)
    assert np.all(err <= 1.5 * q.scales)
    assert np.median(err / q.scales) <= 0.5 + 1e-5
    assert container_type(bits) == "int16" and parse_label(f"int{bits}+gptq").bits == bits


def test_error_falls_and_size_grows_with_the_width():
    w = _weights(1)
    errors, sizes = [], []
    for bits in INTEGER_BITS:
        q = quantize_per_channel(w, bits, 0)
        errors.append(float(np.square(q.reconstruct() - w).sum()))
        sizes.append(integer_payload_bytes(q))
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert all(b > a for a, b in zip(sizes, sizes[1:]))
    # two more bits: a quarter of the step, a sixteenth of the error (within the clip search's play)
    assert errors[INTEGER_BITS.index(12)] < errors[INTEGER_BITS.index(10)] / 12


def test_widths_outside_the_integer_range_are_refused():
    for bits in (1, 13, 16):
        with pytest.raises(ValueError):
            qmax_for(bits)


def test_one_step_for_the_layer_is_the_best_single_step_and_codes_small_channels_short():
    """``one_step``: every channel gets the same step, the one of the clip grid with the least
    total error; channels of small range then take few levels, so the symbols code shorter than
    with a step per channel, at a larger error."""
    from onnxl2.transforms.quantize import _CLIP_GRID, round_scale
    w = _weights(3)
    per_channel, one = quantize_per_channel(w, 4, 0), quantize_per_channel(w, 4, 0, one_step=True)
    assert np.unique(one.scales).size == 1 and one.scales.size == w.shape[0]
    error = float(np.square(one.reconstruct() - w).sum())
    for fraction in _CLIP_GRID[4]:  # no single step of the grid does better
        step = round_scale(np.array([np.abs(w).max() * fraction / qmax_for(4)], np.float32), np.float32)[0]
        other = np.clip(np.rint(w / step), -7, 7) * step
        assert error <= float(np.square(other - w).sum()) * (1 + 1e-6)
    assert integer_payload_bytes(one) < integer_payload_bytes(per_channel)
    assert error > float(np.square(per_channel.reconstruct() - w).sum())


def test_one_step_candidates_have_their_own_label_and_replay_from_it():
    from onnxl2.candidates import candidate_for, make_candidates
    w = _weights(4).reshape(48, -1)
    made = {c.label: c for c in make_candidates("w", w, 0, (4, 6), step_kinds=(False, True))}
    assert set(made) == {"int4", "int4+onestep", "int6", "int6+onestep", "float32"}
    label = parse_label("int4+onestep")
    assert label.one_step and not parse_label("int4").one_step
    again = candidate_for("w", w, 0, label, None)
    assert again.label == "int4+onestep" and np.array_equal(again.quantized.symbols, made["int4+onestep"].quantized.symbols)
    assert made["int4+onestep"].coded_bytes < made["int4"].coded_bytes


@pytest.mark.parametrize("rate", [0.3, 2.0, 1e-05, 0.1234567, 3e-07])
def test_a_rate_label_reads_back_as_the_rate_it_was_made_with(rate):
    """A plan must replay the candidate it names: ``:g`` writes 1e-05 (which the label syntax
    must read) and 0.123457 for 0.1234567 (which would replay another rounding)."""
    from onnxl2.candidates import Candidate
    label = Candidate("w", 4, 0, np.zeros(1, np.float32), compensated=True, rate=rate).label
    assert parse_label(label).rate == rate and parse_label(label).compensated


@pytest.mark.parametrize("text", ["int4+r1e", "int4+r.", "int4+re5", "int4+r1e-", "int4+r1.2.3", "int4+r-1",
                                  "int4+r1e999", "int4+r99", "int4+gptq+r1e-400"])
def test_malformed_or_unreplayable_rates_are_not_labels(text):
    """Past the rates' bound, or so small it reads as no rate: a plan written back would differ."""
    with pytest.raises(ValueError):
        parse_label(text)


def test_a_float16_choice_for_a_weight_already_in_float16_keeps_it():
    """A pin or plan that says float16 for a float16 weight keeps the weight as it is (it made
    no candidate at all)."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxl2 import compress
    w = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float16)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [None, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [None, 16])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for choices in ({"bits": 4, "pins": {"w": 16}}, {"plan": {"choices": {"w": "float16"}}}):
        result = compress(model, quiet=True, devices=("cpu",), **choices)
        assert result.report["weights"][0]["choice"] == "float32"
        stored = next(t for t in result.model.graph.initializer if t.name == "w")
        assert np.array_equal(numpy_helper.to_array(stored), w)


@pytest.mark.parametrize("shape", [(3, 5), (1, 5), (700, 384), (683, 768), (2, 300_000), (3, 200_000), (1, 300_000)])
def test_clip_search_error_by_blocks_equals_the_whole_array_at_once(shape):
    """The clip search sizes its rounding error a block of rows at a time; the sums must be
    those of one pass over the whole weight (the choice of step depends on them)."""
    from onnxl2.transforms.quantize import _rounding_error
    rows = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    scale = (np.abs(rows).max(axis=1) / 7 * 0.8).astype(np.float32)
    u = rows * (np.float32(1.0) / scale)[:, None]
    q = np.clip(np.rint(u), -7, 7) - u
    whole = np.einsum("ij,ij->i", q, q).astype(np.float64) * np.square(scale.astype(np.float64))
    np.testing.assert_array_equal(_rounding_error(rows, scale, 7), whole)


def test_wide_levels_keep_the_width_s_step_and_give_weights_past_the_bound_their_own_levels():
    """The wide form rounds with the step the clip search picks for the width, but lets symbols
    run to the container's range: only the weights the clipped form clips change, and each of
    them moves nearer its value; at 4 and 8 bits, which fill their containers, nothing changes."""
    from onnxl2.transforms.quantize import container_qmax, has_wide_form, widened
    w = _weights(5)
    w[3, 0, 0, 0] = 3.0 * np.abs(w[3]).max()  # an outlier the 3-bit clip search clips
    clipped = quantize_per_channel(w, 3, 0)
    wide = widened(clipped, w)
    assert wide.wide and not clipped.wide and wide.qmax == container_qmax(3) == 7
    assert np.array_equal(wide.scales, clipped.scales) and wide.symbols.dtype == clipped.symbols.dtype
    inside = np.abs(clipped.symbols) < qmax_for(3)
    assert np.array_equal(wide.symbols[inside], clipped.symbols[inside])
    assert qmax_for(3) < np.abs(wide.symbols).max() <= 7
    err_wide, err_clipped = np.abs(wide.reconstruct() - w), np.abs(clipped.reconstruct() - w)
    assert np.all(err_wide <= err_clipped + 1e-6) and err_wide.sum() < err_clipped.sum()
    for bits in (4, 8):
        full = quantize_per_channel(w, bits, 0)
        assert widened(full, w) is full and not full.wide
    recurrent = np.random.default_rng(6).standard_normal((2, 12, 64)).astype(np.float32)
    recurrent[1, 4, 0] = 8.0  # a step per row of each direction (merged channels)
    rows = quantize_per_channel(recurrent, 3, 1, merged=True)
    steps = rows.scales.reshape(2, 12, 1)
    assert rows.scales.size == 24 and np.array_equal(widened(rows, recurrent).symbols,
                                                      np.clip(np.rint(recurrent / steps), -7, 7))
    assert widened(rows, recurrent).symbols[1, 4, 0] > qmax_for(3) == rows.symbols[1, 4, 0]
    assert [b for b in INTEGER_BITS if has_wide_form(b)] == [2, 3, 5, 6, 7, 9, 10, 11, 12]


def test_wide_candidates_have_their_own_label_and_replay_from_it():
    from onnxl2.candidates import candidate_for, level_forms, make_candidates
    w = _weights(6).reshape(48, -1)
    forms = level_forms((2, 3, 4, 6, 16, 32), True)  # float choices take no form
    assert forms == {2: (False, True), 3: (True,), 4: (False,), 6: (True,)}  # the narrowest keeps its clipped form
    assert level_forms((2, 3, 4), False) == {2: (False,), 3: (False,), 4: (False,)}
    made = {c.label: c for c in make_candidates("w", w, 0, (2, 3, 4, 6), forms=forms)}
    assert set(made) == {"int2", "int2+wide", "int3+wide", "int4", "int6+wide", "float32"}
    label = parse_label("int3+wide")
    assert label.wide and label.bits == 3 and not parse_label("int3").wide
    again = candidate_for("w", w, 0, label, None)
    assert again.label == "int3+wide" and np.array_equal(again.quantized.symbols, made["int3+wide"].quantized.symbols)
    assert made["int3+wide"].quantized.qmax == 7


@pytest.mark.parametrize("text", ["int4+wide", "int8+wide", "int3+wide+rank4", "int3+onestep+wide", "int3+wide+wide"])
def test_wide_labels_that_name_no_candidate_are_refused(text):
    """4 and 8 bits fill their containers (no wide form), factor pairs are clipped, and the
    parts come in one order."""
    with pytest.raises(ValueError):
        parse_label(text)


def test_each_form_of_levels_has_its_own_proxy_reference():
    """The proxy scales a candidate from the measured reference of its kind: a step per channel
    or one for the layer, clipped or wide (their errors fall on different weights)."""
    from onnxl2.candidates import level_forms, make_candidates
    from onnxl2.sensitivity import references
    w = _weights(7).reshape(48, -1)
    cands = make_candidates("w", w, 0, (2, 3, 4, 5, 8), step_kinds=(False, True),
                            forms=level_forms((2, 3, 4, 5, 8), True))
    refs = references(cands)
    assert {kind: ref.label for kind, ref in refs.items()} == {
        (False, False): "int4", (False, True): "int3+wide", (True, False): "int4+onestep",
        (True, True): "int3+wide+onestep"}
    assert set(references([c for c in cands if not c.wide])) == {(False, False), (True, False)}
