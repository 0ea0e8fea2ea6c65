"""Conv with a constant kernel [O, C/g, *k]: its inputs are im2col patches, one matrix per
group; its bias is input 2, or the one Add after it of a Reshape to [1, O, 1, ...] (how some
exporters, PaddlePaddle's among them, write a conv bias)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import helper

from ..model import Weight, node_attr
from .base import LayerGraph, LayerKind, Site, rewire


class ConvLayer(LayerKind):
    ops = ("Conv",)

    def site(self, weight: Weight, node: onnx.NodeProto, slot: int, graph: LayerGraph) -> Site | None:
        if slot != 1 or len(weight.shape) < 2:
            return None
        site = Site(weight, "conv", node.input[0], node, self)
        channels = weight.shape[0]
        if len(node.input) > 2 and node.input[2]:
            name = node.input[2]
        else:
            name = graph.added_after(node)
            name = _reshaped_bias(name, channels, len(weight.shape), graph) if name is not None else None
        site.bias = graph.bias_constant(name, channels)
        return site

    def input_rows(self, site: Site, x: np.ndarray, max_rows: int, rng: np.random.Generator,
                   initial: np.ndarray | None) -> tuple[np.ndarray, int]:
        return sampled_patches(x, site.node, site.weight.shape[2:], int(node_attr(site.node, "group", 1)),
                               max_rows, rng)

    def split(self, graph: onnx.GraphProto, index: int, node: onnx.NodeProto, w: Weight, first: str, second: str,
              names: Callable[[str], str]) -> None:
        mid, head_name = names(f"{w.name}_lowrank_mid"), names(f"{node.name or w.name}_lowrank")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        head = helper.make_node("Conv", [node.input[0], first], [mid], name=head_name,
                                **{k: v for k, v in attrs.items() if k != "group"})
        rewire(node, mid, second, {"kernel_shape": [1] * (len(w.shape) - 2)})  # then a 1x1 Conv
        graph.node.insert(index, head)


def _reshaped_bias(name: str, channels: int, rank: int, graph: LayerGraph) -> str | None:
    """The 1-D constant behind ``name`` when ``name`` is the output of a Reshape of it to a
    shape that puts it on axis 1 of the layer's rank-``rank`` output (``[1, C, 1, 1]``,
    ``[C, 1, 1]``, ...), read only by the layer's Add; else None."""
    reshape = graph.producers.get(name)
    if reshape is None or reshape.op_type != "Reshape" or len(reshape.input) < 2 or name in graph.outputs:
        return None
    if len(graph.readers.get(name, [])) != 1:
        return None
    shape = graph.constant_values(reshape.input[1])
    if shape is None or shape.ndim != 1 or not 1 <= shape.size <= rank:
        return None
    padded = np.concatenate([np.ones(rank - shape.size, np.int64), shape.astype(np.int64)])
    padded[1] = channels if padded[1] == -1 else padded[1]
    want = np.ones(rank, np.int64)
    want[1] = channels
    return reshape.input[0] if np.array_equal(padded, want) else None


def conv_patches(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, ...], groups: int,
                 max_rows: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """im2col of a Conv input: [rows, groups, C/g * prod(kernel)] in the kernel's own order.

    With ``max_rows``, only that many output positions (drawn at random) are gathered, so the
    full patch matrix, often tens of times the activation, is never built.
    """
    return sampled_patches(x, node, kernel, groups, max_rows, rng)[0]


def _pads(node: onnx.NodeProto, spatial: tuple[int, ...], strides: list[int], extent: list[int]) -> list[int]:
    """Begin and end pads of every spatial axis, ``auto_pad`` resolved."""
    nd = len(spatial)
    pads = list(node_attr(node, "pads", [0] * (2 * nd)))
    auto_pad = node_attr(node, "auto_pad", b"NOTSET").decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):
            out = -(-spatial[i] // strides[i])
            total = max((out - 1) * strides[i] + extent[i] - spatial[i], 0)
            small, large = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    return pads


def sampled_patches(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, ...], groups: int,
                    max_rows: int | None, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """(patches as in :func:`conv_patches`, output positions before sampling)."""
    nd = len(kernel)
    strides = list(node_attr(node, "strides", [1] * nd))
    dilations = list(node_attr(node, "dilations", [1] * nd))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    pads = _pads(node, x.shape[2:], strides, extent)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    windows = sliding_window_view(padded, extent, axis=tuple(range(2, 2 + nd)))
    picks = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) \
        + tuple(slice(None, None, d) for d in dilations)
    n, c = windows.shape[:2]
    # [N, *out, C, *kernel], still a strided view of the padded input
    windows = windows[picks].transpose((0,) + tuple(range(2, 2 + nd)) + (1,) + tuple(range(2 + nd, 2 + 2 * nd)))
    positions = int(np.prod(windows.shape[:1 + nd]))
    k = (c // groups) * int(np.prod(kernel))
    if max_rows is not None and positions > max_rows:
        chosen = np.sort((rng or np.random.default_rng(0)).choice(positions, max_rows, replace=False))
        windows = windows[np.unravel_index(chosen, windows.shape[:1 + nd])]  # [rows, C, *kernel]
    return np.ascontiguousarray(windows).reshape(-1, groups, k), positions
