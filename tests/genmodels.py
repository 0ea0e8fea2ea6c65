"""Small generated ONNX models that exercise every kind of weight the loader must find.

Weights are random but fixed by seed; opsets are chosen like exporters do (13 or older), so the
emitter's opset conversion is exercised too.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxl2.readings import greedy_ctc as _greedy_ctc


def _init(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(graph: onnx.GraphProto, opset: int = 13) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="onnxl2-tests")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model)
    return model


def mixed_model(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Conv, Gemm (transB), MatMul (tied weight used twice), Gather embedding, a Constant weight."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1, name="fc"),
        helper.make_node("MatMul", ["g", "tied_w"], ["m1"], name="mm1"),
        helper.make_node("MatMul", ["m1", "tied_w"], ["m2"], name="mm2"),
        helper.make_node("Gather", ["emb_w", "ids"], ["e"], name="embed"),
        helper.make_node("ReduceMean", ["e"], ["em"], axes=[1], keepdims=0, name="pool"),
        helper.make_node("Constant", [], ["const_w"], name="const",
                         value=_init(rng, "const_value", 16, 16)),
        helper.make_node("MatMul", ["em", "const_w"], ["ep"], name="mm3"),
        helper.make_node("Add", ["m2", "ep"], ["y"], name="add"),
    ]
    inits = [_init(rng, "conv_w", 8, 3, 3, 3), _init(rng, "conv_b", 8),
             _init(rng, "fc_w", 16, 8 * 8 * 8, scale=0.05), _init(rng, "fc_b", 16),
             _init(rng, "tied_w", 16, 16, scale=0.3), _init(rng, "emb_w", 50, 16)]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return _model(graph, opset)


def mixed_inputs(n: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
            "ids": rng.integers(0, 50, size=(n, 5)).astype(np.int64)}


def subgraph_model(seed: int = 0) -> onnx.ModelProto:
    """An If whose branches hold their own MatMul weights and also read an outer-scope weight."""
    rng = np.random.default_rng(seed)

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["h", f"{tag}_w"], [f"{tag}_a"], name=f"{tag}_mm"),
             helper.make_node("MatMul", [f"{tag}_a", "outer_w"], [f"{tag}_y"], name=f"{tag}_mm2")],
            tag, [], [helper.make_tensor_value_info(f"{tag}_y", TensorProto.FLOAT, ["N", 32])],
            [_init(rng, f"{tag}_w", 32, 32)])

    nodes = [
        helper.make_node("MatMul", ["x", "in_w"], ["h"], name="in_mm"),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"),
                         else_branch=branch("else"), name="if"),
    ]
    graph = helper.make_graph(
        nodes, "with_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [_init(rng, "in_w", 32, 32), _init(rng, "outer_w", 32, 32),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    return _model(graph, 13)


def big_matmul_model(k: int, n: int, layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """A stack of MatMul layers: for size and speed checks."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        inits.append(_init(rng, f"w{i}", k, n, scale=1 / np.sqrt(k)))
        prev = f"h{i}"
        if i + 1 < layers:
            nodes.append(helper.make_node("Tanh", [prev], [f"t{i}"], name=f"tanh{i}"))
            prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(nodes, "stack",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])], inits)
    return _model(graph, 13)


