"""The automatic mode: candidates -> sensitivity -> knapsack -> plan.

Three forms: the behaviour contract (the default: the smallest plan on the measured frontier
that keeps the original's behaviour on calibration samples held back from every other step),
the lossless neighbourhood (``max_loss_increase``: the calibration loss may rise by at most
that), and a size budget (``target_bytes``). Calibration data drive every decision here;
evaluation data only judge the result afterwards.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from onnx import ModelProto

from .allocate import Allocation, allocate_neighbourhood, allocate_size
from .candidates import (ALLOWED_BITS, DEFAULT_BITS_CHOICES, DEFAULT_RATES, Candidate, load_candidates,
                         lowrank_ranks, make_candidates, save_candidates)
from .contract import Contract, Judge, OutputScale
from .data import batch_size_for, fixed_batch, input_specs
from .errors import OnnxL2Error
from .evaluate import correctness
from .frontier import Frontier, search_frontier
from .fileio import write_files_atomically
from .hessian import LayerHessian, bias_weights, layer_hessians, load_hessians, output_positions, save_hessians
from .losses import make_loss
from .model import Weight, linear_head_outputs, weight_array
from .progress import Stages
from .sensitivity import (Measurement, Probe, Sensitivity, proxy_sweep, reference_candidate, sweep,
                          terminal_progress)
from .transforms.lowrank import LAYOUTS
from .transforms.quantize import INTEGER_BITS
from .workers import map_by_size


#: Bumped whenever what a sweep measures changes, so that caches of older sweeps are not reused.
SWEEP_VERSION = 9
#: The contract's sweep spends about this many multiply-adds at most (layers measured x samples x
#: multiply-adds a sample): past it, it measures on fewer of the fit samples, evenly spread, and
#: never on fewer than MIN_SWEEP_SAMPLES. The decision is taken on the frontier, whose plans are
#: measured on every held-back sample; the sweep only ranks candidates. A rule on work, not on
#: seconds, so that the same data give the same plan on any machine.
SWEEP_MACS = 6e11
MIN_SWEEP_SAMPLES = 8


@dataclass
class MixedOptions:
    """What the automatic mode may choose from and what it must respect."""

    bits_choices: tuple[int, ...] = DEFAULT_BITS_CHOICES
    keep: tuple[str, ...] = ()  # patterns of weights pinned to float32
    pins: dict[str, int] = field(default_factory=dict)  # pattern -> bits
    loss: str = "auto"
    output: str | None = None
    max_loss_increase: float | str | None = None  # the neighbourhood form: absolute, or "N%" of the loss
    target_bytes: int | None = None
    contract: Contract = field(default_factory=Contract)  # the default form
    taylor: bool = True
    sweep: str = "auto"  # "full" (every candidate measured), "proxy", or "auto" (by the time budget)
    sweep_budget: float = 300.0
    compensate: bool = False  # GPTQ error compensation where the layer Hessian can be captured
    rates: tuple[float, ...] = DEFAULT_RATES  # prices of a bit in the rounding, one candidate each
    noise_sigmas: float = 0.0  # neighbourhood: a change this many standard errors above the bound passes
    lowrank: bool = True  # offer factor pairs (transforms.lowrank) where a layer can have them
    ranks: dict[str, int] = field(default_factory=dict)  # pattern -> rank (a pinned factorisation)

    @property
    def form(self) -> str:
        """"size budget", "loss neighbourhood" or "contract"."""
        if self.target_bytes is not None:
            return "size budget"
        return "loss neighbourhood" if self.max_loss_increase is not None else "contract"

    def __post_init__(self) -> None:
        if not isinstance(self.contract, Contract):
            raise OnnxL2Error("the contract must be an onnxl2.Contract")
        bad = [b for b in self.bits_choices if b not in ALLOWED_BITS]
        if bad or not self.bits_choices:
            raise OnnxL2Error(f"bit choices must be among {', '.join(map(str, ALLOWED_BITS))}; got {bad or 'none'}")
        if not self.rates or any(not 0 <= r <= 10 for r in self.rates):
            raise OnnxL2Error(f"rates must be between 0 and 10; got {list(self.rates)}")
        if self.sweep not in ("auto", "full", "proxy"):
            raise OnnxL2Error(f"sweep must be auto, full or proxy; got {self.sweep!r}")
        for pattern, bits in self.pins.items():
            if bits not in ALLOWED_BITS:
                raise OnnxL2Error(f"--bits {pattern}={bits}: bits must be among {ALLOWED_BITS}")
        for pattern, rank in self.ranks.items():
            if not isinstance(rank, int) or rank < 1:
                raise OnnxL2Error(f"--rank {pattern}={rank}: a rank is a whole number of at least 1")


def _matches(weight: Weight, pattern: str) -> bool:
    return fnmatch.fnmatchcase(weight.name, pattern) or fnmatch.fnmatchcase(weight.key, pattern)


def allowed_bits(weight: Weight, options: MixedOptions) -> tuple[int, ...]:
    """Bit choices of one weight after --keep and --bits PATTERN=N pins."""
    if any(_matches(weight, p) for p in options.keep):
        return (32,)
    for pattern, bits in options.pins.items():
        if _matches(weight, pattern):
            return (bits,)
    return tuple(options.bits_choices)


def pinned_rank(weight: Weight, options: MixedOptions) -> int | None:
    """The rank a --rank PATTERN=R pin gives this weight (None: not pinned)."""
    for pattern, rank in options.ranks.items():
        if _matches(weight, pattern):
            return rank
    return None


def check_factorisable(ranks: Mapping[str, int], hessians: Mapping[str, LayerHessian],
                       shapes: Mapping[str, tuple[int, ...]],
                       bits: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Every pinned rank names a layer that can be factorised, at a rank below both its output
    and its input width, with an integer bit-width left to store its factors in."""
    for key, rank in ranks.items():
        if bits is not None and not any(b in INTEGER_BITS for b in bits.get(key, ())):
            raise OnnxL2Error(f"--rank pins {key}, but --keep or the bit choices leave it no integer "
                              "bit-width for its factors")
        h = hessians.get(key)
        if h is None or h.layout not in LAYOUTS or h.groups != 1:
            raise OnnxL2Error(f"{key} cannot be factorised (only MatMul/Gemm weights and ungrouped Conv "
                              "kernels with one consumer can)")
        width = min(h.matrix.shape[-1], shapes[key][1] if h.layout == "kn" else shapes[key][0])
        if not 1 <= rank < width:
            raise OnnxL2Error(f"rank {rank} for {key}: it must be between 1 and {width - 1}")


