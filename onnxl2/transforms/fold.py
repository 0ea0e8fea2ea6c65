"""Fold inference-mode BatchNormalization into the Conv before it.

``BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
ONNX Runtime does the same fusion when it loads a model, so the function is unchanged up to float
rounding; for compression it matters because the four BN vectors of every channel would otherwise
be stored losslessly next to a quantized kernel, and ``s`` is absorbed by the per-channel step.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper

from ..model import constant_tensor, node_attr, remove_constants, tensor_array


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        tensor = constant_tensor(node)
        if tensor is not None and node.output:
            values[node.output[0]] = tensor
    return values


def fold_batchnorm(proto: ModelProto) -> tuple[ModelProto, int]:
    """A copy of the model with every foldable Conv -> BatchNormalization pair fused.

    A model without BatchNormalization is returned as it is, not copied.
    """
    if not any(n.op_type == "BatchNormalization" for n in proto.graph.node):
        return proto, 0
    out = ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    constants = _constants(graph)
    uses = Counter(name for node in graph.node for name in node.input)
    for sub_graph_node in graph.node:  # names read inside subgraphs count as uses too
        for attr in sub_graph_node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                uses.update(name for n in sub.node for name in n.input)
    outputs = {o.name for o in graph.output}
    producer = {name: node for node in graph.node for name in node.output}
    folded, dead, fused = 0, set(), []
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or uses[conv.output[0]] != 1 or conv.output[0] in outputs:
            continue
        params = [constants.get(name) for name in list(bn.input[1:5]) + [conv.input[1]]]
        bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        if any(p is None for p in params) or uses[conv.input[1]] != 1 or (
                bias_name and (bias_name not in constants or uses[bias_name] != 1)):
            continue
        if params[-1].data_type != onnx.TensorProto.FLOAT:
            continue
        gamma, beta, mean, var, weight = (tensor_array(p).astype(np.float64) for p in params)
        s = gamma / np.sqrt(var + float(node_attr(bn, "epsilon", 1e-5)))
        bias = tensor_array(constants[bias_name]).astype(np.float64) if bias_name else 0.0
        new_w = (weight * s.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
        new_b = ((bias - mean) * s + beta).astype(np.float32)
        w_name, b_name = conv.input[1], f"{bn.output[0]}_folded_bias"
        dead.update(name for name in bn.input[1:5] if uses[name] == 1)
        dead.add(w_name)
        if bias_name:
            dead.add(bias_name)
        fused += [numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)]
        x = conv.input[0]
        del conv.input[:]
        conv.input.extend([x, w_name, b_name])
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded += 1
    _drop(graph, dead)
    graph.initializer.extend(fused)  # the kernel keeps its name; its old tensor was dropped
    return out, folded


def _drop(graph: onnx.GraphProto, names: set[str]) -> None:
    remove_constants(graph, names)
    keep_inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(keep_inputs)
