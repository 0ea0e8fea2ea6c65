"""The Python API: inspect, compress, decompress, validate.

The CLI is a thin layer over these functions; every option has the same name here.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx import ModelProto

from . import __version__
from .codec.container import StoredFile, decode_container, encode_container, read_manifest
from .data import DataSource, load_data, load_labels
from .emit import emit_quantized
from .errors import BitstreamError, OnnxL2Error
from .evaluate import ValidationResult, validate_models
from .fileio import write_files_atomically
from .model import ModelSource, Weight, discover_weights, load_model, weight_array
from .progress import Stages
from .report import to_html, to_json
from .storage import files_to_model, model_files, original_files
from .transforms.fold import fold_batchnorm
from .transforms.quantize import quantize_per_channel

BITS_RANGE = range(2, 9)


# ----------------------------------------------------------------------------- inspect

@dataclass
class InspectResult:
    """Every weight of a model with its consumers, and what will be compressed."""

    model: str
    file_bytes: int
    opset: int
    ir_version: int
    weights: list[Weight]

    @property
    def compressible(self) -> list[Weight]:
        return [w for w in self.weights if w.compressible]

    def totals(self) -> dict[str, int]:
        return {"weights": len(self.weights),
                "params": sum(w.numel for w in self.weights),
                "bytes": sum(w.nbytes for w in self.weights),
                "compressible_weights": len(self.compressible),
                "compressible_params": sum(w.numel for w in self.compressible),
                "compressible_bytes": sum(w.nbytes for w in self.compressible)}

    def to_dict(self) -> dict:
        return {"model": self.model, "file_bytes": self.file_bytes, "opset": self.opset,
                "ir_version": self.ir_version, "totals": self.totals(),
                "weights": [_weight_dict(w) for w in self.weights]}


def _weight_dict(w: Weight) -> dict:
    return {"name": w.name, "graph": w.graph, "source": w.source, "shape": list(w.shape),
            "dtype": w.dtype.name, "params": w.numel, "bytes": w.nbytes, "external": w.external,
            "role": w.role, "channel_axis": w.channel_axis, "compressible": w.compressible,
            "reason": w.reason,
            "consumers": [f"{c.op_type}:{c.node}[{c.input_index}]" for c in w.consumers]}


def inspect(model: ModelSource) -> InspectResult:
    """List every weight; reads only the graph, so it works on models of any size."""
    loaded = load_model(model, load_data=False)
    from .emit import default_opset
    return InspectResult(str(loaded.path or "<ModelProto>"), loaded.file_bytes,
                         default_opset(loaded.proto), loaded.proto.ir_version,
                         discover_weights(loaded.proto))


# ----------------------------------------------------------------------------- compress

@dataclass
class _ModelFiles:
    """A model as the files it is stored in (the .onnx first, then external data)."""

    files: list[tuple[str, bytes]]

    @property
    def model(self) -> ModelProto:
        """The model as a ModelProto, external data loaded."""
        return files_to_model(self.files)


@dataclass
class CompressResult(_ModelFiles):
    """What compress produced: the bitstream, the model it decodes to, and the report."""

    bitstream: bytes = b""
    report: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


def _check_bits(bits: int | None, lossless: bool) -> None:
    if lossless and bits is not None:
        raise OnnxL2Error("give either --bits or --lossless, not both")
    if not lossless and bits is None:
        raise OnnxL2Error("give --bits N (2..8) for uniform quantization, or --lossless")
    if bits is not None and bits not in BITS_RANGE:
        raise OnnxL2Error(f"--bits must be between 2 and 8, got {bits}")


def compress(model: ModelSource, data: DataSource | None = None, *, bits: int | None = None,
             lossless: bool = False, labels: Any = None, output_dir: str | os.PathLike | None = None,
             label_output: str | None = None, devices: tuple[str, ...] = ("cpu", "cuda"),
             fold: bool = True, quiet: bool = False) -> CompressResult:
    """Compress a model to a sidecar bitstream (and, unless lossless, a runnable ONNX).

    ``data`` (npz path, folder, dict, or CalibrationDataReader) is used to validate the result;
    with ``labels`` the report also has task accuracy before and after. ``fold`` fuses
    BatchNormalization into the Conv before it (as ONNX Runtime does at load time) before the
    lossy step, so that the norms' vectors are not stored beside every quantized kernel.
    """
    _check_bits(bits, lossless)
    stages = Stages(None if not quiet else False)
    started = time.perf_counter()
    if lossless:
        return _compress_lossless(model, output_dir, stages, started)
    with stages.stage("load"):
        loaded = load_model(model)
        proto, folded = fold_batchnorm(loaded.proto) if fold else (loaded.proto, 0)
        weights = discover_weights(proto)
        if labels is not None and data is None:
            raise OnnxL2Error("labels need data (--data) to go with them")
        arrays = load_data(data, loaded.proto) if data is not None else None
        label_array = load_labels(labels, len(next(iter(arrays.values())))) if labels is not None else None
    with stages.stage("quantize"):
        quantized = {w.key: quantize_per_channel(weight_array(proto, w), bits, w.channel_axis, key=w.key)
                     for w in weights if w.compressible}
    with stages.stage("emit"):
        owned = loaded.path is not None or proto is not loaded.proto
        emitted, stored_as = emit_quantized(proto, weights, quantized, consume=owned)
        stored = model_files(emitted, f"{loaded.stem}.l2.onnx")
        del emitted
    weight_rows = [{"name": w.name, "graph": w.graph, "role": w.role, "shape": list(w.shape),
                    "params": w.numel, "bits": quantized[w.key].bits,
                    "container": "int4" if quantized[w.key].bits <= 4 else "int8"}
                   for w in weights if w.key in quantized]
    report: dict[str, Any] = {"onnxl2": __version__, "model": str(loaded.path or "<ModelProto>"),
                              "mode": "uniform", "bits": bits, "folded_batchnorm": folded}
    blob, accounting = _encode_and_verify(stored, report, loaded.path, stages)
    report["sizes"] = _sizes(loaded.file_bytes, blob, stored, weights, weight_rows, stored_as, accounting)
    report["weights"] = weight_rows
    report["not_compressed"] = [{"name": w.name, "graph": w.graph, "bytes": w.nbytes, "reason": w.reason}
                                for w in weights if not w.compressible]
    if arrays is not None:
        with stages.stage("validate"):
            compressed_src = stored[0].data if len(stored) == 1 else files_to_model(
                [(f.name, f.data) for f in stored])
            result = validate_models(str(loaded.path) if loaded.path else loaded.proto, compressed_src,
                                     arrays, label_array, label_output, devices, spec_model=loaded.proto)
            result.original_bytes = loaded.file_bytes
            result.compressed_bytes = sum(len(f.data) for f in stored)
            report["validation"] = result.to_dict()
    return _finish(report, blob, stored, output_dir, loaded.stem, stages, started,
                   [loaded.path] + loaded.external_files if loaded.path else [])


def _compress_lossless(model: ModelSource, output_dir, stages: Stages, started: float) -> CompressResult:
    """Code the model's own bytes: decoding gives back the original file(s) bit for bit."""
    path = None if isinstance(model, ModelProto) else Path(model)
    with stages.stage("read"):
        stored = original_files(model if path is None else path)
    original_bytes = sum(len(f.data) for f in stored)
    report: dict[str, Any] = {"onnxl2": __version__, "model": str(path or "<ModelProto>"),
                              "mode": "lossless", "bits": None}
    blob, accounting = _encode_and_verify(stored, report, path, stages)
    report["sizes"] = {"original_file_bytes": original_bytes, "bitstream_bytes": len(blob),
                       "file_ratio": original_bytes / len(blob), "coded_tensors": len(accounting)}
    stem = path.name[:-5] if path and path.name.endswith(".onnx") else (path.stem if path else "model")
    protect = [path.parent / f.name for f in stored] if path else []
    return _finish(report, blob, stored, output_dir, stem, stages, started, protect, write_model=False)


