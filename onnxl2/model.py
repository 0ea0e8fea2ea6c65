"""Load ONNX models and find their weights.

A *weight* is a constant float tensor (an initializer, or the ``value`` of a Constant node) that
feeds an operator whose parameters we know how to compress: Conv/ConvTranspose kernels, Gemm and
MatMul constant operands, Gather tables (embeddings). Each weight records who consumes it and
which of its axes is the output channel, because per-channel quantization scales along that axis.
Graphs are walked with scopes, so initializers inside If/Loop/Scan bodies and outer-scope
weights used inside a body are found too; a tensor with several consumers is still one weight.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import onnx
from onnx import ModelProto, GraphProto, TensorProto, numpy_helper

from .errors import ModelError
from .paths import external_data_path

ModelSource = Union[str, os.PathLike, ModelProto]

#: Weights smaller than this stay in float: their side information would cost more than it saves.
MIN_COMPRESSIBLE_ELEMENTS = 128

#: DequantizeLinear outputs float32 or float16 only, so double weights stay as they are.
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16}


@dataclass(frozen=True)
class Consumer:
    """One use of a weight: the node, which input slot, and the graph it lives in."""

    op_type: str
    node: str
    input_index: int
    graph: str


@dataclass
class Weight:
    """A constant tensor of the model and what is known about how it is used."""

    name: str
    graph: str
    source: str  # "initializer" or "constant"
    shape: tuple[int, ...]
    elem_type: int
    external: bool
    consumers: list[Consumer] = field(default_factory=list)
    role: str = "other"
    channel_axis: int | None = None
    compressible: bool = False
    reason: str = ""

    @property
    def key(self) -> str:
        """Unique id: graph path and tensor name (names may repeat across subgraphs)."""
        return self.name if self.graph == "main" else f"{self.graph}::{self.name}"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class LoadedModel:
    """A parsed model plus where it came from and how many bytes it occupies on disk."""

    proto: ModelProto
    path: Path | None
    file_bytes: int
    external_files: list[Path]
    data_loaded: bool

    @property
    def stem(self) -> str:
        return model_stem(self.path)


def model_stem(path: Path | None) -> str:
    """The name outputs are called after: ``model.onnx`` -> ``model`` (``model.l2b`` ...)."""
    if path is None:
        return "model"
    return path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.stem


def _external_locations(proto: ModelProto) -> list[str]:
    seen: dict[str, None] = {}
    for tensor in iter_model_tensors(proto):
        if tensor.data_location == TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    seen.setdefault(entry.value, None)
    return list(seen)


def load_model(source: ModelSource, load_data: bool = True) -> LoadedModel:
    """Read a model from a path (with its external data) or take a ModelProto as it is.

    ``load_data=False`` reads only the graph: enough to inspect a model of any size.
    """
    if isinstance(source, ModelProto):
        if not source.HasField("graph"):
            raise ModelError("the ModelProto has no graph")
        return LoadedModel(source, None, source.ByteSize(), [], True)
    path = Path(source)
    if not path.exists():
        raise ModelError(f"no such file: {path}")
    if not path.is_file():
        raise ModelError(f"not a file: {path}")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    if not proto.HasField("graph") or len(proto.graph.node) == 0 or not proto.opset_import:
        raise ModelError(f"{path} is not an ONNX model (no graph or no opset)")
    locations = _external_locations(proto)
    external = [external_data_path(path, loc) for loc in locations]
    for ext in external:
        if not ext.exists():
            raise ModelError(f"external data file of {path.name} is missing: {ext}")
    if load_data and locations:
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise ModelError(f"cannot read external data of {path}: {exc}") from None
    size = path.stat().st_size + sum(ext.stat().st_size for ext in external)
    return LoadedModel(proto, path, size, external, load_data or not locations)


# --------------------------------------------------------------------------- graph walking

def node_subgraphs(node: onnx.NodeProto, index: int) -> Iterator[tuple[str, GraphProto]]:
    """The bodies of an If/Loop/Scan node, each with a readable label (``if.then_branch``)."""
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for k, sub in enumerate(subs):
            label = f"{node.name or node.op_type + str(index)}.{attr.name}"
            yield (f"{label}[{k}]" if len(subs) > 1 else label), sub


def iter_graphs(graph: GraphProto, path: str = "main") -> Iterator[tuple[GraphProto, str]]:
    """Every graph of the model, the main one first, each with a readable path."""
    yield graph, path
    for index, node in enumerate(graph.node):
        for label, sub in node_subgraphs(node, index):
            yield from iter_graphs(sub, f"{path}/{label}")


def iter_model_tensors(proto: ModelProto) -> Iterator[TensorProto]:
    """All tensors that carry data: initializers and Constant/attribute tensors, in all graphs."""
    for graph, _ in iter_graphs(proto.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    """The tensor held by a Constant node's ``value`` attribute, if that is what it holds."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
    return None


