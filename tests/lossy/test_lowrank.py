"""Low-rank factorisation: the emitted pair of layers, whitened truncation, and the knapsack's use of it."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxl2 import compress, decompress
from onnxl2.emit import emit_quantized
from onnxl2.errors import OnnxL2Error
from onnxl2.runtime import make_session
from onnxl2.hessian import layer_hessians
from onnxl2.model import discover_weights
from onnxl2.transforms.compensate import output_error
from onnxl2.transforms.lowrank import candidate_ranks, factorise, whitened_factors


def _model(nodes, data, inits, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * v.ndim)
                                           for n, v in data.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _correlated(rng, shape, axis):
    x = rng.standard_normal(shape)
    k = shape[axis]
    mix = np.eye(k) + 2 * rng.standard_normal((k, k)) / np.sqrt(k)
    return np.moveaxis(np.moveaxis(x, axis, -1) @ mix, -1, axis).astype(np.float32)


def _case(kind: str, seed: int = 0):
    """(model, calibration feeds, weight name) for one supported layer kind."""
    rng = np.random.default_rng(seed)
    if kind == "matmul_batched":  # [B, T, K] @ [K, N] + bias
        w = rng.standard_normal((24, 32)).astype(np.float32) * 0.3
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b"], ["y"])]
        inits = {"w": w, "b": rng.standard_normal(32).astype(np.float32)}
        data = {"x": _correlated(rng, (16, 5, 24), 2)}
    elif kind in ("gemm", "gemm_transA_transB"):
        trans = kind != "gemm"
        w = rng.standard_normal((32, 24) if trans else (24, 32)).astype(np.float32) * 0.3
        nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", alpha=0.7, beta=1.0,
                                  transA=int(trans), transB=int(trans))]
        inits = {"w": w, "c": rng.standard_normal(32).astype(np.float32)}
        data = {"x": _correlated(rng, (24, 40) if trans else (40, 24), 0 if trans else 1)}
    elif kind == "conv":
        w = rng.standard_normal((24, 8, 3, 3)).astype(np.float32) * 0.3
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", strides=[2, 1],
                                  pads=[1, 0, 1, 2], dilations=[1, 2])]
        inits = {"w": w, "b": rng.standard_normal(24).astype(np.float32)}
        data = {"x": _correlated(rng, (6, 8, 11, 13), 1)}
    else:
        raise ValueError(kind)
    return _model(nodes, data, inits), data, "w"


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return make_session(model.SerializeToString(), "cpu").run(["y"], feeds)[0]


def _with_weight(model: onnx.ModelProto, name: str, values: np.ndarray) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name == name:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))
    return out


@pytest.mark.parametrize("kind", ["matmul_batched", "gemm", "gemm_transA_transB", "conv"])
@pytest.mark.parametrize("bits", [4, 8])
def test_factorised_layers_compute_the_reconstructed_weight(kind, bits):
    model, data, name = _case(kind)
    weights = discover_weights(model)
    hessians = layer_hessians(model, weights, weights, data, 64)
    (pair,) = factorise(numpy_helper.to_array(model.graph.initializer[0]), hessians[name], 5, (bits,))
    emitted, stored_as = emit_quantized(model, weights, {}, factorised={name: pair})
    assert len(stored_as[name]) == 4 and not any(i.name == name for i in emitted.graph.initializer)
    assert [o.name for o in emitted.graph.output] == ["y"] and [i.name for i in emitted.graph.input] == list(data)
    got = _run(emitted, data)
    want = _run(_with_weight(model, name, pair.reconstruct()), data)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    original = _run(model, data)
    assert np.abs(got - original).max() > 1e-3  # rank 5 of a random layer: the function did change


@pytest.mark.parametrize("kind", ["matmul_batched", "gemm_transA_transB", "conv"])
def test_whitened_truncation_beats_plain_svd_on_the_layer_output(kind):
    model, data, name = _case(kind, seed=3)
    weights = discover_weights(model)
    h = layer_hessians(model, weights, weights, data, 64)[name]
    w = numpy_helper.to_array(model.graph.initializer[0])
    from onnxl2.layers.layouts import from_rows, to_rows
    p, q = whitened_factors(w, h, 6)
    whitened = from_rows((p @ q)[None], w.shape, h.layout)
    u, s, vt = np.linalg.svd(to_rows(w, h.layout, 1)[0], full_matrices=False)
    plain = from_rows(((u[:, :6] * s[:6]) @ vt[:6])[None], w.shape, h.layout)
    assert output_error(w, whitened, h) < 0.9 * output_error(w, plain, h)


def test_candidate_ranks_span_the_size_range_and_skip_what_cannot_be_cut():
    ranks = candidate_ranks((384, 1536), "kn", 1)
    assert ranks and all(0.15 < r * (384 + 1536) / (384 * 1536) < 0.9 for r in ranks)
    assert all(r % 8 == 0 for r in ranks)
    assert candidate_ranks((64, 8, 3, 3), "conv", 4) == []  # grouped
    assert candidate_ranks((8, 1024), "kn", 1) == []  # too narrow to cut


def _two_layer_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> MatMul(low) -> Relu -> MatMul(full) -> y: one weight of rank 4 (plus a trace of
    noise), one random and full-rank."""
    rng = np.random.default_rng(seed)
    low = (rng.standard_normal((96, 4)) @ rng.standard_normal((4, 96)) / 4
           + 1e-4 * rng.standard_normal((96, 96))).astype(np.float32)
    full = (rng.standard_normal((96, 96)) / 10).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "low"], ["h"], name="first"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "full"], ["y"], name="second")]
    data = {"x": _correlated(rng, (128, 96), 1)}
    return _model(nodes, data, {"low": low, "full": full}), data


