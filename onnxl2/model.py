"""Load ONNX models and find their weights.

A *weight* is a constant float tensor (an initializer, or the ``value`` of a Constant node) of
rank 2 or more. A quantized weight is rebuilt by a DequantizeLinear (or a Cast and a Mul) in
front of its readers, so it is the same float tensor to every reader: each is a candidate,
whoever reads it and however many readers it has. What the readers decide is the channel axis
that per-channel steps run along: the output channels of the operators whose parameters are
known (Conv/ConvTranspose kernels, Gemm and MatMul operands, Gather tables, LSTM/GRU/RNN input
and recurrent weights, per direction), followed through Slice, Transpose, Reshape, Squeeze,
Unsqueeze, Concat, Identity and float Casts (PyTorch writes an LSTM's gates reordered with
Slice, Concat and Unsqueeze); where no reader says, the axis that codes smallest at the
same error (``axes.choose_axes``). Only readers whose result jumps where a value crosses a
threshold (comparisons, Floor, Ceil, Round, ArgMax, Casts to integers) keep a weight in float:
a rounding error there is no small error.

Graphs are walked with scopes, so initializers inside If/Loop/Scan bodies and outer-scope
weights used inside a body are found too; a tensor with several consumers is still one weight.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np
import onnx
from onnx import ModelProto, GraphProto, TensorProto, numpy_helper

from .errors import ModelError, OnnxL2Error
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
    #: the channels run over every axis up to ``channel_axis`` (a recurrent layer's directions
    #: and gate rows: a step per row of each direction)
    merged_channels: bool = False
    #: which reader decided the channel axis ("Conv", "MatMul through Transpose", "size": none did)
    axis_from: str = ""
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


#: Recurrent operators: input 1 is W [directions, gates * hidden, inputs], input 2 is R
#: [directions, gates * hidden, hidden]; their rows (per direction) are the output channels.
RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
#: Readers that pass a tensor on with its elements in place or moved, whose readers decide.
_PASS_THROUGH = {"Identity", "Cast", "Slice", "Concat", "Transpose", "Squeeze", "Unsqueeze", "Reshape"}
#: Readers whose result jumps where a value crosses a threshold: a weight they read stays exact.
_THRESHOLD_READERS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Floor", "Ceil", "Round",
                      "Sign", "ArgMax", "ArgMin", "TopK", "NonZero", "Mod", "IsInf", "IsNaN", "BitShift"}
_FLOAT_ELEM_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
#: How far a chain of pass-through readers is followed.
_MAX_CHAIN = 6


@dataclass(frozen=True)
class _Decision:
    """What one reader says of a weight: ``kind`` "axis" (with role, axis, merged), "open" (it
    does not care which axis) or "exact" (keep the values exactly)."""

    kind: str
    reader: str
    role: str = "other"
    axis: int | None = None
    merged: bool = False


def _role_and_axis(node: onnx.NodeProto, index: int, rank: int) -> tuple[str, int | None, bool]:
    """Which parameter of the operator this input is, its output-channel axis, and whether the
    channels run over the axes before it too (None: the operator does not say)."""
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    if op == "Conv":
        return ("conv", 0, False) if index == 1 else ("bias", None, False)
    if op == "ConvTranspose":
        return ("conv_transpose", 1, False) if index == 1 else ("bias", None, False)
    if op == "Gemm":
        if index == 1:
            return "gemm", 0 if node_attr(node, "transB", 0) else 1, False
        if index == 0:
            return "gemm", 1 if node_attr(node, "transA", 0) else 0, False
        return "bias", None, False
    if op == "MatMul":
        if rank < 2:
            return "other", None, False
        return "matmul", rank - 1 if index == 1 else rank - 2, False
    if op == "Gather" and index == 0:
        axis = node_attr(node, "axis", 0)
        return "embedding", axis % rank if rank else None, False
    if op in RECURRENT_OPS and index in (1, 2) and rank == 3:
        return ("recurrent_input" if index == 1 else "recurrent_hidden"), 1, True
    return "other", None, False


class _Readers:
    """The nodes reading each tensor of each graph, and the small integer constants (shapes,
    axes) that following a Reshape, Squeeze or Unsqueeze needs."""

    def __init__(self, proto: ModelProto):
        self.readers: dict[str, list[tuple[onnx.NodeProto, int, str]]] = {}  # by tensor name, any graph
        self.ints: dict[tuple[str, str], TensorProto] = {}
        self.ints_by_name: dict[str, list[TensorProto]] = {}  # a body reads its parents' constants too
        self.shadowed: dict[str, set[str]] = {}  # per graph, its formal inputs
        for graph, path in iter_graphs(proto.graph):
            found = [(t.name, t) for t in graph.initializer] + [
                (n.output[0], constant_tensor(n)) for n in graph.node if constant_tensor(n) is not None and n.output]
            for name, t in found:
                if t.data_type == TensorProto.INT64 and len(t.dims) <= 1:
                    self.ints[(path, name)] = t
                    self.ints_by_name.setdefault(name, []).append(t)
            self.shadowed[path] = {i.name for i in graph.input}
            for node in graph.node:
                for slot, name in enumerate(node.input):
                    if name:
                        self.readers.setdefault(name, []).append((node, slot, path))

    def of(self, path: str, name: str) -> list[tuple[onnx.NodeProto, int, str]]:
        """The readers of tensor ``name`` of graph ``path``: its own nodes' and those of the
        bodies nested in it that do not take a formal input of that name."""
        return [(node, slot, where) for node, slot, where in self.readers.get(name, [])
                if where == path or (where.startswith(path + "/") and name not in self.shadowed.get(where, ()))]

    def int_values(self, path: str, name: str) -> list[int] | None:
        """The values of an int64 constant as graph ``path`` sees it: its own, else the one of
        that name in any graph when all of them hold the same values."""
        tensors = [self.ints[(path, name)]] if (path, name) in self.ints else self.ints_by_name.get(name, [])
        if not tensors or any(t.data_location == TensorProto.EXTERNAL for t in tensors):
            return None
        try:
            values = {tuple(int(v) for v in numpy_helper.to_array(t).reshape(-1)) for t in tensors}
        except (ValueError, TypeError):  # data that do not fill the shape: nothing to follow
            return None
        return list(values.pop()) if len(values) == 1 else None


def _passed_shape(node: onnx.NodeProto, shape: tuple, path: str, readers: _Readers
                  ) -> tuple[tuple | None, Callable[[int], int | None]]:
    """The shape a pass-through reader gives its output (None entries: unknown sizes; None: not
    followed) and the map from an output axis back to the input's axis (None: no single one)."""
    op, rank = node.op_type, len(shape)
    if rank == 0 or (op == "Cast" and node_attr(node, "to", TensorProto.FLOAT) not in _FLOAT_ELEM_TYPES):
        return None, lambda a: None
    if op in ("Identity", "Cast"):
        return shape, lambda a: a
    if op == "Slice":
        return tuple(None for _ in shape), lambda a: a
    if op == "Concat":  # along any axis the input's axes are the output's
        axis = int(node_attr(node, "axis", 0)) % max(rank, 1)
        return tuple(None if i == axis else d for i, d in enumerate(shape)), lambda a: a
    if op == "Transpose":
        perm = list(node_attr(node, "perm", list(range(rank - 1, -1, -1))))
        if sorted(perm) != list(range(rank)):
            return None, lambda a: None
        return tuple(shape[p] for p in perm), lambda a: perm[a]
    if op in ("Squeeze", "Unsqueeze"):
        axes = node_attr(node, "axes")
        if axes is None and len(node.input) > 1:
            axes = readers.int_values(path, node.input[1])
        if axes is None:
            if op == "Unsqueeze" or any(d is None for d in shape):
                return None, lambda a: None
            axes = [i for i, d in enumerate(shape) if d == 1]
        axes = sorted({int(a) % (rank + len(axes) if op == "Unsqueeze" else rank) for a in axes})
        if op == "Squeeze":
            kept = [i for i in range(rank) if i not in axes]
            return tuple(shape[i] for i in kept), lambda a: kept[a]
        out_rank = rank + len(axes)
        inserted = [i for i in range(out_rank) if i not in axes]
        out = [1] * out_rank
        for i, d in zip(inserted, shape):
            out[i] = d
        return tuple(out), lambda a: None if a in axes else inserted.index(a)
    if op == "Reshape" and len(node.input) > 1 and all(d is not None for d in shape):
        target = readers.int_values(path, node.input[1])
        if target is None:
            return None, lambda a: None
        total = int(np.prod(shape, dtype=np.int64))
        dims = [shape[i] if d == 0 and not node_attr(node, "allowzero", 0) else d for i, d in enumerate(target)]
        if dims.count(-1) == 1:
            known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
            dims[dims.index(-1)] = total // known if known else 0
        if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) != total:
            return None, lambda a: None

        def back(a: int) -> int | None:
            before = int(np.prod(dims[:a], dtype=np.int64))
            return next((j for j in range(len(shape)) if shape[j] == dims[a]
                         and int(np.prod(shape[:j], dtype=np.int64)) == before), None)
        return tuple(dims), back
    return None, lambda a: None


