"""Models as files on disk, and the payload spans the container codes separately.

A model is one ``.onnx`` file plus, for large models, external data files. Both the original
(for the lossless mode) and the emitted model go through the same path: file bytes and the
byte ranges of each tensor inside them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import ModelProto, TensorProto

from pathlib import Path

from .codec.container import StoredFile
from .codec.tensor_spans import scan_model, tensor_spans
from .errors import BitstreamError, ModelError
from .model import iter_model_tensors
from .paths import external_data_path, plain_name_problem

#: protobuf cannot serialize a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1
#: Past this size the model's tensors move to an external data file (a margin below the limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
#: Tensors at least this large move to the external data file when one is needed.
EXTERNAL_TENSOR_MIN_BYTES = 1024
_ALIGN = 4096


def _external_info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def original_files(source: Path | ModelProto) -> list[StoredFile]:
    """The model exactly as the user has it on disk (or as the given ModelProto serializes).

    Read at the byte level, without building a ModelProto: the lossless mode needs the bytes
    only, and a parsed copy would double its memory.
    """
    if isinstance(source, ModelProto):
        data = source.SerializeToString()
        return [StoredFile("model.onnx", data, tuple(tensor_spans(data)))]
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"no such file: {path}")
    data = path.read_bytes()
    try:
        scan = scan_model(data)
    except (ValueError, IndexError, RecursionError):
        raise ModelError(f"{path} is not an ONNX model (not protobuf)") from None
    if not scan.has_graph or not scan.has_opset:
        raise ModelError(f"{path} is not an ONNX model (no graph or no opset)")
    files = [StoredFile(path.name, data, tuple(scan.spans))]
    for location, spans in scan.external_files().items():
        ext = external_data_path(path, location)
        if plain_name_problem(location):  # the bitstream stores plain names only
            raise ModelError(f"external data {location!r} of {path.name} is in a subfolder; the lossless "
                             "mode stores external data that lies beside the model (move it there)")
        if not ext.is_file():
            raise ModelError(f"external data file of {path.name} is missing: {ext}")
        files.append(StoredFile(location, ext.read_bytes(), tuple(spans)))
    return files


def model_files(proto: ModelProto, name: str) -> list[StoredFile]:
    """Serialize a model to file bytes, moving big tensors to ``NAME.data`` past 2 GB."""
    if proto.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        data = proto.SerializeToString()
        return [StoredFile(name, data, tuple(tensor_spans(data)))]
    location = f"{name}.data"
    blob = bytearray()
    out = ModelProto()
    out.CopyFrom(proto)
    for tensor in iter_model_tensors(out):
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < EXTERNAL_TENSOR_MIN_BYTES:
            continue
        blob += b"\0" * (-len(blob) % _ALIGN)
        offset, length = len(blob), len(tensor.raw_data)
        blob += tensor.raw_data
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    if out.ByteSize() >= PROTOBUF_LIMIT:
        raise ModelError("the compressed model's graph alone exceeds 2 GB")
    data = out.SerializeToString()
    scan = scan_model(data)
    return [StoredFile(name, data, tuple(scan.spans)),
            StoredFile(location, bytes(blob), tuple(scan.external_files().get(location, [])))]


def check_model_files(files: list[tuple[str, bytes | bytearray]]) -> None:
    """Refuse a decoded file set that is not one ONNX model and exactly the external data files
    it names (raises :class:`BitstreamError`).

    Each file's bytes are covered by its checksum, but which file is the model, and what the
    others are called, is only what the manifest says: a set whose first file is not a model,
    or whose data files carry names the model does not use, would be written as a broken model.
    """
    main_name, main = files[0]
    try:
        scan = scan_model(main)
    except (ValueError, IndexError, RecursionError):
        scan = None
    if scan is None or not scan.has_graph or not scan.has_opset:
        raise BitstreamError(f"the bitstream's first file {main_name!r} is not an ONNX model")
    named, held = set(scan.external_files()), {name for name, _ in files[1:]}
    if named != held:
        raise BitstreamError(f"the bitstream holds data files {sorted(held)} where its model names "
                             f"{sorted(named)}; nothing was written")


def files_to_model(files: list[tuple[str, bytes]]) -> ModelProto:
    """Load a decoded file set back into a ModelProto with its external data in memory.

    The files may come from a bitstream someone sent: a model that is not protobuf, or whose
    external data name a file the set does not hold or bytes past its end, raises
    :class:`BitstreamError`.
    """
    main_name, main = files[0]
    try:
        proto = onnx.load_model_from_string(bytes(main))
    except Exception as exc:  # protobuf raises several unrelated types
        raise BitstreamError(f"the decoded {main_name} is not an ONNX model ({type(exc).__name__})") from None
    blobs = dict(files[1:])
    for tensor in iter_model_tensors(proto):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = _external_info(tensor)
        blob = blobs.get(info.get("location"))
        if blob is None:
            raise BitstreamError(f"{main_name} names external data {info.get('location')!r} that is not "
                                 "among the decoded files")
        try:
            offset = int(info.get("offset", 0))
            length = int(info.get("length", len(blob) - offset))
        except ValueError:
            raise BitstreamError(f"{main_name} gives tensor {tensor.name!r} an unreadable offset or length") from None
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise BitstreamError(f"{main_name} places tensor {tensor.name!r} outside its external data file")
        tensor.raw_data = bytes(np.frombuffer(blob, np.uint8, length, offset))
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]
    return proto


@dataclass
class ModelFiles:
    """A model as the files it is stored in (the .onnx first, then external data)."""

    files: list[tuple[str, bytes]]

    @property
    def model(self) -> ModelProto:
        """The model as a ModelProto, external data loaded."""
        return files_to_model(self.files)
