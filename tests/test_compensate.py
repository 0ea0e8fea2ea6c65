"""Layer Hessians from ONNX Runtime, rate-aware rounding and GPTQ error compensation."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import genmodels
from onnxl2 import compress
from onnxl2.evaluate import make_session
from onnxl2.hessian import conv_patches, layer_hessians
from onnxl2.model import discover_weights
from onnxl2.transforms.compensate import code_lengths, compensated_round, output_error, rate_aware_round
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
    weights = [w for w in discover_weights(model) if w.compressible]
    return weights, layer_hessians(model, weights, {"x": x}, batch=16)


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
                     output_dir=tmp_path, rates=(0.0, 0.5), compensate=True, max_loss_increase="5%")
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
    from onnxl2.hessian import load_hessians
    loaded = load_hessians(kept)
    assert loaded and all(h.matrix.shape[-1] == h.matrix.shape[-2] and h.rows > 0 for h in loaded.values())
    again = compress(genmodels.mixed_model(), calib, target_ratio=3, quiet=True, devices=("cpu",), taylor=False,
                     sweep_cache=tmp_path)
    assert again.files == first.files and again.report["allocation"]["sweep_cached"]


def test_one_sweep_for_all_bit_widths_equals_one_sweep_each():
    rng = np.random.default_rng(11)
    model = _conv_model(8, 12, (3, 3), 2, seed=11, pads=[1, 1, 1, 1])
    weights, hessians = _hessian_of(model, _correlated(rng, (6, 8, 10, 10)))
    w = weights[0]
    array = numpy_helper.to_array(model.graph.initializer[0])
    bases = [quantize_per_channel(array, b, w.channel_axis) for b in (2, 4, 8)]
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
                     output_dir=tmp_path)
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