def loop_model(seed: int = 0) -> onnx.ModelProto:
    """A Loop whose body multiplies the carried state by a weight held in the body."""
    rng = np.random.default_rng(seed)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         helper.make_node("MatMul", ["v_in", "body_w"], ["mm"], name="body_mm"),
         helper.make_node("Tanh", ["mm"], ["v_out"], name="body_tanh")],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 24])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 24])],
        [_init(rng, "body_w", 24, 24, scale=0.3)])
    nodes = [helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body, name="loop")]
    graph = helper.make_graph(
        nodes, "with_loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 24])],
        [numpy_helper.from_array(np.array(3, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "go")])
    return _model(graph, 13)


def recurrent_model(op: str = "LSTM", direction: str = "forward", initial: bool = False, hidden: int = 16,
                    inputs: int = 12, seed: int = 0, omit_y: bool = False) -> onnx.ModelProto:
    """A batch-first sequence [N, T, I] through one LSTM, GRU or RNN (as exporters write it:
    Transpose to [T, N, I], weights W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H]), optionally an
    initial state computed from the input, and a MatMul head on the last state. ``omit_y``
    leaves the op's Y output unnamed (only Y_h used)."""
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    d = 2 if direction == "bidirectional" else 1
    nodes = [helper.make_node("Transpose", ["x"], ["xs"], perm=[1, 0, 2], name="to_time_major")]
    inits = [_init(rng, "W", d, gates * hidden, inputs, scale=0.3), _init(rng, "R", d, gates * hidden, hidden,
                                                                         scale=0.3),
             _init(rng, "B", d, 2 * gates * hidden, scale=0.1),
             _init(rng, "head_w", d * hidden, 5, scale=0.3)]
    rnn_inputs = ["xs", "W", "R", "B"]
    if initial:
        nodes += [helper.make_node("ReduceMean", ["x"], ["x_mean"], axes=[1], keepdims=0, name="x_mean"),
                  helper.make_node("MatMul", ["x_mean", "h0_w"], ["h0_pre"], name="h0_mm"),
                  helper.make_node("Tanh", ["h0_pre"], ["h0_t"], name="h0_tanh"),
                  helper.make_node("Unsqueeze", ["h0_t", "zero_axis"], ["h0_one"], name="h0_unsq"),
                  helper.make_node("Concat", ["h0_one"] * d, ["h0"], axis=0, name="h0_dirs")]
        inits += [_init(rng, "h0_w", inputs, hidden, scale=0.5), numpy_helper.from_array(np.array([0], np.int64),
                                                                                        "zero_axis")]
        rnn_inputs += ["", "h0"]
    attrs = {"hidden_size": hidden, "direction": direction}
    outputs = ["" if omit_y else "Y", "Y_h"]
    nodes += [helper.make_node(op, rnn_inputs, outputs, name="rnn", **attrs),
              helper.make_node("Transpose", ["Y_h"], ["h_last"], perm=[1, 0, 2], name="batch_major"),
              helper.make_node("Reshape", ["h_last", "flat_shape"], ["h_flat"], name="flatten"),
              helper.make_node("MatMul", ["h_flat", "head_w"], ["y"], name="head")]
    inits.append(numpy_helper.from_array(np.array([0, d * hidden], np.int64), "flat_shape"))
    graph_outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])]
    if not omit_y:
        nodes.append(helper.make_node("Transpose", ["Y"], ["seq"], perm=[2, 0, 1, 3], name="seq_batch_major"))
        graph_outputs.append(helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["N", "T", d, hidden]))
    graph = helper.make_graph(nodes, f"{op.lower()}_{direction}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", inputs])],
                              graph_outputs, inits)
    return _model(graph, 13)


def recurrent_inputs(n: int = 8, steps: int = 7, inputs: int = 12, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((n, steps, inputs)).astype(np.float32)}


