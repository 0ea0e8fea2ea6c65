"""How much each candidate changes the model's loss, measured with ONNX Runtime forward passes.

One session serves every pass: the weights under study become graph inputs, so a candidate is
tried by feeding its values instead of the original's, with no session rebuilt. For candidate
perturbation ``d = candidate - original`` the sweep measures, on the same calibration batches:

- the loss change itself, ``L(w + d) - L(w)``, per sample, in float64: its mean is the cost the
  allocation uses, its standard error says whether it is distinguishable from noise;
- the first- and second-order terms of the total differential along ``d``, by central
  differences at half the step: ``g.d ~ L(w + d/2) - L(w - d/2)`` and
  ``d'Hd/2 ~ 2 (L(w + d/2) - 2 L(w) + L(w - d/2))``; their sum is the Taylor prediction, shown
  next to the measured change so that a user sees where the quadratic model holds.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping

import numpy as np
from onnx import ModelProto, helper

from .candidates import FLOAT16, FLOAT32, Candidate
from .data import iter_batches
from .runtime import make_session
from .losses import Loss
from .model import Weight, iter_graphs, remove_constants, weight_array
from .stats import mean_and_se
from .suffixes import Suffixes

#: A change smaller than this many standard errors counts as zero.
NOISE_SIGMAS = 2.0


def probe_model(proto: ModelProto, weights: list[Weight]) -> ModelProto:
    """A copy of the model whose ``weights`` are graph inputs instead of constants."""
    out = ModelProto()
    out.CopyFrom(proto)
    keys = {w.key for w in weights}
    main_inputs = {i.name for i in out.graph.input}
    for graph, path in iter_graphs(out.graph):
        studied = {w.name for w in weights if w.graph == path}
        if studied:
            remove_constants(graph, studied)
    for w in weights:
        if w.key in keys and w.name not in main_inputs:
            out.graph.input.append(helper.make_tensor_value_info(w.name, w.elem_type, list(w.shape)))
            main_inputs.add(w.name)
    return out


@dataclass
class Measurement:
    """A mean loss change over calibration samples and its standard error."""

    mean: float
    se: float

    @property
    def within_noise(self) -> bool:
        return within_noise(self.mean, self.se)


def within_noise(mean: float | None, se: float | None) -> bool:
    """A change no larger than NOISE_SIGMAS standard errors counts as zero."""
    return mean is not None and abs(mean) <= NOISE_SIGMAS * se


def paired(after: np.ndarray, before: np.ndarray) -> Measurement:
    return Measurement(*mean_and_se(after - before))


class Probe:
    """Runs the model on the calibration batches with any weights replaced, and scores it."""

    def __init__(self, proto: ModelProto, weights: list[Weight], data: Mapping[str, np.ndarray],
                 batch: int, output: str, device: str = "cpu",
                 originals: Mapping[str, np.ndarray] | None = None) -> None:
        names = [w.name for w in weights]
        self.weights = [w for w in weights if names.count(w.name) == 1]  # names must be feedable
        self.originals = {w.key: originals[w.key] if originals else weight_array(proto, w)
                          for w in self.weights}
        self.studied = {w.key for w in self.weights}
        self.model = probe_model(proto, self.weights)
        self.device = device
        self.session = make_session(self.model, device)
        self.suffixes: Suffixes | None = None
        self.batches = list(iter_batches(data, batch))
        self.output = output
        self.passes = 0
        self.loss: Loss | None = None
        self.original_output: np.ndarray | None = None  # the studied output unchanged (set_loss)
        self.base = np.zeros(0)

    def on(self, data: Mapping[str, np.ndarray], batch: int) -> "Probe":
        """The same session and weights on other samples (the contract's held-back ones): no
        second copy of the probe model, no second session."""
        other = copy.copy(self)
        other.batches, other.passes, other.loss, other.base = list(iter_batches(data, batch)), 0, None, np.zeros(0)
        other.original_output = None
        other.suffixes = None
        return other

    def cut(self, costs: Mapping[str, float]) -> None:
        """Cut the model for passes that change one weight at a time (``costs``: weight key -> the
        work of its passes, see :mod:`suffixes`): such a pass then starts from cached activations
        at the latest cut before the weight's first reader. :meth:`uncut` frees the caches."""
        self.suffixes = Suffixes(self.model, self.output, {w.key: w.name for w in self.weights}, self.device)
        originals = {w.name: self.originals[w.key] for w in self.weights}
        self.suffixes.build(costs, [{**batch, **originals} for batch in self.batches])

    def uncut(self) -> None:
        self.suffixes = None

    def set_loss(self, loss: Loss, original_output: np.ndarray) -> None:
        """Fix the loss (its targets may come from the original output) and the baseline."""
        self.loss = loss
        self.original_output = original_output
        self.base = loss.per_sample(original_output)

    def outputs(self, overrides: Mapping[str, np.ndarray]) -> np.ndarray:
        """The studied output with ``overrides`` (weight key -> values) in place of the originals."""
        feeds_w = {w.name: overrides.get(w.key, self.originals[w.key]) for w in self.weights}
        cut = self.suffixes.cut_for(set(overrides)) if self.suffixes is not None else None
        session = self.suffixes.session(cut) if cut is not None else None
        self.passes += 1
        if session is None:
            parts = [self.session.run([self.output], {**batch, **feeds_w})[0] for batch in self.batches]
            return np.concatenate(parts, axis=0)
        weights = {name: values for name, values in feeds_w.items() if name in cut.weights}
        parts = [session.run([self.output], {**{k: v for k, v in batch.items() if k in cut.inputs},
                                                 **cached, **weights})[0]
                 for batch, cached in zip(self.batches, cut.cache)]
        return np.concatenate(parts, axis=0)

    def all_outputs(self, overrides: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every model output with ``overrides`` in place of the originals (what a contract judges)."""
        feeds_w = {w.name: overrides.get(w.key, self.originals[w.key]) for w in self.weights}
        names = [o.name for o in self.session.get_outputs()]
        parts = [self.session.run(names, {**batch, **feeds_w}) for batch in self.batches]
        self.passes += 1
        return {name: np.concatenate([p[i] for p in parts], axis=0) if parts[0][i].ndim else
                np.stack([p[i] for p in parts]) for i, name in enumerate(names)}

    def losses(self, overrides: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-sample loss with ``overrides`` (weight key -> values) in place of the originals."""
        return self.loss.per_sample(self.outputs(overrides))

    def change_and_distortion(self, overrides: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Per-sample loss and the mean output distortion, from one pass."""
        out = self.outputs(overrides)
        return self.loss.per_sample(out), float(self.loss.distortion(out).mean())

    def change(self, overrides: Mapping[str, np.ndarray]) -> Measurement:
        return paired(self.losses(overrides), self.base)


@dataclass
class Sensitivity:
    """What one candidate costs in bytes and in loss."""

    key: str
    label: str
    bits: int
    coded_bytes: int
    measured: float | None
    se: float | None
    distortion: float = 0.0
    first_order: float | None = None
    second_order: float | None = None
    source: str = "measured"  # or "proxy": distortion scaled from the layer's measured candidate

    @property
    def within_noise(self) -> bool:
        return within_noise(self.measured, self.se)

    @property
    def predicted(self) -> float | None:
        if self.first_order is None:
            return None
        return self.first_order + self.second_order

    @property
    def cost(self) -> float:
        """What the knapsack adds up: the output distortion (see :meth:`Loss.distortion`).

        Summed per-layer *loss* changes proved a poor estimate of a whole plan's change: each
        is mostly noise at the scale of one layer, the knapsack collects the ones that are
        negative by chance, and the real changes add up. Distortions are non-negative, far less
        noisy and additive; the loss itself is then measured for the whole plan.
        """
        return self.distortion

    def to_dict(self) -> dict:
        return {**asdict(self), "predicted": self.predicted, "within_noise": self.within_noise}


def reference_candidate(cands: list[Candidate]) -> Candidate | None:
    """The candidate a proxy sweep measures: int4 if offered, else the nearest integer one."""
    ints = [c for c in cands if c.quantized is not None]
    if not ints:
        halves = [c for c in cands if c.bits == FLOAT16]
        return halves[0] if halves else None
    return min(ints, key=lambda c: (abs(c.bits - 4), c.bits, c.rate, c.one_step))


def _error_energy(cand: Candidate) -> float:
    """Layer-output error where the layer Hessian is known, else the weight error."""
    if cand.output_error is not None:
        return cand.output_error
    return float(np.square(cand.values().astype(np.float64) - cand.original).sum())


def proxy_sweep(probe: Probe, candidates: Mapping[str, list[Candidate]], taylor: bool = True,
                progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, list[Sensitivity]]:
    """One measured candidate per weight and kind of step; the others' distortion scaled by
    their error energy from the reference of their own kind.

    Output distortion is second order in the perturbation, so within one layer it grows with
    the squared error of the layer's output (of its weight where no Hessian is known); the
    measured reference fixes the layer's own factor. That factor differs between a step per
    channel and one step for the layer (how the error spreads over the output channels is not
    the same, and the layers after weigh channels differently), so each kind has its own
    reference; so has each form of levels (clipped and wide), whose errors fall on different
    weights: a clipped layer's on the few it clips, a wide one's spread over all. Rows say which
    values are measured and which are scaled; the final plan is always measured.
    """
    refs = {key: references(cands) for key, cands in candidates.items()}
    measured = sweep(probe, {key: list(kinds.values()) for key, kinds in refs.items() if kinds}, taylor, progress)
    results: dict[str, list[Sensitivity]] = {}
    for key, cands in candidates.items():
        kinds = refs[key]
        rows_of = dict(zip(kinds, measured.get(key, [])))  # kind -> the reference's row
        rows = []
        for cand in cands:
            kind = candidate_kind(cand)
            ref = kinds.get(kind)
            if ref is not None and cand is ref:
                rows.append(rows_of[kind])
            elif cand.bits == FLOAT32 or ref is None:
                rows.append(Sensitivity(key, cand.label, cand.bits, cand.coded_bytes, 0.0, 0.0, 0.0,
                                        0.0 if cand.bits == FLOAT32 else None, 0.0 if cand.bits == FLOAT32 else None))
            else:
                ref_energy = _error_energy(ref)
                ratio = _error_energy(cand) / ref_energy if ref_energy > 0 else 0.0
                rows.append(Sensitivity(key, cand.label, cand.bits, cand.coded_bytes, None, None,
                                        rows_of[kind].distortion * ratio, source="proxy"))
        results[key] = rows
    return results


def candidate_kind(cand: Candidate) -> tuple[bool, bool]:
    """What a proxy sweep measures a reference for: the kind of step and the form of levels."""
    return cand.one_step, cand.wide


def references(cands: list[Candidate]) -> dict[tuple[bool, bool], Candidate]:
    """The measured reference of each kind (``candidate_kind``) a weight's candidates have (float
    candidates and factor pairs are of the clipped kind)."""
    out = {}
    for kind in sorted({candidate_kind(c) for c in cands}):
        ref = reference_candidate([c for c in cands if candidate_kind(c) == kind])
        if ref is not None:
            out[kind] = ref
    return out


def sweep(probe: Probe, candidates: Mapping[str, list[Candidate]], taylor: bool = True,
          progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, list[Sensitivity]]:
    """Measure every candidate of every studied weight (float32 costs nothing and is not run)."""
    jobs = [(key, c) for key, cands in candidates.items() for c in cands]
    if probe.suffixes is not None:  # passes from one cut together: one cut session open at a time
        jobs.sort(key=lambda job: probe.suffixes.start(job[0]))
    results: dict[str, list[Sensitivity]] = {key: [] for key in candidates}
    iterator = progress(jobs) if progress else jobs
    base = probe.base
    for key, cand in iterator:
        if cand.bits == FLOAT32 or key not in probe.studied:
            results[key].append(Sensitivity(key, cand.label, cand.bits, cand.coded_bytes, 0.0, 0.0, 0.0,
                                            0.0 if cand.bits == FLOAT32 else None,
                                            0.0 if cand.bits == FLOAT32 else None))
            continue
        feeds = cand.feeds()
        full, distortion = probe.change_and_distortion(feeds)
        delta = paired(full, base)
        row = Sensitivity(key, cand.label, cand.bits, cand.coded_bytes, delta.mean, delta.se, distortion)
        if taylor:
            def step(sign: float) -> dict[str, np.ndarray]:
                out = {}
                for name, values in feeds.items():
                    original = probe.originals[name]
                    out[name] = (original + sign * (values.astype(np.float64) - original) / 2).astype(original.dtype)
                return out
            plus, minus = probe.losses(step(1.0)), probe.losses(step(-1.0))
            row.first_order = float(np.mean(plus - minus))
            row.second_order = float(np.mean(2.0 * (plus - 2.0 * base + minus)))
        results[key].append(row)
    return results


def terminal_progress(verbose: bool, label: str):
    """A progress bar on stderr when it is a terminal, else nothing."""
    if not verbose:
        return None
    import click

    def wrap(items):
        items = list(items)
        with click.progressbar(items, label=label, file=sys.stderr, show_eta=True) as bar:
            yield from bar
    return wrap
