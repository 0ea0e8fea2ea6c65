"""Find where tensor data lie inside a serialized ONNX file, at the byte level.

The container stores a file as its bytes with the tensor payloads cut out (the *skeleton*) plus
each payload coded by a codec that knows its dtype. Working on byte offsets rather than on a
re-serialized ModelProto is what makes decoding bit-exact for any file, however its writer
ordered its protobuf fields. Only the messages that can hold tensors are descended into.
"""
from __future__ import annotations

from dataclasses import dataclass

# field numbers from onnx.proto
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_FLOAT, _TENSOR_NAME, _TENSOR_RAW, _TENSOR_DOUBLE = 1, 2, 4, 8, 9, 10
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1
_MODEL_OPSET_IMPORT = 8


@dataclass(frozen=True)
class TensorSpan:
    """Where one tensor's payload sits in a file."""

    name: str
    elem_type: int
    dims: tuple[int, ...]
    offset: int
    length: int


@dataclass(frozen=True)
class ExternalRef:
    """A tensor whose data lie in another file (ONNX external data); ``span`` is where in that
    file, or None when the model does not record the length."""

    location: str
    span: TensorSpan | None


@dataclass(frozen=True)
class ModelScan:
    """What a byte-level pass over a serialized ModelProto finds."""

    spans: list[TensorSpan]
    external: list[ExternalRef]
    has_graph: bool
    has_opset: bool

    def external_files(self) -> dict[str, list[TensorSpan]]:
        """Per external data file (every one the model names), the tensor spans inside it."""
        files: dict[str, list[TensorSpan]] = {}
        for ref in self.external:
            files.setdefault(ref.location, [])
            if ref.span is not None:
                files[ref.location].append(ref.span)
        return files


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value) triples; value is an int or a (start, end) range."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = (pos, pos + 8), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        elif wire == 5:
            value, pos = (pos, pos + 4), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("protobuf field runs past its message")
        yield number, wire, value


def _packed_varints(buf: bytes, start: int, end: int) -> list[int]:
    out, pos = [], start
    while pos < end:
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def _string_map_entry(buf: bytes, start: int, end: int) -> tuple[str, str]:
    key = value = ""
    for number, wire, field in _fields(buf, start, end):
        if wire == 2 and number in (1, 2):
            text = bytes(buf[field[0]:field[1]]).decode("utf-8", "replace")
            key, value = (text, value) if number == 1 else (key, text)
    return key, value


def _tensor(buf: bytes, start: int, end: int, spans: list) -> None:
    dims: list[int] = []
    elem_type = 0
    name = ""
    payload: tuple[int, int] | None = None
    external: dict[str, str] = {}
    location = 0
    for number, wire, value in _fields(buf, start, end):
        if number == _TENSOR_EXTERNAL_DATA and wire == 2:
            key, text = _string_map_entry(buf, *value)
            external[key] = text
        elif number == _TENSOR_DATA_LOCATION and wire == 0:
            location = value
        elif number == _TENSOR_DIMS:
            dims.extend(_packed_varints(buf, *value) if wire == 2 else [value])
        elif number == _TENSOR_TYPE and wire == 0:
            elem_type = value
        elif number == _TENSOR_NAME and wire == 2:
            name = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif number in (_TENSOR_RAW, _TENSOR_FLOAT, _TENSOR_DOUBLE) and wire == 2:
            payload = value
    if location == _EXTERNAL and "location" in external:
        span = TensorSpan(name, elem_type, tuple(dims), int(external.get("offset", 0)),
                          int(external["length"])) if "length" in external else None
        spans.append(ExternalRef(external["location"], span))
    elif payload is not None and payload[1] > payload[0]:
        spans.append(TensorSpan(name, elem_type, tuple(dims), payload[0], payload[1] - payload[0]))


def _graph(buf: bytes, start: int, end: int, spans: list[TensorSpan]) -> None:
    for number, wire, value in _fields(buf, start, end):
        if wire != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(buf, *value, spans)
        elif number == _GRAPH_NODE:
            _node(buf, *value, spans)


def _node(buf: bytes, start: int, end: int, spans: list[TensorSpan]) -> None:
    for number, wire, value in _fields(buf, start, end):
        if number == _NODE_ATTRIBUTE and wire == 2:
            _attribute(buf, *value, spans)


def _attribute(buf: bytes, start: int, end: int, spans: list[TensorSpan]) -> None:
    for number, wire, value in _fields(buf, start, end):
        if wire != 2:
            continue
        if number in (_ATTR_T, _ATTR_TENSORS):
            _tensor(buf, *value, spans)
        elif number in (_ATTR_G, _ATTR_GRAPHS):
            _graph(buf, *value, spans)


def scan_model(model_bytes: bytes) -> ModelScan:
    """One pass over a serialized ModelProto: tensor payload spans and external data references.

    Raises ValueError when the bytes are not protobuf.
    """
    spans: list = []
    has_graph = has_opset = False
    for number, wire, value in _fields(model_bytes, 0, len(model_bytes)):
        if wire != 2:
            continue
        has_opset |= number == _MODEL_OPSET_IMPORT
        if number == _MODEL_GRAPH:
            has_graph = True
            _graph(model_bytes, *value, spans)
        elif number == _MODEL_FUNCTIONS:
            for fnum, fwire, fvalue in _fields(model_bytes, *value):
                if fnum == _FUNCTION_NODE and fwire == 2:
                    _node(model_bytes, *fvalue, spans)
    inline = sorted((s for s in spans if isinstance(s, TensorSpan)), key=lambda s: s.offset)
    external = [s for s in spans if isinstance(s, ExternalRef)]
    return ModelScan(inline, external, has_graph, has_opset)


def tensor_spans(model_bytes: bytes) -> list[TensorSpan]:
    """Payload spans of every tensor stored inside a serialized ModelProto, in file order."""
    return scan_model(model_bytes).spans
