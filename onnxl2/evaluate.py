"""Run models with ONNX Runtime and compare them.

Original and compressed model see the same data in the same batches. Outputs of the original
are the reference: cosine similarity and relative L2 error per output, top-1 agreement for
outputs that hold class scores, task accuracy when labels are given, and latency per batch.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import onnxruntime as ort
from onnx import ModelProto

from .contract import OutputScale, is_decision, sample_agreement
from .data import batch_size_for, input_specs, iter_batches
from .errors import OnnxL2Error
from .losses import is_sequence_labels, sequence_correct
from .model import linear_head_outputs
from .readings import by_sample, greedy_ctc
from .runtime import cuda_status, make_session

@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    batch_seconds: list[float]

    @property
    def latency_ms(self) -> float:
        """Median time of one batch, in milliseconds (the first batch, a warm-up, excluded)."""
        times = self.batch_seconds[1:] or self.batch_seconds
        return float(np.median(times) * 1000) if times else 0.0


def run_model(session: ort.InferenceSession, data: Mapping[str, np.ndarray], batch: int) -> RunResult:
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    times = []
    for feed in iter_batches(data, batch):
        start = time.perf_counter()
        results = session.run(names, feed)
        times.append(time.perf_counter() - start)
        for name, value in zip(names, results):
            parts[name].append(np.asarray(value))
    outputs = {}
    for name, chunks in parts.items():  # batches share their trailing dims: inputs are stacked arrays
        outputs[name] = np.concatenate(chunks, axis=0) if chunks[0].ndim else np.stack(chunks)
    return RunResult(outputs, times)


@dataclass
class OutputComparison:
    name: str
    shape: list[int]
    cosine_mean: float
    cosine_min: float
    rel_l2_mean: float
    rel_l2_max: float
    top1_agreement: float | None = None
    standardised_rms: float | None = None  # change in units of each channel's spread (contract.py)
    string_agreement: float | None = None  # a CTC output's: samples whose greedy reading is kept


def _per_sample(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)


def compare_output(name: str, ref: np.ndarray, got: np.ndarray, head_features: int | None = None,
                   samples: int | None = None, one_per_call: bool = False, ctc: bool = False) -> OutputComparison:
    """Cosine and relative error per row; top-1 agreement per sample as the contract counts it
    (``contract.sample_agreement``); the standardised change; with ``ctc``, the share of
    samples whose CTC reading is kept."""
    r, g = _per_sample(ref), _per_sample(got)
    dot = (r * g).sum(axis=1)
    norm_r, norm_g = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    both_zero = (norm_r == 0) & (norm_g == 0)
    cosine = np.where(both_zero, 1.0, dot / np.maximum(norm_r * norm_g, 1e-300))
    rel = np.linalg.norm(r - g, axis=1) / np.maximum(norm_r, 1e-300)
    rel = np.where(both_zero, 0.0, rel)
    top1 = standardised = None
    if is_decision(ref, head_features) and ref.shape == got.shape:
        top1 = sample_agreement(ref, got, samples, one_per_call)
    if ref.dtype.kind == "f" and ref.shape == got.shape and ref.ndim >= 1:
        standardised = float(np.sqrt(OutputScale.of(ref).errors(got).mean()))
    strings = None
    laid = by_sample(ref, samples or 0, one_per_call) if ctc and ref.shape == got.shape else None
    if laid is not None:
        kept = [a == b for a, b in zip(greedy_ctc(laid), greedy_ctc(by_sample(got, samples, one_per_call)))]
        strings = float(np.mean(kept))
    return OutputComparison(name, list(ref.shape), float(cosine.mean()), float(cosine.min()),
                            float(rel.mean()), float(rel.max()), top1, standardised, strings)


def correctness(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per sample, the share of its steps (one for a classifier) whose arg-max class equals the
    label; for label sequences (CTC), 1 where the greedy reading equals the sequence."""
    if is_sequence_labels(labels, output.shape):
        return sequence_correct(output, labels).astype(np.float64)
    pred = output.argmax(axis=-1)
    if pred.shape != labels.shape:
        raise OnnxL2Error(f"labels of shape {labels.shape} do not fit the predictions of shape {pred.shape} "
                          "(the arg-max of the labelled output; --model-output names another)")
    return (pred == labels).reshape(len(pred), -1).mean(axis=1)


def accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples (or steps) whose arg-max class equals the label; for label sequences
    (CTC), share of samples whose greedy reading equals their sequence."""
    return float(correctness(output, labels).mean())


@dataclass
class DeviceValidation:
    device: str
    status: str  # "ok" or "skipped: reason"
    latency_ms_original: float | None = None
    latency_ms_compressed: float | None = None
    accuracy_original: float | None = None
    accuracy_compressed: float | None = None
    outputs: list[OutputComparison] = field(default_factory=list)


@dataclass
class ValidationResult:
    """Everything measured when comparing a compressed model with its original."""

    samples: int
    batch_size: int
    labelled_output: str | None
    devices: list[DeviceValidation]
    original_bytes: int | None = None
    compressed_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cpu(self) -> DeviceValidation:
        return next(d for d in self.devices if d.device == "cpu")


def validate_models(original: ModelProto | bytes, compressed: ModelProto | bytes,
                    data: Mapping[str, np.ndarray], labels: np.ndarray | None = None,
                    label_output: str | None = None, devices: tuple[str, ...] = ("cpu", "cuda"),
                    spec_model: ModelProto | None = None, ctc: tuple[str, ...] = ()) -> ValidationResult:
    """Run both models on the same batches on each device and compare their outputs (``ctc``:
    outputs read as CTC strings, whose readings kept are counted too)."""
    specs = input_specs(spec_model if spec_model is not None else original)
    batch = batch_size_for(data, specs)
    heads = linear_head_outputs(spec_model) if spec_model is not None else {}
    results = []
    chosen_output = None
    for device in devices:
        if device == "cuda":
            usable, why = cuda_status()
            if not usable:
                results.append(DeviceValidation(device, f"skipped: {why}"))
                continue
        ref = run_model(make_session(original, device), data, batch)
        got = run_model(make_session(compressed, device), data, batch)
        row = DeviceValidation(device, "ok", ref.latency_ms, got.latency_ms)
        samples = len(next(iter(data.values())))
        row.outputs = [compare_output(n, ref.outputs[n], got.outputs[n], heads.get(n), samples, batch == 1,
                                      n in ctc) for n in ref.outputs]
        if labels is not None:
            chosen_output = label_output or next(iter(ref.outputs))
            row.accuracy_original = accuracy(ref.outputs[chosen_output], labels)
            row.accuracy_compressed = accuracy(got.outputs[chosen_output], labels)
        results.append(row)
    return ValidationResult(len(next(iter(data.values()))), batch, chosen_output, results)
