"""Small generated ONNX models that exercise every kind of weight the loader must find.

Weights are random but fixed by seed; opsets are chosen like exporters do (13 or older), so the
emitter's opset conversion is exercised too.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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
