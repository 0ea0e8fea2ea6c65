"""Write a compressed ONNX that plain ONNX Runtime runs.

Every quantized weight becomes an integer initializer (int4 containers up to 4 bits, int8 up to
8, int16 above) plus a per-channel scale, and a DequantizeLinear node (a Cast and a Mul above 8
bits) whose output keeps the weight's original name, so no consumer changes. Per-channel
DequantizeLinear needs opset 13, float16 steps 19 and int4 21; an older model is first
converted with the ONNX version converter, and the IR version is set to the lowest one that the
opsets need, which is what the installed runtime is most likely to accept.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper, version_converter

from .codec.nibbles import pack_nibbles
from .errors import ModelError
from .layers import split_layer
from .model import Weight, constant_tensor, find_tensor, iter_graphs
from .transforms.lowrank import FactorPair
from .transforms.quantize import QuantizedWeight, container_type, symbol_dtype

OPSET_PER_CHANNEL = 13
#: DequantizeLinear takes float16 scales (the steps of float16 weights) from opset 19 on.
OPSET_FLOAT16_SCALE = 19
OPSET_INT4 = 21


def default_opset(proto: ModelProto) -> int:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 1


def target_opset(proto: ModelProto, quantized: dict[str, QuantizedWeight]) -> int:
    """The lowest default-domain opset that can express the plan (never lower than the model's)."""
    if not quantized:
        return default_opset(proto)
    needed = OPSET_INT4 if any(container_type(q.bits) == "int4" for q in quantized.values()) else \
        OPSET_FLOAT16_SCALE if any(q.scales.dtype == np.float16 for q in quantized.values()) else OPSET_PER_CHANNEL
    return max(default_opset(proto), needed)


def _copy_without_data(proto: ModelProto, tensors: list[TensorProto], consume: bool) -> ModelProto:
    """A copy of the model in which ``tensors`` hold no data (marked external, to stay valid).

    The float data of weights about to be replaced would otherwise be copied, and copied again
    by the version converter, for nothing: this keeps peak memory near the model's own size.
    With ``consume`` the caller gives up ``proto``'s data of those tensors instead of having it
    saved and put back.
    """
    saved = []
    for tensor in tensors:
        keep = TensorProto()
        if consume:
            keep.name, keep.data_type = tensor.name, tensor.data_type
            keep.dims.extend(tensor.dims)
        else:
            keep.CopyFrom(tensor)
        saved.append(keep)
        tensor.Clear()
        tensor.name, tensor.data_type = keep.name, keep.data_type
        tensor.dims.extend(keep.dims)
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "onnxl2-replaced-weight"
    try:
        out = ModelProto()
        out.CopyFrom(proto)
    finally:
        for tensor, keep in zip(tensors, saved):
            tensor.CopyFrom(keep)
    return out


def convert_opset(proto: ModelProto, opset: int) -> ModelProto:
    """Raise the model's default opset, keeping its semantics (ONNX version converter)."""
    if default_opset(proto) >= opset:
        return proto
    try:
        converted = version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise ModelError(f"cannot convert the model to opset {opset}, which the compressed "
                         f"weights need ({str(exc).splitlines()[0][:200]})") from None
    # the converter runs shape inference and records every inferred shape as value_info:
    # metadata the model did not have, which would only make the bitstream larger
    kept = {v.name for v in proto.graph.value_info}
    inferred = [v for v in converted.graph.value_info if v.name in kept]
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(inferred)
    return converted


def _int_tensor(name: str, symbols: np.ndarray, bits: int) -> TensorProto:
    if container_type(bits) == "int4":
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = TensorProto.INT4
        tensor.dims.extend(symbols.shape)
        tensor.raw_data = pack_nibbles(symbols).tobytes()
        return tensor
    return numpy_helper.from_array(symbols.astype(symbol_dtype(bits)), name)


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _all_names(proto: ModelProto) -> set[str]:
    names: set[str] = set()
    for graph, _ in iter_graphs(proto.graph):
        names.update(i.name for i in graph.initializer)
        names.update(i.name for i in graph.input)
        for node in graph.node:
            names.update(node.output)
            names.add(node.name)
    return names


#: Consumers that ONNX Runtime (1.2x on the CPU) fuses with a DequantizeLinear in front into
#: MatMulNBits, whose default accuracy level (session.qdq_matmulnbits_accuracy_level = 4) rounds
#: the activations to int8 as well: a second quantization onnxl2 never measured. A Reshape to
#: the weight's own shape between the two keeps the pattern from matching, so the runtime
#: computes the weight onnxl2 chose, in float.
_FUSED_BY_ORT = ("MatMul", "Gemm")


def folded_at_load(q: QuantizedWeight) -> bool:
    """Whether a weight is stored as a Cast and a Mul (folded into float when the session
    starts) rather than a DequantizeLinear (run on every call).

    ONNX Runtime keeps a DequantizeLinear in the graph and runs it on every call, while it folds
    a Cast and Mul of initializers as it folds the Cast of a float16 weight: nothing per call,
    float32 memory. Symbols above 8 bits are folded: with int16 DequantizeLinears MiniLM's
    lossless-neighbourhood plan took 61.5 ms a sentence, folded 28.2 ms, the original 21.8. Up
    to 8 bits the weights stay small in memory, at a price per call (MiniLM `--bits 8`: 47 ms a
    sentence against the original's 20; the same with its embedding folded, 48).
    """
    return container_type(q.bits) == "int16"


def _dequantized(out_name: str, stem: str, q: QuantizedWeight, fused: bool, taken: set[str]
                 ) -> tuple[list[TensorProto], list[onnx.NodeProto], tuple[str, str]]:
    """Integer and scale initializers of ``q`` and the nodes that make ``out_name``: a Cast and a
    Mul where :func:`folded_at_load` (the steps then shaped to broadcast along the channel axis,
    which the bitstream codes as the same flat values), else a DequantizeLinear (through a
    Reshape where the reader would be fused into MatMulNBits, and where the channels run over
    several axes: the symbols are then stored with those axes as one)."""
    q_name = _unique(f"{stem}_quantized", taken)
    s_name = _unique(f"{stem}_scale", taken)
    fold = folded_at_load(q)
    scales = q.scales.reshape(q.channel_shape()) if fold else q.scales
    # DequantizeLinear scales along one axis: channels merged over several axes are stored with
    # those axes as one, and a Reshape gives the weight its shape back
    flat = q.merged and q.axis > 0 and not fold
    symbols = q.symbols.reshape((-1,) + q.symbols.shape[q.axis + 1:]) if flat else q.symbols
    axis = 0 if flat else q.axis
    fused = fused or flat
    inits = [_int_tensor(q_name, symbols, q.bits), numpy_helper.from_array(scales, s_name)]
    if fold:
        c_name = _unique(f"{stem}_cast", taken)
        to = helper.np_dtype_to_tensor_dtype(q.scales.dtype)
        return inits, [helper.make_node("Cast", [q_name], [c_name], name=_unique(f"{stem}_Cast", taken), to=to),
                       helper.make_node("Mul", [c_name, s_name], [out_name], name=_unique(f"{stem}_Mul", taken))
                       ], (q_name, s_name)
    if not fused:
        return inits, [helper.make_node("DequantizeLinear", [q_name, s_name], [out_name],
                                        name=_unique(f"{stem}_DequantizeLinear", taken), axis=axis)], (q_name, s_name)
    d_name = _unique(f"{stem}_dequantized", taken)
    shape_name = _unique(f"{stem}_shape", taken)
    nodes = [helper.make_node("DequantizeLinear", [q_name, s_name], [d_name],
                              name=_unique(f"{stem}_DequantizeLinear", taken), axis=axis),
             helper.make_node("Reshape", [d_name, shape_name], [out_name], name=_unique(f"{stem}_Reshape", taken))]
    inits.append(numpy_helper.from_array(np.array(q.symbols.shape, np.int64), shape_name))
    return inits, nodes, (q_name, s_name)


def emit_quantized(proto: ModelProto, weights: list[Weight], quantized: dict[str, QuantizedWeight],
                   consume: bool = False, halves: Mapping[str, np.ndarray] | None = None,
                   moved: Mapping[str, np.ndarray] | None = None,
                   factorised: Mapping[str, FactorPair] | None = None
                   ) -> tuple[ModelProto, dict[str, tuple[str, ...]]]:
    """A new ModelProto where each weight in ``quantized`` is stored as integers + DQ node,
    each weight in ``halves`` (key -> its float16 values) as float16 + Cast, each weight in
    ``factorised`` as two integer factors whose layer replaces the one node reading it, and
    each tensor in ``moved`` (key -> new values, same shape and dtype: corrected biases) keeps
    its place with new contents.

    Also returns, per weight key, the names of the initializers that now hold it (integer
    symbols first). With ``consume`` the float data of the replaced weights is dropped from
    ``proto`` (for callers that own it and are done with it), which saves a copy of the model.
    """
    halves = halves or {}
    moved = moved or {}
    factorised = factorised or {}
    integer = {**quantized, **{k: p.first for k, p in factorised.items()}}
    replaced = [find_tensor(proto, w) for w in weights if w.key in integer or w.key in halves]
    out = convert_opset(_copy_without_data(proto, replaced, consume), target_opset(proto, integer))
    for opset in out.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, target_opset(proto, integer))
    taken = _all_names(out)
    stored_as: dict[str, tuple[str, ...]] = {}
    by_graph: dict[str, list[Weight]] = {}
    for w in weights:
        if w.key in integer or w.key in halves:
            by_graph.setdefault(w.graph, []).append(w)
    for graph, path in iter_graphs(out.graph):
        for w in by_graph.get(path, []):
            stored_as[w.key] = _replace_weight(graph, w, quantized.get(w.key), factorised.get(w.key),
                                               halves.get(w.key), taken)
    for w in weights:
        if w.key in moved:
            _set_values(find_tensor(out, w), moved[w.key])
    # other domains (com.microsoft, custom ones) keep their versions; only the default one is raised
    out.ir_version = max(out.ir_version, helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True))
    return out, stored_as