def _decisions(name: str, path: str, shape: tuple, consumers: list[tuple[onnx.NodeProto, int, str]],
               readers: _Readers, depth: int = 0) -> list[_Decision]:
    """What the readers of a tensor of ``shape`` say about it, following pass-through readers."""
    out = []
    for node, slot, where in consumers:
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if op in _THRESHOLD_READERS or (op == "Cast" and node_attr(node, "to", 1) not in _FLOAT_ELEM_TYPES):
            out.append(_Decision("exact", f"{op} (input {slot})"))
            continue
        role, axis, merged = _role_and_axis(node, slot, len(shape))
        if axis is not None and not 0 <= axis < len(shape):  # a kernel of a rank its op cannot take
            role, axis, merged = "other", None, False
        if axis is not None:
            out.append(_Decision("axis", op, role, axis, merged))
            continue
        if op in _PASS_THROUGH and (slot == 0 or op == "Concat") and depth < _MAX_CHAIN and node.output \
                and node.output[0]:
            passed, back = _passed_shape(node, shape, where, readers)
            if passed is not None:
                after = readers.of(where, node.output[0])
                for d in _decisions(node.output[0], where, passed, after, readers, depth + 1):
                    if d.kind != "axis":
                        out.append(d)
                        continue
                    mapped = back(d.axis)
                    keep = d.merged and op in ("Identity", "Cast", "Slice", "Concat")
                    out.append(_Decision("axis", f"{d.reader} through {op}", d.role, mapped, keep)
                               if mapped is not None else _Decision("open", d.reader))
                continue
        out.append(_Decision("open", op, "bias" if role == "bias" else "other"))
    return out


