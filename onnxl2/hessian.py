"""Second moments of each layer's inputs on the calibration data: the layer Hessians ``X^T X``.

A weight's rounding error matters through the layer's output ``X W``; its squared error summed
over calibration rows is ``tr(dW^T X^T X dW)``. Error compensation (``transforms.compensate``)
and the proxy sensitivity both need that matrix. It is gathered with ONNX Runtime: the tensors
that feed the studied layers become extra graph outputs, one pass over the calibration batches
sums their outer products (Conv inputs as im2col patches, one matrix per group).

Which consumers are layers, what input each multiplies and how that input becomes rows is the
layer adapters' (``onnxl2.layers``: MatMul, Gemm, Conv, LSTM/GRU/RNN); this module runs the
pass. A weight used by several nodes, or inside a subgraph, gets no Hessian and is rounded
without compensation.
"""
from __future__ import annotations

import zlib
from typing import Mapping

import numpy as np
import onnx
from onnx import ModelProto, helper

from .data import iter_batches
from .runtime import make_session
from .layers import LayerGraph, Site, site_of
from .layers.moments import LayerHessian
from .model import Weight, weight_array

#: At most this many input rows per batch enter a Hessian (a fixed random subset beyond it):
#: enough for a well-conditioned K x K estimate, and im2col stays small.
MAX_ROWS_PER_BATCH = 4096


def _rows_rng(seed: int, batch_index: int, site: Site) -> np.random.Generator:
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
    ``data``; ``every`` is the model's full weight list (where the layers' biases are found).
    A layer whose inputs hold NaN or infinity gets none: no compensation or factors can be
    fitted to them, and it is rounded as a layer without moments is."""
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
            x, seen = site.input_rows(np.asarray(values[site.activation], dtype=np.float32), MAX_ROWS_PER_BATCH,
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
            for s in sites if s.weight.key in sums and np.isfinite(sums[s.weight.key]).all()}


def _name_hidden_outputs(proto: ModelProto, probe: ModelProto, sites: list[Site]) -> None:
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


def _sites(proto: ModelProto, weights: list[Weight], every: list[Weight]) -> list[Site]:
    """The supported layers of ``weights`` (``every`` is the model's full weight list)."""
    constants = {w.name: w for w in every if w.graph == "main"}
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)

    def constant_values(name: str) -> np.ndarray | None:
        return weight_array(proto, constants[name]) if name in constants else None

    graph = LayerGraph({n.name or f"{n.op_type}_{i}": n for i, n in enumerate(proto.graph.node)}, constants, readers,
                   {o: n for n in proto.graph.node for o in n.output}, {o.name for o in proto.graph.output},
                   constant_values)
    return [s for s in (site_of(w, graph) for w in weights) if s is not None]
