"""Every float weight is a candidate, whoever reads it: recurrent layers (LSTM, GRU, RNN, with
and without initial states, both directions), an LSTM cell written out with Slice and MatMul,
weights read by two different operators or by one that gives no axis, and such weights inside
If branches. Each model is compressed, decoded (the bitstream gives back the emitted ONNX byte
for byte), run by ONNX Runtime, and compared with the original model computing with the weights
the emitted one dequantizes."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import genmodels
from onnxl2 import compress, decompress
from onnxl2.axes import axis_cost, choose_axes, choose_axis
from onnxl2.hessian import layer_hessians
from onnxl2.model import discover_weights, iter_graphs


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def dequantized_weights(emitted: onnx.ModelProto) -> dict[tuple[str, str], np.ndarray]:
    """(graph path, weight name) -> the float values each graph of the emitted model computes
    from its integer initializers: the constant prefix of each graph, run on its own."""
    out = {}
    opsets = list(emitted.opset_import)
    for graph, path in iter_graphs(emitted.graph):
        known = {t.name for t in graph.initializer}
        nodes, made = [], []
        for node in graph.node:
            if node.input and all(i in known for i in node.input if i) and not any(
                    a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                nodes.append(node)
                known.update(node.output)
                made += [o for o in node.output if not o.endswith(("_dequantized", "_cast"))]
        if not nodes:
            continue
        sub = helper.make_graph(nodes, "prefix", [], [helper.make_tensor_value_info(m, onnx.TensorProto.FLOAT, None) for m in made],
                                list(graph.initializer))
        model = helper.make_model(sub, opset_imports=opsets)
        model.ir_version = emitted.ir_version
        for name, value in zip(made, _session(model).run(made, {})):
            out[(path, name)] = value
    return out


def with_weights(original: onnx.ModelProto, values: dict[tuple[str, str], np.ndarray]) -> onnx.ModelProto:
    """The original model with the given weights' values replaced."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    replaced = set()
    for graph, path in iter_graphs(model.graph):
        for tensor in graph.initializer:
            if (path, tensor.name) in values:
                tensor.CopyFrom(numpy_helper.from_array(values[(path, tensor.name)].astype(np.float32), tensor.name))
                replaced.add((path, tensor.name))
    assert replaced, "no weight was replaced"
    return model


def _check_compressed(model: onnx.ModelProto, feeds: dict, bits: int, expected: set[str]) -> dict:
    result = compress(model, feeds, bits=bits, quiet=True, devices=("cpu",))
    emitted = result.model
    assert decompress(result.bitstream).files[0][1] == result.files[0][1]  # round trip exact
    assert {w["name"] for w in result.report["weights"]} == expected
    values = dequantized_weights(emitted)
    reference = _session(with_weights(model, values)).run(None, feeds)
    ours = _session(emitted).run(None, feeds)
    for a, b in zip(reference, ours):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    original = _session(model).run(None, feeds)
    assert not all(np.array_equal(a, b) for a, b in zip(original, ours))  # the weights did change
    return result.report


@pytest.mark.parametrize("op,direction,initial", [
    ("LSTM", "forward", False), ("LSTM", "bidirectional", True), ("LSTM", "reverse", True),
    ("GRU", "forward", True), ("GRU", "bidirectional", False), ("RNN", "forward", False),
    ("RNN", "bidirectional", True)])
def test_recurrent_weights_are_compressed(op, direction, initial):
    model = genmodels.recurrent_model(op, direction, initial)
    weights = {w.name: w for w in discover_weights(model)}
    for name in ("W", "R"):
        assert weights[name].compressible and weights[name].axis_from == op
        assert (weights[name].channel_axis, weights[name].merged_channels) == (1, True)
    expected = {w.name for w in weights.values() if w.compressible}
    assert {"W", "R"} <= expected and ("B" in expected) == (weights["B"].numel >= 128)
    _check_compressed(model, genmodels.recurrent_inputs(), 4, expected)


