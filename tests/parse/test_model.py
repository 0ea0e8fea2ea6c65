"""Weight discovery: consumers, channel axes, subgraphs, Constant nodes, tied and external weights."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import genmodels
from onnxl2 import inspect
from onnxl2.errors import ModelError
from onnxl2.model import discover_weights, load_model, weight_array


def _by_key(weights):
    return {w.key: w for w in weights}


def test_mixed_model_roles_and_axes():
    weights = _by_key(discover_weights(genmodels.mixed_model()))
    assert (weights["conv_w"].role, weights["conv_w"].channel_axis) == ("conv", 0)
    assert (weights["fc_w"].role, weights["fc_w"].channel_axis) == ("gemm", 0)  # transB=1
    assert (weights["emb_w"].role, weights["emb_w"].channel_axis) == ("embedding", 0)
    assert weights["const_w"].source == "constant" and weights["const_w"].compressible
    assert not weights["conv_b"].compressible and "rank" in weights["conv_b"].reason
    tied = weights["tied_w"]
    assert tied.compressible and tied.channel_axis == 1
    assert [c.node for c in tied.consumers] == ["mm1", "mm2"]
    assert sum(1 for w in weights.values() if w.name == "tied_w") == 1


def test_gemm_without_transpose_uses_columns():
    model = genmodels.mixed_model()
    for node in model.graph.node:
        if node.op_type == "Gemm":
            node.attribute[0].i = 0
    weights = _by_key(discover_weights(model))
    assert weights["fc_w"].channel_axis == 1


def test_subgraph_weights_and_outer_scope_consumers():
    weights = _by_key(discover_weights(genmodels.subgraph_model()))
    assert "main/if.then_branch::then_w" in weights
    assert weights["main/if.else_branch::else_w"].compressible
    outer = weights["outer_w"]
    assert {c.graph for c in outer.consumers} == {"main/if.then_branch", "main/if.else_branch"}
    assert outer.compressible


def test_weight_also_read_by_add_keeps_the_matmul_axis():
    model = genmodels.mixed_model()
    model.graph.node.append(helper.make_node("Add", ["y", "tied_w"], ["z"], name="extra"))
    weights = _by_key(discover_weights(model))
    assert weights["tied_w"].compressible and weights["tied_w"].channel_axis == 1
    assert weights["tied_w"].axis_from == "MatMul"


def test_weight_read_by_a_threshold_stays_exact():
    model = genmodels.mixed_model()
    model.graph.node.append(helper.make_node("Floor", ["tied_w"], ["z"], name="extra"))
    weights = _by_key(discover_weights(model))
    assert not weights["tied_w"].compressible
    assert "Floor" in weights["tied_w"].reason and "threshold" in weights["tied_w"].reason


def test_external_data_model(tmp_path):
    model = genmodels.mixed_model()
    expected = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "fc_w"))
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    assert _by_key(inspect(path).weights)["fc_w"].external
    loaded = load_model(path)
    assert loaded.external_files == [tmp_path / "ext.onnx.data"]
    weights = _by_key(discover_weights(loaded.proto))
    np.testing.assert_array_equal(weight_array(loaded.proto, weights["fc_w"]), expected)


def test_inspect_model_over_2gb_with_external_data(tmp_path):
    """A 2.4 GB weight held in a sparse external file: inspect reads only the graph."""
    rows, cols = 24_000, 25_000
    nbytes = rows * cols * 4
    tensor = TensorProto()
    tensor.name, tensor.data_type = "huge_w", TensorProto.FLOAT
    tensor.dims.extend([rows, cols])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "huge.bin"), ("offset", "0"), ("length", str(nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "huge_w"], ["y"], name="mm")], "huge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cols])],
                              [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "huge.onnx"
    path.write_bytes(model.SerializeToString())
    with open(tmp_path / "huge.bin", "wb") as handle:
        handle.truncate(nbytes)  # sparse: no disk space used
    result = inspect(path)
    assert result.file_bytes > 2**31
    (w,) = result.weights
    assert w.nbytes == nbytes and w.compressible and w.external and w.channel_axis == 1


def test_missing_and_non_onnx_files(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        load_model(junk)