def sliced_cell_model(hidden: int = 16, inputs: int = 12, steps: int = 3, seed: int = 0) -> onnx.ModelProto:
    """An LSTM cell written out as exporters of streaming models do: ``weight_ih`` [4H, I] and
    ``weight_hh`` [4H, H] cut into gates by Slice, each gate a MatMul with the Transposed slice,
    unrolled over a few steps of a [N, steps, I] input."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "weight_ih", 4 * hidden, inputs, scale=0.3), _init(rng, "weight_hh", 4 * hidden, hidden,
                                                                           scale=0.3),
             _init(rng, "head_w", hidden, 5, scale=0.3), numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    nodes = []
    for g in range(4):
        inits += [numpy_helper.from_array(np.array([g * hidden], np.int64), f"start{g}"),
                  numpy_helper.from_array(np.array([(g + 1) * hidden], np.int64), f"end{g}")]
        for name in ("weight_ih", "weight_hh"):
            nodes += [helper.make_node("Slice", [name, f"start{g}", f"end{g}", "ax0"], [f"{name}_{g}"],
                                       name=f"slice_{name}_{g}"),
                      helper.make_node("Transpose", [f"{name}_{g}"], [f"{name}_{g}_t"], perm=[1, 0],
                                       name=f"t_{name}_{g}")]
    h, c = None, None
    for t in range(steps):
        inits += [numpy_helper.from_array(np.array([t], np.int64), f"t{t}"),
                  numpy_helper.from_array(np.array([t + 1], np.int64), f"t{t + 1}e")]
        nodes += [helper.make_node("Slice", ["x", f"t{t}", f"t{t + 1}e", "ax1"], [f"x{t}_3"], name=f"take{t}"),
                  helper.make_node("Squeeze", [f"x{t}_3", "ax1"], [f"x{t}"], name=f"squeeze{t}")]
        acts = []
        for g, act in enumerate(("Sigmoid", "Sigmoid", "Tanh", "Sigmoid")):
            nodes.append(helper.make_node("MatMul", [f"x{t}", f"weight_ih_{g}_t"], [f"a{t}_{g}"], name=f"ih{t}_{g}"))
            pre = f"a{t}_{g}"
            if h is not None:
                nodes += [helper.make_node("MatMul", [h, f"weight_hh_{g}_t"], [f"b{t}_{g}"], name=f"hh{t}_{g}"),
                          helper.make_node("Add", [pre, f"b{t}_{g}"], [f"p{t}_{g}"], name=f"sum{t}_{g}")]
                pre = f"p{t}_{g}"
            nodes.append(helper.make_node(act, [pre], [f"g{t}_{g}"], name=f"act{t}_{g}"))
            acts.append(f"g{t}_{g}")
        i_g, f_g, c_g, o_g = acts
        nodes.append(helper.make_node("Mul", [i_g, c_g], [f"ic{t}"], name=f"ic{t}"))
        if c is not None:
            nodes += [helper.make_node("Mul", [f_g, c], [f"fc{t}"], name=f"fc{t}"),
                      helper.make_node("Add", [f"fc{t}", f"ic{t}"], [f"c{t}"], name=f"c{t}")]
        else:
            nodes.append(helper.make_node("Identity", [f"ic{t}"], [f"c{t}"], name=f"c{t}"))
        c = f"c{t}"
        nodes += [helper.make_node("Tanh", [c], [f"tc{t}"], name=f"tc{t}"),
                  helper.make_node("Mul", [o_g, f"tc{t}"], [f"h{t}"], name=f"h{t}")]
        h = f"h{t}"
    nodes.append(helper.make_node("MatMul", [h, "head_w"], ["y"], name="head"))
    graph = helper.make_graph(nodes, "sliced_cell",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return _model(graph, 13)


def two_readers_model(seed: int = 0) -> onnx.ModelProto:
    """One weight [16, 24] read by a MatMul and, as a gate, by a Mul of a different shape, and a
    weight [24, 40] read only by an Add (no reader gives its axis)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "shared_w"], ["m"], name="mm"),
             helper.make_node("Sigmoid", ["shared_w"], ["gate_pre"], name="gate_sig"),
             helper.make_node("ReduceMean", ["gate_pre"], ["gate"], axes=[0], keepdims=1, name="gate_mean"),
             helper.make_node("Mul", ["m", "gate"], ["mg"], name="gated"),
             helper.make_node("MatMul", ["mg", "proj_w"], ["p"], name="proj"),
             helper.make_node("Add", ["p", "offset_w"], ["y"], name="offset")]
    inits = [_init(rng, "shared_w", 16, 24, scale=0.3), _init(rng, "proj_w", 24, 40, scale=0.3),
             _init(rng, "offset_w", 24, 40, scale=0.05)]
    graph = helper.make_graph(nodes, "two_readers",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 24, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 24, 40])], inits)
    return _model(graph, 13)


