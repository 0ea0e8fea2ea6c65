"""The Python API: inspect, compress, decompress, validate.

The CLI is a thin layer over these functions; every option has the same name here.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnx import ModelProto

from . import __version__
from .candidates import Candidate, candidate_for_label, make_candidates, \
    moved_bias_bytes, parse_label, step_count, symbol_tensors
from .codec.container import OUTPUT_RATIO, StoredFile, decode_container, default_output_limit, encode_container
from .codec.entropy import empirical_entropy_bits
from .data import DataSource, batch_size_for, fixed_batch, input_specs, load_data, load_labels
from .emit import default_opset, emit_quantized
from .errors import BitstreamError, OnnxL2Error
from .evaluate import ValidationResult, validate_models
from .fileio import write_files_atomically
from .hessian import LayerHessian, bias_weights, layer_hessians, output_positions
from .mixed import (MixedOptions, allowed_bits, check_factorisable, chosen_rows, holdout_split, parse_size,
                    pinned_rank, plan_mixed, sample_subset)
from .options import CompressOptions
from .model import ModelSource, Weight, discover_weights, load_model, model_stem, weight_array
from .progress import Stages
from .report import to_html, to_json
from .storage import check_model_files, files_to_model, model_files, original_files
from .transforms.fold import fold_batchnorm
from .transforms.quantize import container_type



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
                         discover_weights(loaded.proto, choose_axes=False))


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

    bitstream: bytes | bytearray = b""
    report: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


def compress(model: ModelSource, data: DataSource | None = None, *, labels: Any = None,
             eval_data: DataSource | None = None, eval_labels: Any = None,
             out_dir: str | os.PathLike | None = None, options: CompressOptions | None = None,
             **choices: Any) -> CompressResult:
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
    opts = (options or CompressOptions()).with_fields(**choices) if choices else (options or CompressOptions())
    stages = Stages(None if not opts.quiet else False)
    started = time.perf_counter()
    if opts.lossless:
        return _compress_lossless(model, out_dir, stages, started)
    mode, bits, plan, output = opts.mode, opts.bits, opts.plan, opts.model_output
    with stages.stage("load"):
        loaded = load_model(model)
        proto, folded = fold_batchnorm(loaded.proto) if opts.fold else (loaded.proto, 0)
        weights = discover_weights(proto)
        if labels is not None and data is None:
            raise OnnxL2Error("labels need data (--data) to go with them")
        if mode == "auto" and data is None:
            raise OnnxL2Error("the automatic mode needs calibration data (--data); "
                              "or give --bits N for uniform quantization")
        arrays = load_data(data, loaded.proto) if data is not None else None
        label_array = load_labels(labels, len(next(iter(arrays.values())))) if labels is not None else None
        judge = (load_data(eval_data, loaded.proto), None) if eval_data is not None else (arrays, label_array)
        if eval_labels is not None:
            judge = (judge[0], load_labels(eval_labels, len(next(iter(judge[0].values())))))
    target_bytes = int(loaded.file_bytes / opts.target_ratio) if opts.target_ratio is not None else \
        parse_size(opts.target_size) if isinstance(opts.target_size, str) else \
        int(opts.target_size) if opts.target_size is not None else None
    options = opts.automatic(target_bytes)
    report: dict[str, Any] = {"onnxl2": __version__, "model": str(loaded.path or "<ModelProto>"),
                              "mode": mode, "bits": bits, "folded_batchnorm": folded}
    stem = loaded.stem
    if mode == "auto":
        def bitstream_bytes(chosen: dict[str, Candidate]) -> int:
            files, _ = _emit(proto, weights, chosen, False, stem)
            return len(encode_container(files, _container_meta(report, loaded.path))[0])

        mixed = plan_mixed(proto, weights, arrays, label_array, options, bitstream_bytes, stages,
                           cache_dir=Path(opts.sweep_cache) if opts.sweep_cache else None,
                           original_bytes=loaded.file_bytes)
        chosen, report["allocation"], positions = mixed.chosen, mixed.report, mixed.positions
        fitted_on = {"holdout": options.contract.holdout} if options.form == "contract" else None
    else:
        replayed, fitted_on, axes = _read_plan(plan) if plan else (None, None, {})
        _apply_plan_axes(weights, axes)
        with stages.stage("quantize"):
            chosen, positions = _fixed_choices(proto, weights, bits, options, replayed,
                                               _fitted_part(arrays, fitted_on, fixed_batch(input_specs(proto))))
    with stages.stage("emit"):
        owned = loaded.path is not None or proto is not loaded.proto
        stored, stored_as = _emit(proto, weights, chosen, owned, stem)
    report["plan"] = _plan_document(report["model"], chosen, fitted_on, weights)
    weight_rows = _weight_rows(weights, chosen, report.get("allocation"))
    blob, accounting = _encode_and_verify(stored, report, loaded.path, stages)
    report["sizes"] = _sizes(loaded.file_bytes, blob, stored, weight_rows, stored_as, accounting)
    report["weights"] = weight_rows
    if positions:
        report["compute"] = _compute(weight_rows, positions)
    report["not_compressed"] = [{"name": w.name, "graph": w.graph, "bytes": w.nbytes, "reason": w.reason}
                                for w in weights if not w.compressible]
    judge_data, judge_labels = judge
    if judge_data is not None:
        with stages.stage("validate"):
            compressed_src = stored[0].data if len(stored) == 1 else files_to_model(
                [(f.name, f.data) for f in stored])
            result = validate_models(str(loaded.path) if loaded.path else loaded.proto, compressed_src,
                                     judge_data, judge_labels, output, opts.devices, spec_model=loaded.proto)
            result.original_bytes = loaded.file_bytes
            result.compressed_bytes = sum(len(f.data) for f in stored)
            report["validation"] = {"split": "--eval-data" if eval_data is not None else "--data",
                                    **result.to_dict()}
    extra = {"plan.json": to_json(report["plan"])}
    if mode == "auto":  # the next plans of the frontier, for a user who would take a larger ratio
        for rank, plan_choice in enumerate(mixed.alternatives, start=1):
            extra[f"plan-next-{rank}.json"] = to_json(_plan_document(report["model"], plan_choice, fitted_on,
                                                                     weights))
    return _finish(report, blob, stored, out_dir, stem, stages, started,
                   [loaded.path] + loaded.external_files if loaded.path else [], extra=extra)


def _plan_document(model: str, chosen: dict[str, Candidate], fitted_on: dict | None,
                   weights: list[Weight]) -> dict:
    """A plan as a user reads, edits and replays it; ``fitted_on`` says which calibration
    samples its compensated candidates were fitted on (the contract holds some back), so that a
    replay on the same data fits them on the same samples and gives the same bytes; ``axes``
    the channel axis of each weight that no reader gave one (chosen by coded size)."""
    doc = {"format": 1, "model": model, "choices": {key: cand.label for key, cand in chosen.items()}}
    axes = {w.key: w.channel_axis for w in weights if w.key in chosen and w.axis_from == "size"}
    if axes:
        doc["axes"] = axes
    return {**doc, "fitted_on": fitted_on} if fitted_on else doc


def _apply_plan_axes(weights: list[Weight], axes: dict[str, int]) -> None:
    """A plan's ``axes`` replace the axes chosen by size (the readers' own axes are not the
    plan's to change)."""
    by_key = {w.key: w for w in weights}
    for key, axis in axes.items():
        w = by_key.get(key)
        if w is None or not w.compressible or w.axis_from != "size":
            raise OnnxL2Error(f"plan: 'axes' names {key}, whose channel axis its readers decide "
                              "(only weights no reader gives an axis take one from the plan)")
        if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(w.shape):
            raise OnnxL2Error(f"plan: the axis of {key} must be an integer 0..{len(w.shape) - 1}, got {axis!r}")
        w.channel_axis = axis


