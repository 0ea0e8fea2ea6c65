"""The Python API: inspect, compress, decompress, validate.

The CLI is a thin layer over these functions; every option has the same name here. Each mode
of ``compress`` is an orchestrator in :mod:`onnxl2.pipeline`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx import ModelProto

from .codec.container import decode_container
from .data import DataSource, load_data, load_labels
from .errors import BitstreamError, OnnxL2Error
from .evaluate import ValidationResult, validate_models
from .fileio import write_files_atomically
from .emit import default_opset
from .model import ModelSource, Weight, checked_output, discover_weights, load_model
from .options import CompressOptions
from .pipeline.automatic import run_automatic
from .pipeline.finish import CompressResult, finish_lossy
from .pipeline.fixed import run_fixed
from .pipeline.inputs import load_inputs
from .pipeline.lossless import run_lossless
from .progress import Stages
from .runtime import check_devices, check_validation_devices
from .samples import sample_count
from .model_files import ModelFiles, check_model_files, files_to_model
from .units import parse_size


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
            "role": w.role, "channel_axis": w.channel_axis, "merged_channels": w.merged_channels,
            "axis_from": w.axis_from, "compressible": w.compressible,
            "reason": w.reason,
            "consumers": [f"{c.op_type}:{c.node}[{c.input_index}]" for c in w.consumers]}


def inspect(model: ModelSource) -> InspectResult:
    """List every weight; reads only the graph, so it works on models of any size (an axis
    chosen by coded size is chosen when compressing: its ``axis_from`` says "size")."""
    loaded = load_model(model, load_data=False)
    return InspectResult(str(loaded.path or "<ModelProto>"), loaded.file_bytes,
                         default_opset(loaded.proto), loaded.proto.ir_version,
                         discover_weights(loaded.proto))


# ----------------------------------------------------------------------------- compress

def compress(model: ModelSource, data: DataSource | None = None, *, labels: Any = None,
             eval_data: DataSource | None = None, eval_labels: Any = None,
             out_dir: str | os.PathLike | None = None, options: CompressOptions | None = None,
             **fields: Any) -> CompressResult:
    """Compress a model to a sidecar bitstream (and, unless lossless, a runnable ONNX).

    ``options`` (:class:`onnxl2.CompressOptions`, checked when made) holds every choice of the
    run; keywords named after its fields change those fields (``compress(m, d, bits=4)``).
    Modes: ``lossless``; ``bits=N`` (uniform per-channel quantization); a ``plan`` to replay;
    otherwise the automatic mode, which needs calibration ``data`` (with ``labels``, the task
    loss and accuracy): by default the smallest plan on the measured frontier that meets the
    ``contract`` (:class:`onnxl2.Contract`) on calibration samples held back from every other
    step; with ``max_loss_increase`` (absolute or "N%") the plan whose calibration loss rises at
    most that (the lossless neighbourhood); under ``target_ratio`` / ``target_size`` the least
    loss change that fits. The result is validated on ``eval_data`` (with ``eval_labels``) when
    given, else on ``data``; ``out_dir`` receives the bitstream, the ONNX, the plans and the
    reports.
    """
    opts = (options or CompressOptions()).with_fields(**fields) if fields else (options or CompressOptions())
    stages = Stages(None if not opts.quiet else False)
    if opts.mode == "lossless":
        if any(x is not None for x in (data, labels, eval_data, eval_labels)):
            raise OnnxL2Error("--lossless takes no --data, --labels, --eval-data or --eval-labels: the file "
                              "decodes byte for byte, so there is nothing to fit or validate")
        return run_lossless(model, out_dir, stages)
    started = time.perf_counter()
    inputs = load_inputs(model, data, labels, eval_data, eval_labels, opts, stages)
    outcome = (run_automatic if opts.mode == "auto" else run_fixed)(inputs, opts, stages)
    return finish_lossy(inputs, opts, outcome, out_dir, stages, started)


# ----------------------------------------------------------------------------- decompress

@dataclass
class DecompressResult(ModelFiles):
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


def decompress(bitstream: str | os.PathLike | bytes, output: str | os.PathLike | None = None,
               max_output_size: int | str | None = None) -> DecompressResult:
    """Decode a ``.l2b``; with ``output`` write the model there (external data beside it).

    A bitstream may decode to at most ``max_output_size`` (bytes, or a size such as "8GB");
    by default to 64 times its own size (at least 1 MiB), which every bitstream onnxl2 writes
    meets unless its report says otherwise. Nothing is written unless every file decodes and
    matches its checksum, and then only inside ``output``'s folder.
    """
    limit = parse_size(max_output_size) if isinstance(max_output_size, str) else max_output_size
    if limit is not None and limit < 0:
        raise OnnxL2Error(f"--max-output-size must not be negative, got {max_output_size}")
    blob = _read_bitstream(bitstream)
    files, meta = decode_container(blob, max_output_bytes=limit)
    check_model_files(files)
    result = DecompressResult(files, meta)
    if output is not None:
        out = Path(output)
        if out.is_dir():
            raise OnnxL2Error(f"output {out} is a folder; give the path of the .onnx file to write")
        if out.name in {name for name, _ in files[1:]}:
            raise BitstreamError(f"the bitstream holds a file named {out.name} beside its model; "
                                 "give the model another name")
        targets = {out: files[0][1]}
        for name, data in files[1:]:  # plain names (the manifest's check): inside out's folder
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
             labels: Any = None, model_output: str | None = None,
             devices: tuple[str, ...] = ("cpu", "cuda"), ctc: tuple[str, ...] = ()) -> ValidationResult:
    """Compare a compressed model with its original on the same data, on CPU (and CUDA);
    ``ctc``: outputs read as CTC strings (blank: class 0), whose readings kept are counted too."""
    devices = check_devices(devices)
    check_validation_devices(devices)
    orig_src, orig_proto = _as_session_source(original)
    comp_src, _ = _as_session_source(compressed)
    arrays = load_data(data, orig_proto)
    if labels is not None or model_output is not None:  # a name that is not an output is an error either way
        model_output = checked_output(orig_proto, model_output)
    label_array = load_labels(labels, sample_count(arrays)) if labels is not None else None
    unknown = sorted(set(ctc) - {o.name for o in orig_proto.graph.output})
    if unknown:
        raise OnnxL2Error(f"--ctc names outputs the model does not have: {', '.join(unknown)}")
    result = validate_models(orig_src, comp_src, arrays, label_array, model_output, devices,
                             spec_model=orig_proto, ctc=tuple(ctc))
    for src, attr in ((original, "original_bytes"), (compressed, "compressed_bytes")):
        if isinstance(src, (str, os.PathLike)):
            setattr(result, attr, Path(src).stat().st_size)
    return result


__all__ = ["inspect", "compress", "decompress", "validate", "InspectResult", "CompressResult",
           "DecompressResult"]