def recurrent_if_model(seed: int = 0) -> onnx.ModelProto:
    """An If whose two branches each run their own GRU / LSTM on the outer input."""
    rng = np.random.default_rng(seed)

    def branch(tag: str, op: str) -> onnx.GraphProto:
        gates = 4 if op == "LSTM" else 3
        return helper.make_graph(
            [helper.make_node(op, ["xs", f"{tag}_W", f"{tag}_R"], ["", f"{tag}_h"], hidden_size=16,
                              name=f"{tag}_rnn"),
             helper.make_node("Squeeze", [f"{tag}_h", "zero"], [f"{tag}_out"], name=f"{tag}_squeeze")],
            tag, [], [helper.make_tensor_value_info(f"{tag}_out", TensorProto.FLOAT, ["N", 16])],
            [_init(rng, f"{tag}_W", 1, gates * 16, 12, scale=0.3), _init(rng, f"{tag}_R", 1, gates * 16, 16, scale=0.3),
             numpy_helper.from_array(np.array([0], np.int64), "zero")])

    nodes = [helper.make_node("Transpose", ["x"], ["xs"], perm=[1, 0, 2], name="to_time_major"),
             helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="total"),
             helper.make_node("Greater", ["total", "zero_f"], ["cond"], name="cond"),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "LSTM"),
                              else_branch=branch("else", "GRU"), name="if")]
    graph = helper.make_graph(nodes, "recurrent_if",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
                              [numpy_helper.from_array(np.array(0.0, np.float32), "zero_f")])
    return _model(graph, 13)


def reordered_gates_model(hidden: int = 16, inputs: int = 12, seed: int = 0) -> onnx.ModelProto:
    """An LSTM as PyTorch exports it: ``weight_ih`` [4H, I] and ``weight_hh`` [4H, H] cut into
    gate blocks by Slice, put back in ONNX's gate order by Concat and given the direction axis by
    Unsqueeze (axes as a constant input) before the LSTM reads them."""
    rng = np.random.default_rng(seed)
    h = hidden
    inits = [_init(rng, "weight_ih", 4 * h, inputs, scale=0.3), _init(rng, "weight_hh", 4 * h, h, scale=0.3),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Transpose", ["x"], ["xs"], perm=[1, 0, 2], name="to_time_major")]
    for name in ("weight_ih", "weight_hh"):
        blocks = []
        for k, (start, stop) in enumerate(((0, h), (3 * h, 4 * h), (h, 2 * h), (2 * h, 3 * h))):  # i, o, f, c
            inits += [numpy_helper.from_array(np.array([start], np.int64), f"{name}_s{k}"),
                      numpy_helper.from_array(np.array([stop], np.int64), f"{name}_e{k}")]
            nodes.append(helper.make_node("Slice", [name, f"{name}_s{k}", f"{name}_e{k}", "axis0"],
                                          [f"{name}_g{k}"], name=f"{name}_slice{k}"))
            blocks.append(f"{name}_g{k}")
        nodes += [helper.make_node("Concat", blocks, [f"{name}_iofc"], axis=0, name=f"{name}_concat"),
                  helper.make_node("Unsqueeze", [f"{name}_iofc", "axis0"], [f"{name}_3d"], name=f"{name}_unsq")]
    nodes += [helper.make_node("LSTM", ["xs", "weight_ih_3d", "weight_hh_3d"], ["", "h_n"], hidden_size=h,
                               name="lstm"),
              helper.make_node("Squeeze", ["h_n", "axis0"], ["y"], name="last")]
    graph = helper.make_graph(nodes, "reordered_gates",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", h])], inits)
    return _model(graph, 13)


def sequence_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]:
    """x [N, T, 32] -> MatMul -> Softmax over 8 classes: a per-step classifier read by CTC."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((32, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 10, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.standard_normal((24, 10, 32)).astype(np.float32)
    labels = np.full((24, 4), -1)
    for i, seq in enumerate(_greedy_ctc(np.einsum("ntk,kc->ntc", x, w))):
        seq = [c for c in seq if c != 0][:4]
        labels[i, :len(seq)] = seq
    return model, {"x": x}, labels
