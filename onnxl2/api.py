"""The Python API: inspect, compress, decompress, validate.

The CLI is a thin layer over these functions; every option has the same name here.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnx import ModelProto

from . import __version__
from .codec.container import decode_container, encode_container, read_manifest
from .data import DataSource, load_data, load_labels
from .emit import emit_quantized
from .errors import BitstreamError, OnnxL2Error
from .evaluate import ValidationResult, validate_models
from .fileio import write_files_atomically
from .model import ModelSource, Weight, discover_weights, load_model, weight_array
from .progress import Stages
from .report import to_json
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
class CompressResult:
    """What compress produced: the bitstream, the compressed model's files and the report."""

    bitstream: bytes
    files: list[tuple[str, bytes]]
    report: dict
    written: list[Path] = field(default_factory=list)

    @property
    def model(self) -> ModelProto:
        """The compressed ONNX (for lossless: the original) as a ModelProto."""
        return files_to_model(self.files)


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
    with stages.stage("load"):
        loaded = load_model(model, load_data=not lossless)
        proto, folded = fold_batchnorm(loaded.proto) if fold and not lossless else (loaded.proto, 0)
        weights = discover_weights(proto)
        arrays = load_data(data, loaded.proto) if data is not None else None
        label_array = load_labels(labels, len(next(iter(arrays.values())))) \
            if labels is not None and arrays is not None else None
        if labels is not None and arrays is None:
            raise OnnxL2Error("labels need data (--data) to go with them")
    stem = loaded.stem
    report: dict[str, Any] = {"onnxl2": __version__, "model": str(loaded.path or "<ModelProto>"),
                              "mode": "lossless" if lossless else "uniform", "bits": bits,
                              "folded_batchnorm": folded}
    if lossless:
        with stages.stage("read"):
            stored = original_files(loaded)
        weight_rows: list[dict] = []
        stored_as: dict[str, tuple[str, str]] = {}
    else:
        with stages.stage("quantize"):
            quantized = {}
            for w in weights:
                if w.compressible:
                    quantized[w.key] = quantize_per_channel(
                        weight_array(proto, w), bits, w.channel_axis, key=w.key)
        with stages.stage("emit"):
            emitted, stored_as = emit_quantized(proto, weights, quantized)
            stored = model_files(emitted, f"{stem}.l2.onnx")
        weight_rows = [{"name": w.name, "graph": w.graph, "role": w.role, "shape": list(w.shape),
                        "params": w.numel, "bits": quantized[w.key].bits,
                        "container": "int4" if quantized[w.key].bits <= 4 else "int8"}
                       for w in weights if w.key in quantized]
    with stages.stage("encode"):
        meta = {"mode": report["mode"], "bits": bits, "source": loaded.path.name if loaded.path else None,
                "onnxl2": __version__}
        blob, accounting = encode_container(stored, meta)
    with stages.stage("verify round trip"):
        decoded, _ = decode_container(blob)
        if [(n, d) for n, d in decoded] != [(f.name, f.data) for f in stored]:
            raise RuntimeError("internal error: the bitstream does not decode to the written files")
        del decoded
    report["roundtrip"] = "bit-exact (decoded files equal the written files byte for byte)"
    report["sizes"] = _sizes(loaded.file_bytes, blob, stored, weights, weight_rows, stored_as,
                             accounting, lossless)
    report["weights"] = weight_rows
    report["not_compressed"] = [{"name": w.name, "graph": w.graph, "bytes": w.nbytes, "reason": w.reason}
                                for w in weights if not w.compressible]
    if arrays is not None and not lossless:
        with stages.stage("validate"):
            original_src = str(loaded.path) if loaded.path else loaded.proto
            compressed_src = stored[0].data if len(stored) == 1 else files_to_model(
                [(f.name, f.data) for f in stored])
            result = validate_models(original_src, compressed_src, arrays, label_array,
                                     label_output, devices, spec_model=loaded.proto)
            result.original_bytes = loaded.file_bytes
            result.compressed_bytes = sum(len(f.data) for f in stored)
            report["validation"] = result.to_dict()
    report["timings_s"] = {**{k: round(v, 3) for k, v in stages.seconds.items()},
                           "total": round(time.perf_counter() - started, 3)}
    files = [(f.name, f.data) for f in stored]
    result = CompressResult(blob, files, report)
    if output_dir is not None:
        result.written = _write_outputs(Path(output_dir), stem, result, lossless, loaded)
    return result


def _sizes(original_bytes: int, blob: bytes, stored, weights, weight_rows, stored_as,
           accounting, lossless: bool) -> dict:
    coded = {c.name: c.coded_bytes for c in accounting}
    raw_by_name = {}
    for f in stored:
        for span in f.spans:
            raw_by_name[span.name] = span.length
    sizes = {"original_file_bytes": original_bytes, "bitstream_bytes": len(blob),
             "file_ratio": original_bytes / len(blob)}
    if lossless:
        sizes["coded_tensors"] = len(accounting)
        return sizes
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


def _write_outputs(out_dir: Path, stem: str, result: CompressResult, lossless: bool, loaded) -> list[Path]:
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxL2Error(f"output {out_dir} exists and is not a folder")
    targets: dict[Path, bytes] = {}
    if not lossless:
        for name, data in result.files:
            targets[out_dir / name] = data
    targets[out_dir / f"{stem}.l2b"] = result.bitstream
    targets[out_dir / "report.json"] = to_json(result.report)
    protect = tuple([loaded.path] + loaded.external_files) if loaded.path else ()
    write_files_atomically(targets, protect)
    return list(targets)


# ----------------------------------------------------------------------------- decompress

@dataclass
class DecompressResult:
    files: list[tuple[str, bytes]]
    meta: dict
    written: list[Path] = field(default_factory=list)

    @property
    def model(self) -> ModelProto:
        return files_to_model(self.files)


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
