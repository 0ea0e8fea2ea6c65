"""The automatic mode's search: candidates -> sensitivity -> knapsack -> plan.

Three forms: the behaviour contract (the default: the smallest plan on the measured frontier
that keeps the original's behaviour on calibration samples held back from every other step),
the lossless neighbourhood (``max_loss_increase``: the calibration loss may rise by at most
that), and a size budget (``target_bytes``). Calibration data drive every decision here;
evaluation data only judge the result afterwards.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from onnx import ModelProto

from ..budgets import Allocation, allocate_neighbourhood, allocate_size
from ..candidates import (FLOAT32, Candidate, level_forms, load_candidates, lowrank_ranks, make_candidates,
                          save_candidates)
from ..contract import Contract, Judge, OutputScale
from ..data import batch_size_for, fixed_batch, input_specs
from ..errors import OnnxL2Error
from ..evaluate import correctness
from ..frontier import Frontier, search_frontier
from ..hessian import layer_hessians
from ..layers.moments import LayerHessian, bias_weights, load_hessians, output_positions, save_hessians
from ..losses import Loss, make_loss
from ..model import Weight, checked_output, linear_head_outputs, weight_array
from ..progress import Stages
from ..report_parts import AllocationReport
from ..rules import SearchRules, allowed_bits, check_factorisable, parse_loss_bound, pinned_rank
from ..samples import holdout_split, labelled_subset, sample_count, sweep_samples
from ..sensitivity import (Measurement, Probe, Sensitivity, proxy_sweep, reference_candidate, references, sweep,
                           terminal_progress)
from ..sweep_cache import SweepCache
from ..workers import map_by_size


@dataclass
class SearchResult:
    chosen: dict[str, Candidate]
    report: AllocationReport
    positions: dict[str, float] = field(default_factory=dict)  # output positions per sample, by layer
    #: the contract form: plans of the next smaller frontier points (larger ratio), nearest first
    alternatives: list[dict[str, Candidate]] = field(default_factory=list)
    sensitivities: dict[str, Sensitivity] = field(default_factory=dict)  # the chosen candidates' sweep rows


@dataclass
class _Search:
    """What the stages of one search share."""

    proto: ModelProto
    weights: list[Weight]
    studied: list[Weight]
    rules: SearchRules
    stages: Stages
    cache: SweepCache
    output: str
    device: str = "cpu"
    originals: dict[str, np.ndarray] = field(default_factory=dict)
    hessians: dict[str, LayerHessian] = field(default_factory=dict)
    biases: dict[str, Weight] = field(default_factory=dict)
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)


def search(proto: ModelProto, weights: list[Weight], data: Mapping[str, np.ndarray],
           labels: np.ndarray | None, rules: SearchRules,
           bitstream_bytes: Callable[[dict[str, Candidate]], int], stages: Stages,
           device: str = "cpu", cache_dir: Path | None = None, original_bytes: int = 0) -> SearchResult:
    """Pick a candidate per compressible weight, measured on ``data`` (calibration; under the
    contract, part of it is held back to judge the frontier's plans)."""
    studied = [w for w in weights if w.compressible]
    if not studied:
        raise OnnxL2Error("no weight of this model can be compressed (`onnxl2 inspect` says why for each); "
                          "--lossless codes the model as it is")
    output = checked_output(proto, rules.output)
    held = held_labels = None
    if rules.form == "contract":
        fit_index, held_index = holdout_split(sample_count(data), rules.contract.holdout,
                                              fixed_batch(input_specs(proto)))
        held, held_labels = labelled_subset(data, labels, held_index)
        data, labels = labelled_subset(data, labels, fit_index)
    run = _Search(proto, weights, studied, rules, stages, SweepCache(cache_dir, proto, data), output, device,
                  {w.key: weight_array(proto, w) for w in studied})
    _gather_moments(run, data)
    probe, loss, pass_seconds = _calibration_probe(run, data, labels)
    _make_all_candidates(run)
    table, sweep_facts = _sensitivities(run, probe, labels, pass_seconds)
    allocation, frontier, held_passes, bound = _allocate(run, probe, table, bitstream_bytes, held, held_labels)
    report = _search_report(run, probe, loss, table, allocation, sweep_facts, bound, held_passes)
    alternatives = []
    if frontier is not None:
        report.contract = {**rules.contract.to_dict(held_labels is not None), "held_back_samples": sample_count(held)}
        report.frontier = frontier.to_dict(original_bytes)
        alternatives = [_chosen(run, p.choice) for p in frontier.larger_ratio_neighbours()]
    return SearchResult(_chosen(run, allocation.choice), report, output_positions(run.hessians), alternatives,
                        {k: table[k][i] for k, i in allocation.choice.items()})


def _chosen(run: _Search, choice: Mapping[str, int]) -> dict[str, Candidate]:
    return {k: run.candidates[k][i] for k, i in choice.items()}


def _gather_moments(run: _Search, data: Mapping[str, np.ndarray]) -> None:
    """Each layer's input moments (compensation, low rank), the pinned ranks checked against
    them, and the biases that move with their weights."""
    rules = run.rules
    if rules.compensate or rules.lowrank or rules.ranks:
        with run.stages.stage("layer inputs"):
            path = run.cache.hessians_path()
            hessians = load_hessians(path) if path else None
            if hessians is None:
                hessians = layer_hessians(run.proto, run.studied, run.weights, data,
                                          batch_size_for(data, input_specs(run.proto)), run.device)
                if path:
                    save_hessians(path, hessians)
            run.hessians = hessians
    pinned = {w.key: r for w in run.studied if (r := pinned_rank(w, rules))}
    check_factorisable(pinned, run.hessians, {w.key: w.shape for w in run.studied},
                       {w.key: allowed_bits(w, rules) for w in run.studied})
    run.biases = bias_weights(run.weights, run.hessians) if rules.compensate else {}
    run.originals.update({b.key: weight_array(run.proto, b) for b in run.biases.values()})


def _calibration_probe(run: _Search, data: Mapping[str, np.ndarray], labels: np.ndarray | None
                       ) -> tuple[Probe, Loss, float]:
    """The probe that measures plans on the (sweep's) calibration samples, with its loss."""
    specs = input_specs(run.proto)
    if run.rules.form == "contract":
        macs = sum(h.positions * run.originals[key].size for key, h in run.hessians.items() if h.positions)
        index = sweep_samples(sample_count(data), macs, len(run.studied), fixed_batch(specs))
        data, labels = labelled_subset(data, labels, index)
    with run.stages.stage("calibration passes"):
        moved = list({b.key: b for b in run.biases.values()}.values())
        probe = Probe(run.proto, run.studied + moved, data, batch_size_for(data, specs), run.output, run.device,
                      run.originals)
        started = time.perf_counter()
        original_output = probe.outputs({})
        pass_seconds = time.perf_counter() - started
        _check_finite({run.output: original_output}, f"{sample_count(data)} calibration samples the sweep runs on")
        loss = make_loss(run.rules.loss, run.output, original_output, labels)
        if run.rules.form == "contract" and original_output.dtype.kind == "f":
            loss = replace(loss, scale=OutputScale.of(original_output))  # rank plans as they are judged
        _check_distance_bound(loss.kind, run.rules)
        probe.set_loss(loss, original_output)
    return probe, loss, pass_seconds


def _check_finite(outputs: Mapping[str, np.ndarray], where: str) -> None:
    """Every change is measured against the original's outputs: where one is NaN or infinite
    no plan can be ranked or judged (and every plan would fail the contract)."""
    for name, values in outputs.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            raise OnnxL2Error(f"the original model's output '{name}' is NaN or infinite on the {where} "
                              f"({int(bad.sum())} of its {len(bad)} rows), so no change from it can be measured; "
                              "check the model and the data, or give --bits N or --lossless")


def _check_distance_bound(kind: str, rules: SearchRules) -> None:
    """A distance cannot fall below zero: at epsilon 0 nothing could be compressed."""
    if rules.form == "loss neighbourhood" and kind == "distance" and \
            parse_loss_bound(rules.max_loss_increase, 1.0) <= 0:
        raise OnnxL2Error("a distance to the original output cannot fall below zero, so with "
                          "--max-loss-increase 0 nothing could be compressed: give a bound "
                          "(e.g. --max-loss-increase 1e-4) or a --target-ratio")


def weight_candidates(weight: Weight, values: np.ndarray, rules: SearchRules, hessian: LayerHessian | None,
                      bias: np.ndarray | None, pinned: Mapping[str, int]) -> list[Candidate]:
    """The automatic mode's candidates for one weight (``values``), with the layer's Hessian
    (compensation and factor pairs, where ``rules`` allow them), its bias's values (moved by
    bias correction) and the pinned ranks."""
    bits = allowed_bits(weight, rules)
    return make_candidates(weight.key, values, weight.channel_axis, bits,
                           hessian=hessian if rules.compensate else None, rates=rules.rates, bias=bias,
                           ranks=_ranks(weight, values, hessian, pinned, rules),
                           full_rank=weight.key not in pinned, moments=hessian, merged=weight.merged_channels,
                           step_kinds=(False, True) if rules.layer_steps else (False,),
                           forms=level_forms(bits, rules.wide_levels))


def _ranks(weight: Weight, values: np.ndarray, hessian: LayerHessian | None, pinned: Mapping[str, int],
           rules: SearchRules) -> tuple[int, ...]:
    """Ranks offered for one weight: its pin, else the automatic ones (none for float-only weights)."""
    if weight.key in pinned:
        return (pinned[weight.key],)
    if not rules.lowrank or allowed_bits(weight, rules) == (FLOAT32,):
        return ()
    return lowrank_ranks(values, hessian)


def _make_all_candidates(run: _Search) -> None:
    """Every weight's candidates, made in parallel by size (or read from the cache)."""
    pinned = {w.key: r for w in run.studied if (r := pinned_rank(w, run.rules))}
    with run.stages.stage("candidates"):
        path = run.cache.candidates_path(run.rules)
        candidates = load_candidates(path, {w.key: run.originals[w.key] for w in run.studied}) if path else None
        if candidates is None:
            def make(w: Weight) -> list[Candidate]:
                bias = run.originals[run.biases[w.key].key] if w.key in run.biases else None
                return weight_candidates(w, run.originals[w.key], run.rules, run.hessians.get(w.key), bias, pinned)
            made = map_by_size(make, run.studied, [w.numel for w in run.studied])
            candidates = {w.key: cands for w, cands in zip(run.studied, made)}
            if path:
                save_candidates(path, candidates)
    run.candidates = candidates


def sweep_mode(rules: SearchRules, candidates: Mapping[str, list[Candidate]],
               pass_seconds: float) -> tuple[str, bool]:
    """(full or proxy, with Taylor terms or not) for the sweep, within ``--sweep-budget``.

    Measured loss changes steer the allocation; the first- and second-order terms (two more
    passes each) only explain it. So under "auto" the Taylor terms go first when time is short,
    and every candidate stays measured as long as one pass each fits.
    """
    if rules.sweep != "auto":
        return rules.sweep, rules.taylor
    if rules.form == "contract":  # measured passes go to the frontier, where the decision is taken
        return "proxy", False
    passes = sum(c.bits != FLOAT32 for cands in candidates.values() for c in cands)
    measured = sum(len(references(cands)) for cands in candidates.values())  # what proxy_sweep measures
    for mode, count in (("full", passes), ("proxy", measured)):
        for taylor in ((True, False) if rules.taylor else (False,)):
            if (3 if taylor else 1) * count * pass_seconds <= rules.sweep_budget:
                return mode, taylor
    return "proxy", False


def sweep_work(run: _Search, mode: str, taylor: bool) -> dict[str, float]:
    """Per weight, the multiply-adds of all the sweep's passes that change it: its layer's (output
    positions times weights) times how many passes measure it; where that is unknown, 0."""
    work = {}
    for key, cands in run.candidates.items():
        h = run.hessians.get(key)
        passes = len(references(cands)) if mode == "proxy" else sum(c.bits != FLOAT32 for c in cands)
        work[key] = (h.positions or 0.0) * cands[0].original.size * passes * (3 if taylor else 1) if h else 0.0
    return work


def timed_sweep_pass(probe: Probe, candidates: Mapping[str, list[Candidate]]) -> float:
    """Seconds of one sweep pass as the sweep runs it: the largest weight's reference candidate
    built, fed and scored.

    The pass that computed the original outputs feeds only the originals and is the first run
    of a fresh session, so timing the budget on it alone undercounts the sweep (by half on the
    recogniser).
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


def _sensitivities(run: _Search, probe: Probe, labels: np.ndarray | None, pass_seconds: float
                   ) -> tuple[dict, dict]:
    """The sweep's table (each candidate's measured or proxied loss change) and how it was made."""
    with run.stages.stage("sensitivity"):
        table = run.cache.load_sweep(labels, run.rules, run.output, run.candidates)
        cached, cuts = table is not None, 0
        if table is not None:  # how the cached sweep was made, from its rows
            rows = [r for v in table.values() for r in v if r.bits != FLOAT32]
            mode = "proxy" if any(r.source == "proxy" for r in rows) else "full"
            taylor = any(r.first_order is not None for r in rows)
        else:
            pass_seconds = max(pass_seconds, timed_sweep_pass(probe, run.candidates))
            mode, taylor = sweep_mode(run.rules, run.candidates, pass_seconds)
            progress = terminal_progress(run.stages.verbose, f"sensitivity ({mode})")
            probe.cut(sweep_work(run, mode, taylor))
            cuts = len(probe.suffixes.cuts)
            try:
                table = (sweep if mode == "full" else proxy_sweep)(probe, run.candidates, taylor=taylor,
                                                                   progress=progress)
            finally:
                probe.uncut()
            run.cache.store_sweep(labels, run.rules, run.output, table)
    return table, {"sweep": mode, "taylor_terms": taylor, "sweep_cached": cached, "seconds_per_pass": pass_seconds,
                   "sweep_cuts": cuts}


def _allocate(run: _Search, probe: Probe, table: dict, bitstream_bytes: Callable[[dict[str, Candidate]], int],
              held: Mapping[str, np.ndarray] | None, held_labels: np.ndarray | None
              ) -> tuple[Allocation, Frontier | None, int, float | None]:
    """The knapsack in the run's form: (allocation, frontier under the contract, passes on the
    held-back samples, the loss bound of the neighbourhood)."""
    rules, candidates = run.rules, run.candidates

    def overrides(choice: Mapping[str, int]) -> dict[str, np.ndarray]:
        out = {}
        for k, i in choice.items():
            if candidates[k][i].bits != FLOAT32:
                out.update(candidates[k][i].feeds())
        return out

    measured: dict[tuple, Measurement] = {}  # a plan seen twice (final check, repeated rounds) runs once

    def measure_loss(choice: Mapping[str, int]) -> Measurement:
        plan = tuple(sorted(choice.items()))
        if plan not in measured:
            measured[plan] = probe.change(overrides(choice))
        return measured[plan]

    def measure_size(choice: Mapping[str, int]) -> int:
        return bitstream_bytes(_chosen(run, choice))

    frontier, held_passes, bound = None, 0, None
    with run.stages.stage("allocation"):
        if rules.form == "size budget":
            smallest = {k: int(np.argmin([c.coded_bytes for c in cands])) for k, cands in candidates.items()}
            fixed = measure_size(smallest) - sum(candidates[k][i].coded_bytes for k, i in smallest.items())
            allocation = allocate_size(table, rules.target_bytes, fixed, measure_size)
        elif rules.form == "loss neighbourhood":
            bound = parse_loss_bound(rules.max_loss_increase, float(probe.base.mean()))
            allocation = allocate_neighbourhood(table, bound, measure_loss, rules.noise_sigmas)
        else:
            frontier, held_passes = _contract_frontier(run, probe, table, measure_size, overrides, held, held_labels)
            allocation = _contract_allocation(frontier, candidates)
        allocation.final = measure_loss(allocation.choice)
    return allocation, frontier, held_passes, bound


def _contract_frontier(run: _Search, probe: Probe, table: dict, measure_size, overrides,
                       held: Mapping[str, np.ndarray], held_labels: np.ndarray | None) -> tuple[Frontier, int]:
    """The measured frontier of plans judged on the held-back samples, and the passes it took."""
    specs = input_specs(run.proto)
    held_batch = batch_size_for(held, specs)
    judged = probe.on(held, held_batch)
    reference = judged.all_outputs({})
    _check_finite(reference, f"{sample_count(held)} calibration samples held back to judge")
    judge = _judge(run.rules.contract, reference, held_labels, run.output, run.rules.loss,
                   linear_head_outputs(run.proto), sample_count(held), held_batch)
    if judge.classes and run.rules.contract.metric is None and held_labels is None:
        known = {run.output: probe.original_output}  # the original on the sweep's fitting samples
        counts = [sample_count(batch) for batch in probe.batches]
        judge.add_margins(known if set(judge.classes) <= set(known) else probe.all_outputs({}), sum(counts),
                          all(n == 1 for n in counts))
    frontier = search_frontier(table, measure_size, lambda choice: judge.criteria(judged.all_outputs(
        overrides(choice))), terminal_progress(run.stages.verbose, "frontier"))
    return frontier, judged.passes


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


def _contract_allocation(frontier: Frontier, candidates: Mapping[str, list[Candidate]]) -> Allocation:
    """The chosen frontier plan, or every weight in float32 when no plan met the contract."""
    if frontier.chosen is not None:
        choice = frontier.points[frontier.chosen].choice
    else:
        choice = {k: max(range(len(cands)), key=lambda i: (cands[i].bits == FLOAT32, cands[i].coded_bytes))
                  for k, cands in candidates.items()}  # float32 where offered (a pinned rank has none)
    return Allocation(choice, status=frontier.status, message=frontier.message)


def _search_report(run: _Search, probe: Probe, loss: Loss, table: dict, allocation: Allocation, sweep_facts: dict,
                   bound: float | None, held_passes: int) -> AllocationReport:
    """The allocation part of the report: the loss, how the sweep ran, what was measured."""
    final, choice = allocation.final, allocation.choice
    return AllocationReport(
        loss.describe(), run.output, int(probe.base.size), float(probe.base.mean()), run.rules.form,
        **sweep_facts, compensated_weights=len(run.hessians) if run.rules.compensate else 0,
        factorisable_weights=sum(any(c.factors is not None for c in cands) for cands in run.candidates.values()),
        max_loss_increase=bound, noise_sigmas=run.rules.noise_sigmas, target_bytes=run.rules.target_bytes,
        measured_loss_change=final.mean, measured_loss_change_se=final.se, measured_within_noise=final.within_noise,
        predicted_loss_change=_sum_or_none(table[k][i].predicted for k, i in choice.items()),
        summed_distortion=float(sum(table[k][i].distortion for k, i in choice.items())),
        forward_passes=probe.passes + held_passes, allocation=allocation, candidates=table)


def _sum_or_none(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else float(sum(values))