def test_bidirectional_steps_per_direction():
    """A step per gate row of each direction: scaling one direction's weights scales its steps."""
    model = genmodels.recurrent_model("LSTM", "bidirectional")
    w = next(t for t in model.graph.initializer if t.name == "W")
    values = numpy_helper.to_array(w).copy()
    values[1] *= 8.0
    w.CopyFrom(numpy_helper.from_array(values, "W"))
    result = compress(model, genmodels.recurrent_inputs(), bits=4, quiet=True, devices=("cpu",))
    scale = next(numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name == "W_scale")
    assert scale.shape == (2 * 64,)
    np.testing.assert_allclose(np.median(scale[64:] / scale[:64]), 8.0, rtol=0.05)


def test_recurrent_hessians_from_input_and_hidden_states():
    """W's moments are X^T X of the sequence input; R's those of the state before each step:
    checked against a direct computation from the op's outputs, both directions, with h0."""
    model = genmodels.recurrent_model("LSTM", "bidirectional", initial=True)
    feeds = genmodels.recurrent_inputs(n=4)
    weights = discover_weights(model)
    studied = [w for w in weights if w.name in ("W", "R")]
    hessians = layer_hessians(model, studied, weights, feeds, batch=4)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([helper.make_tensor_value_info(n, 1, None) for n in ("Y", "h0")])
    y, h0 = _session(probe).run(["Y", "h0"], feeds)  # [T, 2, N, H], [2, N, H]
    x = feeds["x"].transpose(1, 0, 2).reshape(-1, 12).astype(np.float64)
    w_h = hessians["W"]
    assert w_h.layout == "rnn" and w_h.groups == 2
    np.testing.assert_allclose(w_h.matrix[0], x.T @ x, rtol=1e-4)
    np.testing.assert_allclose(w_h.matrix[1], x.T @ x, rtol=1e-4)
    forward = np.concatenate([h0[0][None], y[:-1, 0]]).reshape(-1, 16).astype(np.float64)
    backward = np.concatenate([y[1:, 1], h0[1][None]]).reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(hessians["R"].matrix[0], forward.T @ forward, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hessians["R"].matrix[1], backward.T @ backward, rtol=1e-4, atol=1e-5)


def test_recurrent_hessian_when_y_is_not_an_output():
    model = genmodels.recurrent_model("GRU", "forward", omit_y=True)
    weights = discover_weights(model)
    hessians = layer_hessians(model, [w for w in weights if w.name == "R"], weights,
                              genmodels.recurrent_inputs(), batch=8)
    assert hessians["R"].matrix.shape == (1, 16, 16) and np.all(np.isfinite(hessians["R"].matrix))
    assert hessians["R"].rows == 8 * 7


def test_compensated_recurrent_weights_keep_the_output_closer():
    model = genmodels.recurrent_model("LSTM", "bidirectional", initial=True)
    feeds = genmodels.recurrent_inputs(n=32)
    plain = compress(model, feeds, bits=3, quiet=True, devices=("cpu",))
    compensated = compress(model, feeds, bits=3, compensate=True, quiet=True, devices=("cpu",))
    reference = _session(model).run(None, feeds)[1]

    def error(result):
        return float(np.mean((_session(result.model).run(None, feeds)[1] - reference) ** 2))

    assert error(compensated) < error(plain)
    labels = {w["name"]: w["choice"] for w in compensated.report["weights"]}
    assert labels["W"].endswith("+gptq") and labels["R"].endswith("+gptq")


@pytest.mark.parametrize("make,reader,steps", [
    (genmodels.sliced_cell_model, "MatMul through Transpose through Slice", 3),  # a cell written out
    (genmodels.reordered_gates_model, "LSTM through Unsqueeze through Concat through Slice", 7)])  # PyTorch's
def test_lstm_weights_read_through_slices(make, reader, steps):
    model = make()
    weights = {w.name: w for w in discover_weights(model)}
    for name in ("weight_ih", "weight_hh"):
        assert weights[name].compressible and weights[name].channel_axis == 0  # the gate rows
        assert weights[name].axis_from == reader
    _check_compressed(model, genmodels.recurrent_inputs(steps=steps), 4, {"weight_ih", "weight_hh"})