def _replace_weight(graph: onnx.GraphProto, w: Weight, q: QuantizedWeight | None, pair: FactorPair | None,
                    half: np.ndarray | None, taken: set[str]) -> tuple[str, ...]:
    """Store ``w`` as integers (``q``), two integer factors (``pair``, its reader split in two)
    or float16 (``half``), with the nodes that rebuild it where the float tensor was; returns
    the names of the initializers that now hold it (integer symbols first)."""
    fused = any(c.op_type in _FUSED_BY_ORT for c in w.consumers)
    if pair is not None:
        first, second = _unique(f"{w.name}_lowrank_first", taken), _unique(f"{w.name}_lowrank_second", taken)
        new_inits, dq, (a_q, a_s) = _dequantized(first, first, pair.first, fused, taken)
        inits_b, dq_b, (b_q, b_s) = _dequantized(second, second, pair.second, fused, taken)
        new_inits, dq, stored_as = new_inits + inits_b, dq + dq_b, (a_q, b_q, a_s, b_s)
    elif q is not None:
        new_inits, dq, stored_as = _dequantized(w.name, w.name, q, fused, taken)
    else:
        h_name = _unique(f"{w.name}_float16", taken)
        stored_as = (h_name,)
        dq = [helper.make_node("Cast", [h_name], [w.name], name=_unique(f"{w.name}_Cast", taken), to=w.elem_type)]
        new_inits = [numpy_helper.from_array(np.asarray(half, np.float16), h_name)]
    if w.source == "initializer":
        index = next(i for i, t in enumerate(graph.initializer) if t.name == w.name)
        del graph.initializer[index]
        inputs = [i for i, v in enumerate(graph.input) if v.name == w.name]
        for i in reversed(inputs):  # IR < 4 lists initializers as inputs too
            del graph.input[i]
        for node in reversed(dq):
            graph.node.insert(0, node)
    else:
        index = next(i for i, n in enumerate(graph.node)
                     if constant_tensor(n) is not None and n.output and n.output[0] == w.name)
        graph.node.remove(graph.node[index])
        for node in reversed(dq):
            graph.node.insert(index, node)
    if pair is not None:
        split_layer(graph, w, first, second, lambda name: _unique(name, taken))
    graph.initializer.extend(new_inits)
    return stored_as


def _set_values(tensor: TensorProto, values: np.ndarray) -> None:
    """Overwrite a tensor's data in place (name, shape and type unchanged; stored embedded)."""
    fresh = numpy_helper.from_array(np.asarray(values).astype(helper.tensor_dtype_to_np_dtype(tensor.data_type)),
                                    tensor.name)
    tensor.CopyFrom(fresh)