def _encode_and_verify(stored: list[StoredFile], report: dict, path: Path | None,
                       stages: Stages) -> tuple[bytes, list]:
    """Write the bitstream, then decode it and check it gives back exactly ``stored``."""
    with stages.stage("encode"):
        meta = {"mode": report["mode"], "bits": report["bits"],
                "source": path.name if path else None, "onnxl2": __version__}
        blob, accounting = encode_container(stored, meta)
    with stages.stage("verify round trip"):
        decoded, _ = decode_container(blob)  # raises unless every file matches its sha256
        if [(n, d) for n, d in decoded] != [(f.name, f.data) for f in stored]:
            raise RuntimeError("internal error: the bitstream does not decode to the written files")
        del decoded
    report["roundtrip"] = "bit-exact (decoded files equal the written files byte for byte)"
    return blob, accounting


def _finish(report: dict, blob: bytes, stored: list[StoredFile], output_dir, stem: str,
            stages: Stages, started: float, protect: list[Path], write_model: bool = True
            ) -> CompressResult:
    """Timings into the report; the bitstream, report and (unless lossless) model written."""
    report["timings_s"] = {**{k: round(v, 3) for k, v in stages.seconds.items()},
                           "total": round(time.perf_counter() - started, 3)}
    result = CompressResult([(f.name, f.data) for f in stored], blob, report)
    if output_dir is not None:
        out_dir = Path(output_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise OnnxL2Error(f"output {out_dir} exists and is not a folder")
        targets = {out_dir / name: data for name, data in result.files} if write_model else {}
        targets[out_dir / f"{stem}.l2b"] = blob
        targets[out_dir / "report.json"] = to_json(report)
        targets[out_dir / "report.html"] = to_html(report)
        write_files_atomically(targets, tuple(protect))
        result.written = list(targets)
    return result


def _sizes(original_bytes: int, blob: bytes, stored, weights, weight_rows, stored_as,
          accounting) -> dict:
    """File ratio (the headline) and weight ratio (the papers' count), per weight coded bytes."""
    coded = {c.name: c.coded_bytes for c in accounting}
    raw_by_name = {}
    for f in stored:
        for span in f.spans:
            raw_by_name[span.name] = span.length
    sizes = {"original_file_bytes": original_bytes, "bitstream_bytes": len(blob),
             "file_ratio": original_bytes / len(blob)}
    sizes["compressed_onnx_bytes"] = sum(len(f.data) for f in stored)
    by_key = {w.key: w for w in weights}
    float32_bytes = coded_bytes = 0
    for row, (key, names) in zip(weight_rows, stored_as.items()):
        w = by_key[key]
        row["coded_bytes"] = sum(coded.get(n, raw_by_name.get(n, 0)) for n in names)
        row["bits_per_param"] = 8 * row["coded_bytes"] / max(1, w.numel)
        float32_bytes += 4 * w.numel
        coded_bytes += row["coded_bytes"]
    sizes["compressible_float32_bytes"] = float32_bytes
    sizes["coded_weight_bytes"] = coded_bytes
    sizes["weight_ratio"] = float32_bytes / coded_bytes if coded_bytes else None
    return sizes


# ----------------------------------------------------------------------------- decompress

@dataclass
class DecompressResult(_ModelFiles):
    """The decoded files and the bitstream's metadata (mode, bits, source name)."""

    meta: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


def _read_bitstream(bitstream: str | os.PathLike | bytes) -> bytes:
    if isinstance(bitstream, (bytes, bytearray, memoryview)):
        return bytes(bitstream)
    path = Path(bitstream)
    if not path.is_file():
        raise OnnxL2Error(f"no such file: {path}")
    return path.read_bytes()


def decompress(bitstream: str | os.PathLike | bytes, output: str | os.PathLike | None = None
               ) -> DecompressResult:
    """Decode a ``.l2b``; with ``output`` write the model there (external data beside it)."""
    blob = _read_bitstream(bitstream)
    files, meta = decode_container(blob)
    result = DecompressResult(files, meta)
    if output is not None:
        out = Path(output)
        targets = {out: files[0][1]}
        for name, data in files[1:]:
            targets[out.parent / name] = data
        protect = (Path(bitstream),) if not isinstance(bitstream, (bytes, bytearray, memoryview)) else ()
        write_files_atomically(targets, protect)
        result.written = list(targets)
    return result


# ----------------------------------------------------------------------------- validate

def _as_session_source(model: ModelSource | bytes) -> tuple[Any, ModelProto]:
    """A model for ONNX Runtime plus its graph (for input specs); ``.l2b`` files are decoded."""
    if isinstance(model, ModelProto):
        return model, model
    if isinstance(model, (bytes, bytearray)):
        proto = files_to_model([("model.onnx", bytes(model))])
        return bytes(model), proto
    path = Path(model)
    if path.suffix == ".l2b" and path.is_file():
        proto = decompress(path).model
        return proto, proto
    loaded = load_model(path, load_data=False)
    return str(path), loaded.proto


def validate(original: ModelSource, compressed: ModelSource | bytes, data: DataSource,
             labels: Any = None, label_output: str | None = None,
             devices: tuple[str, ...] = ("cpu", "cuda")) -> ValidationResult:
    """Compare a compressed model with its original on the same data, on CPU (and CUDA)."""
    orig_src, orig_proto = _as_session_source(original)
    comp_src, _ = _as_session_source(compressed)
    arrays = load_data(data, orig_proto)
    label_array = load_labels(labels, len(next(iter(arrays.values())))) if labels is not None else None
    result = validate_models(orig_src, comp_src, arrays, label_array, label_output, devices,
                             spec_model=orig_proto)
    for src, attr in ((original, "original_bytes"), (compressed, "compressed_bytes")):
        if isinstance(src, (str, os.PathLike)):
            setattr(result, attr, Path(src).stat().st_size)
    return result


__all__ = ["inspect", "compress", "decompress", "validate", "read_manifest", "BitstreamError"]