def test_weight_read_by_two_operators_and_one_that_gives_no_axis():
    model = genmodels.two_readers_model()
    found = discover_weights(model)
    assert {w.name: w for w in found}["offset_w"].channel_axis is None  # the graph alone does not say
    choose_axes(model, found)
    weights = {w.name: w for w in found}
    assert weights["shared_w"].compressible and weights["shared_w"].axis_from == "MatMul"
    assert {c.op_type for c in weights["shared_w"].consumers} == {"MatMul", "Sigmoid"}
    offset = weights["offset_w"]
    assert offset.compressible and offset.axis_from == "size"
    values = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "offset_w"))
    assert offset.channel_axis == int(np.argmin([axis_cost(values, a) for a in (0, 1)]))
    feeds = {"x": np.random.default_rng(2).standard_normal((4, 24, 16)).astype(np.float32)}
    _check_compressed(model, feeds, 6, {"shared_w", "proj_w", "offset_w"})


def test_recurrent_weights_inside_if_branches():
    model = genmodels.recurrent_if_model()
    expected = {"then_W", "then_R", "else_W", "else_R"}
    for sign in (1.0, -1.0):  # both branches taken
        feeds = {"x": (np.abs(np.random.default_rng(5).standard_normal((4, 6, 12))) * sign).astype(np.float32)}
        _check_compressed(model, feeds, 4, expected)


def test_choose_axis_takes_the_axis_whose_steps_hold_the_values():
    """Rows that are integers -31..31 times a power of two of their own: steps along axis 0 hold
    them exactly at 6 bits, steps along axis 1 cannot; the transposed tensor the other way."""
    rng = np.random.default_rng(0)
    ints = rng.integers(-31, 32, size=(48, 64)).astype(np.float32)
    ints[:, 0] = 31  # every row reaches its largest level
    exact = ints * (2.0 ** rng.integers(-8, 3, size=(48, 1))).astype(np.float32)
    assert axis_cost(exact, 0) < axis_cost(exact, 1)
    assert choose_axis(exact) == 0 and choose_axis(np.ascontiguousarray(exact.T)) == 1


def test_choose_axis_skips_axes_with_too_few_elements_per_channel():
    rng = np.random.default_rng(0)
    ints = rng.integers(-31, 32, size=(4, 512))
    ints[0] = 31
    wide = (ints * 2.0 ** rng.integers(-8, 3, size=(1, 512))).astype(np.float32)
    # per-column steps would hold it exactly, but 4 elements a channel are too few
    assert axis_cost(wide, 1) < axis_cost(wide, 0) and choose_axis(wide) == 0
    assert choose_axis(np.full((8, 32), np.inf, np.float32)) == 0


def test_a_hostile_graph_of_readers_is_listed_without_a_traceback():
    """A ConvTranspose reading a squeezed rank-1 weight (its channel axis 1 does not exist),
    Squeezes down to rank 0, and an Unsqueeze whose axes do not fill their shape."""
    bad_axes = onnx.TensorProto()
    bad_axes.name, bad_axes.data_type = "ax", onnx.TensorProto.INT64
    bad_axes.dims.extend([3])
    bad_axes.raw_data = b"\x00" * 5
    nodes = [helper.make_node("Squeeze", ["w"], ["s"], name="sq"),
             helper.make_node("ConvTranspose", ["x", "s"], ["y"], name="ct"),
             helper.make_node("Unsqueeze", ["w", "ax"], ["u"], name="un"),
             helper.make_node("Squeeze", ["s"], ["s0"], name="sq0"),
             helper.make_node("Squeeze", ["s0"], ["s00"], name="sq00"),
             helper.make_node("Relu", ["s00"], ["r"], name="relu")]
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((1, 256), np.float32), "w"), bad_axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    weights = {w.name: w for w in discover_weights(model)}
    assert weights["w"].compressible and weights["w"].axis_from == "size"


def test_threshold_reader_through_a_transpose_keeps_the_weight_exact():
    model = genmodels.two_readers_model()
    model.graph.node.extend([helper.make_node("Transpose", ["proj_w"], ["proj_t"], perm=[1, 0], name="t"),
                             helper.make_node("Greater", ["proj_t", "proj_t"], ["cmp"], name="cmp")])
    weights = {w.name: w for w in discover_weights(model)}
    assert not weights["proj_w"].compressible and "Greater" in weights["proj_w"].reason


