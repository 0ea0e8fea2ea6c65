"""MatMul with a constant [K, N] right operand: a linear layer, its bias the one Add after it."""
from __future__ import annotations

from typing import Callable

import onnx
from onnx import helper

from ..model import Weight
from .base import LayerGraph, LayerKind, Site, rewire


class MatMulLayer(LayerKind):
    ops = ("MatMul",)

    def site(self, weight: Weight, node: onnx.NodeProto, slot: int, graph: LayerGraph) -> Site | None:
        if slot != 1 or len(weight.shape) != 2:
            return None
        site = Site(weight, "kn", node.input[0], node, self)
        site.bias = graph.bias_constant(graph.added_after(node), weight.shape[1])
        return site

    def split(self, graph: onnx.GraphProto, index: int, node: onnx.NodeProto, w: Weight, first: str, second: str,
              names: Callable[[str], str]) -> None:
        mid, head_name = names(f"{w.name}_lowrank_mid"), names(f"{node.name or w.name}_lowrank")
        head = helper.make_node("MatMul", [node.input[0], first], [mid], name=head_name)
        rewire(node, mid, second, {a.name: helper.get_attribute_value(a) for a in node.attribute})
        graph.node.insert(index, head)