def test_knapsack_takes_a_low_rank_candidate_only_where_it_is_strictly_better(tmp_path):
    model, data = _two_layer_model()
    result = compress(model, data, target_ratio=8, bits_choices=(4, 6, 8), out_dir=tmp_path / "out",
                      devices=("cpu",), quiet=True, sweep="full", taylor=False)
    choices = result.report["plan"]["choices"]
    assert "+rank" in choices["low"], choices  # the same error at a fraction of the bytes
    assert "+rank" not in choices["full"], choices  # any cut would drop a quarter of its output energy
    rows = {r["key"]: r for r in result.report["weights"]}
    assert rows["low"]["rank"] and rows["low"]["stored_params"] < rows["low"]["params"]
    assert rows["low"]["macs_after"] < rows["low"]["macs_before"]
    assert rows["full"]["macs_after"] == rows["full"]["macs_before"]
    # the bitstream decodes to the emitted model, and that model replays from its plan
    decoded = decompress(next((tmp_path / "out").glob("*.l2b")))
    assert decoded.files[0][1] == result.files[0][1]
    replay = compress(model, data, plan=result.report["plan"], out_dir=tmp_path / "replay",
                      devices=("cpu",), quiet=True)
    assert replay.files == result.files


def test_no_lowrank_and_pinned_ranks(tmp_path):
    model, data = _two_layer_model()
    off = compress(model, data, target_ratio=6, bits_choices=(4, 6, 8), lowrank=False, devices=("cpu",),
                   quiet=True, sweep="full", taylor=False)
    assert not any("+rank" in c for c in off.report["plan"]["choices"].values())
    pinned = compress(model, data, bits=8, ranks={"full": 16}, devices=("cpu",), quiet=True)
    assert pinned.report["plan"]["choices"] == {"low": "int8", "full": "int8+rank16"}
    with pytest.raises(OnnxL2Error, match="rank 200 for full"):
        compress(model, data, bits=8, ranks={"full": 200}, devices=("cpu",), quiet=True)
    narrow = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], data,
                    {"w": np.ones((96, 2), np.float32)})
    with pytest.raises(OnnxL2Error, match="between 1 and 1"):  # two outputs: nothing to cut
        compress(narrow, data, bits=8, ranks={"w": 16}, devices=("cpu",), quiet=True)
    with pytest.raises(OnnxL2Error, match="no integer bit-width"):
        compress(model, data, target_ratio=4, ranks={"full": 16}, keep=("full",), devices=("cpu",), quiet=True)


