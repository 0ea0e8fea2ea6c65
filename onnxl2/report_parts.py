"""The parts of a compress report as types, turned into one JSON document at the end.

Each stage hands back its part (the search its allocation, the sizes their counts, validation
its measurements); :class:`CompressReport` holds them and :meth:`CompressReport.to_dict` is the
only place the document is assembled, in the order ``report.json`` shows it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .version import __version__
from .candidates import FLOAT16, FLOAT32, Candidate, moved_bias_bytes, step_count, symbol_tensors
from .codec.container import CodedTensor, StoredFile
from .codec.entropy import empirical_entropy_bits
from .budgets import Allocation
from .evaluate import ValidationResult
from .model import Weight
from .sensitivity import Sensitivity
from .transforms.quantize import container_type


@dataclass
class WeightRow:
    """One compressed weight: its choice, container, and the bytes it takes."""

    key: str
    name: str
    graph: str
    role: str
    shape: list[int]
    params: int
    bits: int
    rank: int | None
    choice: str
    container: str
    stored_params: int
    candidate_bytes: int
    order0_entropy_bits: float | None
    steps: int
    moved_bias: dict | None
    coded_bytes: int
    sensitivity: dict | None = None  # the automatic mode: the chosen candidate's sweep row
    macs: tuple[int, int] | None = None  # multiply-adds per sample before and after, where counted

    @property
    def bits_per_param(self) -> float:
        return 8 * self.coded_bytes / max(1, self.params)

    def to_dict(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k not in ("sensitivity", "macs", "coded_bytes")}
        row.update(self.sensitivity or {})
        row["coded_bytes"], row["bits_per_param"] = self.coded_bytes, self.bits_per_param
        if self.macs is not None:
            row["macs_before"], row["macs_after"] = self.macs
        return row


def weight_rows(weights: list[Weight], chosen: Mapping[str, Candidate], coded: Mapping[str, int],
                sensitivities: Mapping[str, Sensitivity], positions: Mapping[str, float]) -> list[WeightRow]:
    """A row per chosen weight, in the model's order; ``coded``: its bytes in the bitstream;
    ``sensitivities``: the chosen candidates' sweep rows (the automatic mode)."""
    rows = []
    for w in weights:
        if w.key not in chosen:
            continue
        cand = chosen[w.key]
        symbols = symbol_tensors(cand)
        stored = sum(t.size for t in symbols) if symbols else w.numel
        where = positions.get(w.key)
        rows.append(WeightRow(
            w.key, w.name, w.graph, w.role, list(w.shape), w.numel, cand.bits, cand.rank, cand.label,
            {FLOAT32: "float32", FLOAT16: "float16"}.get(cand.bits, container_type(cand.bits)), stored,
            cand.coded_bytes, sum(empirical_entropy_bits(t) for t in symbols) if symbols else None, step_count(cand),
            ({"values": int(cand.bias_values.size), "bytes": moved_bias_bytes(cand)}
             if cand.bias_values is not None else None),
            coded.get(w.key) or cand.coded_bytes, _sweep_facts(sensitivities.get(w.key)),
            (int(round(where * w.numel)), int(round(where * stored))) if where else None))
    return rows


def _sweep_facts(row: Sensitivity | None) -> dict | None:
    if row is None:
        return None
    return {"predicted_loss_change": row.predicted, "measured_loss_change": row.measured, "measured_se": row.se,
            "within_noise": row.within_noise, "distortion": row.distortion}


def tensor_bytes(stored: list[StoredFile], accounting: list[CodedTensor]) -> dict[str, int]:
    """Bytes each stored tensor takes in the bitstream: its coded payload, or its raw bytes where
    the payload stayed in the skeleton."""
    raw = {span.name: span.length for f in stored for span in f.spans}
    return {**raw, **{c.name: c.coded_bytes for c in accounting}}


def coded_by_weight(tensors: Mapping[str, int], stored_as: Mapping[str, tuple[str, ...]],
                    weights: list[Weight]) -> dict[str, int]:
    """Bytes each weight takes in the bitstream: its tensors' coded payloads (or raw bytes where
    a payload stayed in the skeleton)."""
    return {w.key: sum(tensors.get(n, 0) for n in stored_as.get(w.key, (w.name,))) for w in weights}


