"""Multiply-accumulates per sample of each weighted layer, before and after compression.

Every output element of a MatMul, Gemm or Conv costs ``params / output channels`` MACs (the
weights that reach it); a factorised layer costs its two factors' parameters per output
element instead, since the first factor runs at the output's positions (a Conv keeps its
window and stride, the second factor is 1x1). Output sizes come from one ONNX Runtime pass on
a single calibration sample with the layers' outputs fetched, so dynamic shapes resolve as
they do in use.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from onnx import ModelProto, helper

from .evaluate import make_session
from .model import Weight

#: Layers whose MACs are counted (a Gather reads rows and multiplies nothing).
COUNTED = ("MatMul", "Gemm", "Conv")


def _output_channels(weight: Weight) -> int:
    return int(weight.shape[weight.channel_axis]) if weight.channel_axis is not None else int(weight.shape[-1])


def output_elements(proto: ModelProto, weights: list[Weight], data: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Elements of the output of each weight's (single, main-graph) counted layer, per sample."""
    readers = {}
    for w in weights:
        if len(w.consumers) == 1 and w.graph == "main" and w.consumers[0].op_type in COUNTED:
            readers[w.key] = w.consumers[0]
    if not readers:
        return {}
    nodes = {n.name or f"{n.op_type}_{i}": n for i, n in enumerate(proto.graph.node)}
    outputs = {key: nodes[c.node].output[0] for key, c in readers.items() if c.node in nodes}
    probe = ModelProto()
    probe.CopyFrom(proto)
    present = {o.name for o in probe.graph.output}
    types = {name: w.elem_type for w in weights if w.key in outputs for name in (outputs[w.key],)}
    for name in dict.fromkeys(outputs.values()):
        if name not in present:  # MatMul, Gemm and Conv compute in their weight's type
            probe.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
    fetch = list(dict.fromkeys(outputs.values()))
    session = make_session(probe, "cpu")
    feeds = {name: np.asarray(values[:1]) for name, values in data.items()}
    shapes = dict(zip(fetch, (np.shape(v) for v in session.run(fetch, feeds))))
    return {key: int(np.prod(shapes[name])) for key, name in outputs.items()}


def layer_macs(weights: list[Weight], elements: Mapping[str, int],
               stored_params: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Per weight key: (MACs per sample before, after), where the output size is known.

    ``stored_params`` (key -> parameters the compressed layer multiplies) differs from the
    weight's own count only where the layer was factorised.
    """
    out = {}
    for w in weights:
        if w.key not in elements:
            continue
        channels = _output_channels(w)
        per_element_before = w.numel / channels
        per_element_after = stored_params.get(w.key, w.numel) / channels
        out[w.key] = (int(round(elements[w.key] * per_element_before)),
                      int(round(elements[w.key] * per_element_after)))
    return out
