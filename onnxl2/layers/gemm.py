"""Gemm with a constant right operand ([K, N], or [N, K] with transB); its bias is input 2 when
beta is 1."""
from __future__ import annotations

from typing import Callable

import onnx
from onnx import helper

from ..model import Weight, node_attr
from .base import LayerGraph, LayerKind, Site, rewire


class GemmLayer(LayerKind):
    ops = ("Gemm",)

    def site(self, weight: Weight, node: onnx.NodeProto, slot: int, graph: LayerGraph) -> Site | None:
        if slot != 1 or len(weight.shape) < 2:
            return None
        transposed_b = bool(node_attr(node, "transB", 0))
        site = Site(weight, "nk" if transposed_b else "kn", node.input[0], node, self,
                    transposed=bool(node_attr(node, "transA", 0)))
        if len(node.input) > 2 and node.input[2] and float(node_attr(node, "beta", 1.0)) == 1.0:
            site.bias = graph.bias_constant(node.input[2], weight.shape[0] if transposed_b else weight.shape[1])
        return site

    def split(self, graph: onnx.GraphProto, index: int, node: onnx.NodeProto, w: Weight, first: str, second: str,
              names: Callable[[str], str]) -> None:
        mid, head_name = names(f"{w.name}_lowrank_mid"), names(f"{node.name or w.name}_lowrank")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        head = helper.make_node("Gemm", [node.input[0], first], [mid], name=head_name,
                                transA=int(attrs.get("transA", 0)), transB=int(attrs.get("transB", 0)))
        attrs["transA"] = 0  # the intermediate is [M, r]
        rewire(node, mid, second, attrs)
        graph.node.insert(index, head)