def _fitted_part(data: dict[str, np.ndarray] | None, fitted_on: dict | None, block: int
                 ) -> dict[str, np.ndarray] | None:
    if data is None or not fitted_on:
        return data
    return sample_subset(data, holdout_split(len(next(iter(data.values()))), fitted_on["holdout"], block)[0])


def _read_plan(plan: str | os.PathLike | dict) -> tuple[dict[str, str], dict | None, dict]:
    """A plan's choices ({weight key: "int4" | "float16" | "float32" | ...}), which samples
    its candidates were fitted on (None: all of them) and its chosen axes ({weight key: axis})."""
    if isinstance(plan, dict):
        doc = plan
    else:
        path = Path(plan)
        if not path.is_file():
            raise OnnxL2Error(f"no such plan file: {path}")
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise OnnxL2Error(f"plan {path} is not JSON ({exc})") from None
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, dict):
        raise OnnxL2Error("a plan needs a 'choices' object: {weight: 'int4' | 'float16' | 'float32'}")
    fitted_on = doc.get("fitted_on")
    if fitted_on is not None and not (isinstance(fitted_on, dict) and isinstance(fitted_on.get("holdout"), float)
                                      and 0 < fitted_on["holdout"] < 1):
        raise OnnxL2Error("a plan's 'fitted_on' must be {\"holdout\": a share between 0 and 1}")
    axes = doc.get("axes", {})
    if not isinstance(axes, dict):
        raise OnnxL2Error("a plan's 'axes' must be an object: {weight: channel axis}")
    return choices, fitted_on, axes