def remove_constants(graph: GraphProto, names: set[str]) -> None:
    """Drop the initializers and Constant nodes that define ``names`` in this graph."""
    keep_inits = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    keep_nodes = [n for n in graph.node
                  if not (constant_tensor(n) is not None and n.output and n.output[0] in names)]
    del graph.node[:]
    graph.node.extend(keep_nodes)


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's value (int, float, string as bytes, list, tensor), or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _role_and_axis(node: onnx.NodeProto, index: int, rank: int) -> tuple[str, int | None]:
    """Which parameter of the operator this input is, and its output-channel axis."""
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    if op == "Conv":
        return ("conv", 0) if index == 1 else ("bias", None)
    if op == "ConvTranspose":
        return ("conv_transpose", 1) if index == 1 else ("bias", None)
    if op == "Gemm":
        if index == 1:
            return "gemm", 0 if node_attr(node, "transB", 0) else 1
        if index == 0:
            return "gemm", 1 if node_attr(node, "transA", 0) else 0
        return "bias", None
    if op == "MatMul":
        if rank < 2:
            return "other", None
        return "matmul", rank - 1 if index == 1 else rank - 2
    if op == "Gather" and index == 0:
        axis = node_attr(node, "axis", 0)
        return "embedding", axis % rank if rank else None
    return "other", None


def _tensor_shape(tensor: TensorProto) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.dims)


def discover_weights(proto: ModelProto) -> list[Weight]:
    """Find every constant tensor, its consumers, and whether and how it can be compressed."""
    weights: list[Weight] = []

    def visit(graph: GraphProto, path: str, outer: dict[str, Weight]) -> None:
        scope = dict(outer)
        for inp in graph.input:  # a subgraph's formal inputs shadow outer names
            scope.pop(inp.name, None)
        for init in graph.initializer:
            w = Weight(init.name, path, "initializer", _tensor_shape(init), init.data_type,
                       init.data_location == TensorProto.EXTERNAL)
            weights.append(w)
            scope[init.name] = w
        for node in graph.node:
            tensor = constant_tensor(node)
            if tensor is not None and node.output:
                w = Weight(node.output[0], path, "constant", _tensor_shape(tensor),
                           tensor.data_type, tensor.data_location == TensorProto.EXTERNAL)
                weights.append(w)
                scope[node.output[0]] = w
        for index, node in enumerate(graph.node):
            name = node.name or f"{node.op_type}_{index}"
            for slot, inp in enumerate(node.input):
                if inp in scope:
                    scope[inp].consumers.append(Consumer(node.op_type, name, slot, path))
            for label, sub in node_subgraphs(node, index):
                visit(sub, f"{path}/{label}", scope)

    visit(proto.graph, "main", {})
    nodes = {(g_path, n.name or f"{n.op_type}_{i}"): n
             for g, g_path in iter_graphs(proto.graph) for i, n in enumerate(g.node)}
    for w in weights:
        _classify(w, nodes)
    return weights


def _classify(w: Weight, nodes: dict[tuple[str, str], onnx.NodeProto]) -> None:
    rank = len(w.shape)
    roles = [_role_and_axis(nodes[(c.graph, c.node)], c.input_index, rank) for c in w.consumers]
    compressible_roles = [r for r in roles if r[0] not in ("other", "bias")]
    if compressible_roles:
        w.role, w.channel_axis = compressible_roles[0]
    elif roles:
        w.role = roles[0][0]
    if w.elem_type not in FLOAT_TYPES:
        w.reason = f"{onnx.helper.tensor_dtype_to_string(w.elem_type).split('.')[-1].lower()} tensor"
    elif not w.consumers:
        w.reason = "no consumer"
    elif rank < 2:
        w.reason = "rank < 2 (bias, scale or shape)"
    elif w.numel < MIN_COMPRESSIBLE_ELEMENTS:
        w.reason = f"fewer than {MIN_COMPRESSIBLE_ELEMENTS} elements"
    elif len(compressible_roles) < len(roles):
        other = next(c for c, r in zip(w.consumers, roles) if r[0] in ("other", "bias"))
        w.reason = f"also read by {other.op_type} (input {other.input_index})"
    else:
        axes = {axis for _, axis in compressible_roles}
        w.compressible = True
        w.reason = "compressible" if len(axes) == 1 else (
            f"compressible; consumers disagree on the channel axis, using {w.channel_axis}")


def find_tensor(proto: ModelProto, weight: Weight) -> TensorProto:
    """The TensorProto holding a weight's data."""
    for graph, path in iter_graphs(proto.graph):
        if path != weight.graph:
            continue
        if weight.source == "initializer":
            for init in graph.initializer:
                if init.name == weight.name:
                    return init
        for node in graph.node:
            tensor = constant_tensor(node)
            if tensor is not None and node.output and node.output[0] == weight.name:
                return tensor
    raise KeyError(weight.key)


def tensor_array(tensor: TensorProto) -> np.ndarray:
    """A tensor's values; a tensor whose data do not fill its shape (a malformed or crafted
    model) raises :class:`ModelError` instead of numpy's reshape error."""
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"tensor {tensor.name!r} of shape {list(tensor.dims)} does not hold the data its "
                         f"shape needs ({str(exc).splitlines()[0][:120]})") from None


def weight_array(proto: ModelProto, weight: Weight) -> np.ndarray:
    """A weight's values as a numpy array (external data must have been loaded)."""
    return tensor_array(find_tensor(proto, weight))


def graph_inputs(proto: ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller must feed: graph inputs that are not initializers (IR < 4 lists both)."""
    inits = {init.name for init in proto.graph.initializer}
    return [inp for inp in proto.graph.input if inp.name not in inits]
