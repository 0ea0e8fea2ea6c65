"""The last stages of every mode: emit the compressed ONNX, encode and verify the bitstream,
validate, and write the outputs; each mode's orchestrator calls them in turn."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from onnx import ModelProto

from ..version import __version__
from ..candidates import FLOAT16, Candidate
from ..codec.container import OUTPUT_RATIO, StoredFile, decode_container, default_output_limit, encode_container
from ..emit import emit_quantized
from ..errors import OnnxL2Error
from ..evaluate import ValidationResult, validate_models
from ..fileio import write_files_atomically
from ..model import Weight
from ..options import CompressOptions
from ..progress import Stages
from ..report import to_html, to_json
from ..plans import Plan
from ..report_parts import (AllocationReport, CompressReport, coded_by_weight, compute, sizes, tensor_bytes,
                            weight_rows)
from ..sensitivity import Sensitivity
from ..model_files import ModelFiles, files_to_model, model_files
from .inputs import RunInputs


@dataclass
class CompressResult(ModelFiles):
    """What compress produced: the bitstream, the files it decodes to, and the report."""

    bitstream: bytes | bytearray = b""
    report: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


@dataclass
class Outcome:
    """What a lossy mode chose: a candidate per weight, the plan it makes, and (the automatic
    mode) how it was found and the plans of the next larger ratios."""

    chosen: dict[str, Candidate]
    plan: Plan
    positions: dict[str, float] = field(default_factory=dict)  # output positions per sample, by layer
    allocation: AllocationReport | None = None
    alternatives: list[Plan] = field(default_factory=list)
    sensitivities: dict[str, Sensitivity] = field(default_factory=dict)  # the chosen candidates' sweep rows


def finish_lossy(inputs: RunInputs, options: CompressOptions, outcome: Outcome, out_dir, stages: Stages,
                 started: float) -> CompressResult:
    """Emit, encode and verify, account, validate, and write what a lossy mode chose."""
    loaded, weights, chosen = inputs.loaded, inputs.weights, outcome.chosen
    with stages.stage("emit"):
        owned = loaded.path is not None or inputs.proto is not loaded.proto
        stored, stored_as = emit(inputs.proto, weights, chosen, owned, loaded.stem)
    report = CompressReport(inputs.model_name, options.mode, options.bits, inputs.folded, outcome.allocation,
                            outcome.plan.document(inputs.model_name))
    blob, accounting, report.roundtrip = encode_and_verify(
        stored, container_meta(options.mode, options.bits, loaded.path), stages)
    tensors = tensor_bytes(stored, accounting)
    coded = coded_by_weight(tensors, stored_as, [w for w in weights if w.key in chosen])
    report.weights = weight_rows(weights, chosen, coded, outcome.sensitivities, outcome.positions)
    report.sizes = sizes(loaded.file_bytes, blob, stored, report.weights, stored_as, tensors)
    report.compute = compute(report.weights) if outcome.positions else None
    report.not_compressed = [{"name": w.name, "graph": w.graph, "bytes": w.nbytes, "reason": w.reason}
                             for w in weights if not w.compressible]
    report.validation, report.validated_on = validate(inputs, stored, options, stages), inputs.judged_split
    extra = {"plan.json": report.plan}
    for rank, plan in enumerate(outcome.alternatives, start=1):  # for a user who would take a larger ratio
        extra[f"plan-next-{rank}.json"] = plan.document(inputs.model_name)
    protect = [loaded.path] + loaded.external_files if loaded.path else []
    return write_outputs(report, blob, stored, out_dir, loaded.stem, stages, started, protect, extra=extra)


def emit(proto: ModelProto, weights: list[Weight], chosen: Mapping[str, Candidate], consume: bool,
         stem: str) -> tuple[list[StoredFile], dict[str, tuple[str, ...]]]:
    """The compressed ONNX as files to store, and per weight the initializers that hold it."""
    quantized = {k: c.quantized for k, c in chosen.items() if c.quantized is not None}
    halves = {k: c.original.astype(np.float16) for k, c in chosen.items() if c.bits == FLOAT16}
    moved = {c.bias_key: c.bias_values for c in chosen.values() if c.bias_key is not None}
    factorised = {k: c.factors for k, c in chosen.items() if c.factors is not None}
    emitted, stored_as = emit_quantized(proto, weights, quantized, consume=consume, halves=halves, moved=moved,
                                        factorised=factorised)
    return model_files(emitted, f"{stem}.l2.onnx"), stored_as


def container_meta(mode: str, bits: int | None, path: Path | None) -> dict:
    """What the bitstream's header says besides the files (sized by the size budget too)."""
    return {"mode": mode, "bits": bits, "source": path.name if path else None, "onnxl2": __version__}


def encode_and_verify(stored: list[StoredFile], meta: dict, stages: Stages) -> tuple[bytes, list, str]:
    """Write the bitstream, then decode it and check it gives back exactly ``stored``; returns it,
    its per-tensor accounting and what the round trip showed."""
    with stages.stage("encode"):
        blob, accounting = encode_container(stored, meta)
    decoded_bytes = sum(len(f.data) for f in stored)
    with stages.stage("verify round trip"):  # raises unless every file matches its sha256
        decode_container(blob, keep=False, max_output_bytes=decoded_bytes)
    roundtrip = "bit-exact (decoded files equal the written files byte for byte)"
    if decoded_bytes > default_output_limit(len(blob)):
        roundtrip += (f"; decoding it needs --max-output-size {decoded_bytes} (it decodes to more than "
                      f"{OUTPUT_RATIO}x its size, which decoders refuse unless allowed)")
    return blob, accounting, roundtrip


def validate(inputs: RunInputs, stored: list[StoredFile], options: CompressOptions, stages: Stages
             ) -> ValidationResult | None:
    """The compressed model against the original on the judging data (None without data)."""
    if inputs.judge_data is None:
        return None
    with stages.stage("validate"):
        compressed = stored[0].data if len(stored) == 1 else files_to_model([(f.name, f.data) for f in stored])
        loaded = inputs.loaded
        result = validate_models(str(loaded.path) if loaded.path else loaded.proto, compressed, inputs.judge_data,
                                 inputs.judge_labels, options.model_output, options.devices, spec_model=loaded.proto,
                                 ctc=options.contract.ctc)
        result.original_bytes = loaded.file_bytes
        result.compressed_bytes = sum(len(f.data) for f in stored)
    return result


def write_outputs(report: CompressReport, blob: bytes, stored: list[StoredFile], out_dir, stem: str,
                  stages: Stages, started: float, protect: list[Path], write_model: bool = True,
                  extra: Mapping[str, dict] | None = None) -> CompressResult:
    """Timings into the report, the report made into JSON once, and (with ``out_dir``) the
    bitstream, the report, the model (unless lossless) and ``extra`` documents written, all or none."""
    report.timings_s = {**{k: round(v, 3) for k, v in stages.seconds.items()},
                        "total": round(time.perf_counter() - started, 3)}
    document = report.to_dict()
    result = CompressResult([(f.name, f.data) for f in stored], blob, document)
    if out_dir is not None:
        folder = Path(out_dir)
        if folder.exists() and not folder.is_dir():
            raise OnnxL2Error(f"output {folder} exists and is not a folder")
        targets = {folder / name: data for name, data in result.files} if write_model else {}
        targets[folder / f"{stem}.l2b"] = blob
        targets[folder / "report.json"] = to_json(document)
        targets[folder / "report.html"] = to_html(document)
        for name, doc in (extra or {}).items():
            targets[folder / name] = to_json(doc)
        write_files_atomically(targets, tuple(protect))
        result.written = list(targets)
    return result