@dataclass
class Sizes:
    """File ratio (the headline) and weight ratio (the papers' count); the coder against the
    order-0 bound of the same symbols; moved biases. The lossless mode has the file counts only."""

    original_file_bytes: int
    bitstream_bytes: int
    compressed_onnx_bytes: int | None = None
    integer_weights: dict | None = None
    moved_biases: dict | None = None
    compressible_float32_bytes: int | None = None
    coded_weight_bytes: int | None = None
    coded_tensors: int | None = None  # the lossless mode: payloads coded apart from the skeleton

    @property
    def file_ratio(self) -> float:
        return self.original_file_bytes / self.bitstream_bytes

    @property
    def weight_ratio(self) -> float | None:
        return self.compressible_float32_bytes / self.coded_weight_bytes if self.coded_weight_bytes else None

    def to_dict(self) -> dict:
        doc = {"original_file_bytes": self.original_file_bytes, "bitstream_bytes": self.bitstream_bytes,
               "file_ratio": self.file_ratio}
        if self.coded_tensors is not None:
            return {**doc, "coded_tensors": self.coded_tensors}
        doc["compressed_onnx_bytes"] = self.compressed_onnx_bytes
        for name in ("integer_weights", "moved_biases"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        return {**doc, "compressible_float32_bytes": self.compressible_float32_bytes,
                "coded_weight_bytes": self.coded_weight_bytes, "weight_ratio": self.weight_ratio}


def sizes(original_bytes: int, blob: bytes, stored: list[StoredFile], rows: list[WeightRow],
          stored_as: Mapping[str, tuple[str, ...]], tensors: Mapping[str, int]) -> Sizes:
    """The sizes of a lossy run, from its weight rows and the container's accounting."""
    out = Sizes(original_bytes, len(blob), sum(len(f.data) for f in stored),
                compressible_float32_bytes=sum(4 * r.params for r in rows),
                coded_weight_bytes=sum(r.coded_bytes for r in rows))
    integer = [r for r in rows if r.order0_entropy_bits is not None]
    if integer:
        params = sum(r.stored_params for r in integer)  # symbols stored (factor pairs: both factors)
        symbol_bytes = sum(tensors.get(name, 0)
                           for r in integer for name in stored_as[r.key][:2 if r.rank else 1])
        step_bytes = sum(r.coded_bytes for r in integer) - symbol_bytes
        steps = sum(r.steps for r in integer)
        out.integer_weights = {
            "params": params,
            "symbol_bits_per_weight": 8 * symbol_bytes / params,  # tables and classes included
            "order0_entropy_bits_per_weight": sum(r.order0_entropy_bits for r in integer) / params,
            "scale_bits_per_weight": 8 * step_bytes / params,
            "steps": steps,
            "bits_per_step": 8 * step_bytes / max(1, steps)}
    moved = [r.moved_bias for r in rows if r.moved_bias]
    if moved:
        values, moved_bytes = sum(m["values"] for m in moved), sum(m["bytes"] for m in moved)
        out.moved_biases = {"values": values, "bytes": moved_bytes, "bits_per_value": 8 * moved_bytes / values}
    return out


def compute(rows: list[WeightRow]) -> dict:
    """Multiply-adds per sample of the layers whose inputs were gathered, before and after.

    A MatMul, Gemm or Conv does one multiply-add per parameter at each output position (token,
    pixel), and a factorised layer one per parameter of its two factors, the first running at
    the same positions (a Conv keeps window and stride, the second is 1x1). The positions per
    sample are counted by the pass that gathers the layer inputs, so no extra run is needed.
    """
    counted = [r for r in rows if r.macs is not None]
    return {"layers_counted": len(counted), "macs_per_sample_before": sum(r.macs[0] for r in counted),
            "macs_per_sample_after": sum(r.macs[1] for r in counted),
            "factorised_layers": sum(1 for r in rows if r.rank)}


@dataclass
class AllocationReport:
    """How the automatic mode chose: its loss, how the sweep ran, what was measured, every
    candidate's sweep row, and under the contract the contract and the frontier."""

    loss: str
    output: str
    calibration_samples: int
    calibration_loss: float
    form: str
    sweep: str
    taylor_terms: bool
    sweep_cached: bool
    seconds_per_pass: float
    compensated_weights: int
    factorisable_weights: int
    max_loss_increase: float | None
    noise_sigmas: float
    target_bytes: int | None
    measured_loss_change: float
    measured_loss_change_se: float
    measured_within_noise: bool
    predicted_loss_change: float | None
    summed_distortion: float
    forward_passes: int
    allocation: Allocation
    candidates: dict[str, list[Sensitivity]]
    contract: dict | None = None
    frontier: dict | None = None
    sweep_cuts: int = 0  # places the sweep's passes started from cached activations (``suffixes``)

    def to_dict(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("allocation", "candidates", "contract", "frontier")}
        doc.update(self.allocation.to_dict())
        doc["candidates"] = {k: [s.to_dict() for s in rows] for k, rows in self.candidates.items()}
        for name in ("contract", "frontier"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        return doc


@dataclass
class CompressReport:
    """Everything a compress run reports; ``to_dict`` makes ``report.json``."""

    model: str
    mode: str
    bits: int | None
    folded_batchnorm: int | None = None  # None: the lossless mode, which does not parse the graph
    allocation: AllocationReport | None = None
    plan: dict | None = None
    roundtrip: str = ""
    sizes: Sizes | None = None
    weights: list[WeightRow] | None = None
    compute: dict | None = None
    not_compressed: list[dict] | None = None
    validation: ValidationResult | None = None
    validated_on: str = ""  # "--eval-data" or "--data"
    timings_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"onnxl2": __version__, "model": self.model, "mode": self.mode, "bits": self.bits}
        if self.folded_batchnorm is not None:
            doc["folded_batchnorm"] = self.folded_batchnorm
        if self.allocation is not None:
            doc["allocation"] = self.allocation.to_dict()
        if self.plan is not None:
            doc["plan"] = self.plan
        doc["roundtrip"], doc["sizes"] = self.roundtrip, self.sizes.to_dict()
        if self.weights is not None:
            doc["weights"] = [r.to_dict() for r in self.weights]
        for name in ("compute", "not_compressed"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        if self.validation is not None:
            doc["validation"] = {"split": self.validated_on, **self.validation.to_dict()}
        doc["timings_s"] = self.timings_s
        return doc