def _hessians(proto: ModelProto, studied: list[Weight], every: list[Weight], data: dict[str, np.ndarray] | None,
              who: str) -> dict[str, LayerHessian]:
    if data is None:
        raise OnnxL2Error(f"{who} need calibration data (--data): error compensation reads the layers' inputs")
    return layer_hessians(proto, studied, every, data, batch_size_for(data, input_specs(proto)))


def _fixed_choices(proto: ModelProto, weights: list[Weight], bits: int | None, options: MixedOptions,
                   plan: dict[str, str] | None, data: dict[str, np.ndarray] | None = None
                   ) -> tuple[dict[str, Candidate], dict[str, float]]:
    """Uniform bits (with pins), or a replayed plan: one candidate per compressible weight, and
    the output positions per sample of the layers whose inputs were gathered for it."""
    chosen = {}
    studied = {w.key: w for w in weights if w.compressible}
    if plan is None:
        uniform = MixedOptions((bits,), options.keep, options.pins, ranks=options.ranks)
        ranked = {key: pinned_rank(w, uniform) for key, w in studied.items()}
        ranked = {key: r for key, r in ranked.items() if r}
        needs = [w for w in studied.values() if options.compensate or w.key in ranked]
        hessians = _hessians(proto, needs, weights, data, "--compensate and --rank") if needs else {}
        check_factorisable(ranked, hessians, {key: w.shape for key, w in studied.items()},
                           {key: allowed_bits(studied[key], uniform) for key in ranked})
        biases = bias_weights(weights, hessians) if options.compensate else {}
        for key, w in studied.items():
            rank = ranked.get(key)
            (chosen[key],) = make_candidates(key, weight_array(proto, w), w.channel_axis,
                                             allowed_bits(w, uniform), always_float32=False,
                                             hessian=hessians.get(key) if options.compensate else None,
                                             rates=options.rates if not rank else (0.0,),
                                             bias=weight_array(proto, biases[key]) if key in biases else None,
                                             ranks=(rank,) if rank else (), full_rank=not rank,
                                             moments=hessians.get(key), merged=w.merged_channels)
        return chosen, output_positions(hessians)
    unknown = sorted(set(plan) - set(studied))
    if unknown:
        raise OnnxL2Error(f"the plan names weights this model does not have or cannot compress: "
                          f"{', '.join(unknown[:5])}")
    labels = {key: plan.get(key, "float32") for key in studied}
    parsed = {}
    for key, label in labels.items():
        try:
            parsed[key] = parse_label(label)
        except ValueError:
            raise OnnxL2Error(f"plan: unknown choice {label!r} for {key} (use float32, float16, int2..int12, "
                              "optionally +gptq, +rN and +rankR, e.g. int4+gptq+r0.3, int6+gptq+rank32)") from None
    needs = [studied[k] for k, p in parsed.items() if p.compensated or p.rank]
    hessians = _hessians(proto, needs, weights, data, "the plan's +gptq and +rank choices") if needs else {}
    biases = bias_weights(weights, hessians)
    if needs:
        missing = [w.key for w in needs if w.key not in hessians]
        if missing:
            raise OnnxL2Error(f"plan: {missing[0]} cannot be error-compensated or factorised (no supported consumer)")
        check_factorisable({k: p.rank for k, p in parsed.items() if p.rank}, hessians,
                           {key: w.shape for key, w in studied.items()})
    for key, w in studied.items():
        chosen[key] = candidate_for_label(key, weight_array(proto, w), w.channel_axis, labels[key],
                                          hessians.get(key),
                                          weight_array(proto, biases[key]) if key in biases else None,
                                          merged=w.merged_channels)
    return chosen, output_positions(hessians)


