"""What every layer adapter answers, and the graph lookups they share.

A *site* is one weight where its one reader uses it: the layout of its rows, the activation it
multiplies, its bias. The adapter of the reader's kind finds the site, turns a captured
activation into input rows, and rewrites the reader as two layers for a factor pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import onnx

from ..errors import ModelError
from ..model import Weight
from .layouts import layout


@dataclass
class Site:
    """One weight where its reader uses it."""

    weight: Weight
    layout: str  # a name of ``layers.layouts``
    activation: str  # the tensor the weight multiplies (a recurrent R: the op's Y)
    node: onnx.NodeProto
    kind: "LayerKind"
    bias: Weight | None = None
    transposed: bool = False  # Gemm with transA: the activation is [K, M]
    #: recurrent weights: "input" (W, rows from X) or "hidden" (R, rows from Y shifted), and
    #: the initial hidden state's name ("" when the op starts from zeros)
    recurrent: str = ""
    initial: str = ""

    def input_rows(self, x: np.ndarray, max_rows: int, rng: np.random.Generator,
                   initial: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(The activation ``x`` as [rows, groups, K], at most ``max_rows`` of them (a random
        subset); the number of rows before sampling: the layer's output positions)."""
        return self.kind.input_rows(self, x, max_rows, rng, initial)


@dataclass
class LayerGraph:
    """Lookups over the main graph that finding a layer and its bias needs."""

    nodes: Mapping[str, onnx.NodeProto]  # by name (or op_type_index when unnamed)
    constants: Mapping[str, Weight]  # constant tensors by name
    readers: Mapping[str, list[onnx.NodeProto]]
    producers: Mapping[str, onnx.NodeProto]
    outputs: set[str]  # graph outputs
    constant_values: Callable[[str], np.ndarray | None]

    def added_after(self, node: onnx.NodeProto) -> str | None:
        """The other operand of the one Add that reads ``node``'s output (an exporter's bias)."""
        after = self.readers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Add" and node.output[0] not in self.outputs:
            others = [i for i in after[0].input if i != node.output[0]]
            return others[0] if len(others) == 1 else None
        return None

    def bias_constant(self, name: str | None, channels: int) -> Weight | None:
        """The 1-D float constant ``name`` of ``channels`` values read only by the layer."""
        bias = self.constants.get(name) if name else None
        if (bias is None or bias.shape != (channels,) or len(bias.consumers) != 1
                or bias.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)):
            return None
        return bias


class LayerKind:
    """A reader kind without layer semantics: its weight is quantized on its own, with no input
    moments, no bias correction and no factor pair (Gather, Add, a weight read twice, ...)."""

    ops: tuple[str, ...] = ()

    def site(self, weight: Weight, node: onnx.NodeProto, slot: int, graph: LayerGraph) -> Site | None:
        """The site of ``weight`` read by ``node`` as input ``slot`` (None: not a layer here)."""
        return None

    def input_rows(self, site: Site, x: np.ndarray, max_rows: int, rng: np.random.Generator,
                   initial: np.ndarray | None) -> tuple[np.ndarray, int]:
        """A matrix operand's rows: the activation's last axis is K (first with transA)."""
        rows = (x.T if site.transposed else x).reshape(-1, 1, layout(site.layout).inputs(site.weight.shape))
        return sampled(rows, max_rows, rng)

    def split(self, graph: onnx.GraphProto, index: int, node: onnx.NodeProto, w: Weight, first: str, second: str,
              names: Callable[[str], str]) -> None:
        """Rewrite ``node`` (at ``index``) as two layers: ``first`` into a rank-wide
        intermediate, then ``second`` (keeping the node's name, output, bias and scale)."""
        raise ModelError(f"cannot factorise {w.name}: read by {node.op_type}")


def sampled(rows: np.ndarray, max_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """At most ``max_rows`` of ``rows`` (a sorted random subset), and how many there were."""
    positions = len(rows)
    if len(rows) > max_rows:
        rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
    return rows, positions


def rewire(node: onnx.NodeProto, mid: str, second: str, attrs: dict) -> None:
    """Point ``node`` at the intermediate and the second factor, with ``attrs`` as its attributes."""
    node.input[0], node.input[1] = mid, second
    del node.attribute[:]
    node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
