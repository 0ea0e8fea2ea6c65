"""BatchNormalization folding keeps the function and removes the norm's vectors."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxl2.transforms.fold import fold_batchnorm


def _conv_bn(with_bias: bool, extra_use: bool = False):
    rng = np.random.default_rng(0)
    arr = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    inits = [arr("w", 6, 3, 3, 3), arr("gamma", 6), arr("beta", 6), arr("mean", 6),
             numpy_helper.from_array((rng.random(6) + 0.5).astype(np.float32), "var")]
    conv_inputs = ["x", "w"] + (["b"] if with_bias else [])
    if with_bias:
        inits.append(arr("b", 6))
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["c"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_fold_keeps_outputs():
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    for with_bias in (False, True):
        model = _conv_bn(with_bias)
        folded, count = fold_batchnorm(model)
        assert count == 1
        assert [n.op_type for n in folded.graph.node] == ["Conv"]
        assert {t.name for t in folded.graph.initializer} == {"w", "y_folded_bias"}
        np.testing.assert_allclose(_run(folded, x)[0], _run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_conv_output_used_elsewhere_is_left_alone():
    folded, count = fold_batchnorm(_conv_bn(True, extra_use=True))
    assert count == 0 and len(folded.graph.node) == 3