def _emit(proto: ModelProto, weights: list[Weight], chosen: dict[str, Candidate], consume: bool,
          stem: str) -> tuple[list[StoredFile], dict[str, tuple[str, ...]]]:
    quantized = {k: c.quantized for k, c in chosen.items() if c.quantized is not None}
    halves = {k: c.original.astype(np.float16) for k, c in chosen.items() if c.bits == 16}
    moved = {c.bias_key: c.bias_values for c in chosen.values() if c.bias_key is not None}
    factorised = {k: c.factors for k, c in chosen.items() if c.factors is not None}
    emitted, stored_as = emit_quantized(proto, weights, quantized, consume=consume, halves=halves, moved=moved,
                                        factorised=factorised)
    return model_files(emitted, f"{stem}.l2.onnx"), stored_as


def _weight_rows(weights: list[Weight], chosen: dict[str, Candidate], allocation: dict | None) -> list[dict]:
    sens = chosen_rows(chosen, allocation["candidates"]) if allocation else {}
    rows = []
    for w in weights:
        if w.key not in chosen:
            continue
        cand = chosen[w.key]
        container = {32: "float32", 16: "float16"}.get(cand.bits, container_type(cand.bits))
        symbols = symbol_tensors(cand)
        order0 = sum(empirical_entropy_bits(t) for t in symbols) if symbols else None
        rows.append({"key": w.key, "name": w.name, "graph": w.graph, "role": w.role, "shape": list(w.shape),
                     "params": w.numel, "bits": cand.bits, "rank": cand.rank, "choice": cand.label,
                     "container": container, "stored_params": sum(t.size for t in symbols) if symbols else w.numel,
                     "candidate_bytes": cand.coded_bytes, "order0_entropy_bits": order0,
                     "steps": step_count(cand),
                     "moved_bias": ({"values": int(cand.bias_values.size), "bytes": moved_bias_bytes(cand)}
                                    if cand.bias_values is not None else None),
                     **sens.get(w.key, {})})
    return rows


def _compute(weight_rows: list[dict], positions: dict[str, float]) -> dict:
    """Multiply-adds per sample of the layers whose inputs were gathered, before and after
    (into the weight rows), and totals.

    A MatMul, Gemm or Conv does one multiply-add per parameter at each output position (token,
    pixel), and a factorised layer one per parameter of its two factors, the first running at
    the same positions (a Conv keeps window and stride, the second is 1x1). The positions per
    sample are counted by the pass that gathers the layer inputs, so no extra run is needed.
    """
    counted = [r for r in weight_rows if positions.get(r["key"])]
    for row in counted:
        row["macs_before"] = int(round(positions[row["key"]] * row["params"]))
        row["macs_after"] = int(round(positions[row["key"]] * row["stored_params"]))
    return {"layers_counted": len(counted), "macs_per_sample_before": sum(r["macs_before"] for r in counted),
            "macs_per_sample_after": sum(r["macs_after"] for r in counted),
            "factorised_layers": sum(1 for r in weight_rows if r.get("rank"))}


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
    stem = model_stem(path)
    protect = [path.parent / f.name for f in stored] if path else []
    return _finish(report, blob, stored, output_dir, stem, stages, started, protect, write_model=False)


def _container_meta(report: dict, path: Path | None) -> dict:
    """What the bitstream's header says besides the files (sized by the size budget too)."""
    return {"mode": report["mode"], "bits": report["bits"], "source": path.name if path else None,
            "onnxl2": __version__}