def parse_loss_bound(value: float | str, base_loss: float) -> float:
    """An absolute bound, or a percentage of the calibration loss ('0.5%')."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return abs(base_loss) * float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        raise OnnxL2Error(f"--max-loss-increase must be a number or a percentage, got {value!r}") from None


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")


def parse_size(text: str) -> int:
    """'3MB' (10^6), '512KiB' (2^10), '1200000' (bytes)."""
    match = _SIZE.match(str(text))
    if not match:
        raise OnnxL2Error(f"cannot read size {text!r} (examples: 3MB, 512KiB, 1200000)")
    unit = (match.group(2) or "b").lower().rstrip("b")
    factor = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 2**10, "mi": 2**20, "gi": 2**30}[unit]
    return int(float(match.group(1)) * factor)


def _check_distance_bound(kind: str, options: MixedOptions) -> None:
    """A distance cannot fall below zero: at epsilon 0 nothing could be compressed."""
    if options.form == "loss neighbourhood" and kind == "distance" and \
            parse_loss_bound(options.max_loss_increase, 1.0) <= 0:
        raise OnnxL2Error("a distance to the original output cannot fall below zero, so with "
                          "--max-loss-increase 0 nothing could be compressed: give a bound "
                          "(e.g. --max-loss-increase 1e-4) or a --target-ratio")


def _data_digest(proto: ModelProto, data: Mapping[str, np.ndarray]):
    """Hash of the model and the calibration data: what Hessians and sweeps are keyed by."""
    digest = hashlib.sha256(proto.SerializeToString(deterministic=True))
    for name in sorted(data):
        digest.update(name.encode() + np.ascontiguousarray(data[name]).tobytes())
    return digest


def sweep_mode(options: MixedOptions, candidates: Mapping[str, list[Candidate]],
               pass_seconds: float) -> tuple[str, bool]:
    """(full or proxy, with Taylor terms or not) for the sweep, within ``--sweep-budget``.

    Measured loss changes steer the allocation; the first- and second-order terms (two more
    passes each) only explain it. So under "auto" the Taylor terms go first when time is short,
    and every candidate stays measured as long as one pass each fits.
    """
    if options.sweep != "auto":
        return options.sweep, options.taylor
    if options.form == "contract":  # measured passes go to the frontier, where the decision is taken
        return "proxy", False
    passes = sum(c.bits != 32 for cands in candidates.values() for c in cands)
    measured = sum(any(c.bits != 32 for c in cands) for cands in candidates.values())
    for mode, count in (("full", passes), ("proxy", measured)):
        for taylor in ((True, False) if options.taylor else (False,)):
            if (3 if taylor else 1) * count * pass_seconds <= options.sweep_budget:
                return mode, taylor
    return "proxy", False


def timed_sweep_pass(probe: Probe, candidates: Mapping[str, list[Candidate]]) -> float:
    """Seconds of one sweep pass as the sweep runs it: the largest weight's reference candidate
    built, fed and scored.

    The pass that computed the original outputs feeds only the originals and is the first run
    of a fresh session; timing the budget on it alone undercounted the sweep by half on the
    recogniser (a 300 s budget spent 434 s).
    """
    sizes = {key: cands[0].original.size for key, cands in candidates.items() if key in probe.studied}
    if not sizes:
        return 0.0
    ref = reference_candidate(candidates[max(sizes, key=sizes.get)])
    if ref is None:
        return 0.0
    started = time.perf_counter()
    probe.change_and_distortion(ref.feeds())
    return time.perf_counter() - started


def _ranks(weight: Weight, values: np.ndarray, hessian: LayerHessian | None, pinned: Mapping[str, int],
           options: MixedOptions) -> tuple[int, ...]:
    """Ranks offered for one weight: its pin, else the automatic ones (none for float-only weights)."""
    if weight.key in pinned:
        return (pinned[weight.key],)
    if not options.lowrank or allowed_bits(weight, options) == (32,):
        return ()
    return lowrank_ranks(values, hessian)


def weight_candidates(weight: Weight, values: np.ndarray, options: MixedOptions, hessian: LayerHessian | None,
                      bias: np.ndarray | None, pinned: Mapping[str, int]) -> list[Candidate]:
    """The automatic mode's candidates for one weight (``values``), with the layer's Hessian
    (compensation and factor pairs, where ``options`` allow them), its bias's values (moved by
    bias correction) and the pinned ranks."""
    return make_candidates(weight.key, values, weight.channel_axis, allowed_bits(weight, options),
                           hessian=hessian if options.compensate else None, rates=options.rates, bias=bias,
                           ranks=_ranks(weight, values, hessian, pinned, options),
                           full_rank=weight.key not in pinned, moments=hessian, merged=weight.merged_channels)


def _candidates_key(data_digest, options: MixedOptions) -> str:
    """Same model, data and candidate rules: same candidates (the loss does not enter)."""
    digest = data_digest.copy()
    digest.update(json.dumps([options.bits_choices, options.keep, sorted(options.pins.items()),
                              options.compensate, list(options.rates), options.lowrank, sorted(options.ranks.items()),
                              SWEEP_VERSION]).encode())
    return digest.hexdigest()[:32]


def _cache_key(data_digest, labels: np.ndarray | None, options: MixedOptions, output: str) -> str:
    """Same candidates, labels, loss and sweep rules: same sweep."""
    digest = hashlib.sha256(_candidates_key(data_digest, options).encode())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(json.dumps([options.loss, output, options.taylor, options.sweep, options.form == "contract"]).encode())
    return digest.hexdigest()[:32]


def _load_cached(cache_dir: Path | None, key: str | None, candidates) -> dict | None:
    if cache_dir is None:
        return None
    path = Path(cache_dir) / f"sweep-{key}.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())
    table = {k: [Sensitivity(**{f: r[f] for f in Sensitivity.__dataclass_fields__}) for r in v]
             for k, v in rows.items()}
    if {k: [r.label for r in v] for k, v in table.items()} != {k: [c.label for c in v] for k, v in candidates.items()}:
        return None
    return table


def _store_cached(cache_dir: Path | None, key: str | None, table: dict) -> None:
    if cache_dir is None:
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    payload = json.dumps({k: [r.to_dict() for r in v] for k, v in table.items()}).encode()
    write_files_atomically({Path(cache_dir) / f"sweep-{key}.json": payload})


@dataclass
class MixedResult:
    chosen: dict[str, Candidate]
    report: dict
    positions: dict[str, float] = field(default_factory=dict)  # output positions per sample, by layer
    #: the contract form: plans of the next smaller frontier points (larger ratio), nearest first
    alternatives: list[dict[str, Candidate]] = field(default_factory=list)


def holdout_split(count: int, share: float, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the samples that fit and of those held back to judge: the blocks of samples
    (``block``: a model's fixed batch) fall into consecutive strata of about 1 / ``share`` blocks
    and one block of each stratum, drawn with a seed fixed by ``count``, is held back. So the
    held-back samples are spread evenly over the data (calibration sets are often ordered by
    class or source), a periodic order cannot line them up with one class (every other sample
    held back took only two of a document classifier's four cycling orientations), the same
    data split the same way every run, and both parts hold whole batches."""
    blocks = np.arange(count // block)
    stratum = np.floor(blocks * share).astype(np.int64)
    draw = np.random.default_rng(count).random(blocks.size)
    order = np.lexsort((draw, stratum))  # by stratum, then by draw
    last = np.append(stratum[order][1:] != stratum[order][:-1], True)  # the largest draw of each stratum
    picked = np.zeros(blocks.size, dtype=bool)
    picked[order[last]] = True
    held = np.repeat(picked, block)
    if held.sum() < 2 or (~held).sum() < 2:
        raise OnnxL2Error(f"the contract holds back {share:g} of the calibration samples and needs at least "
                          f"2 on each side; {count} samples are too few (give more, or a --target-ratio)")
    index = np.arange(held.size)
    return index[~held], index[held]


def sweep_samples(count: int, macs_per_sample: float, layers: int, block: int = 1) -> np.ndarray:
    """Indices of the fit samples the contract's sweep measures on (see ``SWEEP_MACS``), in
    whole blocks of ``block`` (a model's fixed batch)."""
    if macs_per_sample <= 0 or layers == 0:
        return np.arange(count)
    wanted = int(SWEEP_MACS / (macs_per_sample * layers))
    if wanted >= count:
        return np.arange(count)
    blocks = count // block
    wanted_blocks = max(-(-MIN_SWEEP_SAMPLES // block), -(-wanted // block))
    picked = np.unique(np.linspace(0, blocks - 1, min(blocks, wanted_blocks)).round().astype(np.int64))
    return (picked[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def sample_subset(data: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The samples ``index`` of every input."""
    return {k: np.ascontiguousarray(v[index]) for k, v in data.items()}


def _samples(data: Mapping[str, np.ndarray], labels: np.ndarray | None, index: np.ndarray
             ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The samples ``index`` of the data and of their labels."""
    return sample_subset(data, index), (labels[index] if labels is not None else None)


def _judge(contract: Contract, reference: dict[str, np.ndarray], labels: np.ndarray | None, output: str,
           loss_kind: str, heads: Mapping[str, int], samples: int, batch: int) -> Judge:
    """The contract's judge on the ``samples`` held back, run ``batch`` at a time (with labels:
    their task loss and accuracy); ``heads``: the outputs that are a linear layer's scores
    (``model.linear_head_outputs``)."""
    grouping = {"heads": heads, "samples": samples, "one_per_call": batch == 1}
    if labels is None or contract.metric is not None:
        return Judge(contract, reference, None, output, **grouping)
    task = make_loss(loss_kind, output, reference[output], labels)
    return Judge(contract, reference, labels, output, task.per_sample, lambda out: correctness(out, labels),
                 **grouping)


def plan_mixed(proto: ModelProto, weights: list[Weight], data: Mapping[str, np.ndarray],
               labels: np.ndarray | None, options: MixedOptions,
               bitstream_bytes: Callable[[dict[str, Candidate]], int], stages: Stages,
               device: str = "cpu", cache_dir: Path | None = None, original_bytes: int = 0) -> MixedResult:
    """Pick a candidate per compressible weight, measured on ``data`` (calibration; under the
    contract, part of it is held back to judge the frontier's plans)."""
    studied = [w for w in weights if w.compressible]
    if not studied:
        raise OnnxL2Error("no weight of this model can be compressed (`onnxl2 inspect` says why for each); "
                          "--lossless codes the model as it is")
    output = options.output or proto.graph.output[0].name
    if output not in [o.name for o in proto.graph.output]:
        raise OnnxL2Error(f"the model has no output '{output}' "
                          f"(outputs: {', '.join(o.name for o in proto.graph.output)})")
    specs = input_specs(proto)
    held = held_labels = None
    if options.form == "contract":
        fit_index, held_index = holdout_split(len(next(iter(data.values()))), options.contract.holdout,
                                              fixed_batch(specs))
        held, held_labels = _samples(data, labels, held_index)
        data, labels = _samples(data, labels, fit_index)
    batch = batch_size_for(data, specs)
    data_digest = _data_digest(proto, data) if cache_dir else None
    originals = {w.key: weight_array(proto, w) for w in studied}  # one copy, shared below
    hessians = {}
    if options.compensate or options.lowrank or options.ranks:
        with stages.stage("layer inputs"):
            path = Path(cache_dir) / f"hessians-{data_digest.hexdigest()[:32]}.npz" if cache_dir else None
            hessians = load_hessians(path) if path else None
            if hessians is None:
                hessians = layer_hessians(proto, studied, weights, data, batch, device)
                if path:
                    save_hessians(path, hessians)
    pinned = {w.key: r for w in studied if (r := pinned_rank(w, options))}
    check_factorisable(pinned, hessians, {w.key: w.shape for w in studied},
                       {w.key: allowed_bits(w, options) for w in studied})
    biases = bias_weights(weights, hessians) if options.compensate else {}  # biases that move with their weight
    originals.update({b.key: weight_array(proto, b) for b in biases.values()})
    probed, probed_labels = data, labels
    if options.form == "contract":
        macs = sum(h.positions * originals[key].size for key, h in hessians.items() if h.positions)
        index = sweep_samples(len(next(iter(data.values()))), macs, len(studied), fixed_batch(specs))
        probed, probed_labels = _samples(data, labels, index)
    with stages.stage("calibration passes"):
        probe = Probe(proto, studied + list({b.key: b for b in biases.values()}.values()), probed,
                      batch_size_for(probed, specs), output, device, originals)
        started = time.perf_counter()
        original_output = probe.outputs({})
        pass_seconds = time.perf_counter() - started
        loss = make_loss(options.loss, output, original_output, probed_labels)
        if options.form == "contract" and original_output.dtype.kind == "f":
            loss = replace(loss, scale=OutputScale.of(original_output))  # rank plans as they are judged
        _check_distance_bound(loss.kind, options)
        probe.set_loss(loss, original_output)
    with stages.stage("candidates"):
        path = Path(cache_dir) / f"candidates-{_candidates_key(data_digest, options)}.npz" if cache_dir else None
        candidates = load_candidates(path, {w.key: originals[w.key] for w in studied}) if path else None
        if candidates is None:
            def make(w: Weight) -> list[Candidate]:
                return weight_candidates(w, originals[w.key], options, hessians.get(w.key),
                                         originals[biases[w.key].key] if w.key in biases else None, pinned)
            made = map_by_size(make, studied, [w.numel for w in studied])
            candidates = {w.key: cands for w, cands in zip(studied, made)}
            if path:
                save_candidates(path, candidates)
    base_loss = float(probe.base.mean())
    with stages.stage("sensitivity"):
        key = _cache_key(data_digest, labels, options, output) if cache_dir else None
        table = _load_cached(cache_dir, key, candidates)
        cached = table is not None
        if table is not None:  # how the cached sweep was made, from its rows
            rows = [r for v in table.values() for r in v if r.bits != 32]
            mode = "proxy" if any(r.source == "proxy" for r in rows) else "full"
            taylor = any(r.first_order is not None for r in rows)
        else:
            pass_seconds = max(pass_seconds, timed_sweep_pass(probe, candidates))
            mode, taylor = sweep_mode(options, candidates, pass_seconds)
            progress = terminal_progress(stages.verbose, f"sensitivity ({mode})")
            run = sweep if mode == "full" else proxy_sweep
            table = run(probe, candidates, taylor=taylor, progress=progress)
            _store_cached(cache_dir, key, table)

    def overrides(choice: Mapping[str, int]) -> dict[str, np.ndarray]:
        out = {}
        for k, i in choice.items():
            if candidates[k][i].bits != 32:
                out.update(candidates[k][i].feeds())
        return out

    measured: dict[tuple, Measurement] = {}  # a plan seen twice (final check, repeated rounds) runs once

    def measure_loss(choice: Mapping[str, int]) -> Measurement:
        plan = tuple(sorted(choice.items()))
        if plan not in measured:
            measured[plan] = probe.change(overrides(choice))
        return measured[plan]

    def measure_size(choice: Mapping[str, int]) -> int:
        return bitstream_bytes({k: candidates[k][i] for k, i in choice.items()})

    frontier, held_passes = None, 0
    with stages.stage("allocation"):
        if options.form == "size budget":
            smallest = {k: int(np.argmin([c.coded_bytes for c in cands])) for k, cands in candidates.items()}
            fixed = measure_size(smallest) - sum(candidates[k][i].coded_bytes for k, i in smallest.items())
            allocation = allocate_size(table, options.target_bytes, fixed, measure_size)
            bound = None
        elif options.form == "loss neighbourhood":
            bound = parse_loss_bound(options.max_loss_increase, base_loss)
            allocation = allocate_neighbourhood(table, bound, measure_loss, options.noise_sigmas)
        else:
            bound = None
            held_batch = batch_size_for(held, specs)
            judged = probe.on(held, held_batch)
            judge = _judge(options.contract, judged.all_outputs({}), held_labels, output, options.loss,
                           linear_head_outputs(proto), len(next(iter(held.values()))), held_batch)
            frontier = search_frontier(table, measure_size, lambda choice: judge.criteria(judged.all_outputs(
                overrides(choice))), terminal_progress(stages.verbose, "frontier"))
            allocation = _contract_allocation(frontier, candidates)
            held_passes = judged.passes
        final = measure_loss(allocation.choice)
    chosen = {k: candidates[k][i] for k, i in allocation.choice.items()}
    report = {
        "loss": loss.describe(), "output": output, "calibration_samples": int(probe.base.size),
        "calibration_loss": base_loss, "form": options.form,
        "sweep": mode, "taylor_terms": taylor, "sweep_cached": cached, "seconds_per_pass": pass_seconds,
        "compensated_weights": len(hessians) if options.compensate else 0,
        "factorisable_weights": sum(any(c.factors is not None for c in cands) for cands in candidates.values()),
        "max_loss_increase": bound, "noise_sigmas": options.noise_sigmas, "target_bytes": options.target_bytes,
        "measured_loss_change": final.mean, "measured_loss_change_se": final.se,
        "measured_within_noise": final.within_noise,
        "predicted_loss_change": _sum_or_none(table[k][i].predicted for k, i in allocation.choice.items()),
        "summed_distortion": float(sum(table[k][i].distortion for k, i in allocation.choice.items())),
        "forward_passes": probe.passes + held_passes, **allocation.to_dict(),
        "candidates": {k: [s.to_dict() for s in rows] for k, rows in table.items()},
    }
    alternatives = []
    if frontier is not None:
        report["contract"] = {**options.contract.to_dict(held_labels is not None),
                              "held_back_samples": len(next(iter(held.values())))}
        report["frontier"] = frontier.to_dict(original_bytes)
        alternatives = [{k: candidates[k][i] for k, i in p.choice.items()} for p in frontier.larger_ratio_neighbours()]
    return MixedResult(chosen, report, output_positions(hessians), alternatives)


def _contract_allocation(frontier: Frontier, candidates: Mapping[str, list[Candidate]]) -> Allocation:
    """The chosen frontier plan, or every weight in float32 when no plan met the contract."""
    if frontier.chosen is not None:
        choice = frontier.points[frontier.chosen].choice
    else:
        choice = {k: max(range(len(cands)), key=lambda i: (cands[i].bits == 32, cands[i].coded_bytes))
                  for k, cands in candidates.items()}  # float32 where offered (a pinned rank has none)
    return Allocation(choice, status=frontier.status, message=frontier.message)


def _sum_or_none(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else float(sum(values))


def chosen_rows(chosen: dict[str, Candidate], table: dict[str, list[dict]]) -> dict[str, dict]:
    """Per weight, the sensitivity row of the chosen candidate (for the report's weight table)."""
    out = {}
    for key, cand in chosen.items():
        row = next(r for r in table[key] if r["label"] == cand.label)
        out[key] = {"predicted_loss_change": row["predicted"], "measured_loss_change": row["measured"],
                    "measured_se": row["se"], "within_noise": row["within_noise"],
                    "distortion": row["distortion"]}
    return out


__all__ = ["MixedOptions", "MixedResult", "plan_mixed", "parse_size", "parse_loss_bound", "allowed_bits"]