def test_cli_rank_pins_and_bad_rank(tmp_path):
    from click.testing import CliRunner
    from onnxl2.cli import main
    model, data = _two_layer_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", **data)
    runner = CliRunner()
    ok = runner.invoke(main, ["compress", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npz"), "--bits", "6",
                              "--rank", "low=8", "-o", str(tmp_path / "out"), "--devices", "cpu", "--quiet"])
    assert ok.exit_code == 0, ok.output
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["choices"]["low"] == "int6+rank8"
    bad = runner.invoke(main, ["compress", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npz"), "--bits", "6",
                               "--rank", "low", "-o", str(tmp_path / "bad"), "--devices", "cpu", "--quiet"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "--rank takes PATTERN=R" in bad.output
    assert not (tmp_path / "bad").exists()


def test_pairs_an_unfactorised_candidate_dominates_are_not_made():
    """A full-rank layer on white inputs: a cut drops a large share of the output, so the pairs
    that would be as large as 2- or 3-bit rounding of the whole layer (and worse) are not made;
    those smaller than anything unfactorised stay. An exactly low-rank layer keeps all of its
    pairs."""
    from onnxl2.candidates import lowrank_ranks, make_candidates
    rng = np.random.default_rng(5)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    full = rng.standard_normal((64, 64)).astype(np.float32)
    low = (rng.standard_normal((64, 4)) @ rng.standard_normal((4, 64))).astype(np.float32)
    made = {}
    for name, w in (("full", full), ("low", low)):
        model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], {"x": x}, {"w": w})
        weights = discover_weights(model)
        h = layer_hessians(model, weights, weights, {"x": x}, 512)["w"]
        assert lowrank_ranks(w, h) == (8, 16)
        cands = make_candidates("w", w, 1, (2, 3, 4, 6, 8), hessian=h, ranks=lowrank_ranks(w, h))
        made[name] = sorted(c.label for c in cands if c.factors is not None)
    assert made["full"] == ["int4+gptq+rank16", "int4+gptq+rank8", "int6+gptq+rank8"], made
    assert len(made["low"]) == 6, made  # two ranks at 4, 6 and 8 bits


@pytest.mark.parametrize("ranks", [{}, {"w": 8}])
def test_float16_weights_quantize_and_factorise_into_a_model_the_runtime_loads(ranks):
    """float16 steps need DequantizeLinear-19: an opset-13 model is raised to it."""
    rng = np.random.default_rng(2)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [None, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                              [numpy_helper.from_array(rng.standard_normal((32, 48)).astype(np.float16), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data = {"x": rng.standard_normal((64, 32)).astype(np.float16)}
    result = compress(model, data, bits=8, ranks=ranks, devices=("cpu",), quiet=True)
    assert result.report["plan"]["choices"]["w"] == ("int8+rank8" if ranks else "int8")
    emitted = onnx.load_from_string(result.files[0][1])
    assert max(o.version for o in emitted.opset_import if o.domain in ("", "ai.onnx")) >= 19
    assert _run(emitted, data).dtype == np.float16


def test_a_constant_node_weight_is_factorised_like_an_initializer():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((32, 48)).astype(np.float32)
    data = {"x": rng.standard_normal((64, 32)).astype(np.float32)}
    as_init = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], data, {"w": w})
    as_node = _model([helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "v")),
                      helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], data, {})
    outs = [_run(onnx.load_from_string(compress(m, data, bits=8, ranks={"w": 8}, devices=("cpu",),
                                                quiet=True).files[0][1]), data) for m in (as_init, as_node)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["matmul_batched", "gemm", "conv"])
def test_output_positions_per_sample_come_from_the_input_pass(kind):
    """MACs per sample = positions x parameters: the positions the Hessian pass counts are the
    output's elements per sample over its channels."""
    model, data, name = _case(kind)
    weights = discover_weights(model)
    h = layer_hessians(model, weights, weights, data, 4)[name]  # several batches
    out = _run(model, data)
    samples = len(next(iter(data.values())))
    channels = 32 if kind != "conv" else 24
    assert h.positions * samples == pytest.approx(out.size / channels)


@pytest.mark.parametrize("name", ["low", "encoder.layer.0.attention.self.query.weight"])
def test_a_pair_costs_in_the_bitstream_what_its_candidate_says(name):
    """Factors through the coder plus LOWRANK_GRAPH_BYTES for the extra nodes: the bitstream
    moves by the candidate's bytes, whatever the layer's name."""
    model, data = _two_layer_model()
    for tensor in model.graph.initializer:
        if tensor.name == "low":
            tensor.name = name
    model.graph.node[0].input[1] = name

    def run(label: str):
        result = compress(model, data, plan={"choices": {name: label, "full": "int8"}}, devices=("cpu",), quiet=True)
        return len(result.bitstream), next(r["candidate_bytes"] for r in result.report["weights"] if r["key"] == name)

    (plain_bytes, plain_cand), (pair_bytes, pair_cand) = run("int8"), run("int8+rank12")
    assert abs((plain_bytes - pair_bytes) - (plain_cand - pair_cand)) <= 16