def _encode_and_verify(stored: list[StoredFile], report: dict, path: Path | None,
                       stages: Stages) -> tuple[bytes, list]:
    """Write the bitstream, then decode it and check it gives back exactly ``stored``."""
    with stages.stage("encode"):
        blob, accounting = encode_container(stored, _container_meta(report, path))
    decoded_bytes = sum(len(f.data) for f in stored)
    with stages.stage("verify round trip"):  # raises unless every file matches its sha256
        decode_container(blob, keep=False, max_output_bytes=decoded_bytes)
    report["roundtrip"] = "bit-exact (decoded files equal the written files byte for byte)"
    if decoded_bytes > default_output_limit(len(blob)):
        report["roundtrip"] += (f"; decoding it needs --max-output-size {decoded_bytes} (it decodes to more than "
                                f"{OUTPUT_RATIO}x its size, which decoders refuse unless allowed)")
    return blob, accounting


def _finish(report: dict, blob: bytes, stored: list[StoredFile], output_dir, stem: str,
            stages: Stages, started: float, protect: list[Path], write_model: bool = True,
            extra: dict[str, bytes] | None = None) -> CompressResult:
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
        for name, data in (extra or {}).items():
            targets[out_dir / name] = data
        write_files_atomically(targets, tuple(protect))
        result.written = list(targets)
    return result


def _sizes(original_bytes: int, blob: bytes, stored, weight_rows, stored_as, accounting) -> dict:
    """File ratio (the headline) and weight ratio (the papers' count), per weight coded bytes."""
    coded = {c.name: c.coded_bytes for c in accounting}
    raw_by_name = {}
    for f in stored:
        for span in f.spans:
            raw_by_name[span.name] = span.length
    sizes = {"original_file_bytes": original_bytes, "bitstream_bytes": len(blob),
             "file_ratio": original_bytes / len(blob)}
    sizes["compressed_onnx_bytes"] = sum(len(f.data) for f in stored)
    float32_bytes = coded_bytes = 0
    for row in weight_rows:
        names = stored_as.get(row["key"], (row["name"],))
        row["coded_bytes"] = sum(coded.get(n, raw_by_name.get(n, 0)) for n in names) or row["candidate_bytes"]
        row["bits_per_param"] = 8 * row["coded_bytes"] / max(1, row["params"])
        float32_bytes += 4 * row["params"]
        coded_bytes += row["coded_bytes"]
    integer = [r for r in weight_rows if r.get("order0_entropy_bits") is not None]
    if integer:  # the coder against the order-0 bound of the same symbols
        params = sum(r["stored_params"] for r in integer)  # symbols stored (factor pairs: both factors)
        symbol_bytes = sum(coded.get(name, raw_by_name.get(name, 0))
                           for r in integer for name in stored_as[r["key"]][:2 if r.get("rank") else 1])
        step_bytes = sum(r["coded_bytes"] for r in integer) - symbol_bytes
        steps = sum(r["steps"] for r in integer)
        sizes["integer_weights"] = {
            "params": params,
            "symbol_bits_per_weight": 8 * symbol_bytes / params,  # tables and classes included
            "order0_entropy_bits_per_weight": sum(r["order0_entropy_bits"] for r in integer) / params,
            "scale_bits_per_weight": 8 * step_bytes / params,
            "steps": steps,
            "bits_per_step": 8 * step_bytes / max(1, steps)}
    moved = [r["moved_bias"] for r in weight_rows if r.get("moved_bias")]
    if moved:  # biases moved by bias correction, on their grids
        values, moved_bytes = sum(m["values"] for m in moved), sum(m["bytes"] for m in moved)
        sizes["moved_biases"] = {"values": values, "bytes": moved_bytes, "bits_per_value": 8 * moved_bytes / values}
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
             devices: tuple[str, ...] = ("cpu", "cuda")) -> ValidationResult:
    """Compare a compressed model with its original on the same data, on CPU (and CUDA)."""
    orig_src, orig_proto = _as_session_source(original)
    comp_src, _ = _as_session_source(compressed)
    arrays = load_data(data, orig_proto)
    label_array = load_labels(labels, len(next(iter(arrays.values())))) if labels is not None else None
    result = validate_models(orig_src, comp_src, arrays, label_array, model_output, devices,
                             spec_model=orig_proto)
    for src, attr in ((original, "original_bytes"), (compressed, "compressed_bytes")):
        if isinstance(src, (str, os.PathLike)):
            setattr(result, attr, Path(src).stat().st_size)
    return result


__all__ = ["inspect", "compress", "decompress", "validate", "InspectResult", "CompressResult",
           "DecompressResult"]
