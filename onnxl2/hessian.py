"""Second moments of each layer's inputs on the calibration data: the layer Hessians ``X^T X``.

A weight's rounding error matters through the layer's output ``X W``; its squared error summed
over calibration rows is ``tr(dW^T X^T X dW)``. Error compensation (``transforms.compensate``)
and the proxy sensitivity both need that matrix. It is gathered with ONNX Runtime: the tensors
that feed the studied layers become extra graph outputs, one pass over the calibration batches
sums their outer products (Conv inputs as im2col patches, one matrix per group).

Supported consumers: MatMul and Gemm (either transposition) with the weight as the right
operand (2-D), Conv with the weight as kernel, and LSTM/GRU/RNN: the input weight ``W`` sees the
sequence input, the recurrent weight ``R`` of each direction the hidden state of the step before
(the op's ``Y`` output shifted by one step in the direction's own order, the initial state
first), one matrix per direction. Two approximations there: a GRU's candidate-gate rows see
``r * h`` rather than ``h`` (unless ``linear_before_reset``), and padded steps of a batch with
``sequence_lens`` count as steps. A weight used by several nodes, or inside a subgraph, gets no
Hessian and is rounded without compensation.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import ModelProto, helper

from .data import iter_batches
from .evaluate import make_session
from .layers.moments import LayerHessian
from .model import RECURRENT_OPS, Weight, node_attr, weight_array

#: At most this many input rows per batch enter a Hessian (a fixed random subset beyond it):
#: enough for a well-conditioned K x K estimate, and im2col stays small.
MAX_ROWS_PER_BATCH = 4096


@dataclass
class _Site:
    weight: Weight
    layout: str
    activation: str
    node: onnx.NodeProto
    bias: Weight | None = None
    transposed: bool = False  # Gemm with transA: the activation is [K, M]
    #: recurrent weights: "input" (W, rows from X) or "hidden" (R, rows from Y shifted), and
    #: the initial hidden state's name ("" when the op starts from zeros)
    recurrent: str = ""
    initial: str = ""


@dataclass
class _Graph:
    """Lookups over the main graph that finding a layer and its bias needs."""

    nodes: Mapping[str, onnx.NodeProto]  # by name (or op_type_index when unnamed)
    constants: Mapping[str, Weight]  # constant tensors by name
    readers: Mapping[str, list[onnx.NodeProto]]
    producers: Mapping[str, onnx.NodeProto]
    outputs: set[str]  # graph outputs
    constant_values: Callable[[str], np.ndarray | None]


def _site(weight: Weight, graph: _Graph) -> _Site | None:
    if len(weight.consumers) != 1 or weight.graph != "main":
        return None
    use = weight.consumers[0]
    node = graph.nodes.get(use.node)
    if node is not None and node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx") \
            and use.input_index in (1, 2) and len(weight.shape) == 3:
        initial = node.input[5] if len(node.input) > 5 else ""
        if use.input_index == 1:
            return _Site(weight, "rnn", node.input[0], node, recurrent="input")
        return _Site(weight, "rnn", node.output[0] if node.output else "", node, recurrent="hidden",
                     initial=initial)
    if node is None or use.input_index != 1 or len(weight.shape) < 2:
        return None
    if node.op_type == "MatMul" and len(weight.shape) == 2:
        site = _Site(weight, "kn", node.input[0], node)
    elif node.op_type == "Gemm":
        site = _Site(weight, "nk" if node_attr(node, "transB", 0) else "kn", node.input[0], node,
                     transposed=bool(node_attr(node, "transA", 0)))
    elif node.op_type == "Conv":
        site = _Site(weight, "conv", node.input[0], node)
    else:
        return None
    site.bias = _bias(site, graph)
    return site


def _bias(site: _Site, graph: _Graph) -> Weight | None:
    """The 1-D float constant added to the layer's output channels, read by nothing else.

    Conv and Gemm take it as input 2 (Gemm with beta 1); MatMul as the other operand of the one
    Add that reads its output (the usual export of a linear layer); a Conv without input 2 as
    the other operand of the one Add that reads its output, after a Reshape of the 1-D constant
    to ``[1, C, 1, ...]`` (how some exporters, PaddlePaddle's among them, write a conv bias).
    """
    node = site.node
    channels = site.weight.shape[0] if site.layout in ("nk", "conv") else site.weight.shape[1]
    name = None
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
        if node.op_type == "Gemm" and float(node_attr(node, "beta", 1.0)) != 1.0:
            return None
        name = node.input[2]
    elif node.op_type in ("MatMul", "Conv"):
        after = graph.readers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Add" and node.output[0] not in graph.outputs:
            others = [i for i in after[0].input if i != node.output[0]]
            name = others[0] if len(others) == 1 else None
        if node.op_type == "Conv" and name is not None:
            name = _reshaped_bias(name, channels, len(site.weight.shape), graph)
    bias = graph.constants.get(name) if name else None
    if (bias is None or bias.shape != (channels,) or len(bias.consumers) != 1
            or bias.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)):
        return None
    return bias


def conv_patches(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, ...], groups: int,
                 max_rows: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """im2col of a Conv input: [rows, groups, C/g * prod(kernel)] in the kernel's own order.

    With ``max_rows``, only that many output positions (drawn at random) are gathered, so the
    full patch matrix, often tens of times the activation, is never built.
    """
    return _sampled_patches(x, node, kernel, groups, max_rows, rng)[0]


def _sampled_patches(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, ...], groups: int,
                     max_rows: int | None, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """(patches as in :func:`conv_patches`, output positions before sampling)."""
    nd = len(kernel)
    strides = list(node_attr(node, "strides", [1] * nd))
    dilations = list(node_attr(node, "dilations", [1] * nd))
    pads = list(node_attr(node, "pads", [0] * (2 * nd)))
    spatial = x.shape[2:]
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    auto_pad = node_attr(node, "auto_pad", b"NOTSET").decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nd):
            out = -(-spatial[i] // strides[i])
            total = max((out - 1) * strides[i] + extent[i] - spatial[i], 0)
            small, large = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
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


def _recurrent_rows(site: _Site, x: np.ndarray, initial: np.ndarray | None) -> np.ndarray:
    """[steps * batch, directions, K]: what each direction's W or R multiplies at each step.

    W sees the sequence input X ([T, B, I], or [B, T, I] with ``layout`` 1) in every direction.
    R sees the hidden state before each step: from Y ([T, D, B, H], or [B, T, D, H]) the states
    of steps 0..T-2 with the initial state in front for a forward direction, of steps 1..T-1
    with it behind for a reverse one (which runs from the last step to the first).
    """
    directions = site.weight.shape[0]
    batch_first = bool(node_attr(site.node, "layout", 0))
    if site.recurrent == "input":
        seq = x.transpose(1, 0, 2) if batch_first else x  # [T, B, I]
        rows = seq.reshape(-1, 1, seq.shape[-1])
        return np.broadcast_to(rows, (rows.shape[0], directions, rows.shape[2]))
    y = x.transpose(1, 2, 0, 3) if batch_first else x  # [T, D, B, H]
    steps, _, batch, hidden = y.shape
    if initial is None:
        h0 = np.zeros((directions, batch, hidden), y.dtype)
    else:  # [D, B, H], or [B, D, H] with layout 1
        h0 = np.asarray(initial, y.dtype)
        h0 = (h0.transpose(1, 0, 2) if batch_first else h0).reshape(directions, batch, hidden)
    kinds = {b"forward": ["forward"], b"reverse": ["reverse"], b"bidirectional": ["forward", "reverse"]}
    order = kinds.get(node_attr(site.node, "direction", b"forward"), ["forward"])
    per_direction = []
    for d in range(directions):
        before = np.concatenate([h0[d][None], y[:-1, d]]) if order[min(d, len(order) - 1)] == "forward" else \
            np.concatenate([y[1:, d], h0[d][None]])
        per_direction.append(before.reshape(steps * batch, hidden))
    return np.stack(per_direction, axis=1)


def _input_rows(site: _Site, x: np.ndarray, max_rows: int, rng: np.random.Generator,
                initial: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(The activation as [rows, groups, K], at most ``max_rows`` of them (a random subset);
    the number of rows before sampling: the layer's output positions). ``initial``: a
    recurrent layer's initial hidden state, where it has one."""
    if site.layout == "conv":
        return _sampled_patches(x, site.node, site.weight.shape[2:], int(node_attr(site.node, "group", 1)),
                                max_rows, rng)
    if site.layout == "rnn":
        rows = _recurrent_rows(site, x, initial)
        positions = len(rows)
        if len(rows) > max_rows:
            rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
        return rows, positions
    k = site.weight.shape[1] if site.layout == "nk" else site.weight.shape[0]
    rows = (x.T if site.transposed else x).reshape(-1, 1, k)
    positions = len(rows)
    if len(rows) > max_rows:
        rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
    return rows, positions


def _rows_rng(seed: int, batch_index: int, site: _Site) -> np.random.Generator:
    """Which rows a batch samples for a weight depends on nothing else (plans replay exactly)."""
    return np.random.default_rng([seed, batch_index, zlib.crc32(site.weight.key.encode())])


def _elem_types(proto: ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - shapes are a convenience here, float32 is the default
        return {}
    infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: v.type.tensor_type.elem_type for v in infos if v.type.HasField("tensor_type")}


def layer_hessians(proto: ModelProto, studied: list[Weight], every: list[Weight], data: Mapping[str, np.ndarray],
                   batch: int, device: str = "cpu", seed: int = 0) -> dict[str, LayerHessian]:
    """``X^T X`` per supported weight of ``studied`` (key -> LayerHessian), from one pass over
    ``data``; ``every`` is the model's full weight list (where the layers' biases are found)."""
    sites = _sites(proto, studied, every)
    if not sites:
        return {}
    probe = ModelProto()
    probe.CopyFrom(proto)
    _name_hidden_outputs(proto, probe, sites)
    graph_inputs = {i.name for i in probe.graph.input}
    present = {o.name for o in probe.graph.output}
    wanted = list(dict.fromkeys([s.activation for s in sites] + [s.initial for s in sites if s.initial]))
    constants = {w.name: w for w in every if w.graph == "main"}
    fixed = {name: weight_array(proto, constants[name]).astype(np.float32) for name in wanted if name in constants}
    types = _elem_types(probe) if any(n not in graph_inputs | present | set(fixed) for n in wanted) else {}
    fetch = []
    for name in wanted:
        if name in fixed or name in graph_inputs:
            continue
        if name not in present:
            probe.graph.output.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
        fetch.append(name)
    session = make_session(probe, device)
    sums: dict[str, np.ndarray] = {}
    totals: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    positions: dict[str, int] = {}
    samples = 0
    for index, feeds in enumerate(iter_batches(data, batch)):
        values = {**fixed, **feeds, **(dict(zip(fetch, session.run(fetch, feeds))) if fetch else {})}
        samples += len(next(iter(feeds.values())))
        for site in sites:
            initial = np.asarray(values[site.initial], dtype=np.float32) if site.initial else None
            x, seen = _input_rows(site, np.asarray(values[site.activation], dtype=np.float32), MAX_ROWS_PER_BATCH,
                                  _rows_rng(seed, index, site), initial)
            positions[site.weight.key] = positions.get(site.weight.key, 0) + seen
            by_group = np.ascontiguousarray(x.transpose(1, 0, 2))  # [G, rows, K]
            key = site.weight.key
            sums[key] = sums.get(key, 0.0) + np.matmul(by_group.transpose(0, 2, 1), by_group).astype(np.float64)
            totals[key] = totals.get(key, 0.0) + by_group.sum(axis=1, dtype=np.float64)
            counts[key] = counts.get(key, 0) + len(x)
    return {s.weight.key: LayerHessian(s.weight.key, s.layout, sums[s.weight.key].shape[0], sums[s.weight.key],
                                       counts[s.weight.key], totals[s.weight.key] / max(counts[s.weight.key], 1),
                                       s.bias.key if s.bias is not None else None,
                                       positions[s.weight.key] / max(samples, 1))
            for s in sites if s.weight.key in sums}


def _name_hidden_outputs(proto: ModelProto, probe: ModelProto, sites: list[_Site]) -> None:
    """Give a recurrent node's omitted ``Y`` output a name on ``probe`` (a copy of ``proto``,
    nodes in the same order), so that it can be fetched."""
    unnamed = [s for s in sites if s.recurrent == "hidden" and not s.activation]
    if not unnamed:
        return
    position = {id(n): i for i, n in enumerate(proto.graph.node)}
    taken = {o for n in probe.graph.node for o in n.output} | {i.name for i in probe.graph.input}
    for site in unnamed:
        name, k = "onnxl2_hidden_states", 0
        while name in taken:
            k += 1
            name = f"onnxl2_hidden_states_{k}"
        taken.add(name)
        node = probe.graph.node[position[id(site.node)]]
        if node.output:
            node.output[0] = name
        else:
            node.output.append(name)
        site.activation = name


def _reshaped_bias(name: str, channels: int, rank: int, graph: _Graph) -> str | None:
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


def bias_weights(every: list[Weight], hessians: Mapping[str, LayerHessian]) -> dict[str, Weight]:
    """Layer key -> the bias its Hessian names: what bias correction moves with the weight."""
    by_key = {w.key: w for w in every}
    return {key: by_key[h.bias] for key, h in hessians.items() if h.bias is not None}


def _sites(proto: ModelProto, weights: list[Weight], every: list[Weight]) -> list[_Site]:
    """The supported layers of ``weights`` (``every`` is the model's full weight list)."""
    constants = {w.name: w for w in every if w.graph == "main"}
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)

    def constant_values(name: str) -> np.ndarray | None:
        return weight_array(proto, constants[name]) if name in constants else None

    graph = _Graph({n.name or f"{n.op_type}_{i}": n for i, n in enumerate(proto.graph.node)}, constants, readers,
                   {o: n for n in proto.graph.node for o in n.output}, {o.name for o in proto.graph.output},
                   constant_values)
    return [s for s in (_site(w, graph) for w in weights) if s is not None]