def _tensor_shape(tensor: TensorProto) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.dims)


def discover_weights(proto: ModelProto) -> list[Weight]:
    """Find every constant tensor, its consumers, and whether and how it can be compressed, from
    the graph alone. A weight no reader gives an axis keeps None until ``axes.choose_axes``
    picks the one that codes smallest."""
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
    readers = _Readers(proto)
    for w in weights:
        _classify(w, nodes, readers)
    return weights


def _classify(w: Weight, nodes: dict[tuple[str, str], onnx.NodeProto], readers: _Readers) -> None:
    rank = len(w.shape)
    uses = [(nodes[(c.graph, c.node)], c.input_index, c.graph) for c in w.consumers]
    decisions = _decisions(w.name, w.graph, w.shape, uses, readers)
    known = [d for d in decisions if d.kind == "axis"]
    exact = [d for d in decisions if d.kind == "exact"]
    if known:
        w.role, w.channel_axis, w.merged_channels, w.axis_from = known[0].role, known[0].axis, known[0].merged, \
            known[0].reader
    elif decisions:
        w.role = decisions[0].role
    if w.elem_type not in FLOAT_TYPES:
        w.reason = f"{onnx.helper.tensor_dtype_to_string(w.elem_type).split('.')[-1].lower()} tensor"
    elif not w.consumers:
        w.reason = "no consumer"
    elif rank < 2:
        w.reason = "rank < 2 (bias, scale or shape)"
    elif w.numel < MIN_COMPRESSIBLE_ELEMENTS:
        w.reason = f"fewer than {MIN_COMPRESSIBLE_ELEMENTS} elements"
    elif exact:
        w.reason = f"read by {exact[0].reader}, whose result jumps where a value crosses a threshold"
    else:
        w.compressible = True
        if not known:
            w.axis_from = "size"
        axes = {(d.axis, d.merged) for d in known}
        w.reason = "compressible" if len(axes) <= 1 else (
            f"compressible; readers disagree on the channel axis, using {w.channel_axis} ({w.axis_from})")


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


#: What a linear layer's output may pass through on its way to a graph output and still be the
#: layer's output features along its last axis.
_SCORE_PASS = {"Add", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Cast"}


def linear_head_outputs(proto: ModelProto) -> dict[str, int]:
    """Graph output -> features, for outputs that are a linear layer's outputs (a MatMul or Gemm
    with a constant weight, then at most a bias Add and reshapes): per-step or per-token scores
    of any rank, as a CTC reader or a language model emits them, whose arg-max along the last
    axis is a decision when that axis still holds the layer's features (the caller checks)."""
    graph = proto.graph
    producers = {o: n for n in graph.node for o in n.output}
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        tensor = constant_tensor(node)
        if tensor is not None and node.output:
            shapes[node.output[0]] = tuple(tensor.dims)
    heads = {}
    for value in graph.output:
        name = value.name
        for _ in range(_MAX_CHAIN + 2):
            node = producers.get(name)
            if node is None or node.domain not in ("", "ai.onnx"):
                break
            if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in shapes:
                dims = shapes[node.input[1]]
                if len(dims) >= 2:
                    heads[value.name] = int(dims[0] if node.op_type == "Gemm" and node_attr(node, "transB", 0)
                                            else dims[-1])
                break
            if node.op_type not in _SCORE_PASS:
                break
            if node.op_type == "Cast" and node_attr(node, "to", TensorProto.FLOAT) not in _FLOAT_ELEM_TYPES:
                break
            varying = [i for i in node.input if i and i not in shapes]
            if node.op_type == "Add" and len(varying) != 1:
                break
            name = varying[0] if node.op_type == "Add" else node.input[0]
    return heads


def checked_output(proto: ModelProto, output: str | None) -> str:
    """The model output the loss and the labels refer to (the first by default), checked to
    exist before any work starts."""
    if not proto.graph.output:
        raise OnnxL2Error("the model has no outputs: nothing it computes can be kept or judged")
    output = output or proto.graph.output[0].name
    if output not in [o.name for o in proto.graph.output]:
        raise OnnxL2Error(f"the model has no output '{output}' "
                          f"(outputs: {', '.join(o.name for o in proto.graph.output)})")
    return output
