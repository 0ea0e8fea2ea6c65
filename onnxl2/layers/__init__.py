"""What each kind of layer is: how its weight maps onto rows (``layouts``), which input it
multiplies and how that input becomes rows, its bias, and how it is split in two for a factor
pair: one adapter per reader kind (``matmul``, ``gemm``, ``conv``, ``recurrent``, ``generic``).
The moments type the lossy stages share is in ``moments``."""
from __future__ import annotations

from typing import Callable

import onnx

from ..model import Weight
from .base import LayerGraph, LayerKind, Site
from .conv import ConvLayer
from .gemm import GemmLayer
from .generic import GenericLayer
from .matmul import MatMulLayer
from .recurrent import RecurrentLayer

_KINDS: dict[str, LayerKind] = {op: kind for kind in (MatMulLayer(), GemmLayer(), ConvLayer(), RecurrentLayer())
                                for op in kind.ops}
_GENERIC = GenericLayer()


def kind_of(node: onnx.NodeProto) -> LayerKind:
    """The adapter for ``node``'s op type (the generic one for any other)."""
    return _KINDS.get(node.op_type, _GENERIC)


def site_of(weight: Weight, graph: LayerGraph) -> Site | None:
    """The layer ``weight`` belongs to, where its one reader in the main graph is a layer."""
    if len(weight.consumers) != 1 or weight.graph != "main":
        return None
    use = weight.consumers[0]
    node = graph.nodes.get(use.node)
    if node is None or len(weight.shape) < 2:
        return None
    return kind_of(node).site(weight, node, use.input_index, graph)


def split_layer(graph: onnx.GraphProto, w: Weight, first: str, second: str, names: Callable[[str], str]) -> None:
    """Rewrite the one node reading ``w`` as two layers, the factors ``first`` then ``second``."""
    index, node = next((i, n) for i, n in enumerate(graph.node) if w.name in n.input)
    kind_of(node).split(graph, index, node, w, first, second, names)


__all__ = ["LayerGraph", "LayerKind", "Site", "kind_of", "site_of", "split_layer"]
