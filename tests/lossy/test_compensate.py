"""Layer Hessians from ONNX Runtime, rate-aware rounding and GPTQ error compensation."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import genmodels
from onnxl2 import compress
from onnxl2.codec.container import read_manifest
from onnxl2.codec.floatcodec import encode_array
from onnxl2.runtime import make_session
from onnxl2.hessian import layer_hessians
from onnxl2.layers.conv import conv_patches
from onnxl2.model import discover_weights
from onnxl2.transforms.compensate import (BIAS_PRECISION_BITS, bias_quanta, channel_spread, code_lengths,
                                          column_order, compensated_round, output_error, rate_aware_round,
                                          round_bias)
from onnxl2.transforms.quantize import quantize_per_channel


def _conv_model(c_in: int, c_out: int, kernel: tuple[int, int], group: int, seed: int, **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c_out, c_in // group) + kernel) * 0.3).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=group, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _correlated(rng: np.random.Generator, shape: tuple[int, ...], channels_axis: int = 1) -> np.ndarray:
    """Inputs whose channels are correlated, as real activations are (so compensation has work)."""
    x = rng.standard_normal(shape)
    mix = rng.standard_normal((shape[channels_axis], shape[channels_axis])) / np.sqrt(shape[channels_axis])
    x = np.moveaxis(np.moveaxis(x, channels_axis, -1) @ (np.eye(shape[channels_axis]) + 2 * mix), -1, channels_axis)
    return x.astype(np.float32)


@pytest.mark.parametrize("group,attrs", [(1, {"pads": [1, 1, 1, 1]}),
                                         (4, {"strides": [2, 1], "dilations": [1, 2], "pads": [0, 2, 1, 0]}),
                                         (8, {"auto_pad": "SAME_UPPER", "strides": [2, 2]})])
def test_conv_patches_times_the_kernel_is_the_conv_output(group, attrs):
    model = _conv_model(8, 16, (3, 3), group, seed=group, **attrs)
    node = model.graph.node[0]
    w = numpy_helper.to_array(model.graph.initializer[0])
    x = np.random.default_rng(1).standard_normal((2, 8, 9, 11)).astype(np.float32)
    y = make_session(model).run(None, {"x": x})[0]  # [N, O, Ho, Wo]
    patches = conv_patches(x, node, (3, 3), group)  # [rows, G, K]
    rows = w.reshape(group, 16 // group, -1)
    ours = np.einsum("mgk,grk->mgr", patches, rows).reshape(len(patches), 16)
    assert np.allclose(ours, y.transpose(0, 2, 3, 1).reshape(-1, 16), atol=1e-4)


def test_rate_aware_rounding_never_costs_more_than_nearest():
    rng = np.random.default_rng(0)
    t = rng.laplace(scale=2.0, size=20000)
    qmax = 7
    nearest = np.clip(np.rint(t), -qmax, qmax)
    lengths = code_lengths(nearest, qmax)
    for rate in (0.0, 0.1, 0.5, 2.0):
        q = rate_aware_round(t, qmax, rate, lengths)
        ours = (t - q) ** 2 + rate * lengths[(q + qmax).astype(int)]
        plain = (t - nearest) ** 2 + rate * lengths[(nearest + qmax).astype(int)]
        assert (ours <= plain + 1e-12).all()
        if rate >= 0.5:  # a real price moves symbols to cheaper codes: fewer bits in all
            assert lengths[(q + qmax).astype(int)].sum() < lengths[(nearest + qmax).astype(int)].sum()


def _hessian_of(model: onnx.ModelProto, x: np.ndarray):
    every = discover_weights(model)
    weights = [w for w in every if w.compressible]
    return weights, layer_hessians(model, weights, every, {"x": x}, batch=16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compensation_lowers_the_layer_output_error_on_random_layers(seed):
    rng = np.random.default_rng(seed)
    cases = [(genmodels.big_matmul_model(48, 40, seed=seed), _correlated(rng, (64, 48))),
             (_conv_model(8, 12, (3, 3), 1, seed, pads=[1, 1, 1, 1]), _correlated(rng, (6, 8, 10, 10))),
             (_conv_model(16, 16, (5, 5), 16, seed), _correlated(rng, (6, 16, 10, 10)))]  # depthwise
    for model, x in cases:
        weights, hessians = _hessian_of(model, x)
        w = weights[0]
        assert w.key in hessians
        array = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == w.name))
        for bits in (3, 4):
            plain = quantize_per_channel(array, bits, w.channel_axis)
            (comp,) = compensated_round(array, w.channel_axis, [plain], hessians[w.key])
            h = hessians[w.key]
            assert output_error(array, comp.reconstruct(), h) < output_error(array, plain.reconstruct(), h)
            assert np.abs(comp.symbols).max() <= plain.qmax


def test_hessian_matches_the_inputs_it_was_built_from():
    model = genmodels.big_matmul_model(16, 8, seed=3)
    x = np.random.default_rng(4).standard_normal((40, 16)).astype(np.float32)
    weights, hessians = _hessian_of(model, x)
    h = hessians[weights[0].key]
    assert h.layout == "kn" and h.rows == 40
    assert np.allclose(h.matrix[0], x.astype(np.float64).T @ x, rtol=1e-5, atol=1e-4)


def test_automatic_mode_compensates_and_replays_its_plan(tmp_path):
    calib = genmodels.mixed_inputs(32, seed=5)
    first = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), taylor=False,
                     out_dir=tmp_path, rates=(0.0, 0.5), compensate=True, max_loss_increase="5%")
    alloc = first.report["allocation"]
    assert alloc["compensated_weights"] >= 1
    labels = {r["label"] for rows in alloc["candidates"].values() for r in rows}
    assert any(label.endswith("+gptq+r0.5") for label in labels)
    again = compress(genmodels.mixed_model(), calib, plan=tmp_path / "plan.json", quiet=True, devices=("cpu",))
    assert again.files == first.files
    assert any("+gptq" in label for label in first.report["plan"]["choices"].values())
    with pytest.raises(Exception, match="calibration data"):
        compress(genmodels.mixed_model(), plan=tmp_path / "plan.json", quiet=True)


def test_sampled_conv_patches_are_rows_of_the_full_patch_matrix():
    model = _conv_model(8, 16, (3, 3), 2, seed=3, pads=[1, 1, 1, 1], strides=[2, 1])
    x = np.random.default_rng(5).standard_normal((3, 8, 9, 7)).astype(np.float32)
    full = conv_patches(x, model.graph.node[0], (3, 3), 2)
    some = conv_patches(x, model.graph.node[0], (3, 3), 2, max_rows=20, rng=np.random.default_rng(1))
    assert some.shape == (20,) + full.shape[1:]
    flat = full.reshape(len(full), -1)
    assert all((np.abs(flat - row.ravel()).max(axis=1) == 0).any() for row in some)


def test_uniform_bits_with_compensation_fit_the_calibration_outputs_better():
    rng = np.random.default_rng(7)
    model = genmodels.big_matmul_model(64, 64, layers=3, seed=7)
    inputs = _correlated(rng, (384, 64))  # one distribution: calibrate on 256, judge on the rest
    calib, held_out = {"x": inputs[:256]}, {"x": inputs[256:]}
    reference = make_session(model).run(None, held_out)[0]
    errors = {}
    for compensate in (False, True):
        result = compress(model, calib, bits=3, compensate=compensate, quiet=True, devices=("cpu",))
        got = make_session(bytes(result.files[0][1])).run(None, held_out)[0]
        errors[compensate] = float(np.square(got - reference).mean())
        labels = set(result.report["plan"]["choices"].values())
        assert labels == ({"int3+gptq"} if compensate else {"int3"})
    assert errors[True] < errors[False]  # on inputs it never saw
    with pytest.raises(Exception, match="calibration data"):
        compress(model, bits=3, compensate=True, quiet=True)


def test_hessians_are_kept_beside_the_sweep_cache(tmp_path):
    calib = genmodels.mixed_inputs(24, seed=9)
    first = compress(genmodels.mixed_model(), calib, target_ratio=3, quiet=True, devices=("cpu",), taylor=False,
                     sweep_cache=tmp_path)
    (kept,) = tmp_path.glob("hessians-*.npz")
    from onnxl2.layers.moments import load_hessians
    loaded = load_hessians(kept)
    assert loaded and all(h.matrix.shape[-1] == h.matrix.shape[-2] and h.rows > 0 for h in loaded.values())
    again = compress(genmodels.mixed_model(), calib, target_ratio=3, quiet=True, devices=("cpu",), taylor=False,
                     sweep_cache=tmp_path)
    assert again.files == first.files and again.report["allocation"]["sweep_cached"]


def test_candidates_are_kept_beside_the_sweep_cache_and_replay_the_same_plan(tmp_path, monkeypatch):
    """A second run with another target reads the candidates (compensated, bias-corrected,
    sized) instead of making them, and gets the same files as a run that made them."""
    from onnxl2.pipeline import search
    from onnxl2.candidates import load_candidates

    model = _biased_model(7)
    x = _biased_inputs(32, 8)
    compress(model, {"x": x}, target_ratio=5, quiet=True, devices=("cpu",), taylor=False, sweep_cache=tmp_path)
    (kept,) = tmp_path.glob("candidates-*.npz")
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in ("cw", "mw", "gw")}
    loaded = load_candidates(kept, originals)
    assert loaded and any(c.bias_values is not None for cands in loaded.values() for c in cands)
    fresh = compress(model, {"x": x}, target_ratio=6, quiet=True, devices=("cpu",), taylor=False)

    def unexpected(*args, **kwargs):
        raise AssertionError("candidates were made again")

    monkeypatch.setattr(search, "make_candidates", unexpected)
    cached = compress(model, {"x": x}, target_ratio=6, quiet=True, devices=("cpu",), taylor=False,
                      sweep_cache=tmp_path)
    assert cached.files == fresh.files


def test_one_sweep_for_all_bit_widths_equals_one_sweep_each():
    rng = np.random.default_rng(11)
    model = _conv_model(8, 12, (3, 3), 2, seed=11, pads=[1, 1, 1, 1])
    weights, hessians = _hessian_of(model, _correlated(rng, (6, 8, 10, 10)))
    w = weights[0]
    array = numpy_helper.to_array(model.graph.initializer[0])
    bases = [quantize_per_channel(array, b, w.channel_axis) for b in (2, 4, 8, 12)]
    together = compensated_round(array, w.channel_axis, bases, hessians[w.key])
    for base, joint in zip(bases, together):
        (alone,) = compensated_round(array, w.channel_axis, [base], hessians[w.key])
        assert np.array_equal(alone.symbols, joint.symbols) and joint.bits == base.bits


def test_a_compensated_plan_replays_exactly_when_rows_are_sampled(tmp_path):
    """Conv inputs with more rows than a batch keeps: the sampled rows must not depend on which
    other weights are studied, or a replayed plan (which studies only its +gptq weights) would
    round differently."""
    rng = np.random.default_rng(4)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    calib = {"x": _correlated(np.random.default_rng(6), (64, 8, 16, 16))}
    first = compress(model, calib, bits=3, keep=("w1",), compensate=True, quiet=True, devices=("cpu",),
                     out_dir=tmp_path)
    assert first.report["plan"]["choices"] == {"w1": "float32", "w2": "int3+gptq"}
    again = compress(model, calib, plan=tmp_path / "plan.json", quiet=True, devices=("cpu",))
    assert again.files == first.files


def test_a_price_on_bits_makes_compensated_symbols_cheaper_to_code():
    from onnxl2.codec.entropy import coded_size_bits
    rng = np.random.default_rng(12)
    model = genmodels.big_matmul_model(64, 48, seed=12)
    weights, hessians = _hessian_of(model, _correlated(rng, (256, 64)))
    w = weights[0]
    array = numpy_helper.to_array(model.graph.initializer[0])
    base = quantize_per_channel(array, 4, w.channel_axis)
    (nearest,) = compensated_round(array, w.channel_axis, [base], hessians[w.key], rate=0.0)
    (priced,) = compensated_round(array, w.channel_axis, [base], hessians[w.key], rate=1.0)
    assert coded_size_bits(priced.symbols) < coded_size_bits(nearest.symbols)
    assert (priced.symbols == 0).mean() > (nearest.symbols == 0).mean()  # rounding towards zero first


def _biased_model(seed: int = 0) -> onnx.ModelProto:
    """Conv (with bias) -> Relu -> Flatten -> MatMul + Add -> Relu -> Gemm (with C): every
    way a layer carries a bias, fed with inputs whose means are far from zero."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r1"], name="relu1"),
             helper.make_node("Flatten", ["r1"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "mw"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "mb"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r2"], name="relu2"),
             helper.make_node("Gemm", ["r2", "gw", "gb"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "biased", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [init("cw", 8, 4, 3, 3), init("cb", 8), init("mw", 512, 32, scale=0.05),
                               init("mb", 32), init("gw", 10, 32), init("gb", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _biased_inputs(n: int, seed: int) -> np.ndarray:
    return (np.abs(_correlated(np.random.default_rng(seed), (n, 4, 8, 8))) + 0.5).astype(np.float32)


def test_every_biased_layer_finds_its_bias_and_input_mean():
    model = _biased_model()
    x = _biased_inputs(32, 1)
    weights, hessians = _hessian_of(model, x)
    assert {k: h.bias for k, h in hessians.items()} == {"cw": "cb", "mw": "mb", "gw": "gb"}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    np.testing.assert_allclose(hessians["cw"].mean[0], conv_patches(x, conv, (3, 3), 1)[:, 0].mean(axis=0),
                               rtol=1e-5)  # every position fits the row budget: the exact patch mean
    flat_mean = hessians["gw"].mean[0]
    assert flat_mean.shape == (32,) and (flat_mean >= 0).all()  # after a Relu


def test_bias_correction_lowers_each_layers_output_error():
    """Moving the mean output shift into the bias can only lower the output error on the inputs
    it was measured on (it is the least-squares constant); each layer checked through ORT."""
    from onnxl2.candidates import make_candidates

    model = _biased_model(3)
    x = _biased_inputs(64, 4)
    weights, hessians = _hessian_of(model, x)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in ("c", "m"))

    def outputs(replace: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trial = onnx.ModelProto()
        trial.CopyFrom(probe)
        for t in trial.graph.initializer:
            if t.name in replace:
                t.CopyFrom(numpy_helper.from_array(replace[t.name].astype(np.float32), t.name))
        session = make_session(trial)
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))

    def layer_output(key: str, got: dict[str, np.ndarray], bias: np.ndarray) -> np.ndarray:
        """The layer's output with its bias (the MatMul's Add is read as its bias)."""
        return got["m"] + bias if key == "mw" else got[{"cw": "c", "gw": "y"}[key]]

    reference = outputs({})
    for w in weights:
        h = hessians[w.key]
        bias = arrays[h.bias]
        plain, = make_candidates(w.key, arrays[w.key], w.channel_axis, (3,), always_float32=False, hessian=h)
        moved, = make_candidates(w.key, arrays[w.key], w.channel_axis, (3,), always_float32=False, hessian=h,
                                 bias=bias)
        assert moved.bias_key == h.bias and plain.bias_key is None
        want = layer_output(w.key, reference, bias)
        err_plain = np.square(layer_output(w.key, outputs({w.key: plain.values()}), bias) - want).sum()
        got = outputs({w.key: moved.values(), h.bias: moved.bias_values})
        err_moved = np.square(layer_output(w.key, got, moved.bias_values) - want).sum()
        assert err_moved < err_plain


def test_automatic_mode_measures_what_it_emits_with_moved_biases(tmp_path):
    """The probe feeds the corrected biases, so the emitted model's calibration loss is the
    one the report measured, and the emitted biases are no longer the original ones."""
    from onnxl2.losses import make_loss

    model = _biased_model(5)
    x = _biased_inputs(48, 6)
    original = make_session(model).run(None, {"x": x})[0]
    result = compress(model, {"x": x}, target_ratio=6.0, quiet=True, devices=("cpu",), out_dir=tmp_path)
    alloc = result.report["allocation"]
    assert alloc["compensated_weights"] == 3
    emitted = onnx.load(str(tmp_path / "model.l2.onnx"))
    moved = {t.name: numpy_helper.to_array(t) for t in emitted.graph.initializer if t.name in ("cb", "mb", "gb")}
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    int_choices = [k for k, v in result.report["plan"]["choices"].items() if v.startswith("int")]
    assert int_choices
    bias_of = {"cw": "cb", "mw": "mb", "gw": "gb"}
    for key in int_choices:
        assert not np.array_equal(moved[bias_of[key]], originals[bias_of[key]])
    loss = make_loss("auto", "y", original, None)
    after = make_session(emitted).run(None, {"x": x})[0]
    change = float(np.mean(loss.per_sample(after) - loss.per_sample(original)))
    assert change == pytest.approx(alloc["measured_loss_change"], rel=1e-4, abs=1e-7)


def test_columns_are_swept_by_decreasing_input_energy_whatever_their_stored_order():
    """Permuting a layer's inputs (and the weight's columns with them) permutes the result:
    the sweep order comes from the inputs' energy, not from where a column happens to sit."""
    rng = np.random.default_rng(7)
    x = _correlated(rng, (64, 48)) * np.linspace(0.2, 3.0, 48, dtype=np.float32)  # unequal energies
    model = genmodels.big_matmul_model(48, 40, seed=7)
    weights, hessians = _hessian_of(model, x)
    w, h = weights[0], hessians[weights[0].key]
    order = column_order(h)[0]
    energy = np.diag(h.matrix[0])
    assert (np.diff(energy[order]) <= 1e-9 * energy.max()).all()

    perm = rng.permutation(48)
    permuted = genmodels.big_matmul_model(48, 40, seed=7)
    init = next(i for i in permuted.graph.initializer if i.name == w.name)
    array = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(array[perm], w.name))
    p_weights, p_hessians = _hessian_of(permuted, x[:, perm])
    base = quantize_per_channel(array, 3, w.channel_axis)
    (ours,) = compensated_round(array, w.channel_axis, [base], h)
    (theirs,) = compensated_round(array[perm], w.channel_axis, [base], p_hessians[p_weights[0].key])
    assert np.array_equal(ours.symbols[perm], theirs.symbols)


def test_moved_biases_keep_a_small_share_of_their_channel_spread_and_code_smaller():
    rng = np.random.default_rng(11)
    model = _conv_model(8, 64, (3, 3), 1, 11, pads=[1, 1, 1, 1])
    weights, hessians = _hessian_of(model, _correlated(rng, (6, 8, 10, 10)))
    w, h = weights[0], hessians[weights[0].key]
    array = numpy_helper.to_array(model.graph.initializer[0])
    centred = h.centred()
    bias = (rng.standard_normal(64) * np.logspace(-3, 2, 64)).astype(np.float32)
    bias[0] = 0.0
    rows = array.reshape(64, -1).astype(np.float64)
    spread = np.sqrt(np.einsum("rk,kl,rl->r", rows, centred.matrix[0], rows) / centred.rows)
    np.testing.assert_allclose(channel_spread(array, centred), spread, rtol=1e-9)
    quanta = bias_quanta(spread, bias)
    rounded = round_bias(bias, quanta)
    allowed = np.maximum(spread, np.abs(bias) / 16) * 2.0 ** -(BIAS_PRECISION_BITS + 1)
    assert rounded.dtype == np.float32
    assert (np.abs(rounded.astype(np.float64) - bias) <= allowed + 1e-12).all()
    assert (quanta > 0).all() and np.allclose(np.log2(quanta), np.round(np.log2(quanta)))
    assert len(encode_array(rounded)) < 0.75 * len(encode_array(bias))
    # next to a layer error of 8% of the spread the grid may coarsen to a quarter of that, at most
    # 2^-5 of the spread (3%): the bias error then adds at most a sixteenth to the error's energy
    coarse = bias_quanta(spread, bias, 0.08 * spread)
    assert (coarse >= quanta).all() and (coarse > quanta).any()
    assert (coarse <= np.maximum(0.02 * spread, np.abs(bias) / 16 * 2.0 ** -BIAS_PRECISION_BITS)).all()
    assert len(encode_array(round_bias(bias, coarse))) < len(encode_array(rounded))


@pytest.mark.parametrize("shape, found", [([1, 8, 1, 1], True), ([8, 1, 1], True), ([1, -1, 1, 1], True),
                                          ([1, 1, 8, 1], False), ([8], False), ([1, 8, 1, 1, 1], False)])
def test_a_conv_bias_added_after_a_reshape_is_found_and_corrected(tmp_path, shape, found):
    """Conv without input 2, then Add of the 1-D bias reshaped onto the channel axis (as
    PaddlePaddle exports it): the layer's bias, moved by bias correction and emitted in place."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Constant", [], ["b"], name="bias_const",
                              value=numpy_helper.from_array((rng.standard_normal(8) * 0.3).astype(np.float32), "b")),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["b", "s"], ["br"], name="reshape"),
             helper.make_node("Add", ["c", "br"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "reshaped_bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32),
                                                       "w"),
                               numpy_helper.from_array(np.array(shape, np.int64), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = _biased_inputs(32, 3)
    if shape == [8] or shape == [1, 8, 1, 1, 1]:  # not a valid model: only the search is asked
        weights, every = [w for w in discover_weights(model) if w.compressible], discover_weights(model)
        assert layer_hessians(model, weights, every, {"x": x}, batch=16)["w"].bias is None
        return
    _, hessians = _hessian_of(model, x)
    assert hessians["w"].bias == ("b" if found else None)
    if not found:
        return
    compress(model, {"x": x}, bits=3, compensate=True, quiet=True, devices=("cpu",), out_dir=tmp_path)
    emitted = onnx.load(str(tmp_path / "model.l2.onnx"))
    moved = next(numpy_helper.to_array(n.attribute[0].t) for n in emitted.graph.node if n.output[0] == "b")
    assert not np.array_equal(moved, numpy_helper.to_array(nodes[0].attribute[0].t))
    original = make_session(model).run(None, {"x": x})[0]
    after = make_session(emitted).run(None, {"x": x})[0]
    # the channel means stay, up to the bias grid: half a step of at most 2^-5 of the spread
    shift = np.abs(after.mean(axis=(0, 2, 3)) - original.mean(axis=(0, 2, 3)))
    assert (shift <= 2.0 ** -6 * original.std(axis=(0, 2, 3)) + 1e-4 * np.abs(original).max()).all()


def test_report_prices_moved_biases_and_steps_as_the_bitstream_stores_them(tmp_path):
    from onnxl2.codec.container import _read_sections
    from onnxl2.codec.varint import varint_length
    from onnxl2.codec.tensor_spans import tensor_spans

    model = _biased_model(5)
    result = compress(model, {"x": _biased_inputs(48, 6)}, bits=4, compensate=True, quiet=True, devices=("cpu",))
    rows = {r["key"]: r for r in result.report["weights"]}
    assert rows["mw"]["steps"] == 32 and rows["cw"]["steps"] == 8 and rows["gw"]["steps"] == 10
    spans = read_manifest(result.bitstream)["files"][0]["spans"]
    name_at = {s.offset: s.name for s in tensor_spans(result.files[0][1])}
    sections = dict(zip((name_at[s[0]] for s in spans), _read_sections(result.bitstream)[2:]))
    assert rows["mw"]["moved_bias"] == {"values": 32, "bytes": len(sections["mb"]) + varint_length(len(sections["mb"]))}
    assert rows["cw"]["moved_bias"] == {"values": 8, "bytes": 32}  # under 64 bytes: stored as it is
    sizes = result.report["sizes"]
    assert sizes["moved_biases"]["values"] == 50
    assert sizes["integer_weights"]["steps"] == 50
    assert sizes["integer_weights"]["bits_per_step"] == pytest.approx(
        sizes["integer_weights"]["scale_bits_per_weight"] * sizes["integer_weights"]["params"] / 50)