def test_inspect_says_which_reader_decides_the_axis(tmp_path):
    from click.testing import CliRunner

    from onnxl2.cli import main
    path = tmp_path / "m.onnx"
    onnx.save_model(genmodels.sliced_cell_model(), path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "MatMul through Transpose through Slice" in result.output
    bi = tmp_path / "bi.onnx"
    onnx.save_model(genmodels.recurrent_model("LSTM", "bidirectional"), bi)
    result = CliRunner().invoke(main, ["inspect", str(bi)])
    assert "0+1" in result.output and "LSTM" in result.output


def test_plan_records_the_axes_chosen_by_size_and_replays_an_edited_one():
    from onnxl2.errors import OnnxL2Error
    model = genmodels.two_readers_model()
    feeds = {"x": np.random.default_rng(2).standard_normal((4, 24, 16)).astype(np.float32)}
    first = compress(model, feeds, bits=6, quiet=True, devices=("cpu",))
    plan = first.report["plan"]
    found = discover_weights(model)
    choose_axes(model, found)
    assert plan["axes"] == {"offset_w": found[2].channel_axis}
    assert set(plan["axes"]) == {"offset_w"}  # the readers decide the others
    same = compress(model, feeds, plan=plan, quiet=True, devices=("cpu",))
    assert same.files == first.files
    edited = {**plan, "axes": {"offset_w": 1 - plan["axes"]["offset_w"]}}
    other = compress(model, feeds, plan=edited, quiet=True, devices=("cpu",))
    scale = next(numpy_helper.to_array(t) for t in other.model.graph.initializer if t.name == "offset_w_scale")
    assert scale.shape == ((40,) if edited["axes"]["offset_w"] == 1 else (24,))
    for bad in ({"offset_w": 2}, {"proj_w": 0}, {"offset_w": "0"}):
        with pytest.raises(OnnxL2Error, match="plan"):
            compress(model, feeds, plan={**plan, "axes": bad}, quiet=True, devices=("cpu",))


def test_a_threshold_reader_inside_a_body_after_a_pass_through_keeps_the_weight_exact():
    model = genmodels.two_readers_model()
    branch = helper.make_graph([helper.make_node("Greater", ["proj_t", "proj_t"], ["b"], name="cmp")], "b", [],
                               [helper.make_tensor_value_info("b", onnx.TensorProto.BOOL, None)])
    plain = helper.make_graph([helper.make_node("Constant", [], ["c"], name="c",
                                                value=numpy_helper.from_array(np.array(True)))], "c", [],
                              [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, None)])
    model.graph.node.extend([helper.make_node("Transpose", ["proj_w"], ["proj_t"], perm=[1, 0], name="t"),
                             helper.make_node("Constant", [], ["go"], name="go",
                                              value=numpy_helper.from_array(np.array(True))),
                             helper.make_node("If", ["go"], ["flag"], then_branch=branch, else_branch=plain,
                                              name="if")])
    weights = {w.name: w for w in discover_weights(model)}
    assert not weights["proj_w"].compressible and "Greater" in weights["proj_w"].reason


def test_recurrent_rows_of_a_batch_first_layer_match_the_time_first_ones():
    """``layout`` 1: X [B, T, I], Y [B, T, D, H] and the initial state [B, D, H]."""
    from onnxl2.layers.recurrent import RecurrentLayer, recurrent_rows
    from onnxl2.layers.base import Site
    from onnxl2.model import Weight
    rng = np.random.default_rng(0)
    steps, d, batch, hidden = 5, 2, 3, 4
    y = rng.standard_normal((steps, d, batch, hidden)).astype(np.float32)
    h0 = rng.standard_normal((d, batch, hidden)).astype(np.float32)
    rows = {}
    for layout in (0, 1):
        node = helper.make_node("LSTM", ["x", "W", "R"], ["Y"], hidden_size=hidden, direction="bidirectional",
                                layout=layout)
        site = Site(Weight("R", "main", "initializer", (d, 4 * hidden, hidden), 1, False), "rnn", "Y", node,
                    RecurrentLayer(), recurrent="hidden")
        rows[layout] = recurrent_rows(site, y.transpose(2, 0, 1, 3) if layout else y,
                                       h0.transpose(1, 0, 2) if layout else h0)
    np.testing.assert_array_equal(rows[1], rows[0])
    np.testing.assert_array_equal(rows[0][:batch, 0], h0[0])  # forward: the initial state first
    np.testing.assert_array_equal(rows[0][-batch:, 1], h0[1])  # reverse: last
