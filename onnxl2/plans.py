"""Plans: one choice per weight, as a document a user reads, edits and replays.

Every lossy mode ends in a :class:`Plan`. Uniform bits and a replayed file are plans from the
start: their labels (:class:`candidates.Label`, from :func:`uniform_labels` or
:func:`replayed_labels`) get their candidates from :func:`build_candidates`, a label saying
everything needed to make its one candidate. The automatic mode measures candidates first and
its plan records the ones it chose. All three are written by :meth:`Plan.document`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from onnx import ModelProto

from .candidates import Candidate, Label, candidate_for, parse_label
from .errors import OnnxL2Error
from .layers.moments import LayerHessian, bias_weights, output_positions
from .model import Weight, weight_array
from .rules import SearchRules, allowed_bits, check_factorisable, pinned_rank
from .samples import holdout_split, sample_count, sample_subset

PLAN_FORMAT = 1


@dataclass
class Plan:
    """Choices by weight key ("int4", "int6+gptq+rank32", "float16", ...); which calibration
    samples compensated candidates were fitted on (``fitted_on``: the contract holds some back,
    so a replay on the same data fits on the same samples and gives the same bytes); and the
    channel axis of each weight no reader gives one (``axes``, chosen by coded size)."""

    choices: dict[str, str]
    fitted_on: dict | None = None
    axes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, chosen: Mapping[str, Candidate], weights: list[Weight], fitted_on: dict | None = None) -> "Plan":
        """The plan of chosen candidates."""
        axes = {w.key: w.channel_axis for w in weights if w.key in chosen and w.axis_from == "size"}
        return cls({key: cand.label for key, cand in chosen.items()}, fitted_on, axes)

    def document(self, model: str) -> dict:
        """The plan as JSON (what ``plan.json`` holds)."""
        doc = {"format": PLAN_FORMAT, "model": model, "choices": dict(self.choices)}
        if self.axes:
            doc["axes"] = dict(self.axes)
        return {**doc, "fitted_on": self.fitted_on} if self.fitted_on else doc

    @classmethod
    def read(cls, source: str | os.PathLike | dict) -> "Plan":
        """A plan from a file or a parsed document, its fields checked."""
        doc = source if isinstance(source, dict) else _read_json(Path(source))
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
        return cls(choices, fitted_on, axes)

    def apply_axes(self, weights: list[Weight]) -> None:
        """The plan's ``axes`` replace the axes chosen by size (the readers' own axes are not
        the plan's to change)."""
        by_key = {w.key: w for w in weights}
        for key, axis in self.axes.items():
            w = by_key.get(key)
            if w is None or not w.compressible or w.axis_from != "size":
                raise OnnxL2Error(f"plan: 'axes' names {key}, whose channel axis its readers decide "
                                  "(only weights no reader gives an axis take one from the plan)")
            if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(w.shape):
                raise OnnxL2Error(f"plan: the axis of {key} must be an integer 0..{len(w.shape) - 1}, got {axis!r}")
            w.channel_axis = axis

    def fitted_part(self, data: dict[str, np.ndarray] | None, block: int) -> dict[str, np.ndarray] | None:
        """The calibration samples the plan's candidates were fitted on."""
        if data is None or not self.fitted_on:
            return data
        return sample_subset(data, holdout_split(sample_count(data), self.fitted_on["holdout"], block)[0])


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise OnnxL2Error(f"no such plan file: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise OnnxL2Error(f"plan {path} is not JSON ({exc})") from None


#: Gathers the input moments of the layers of some weights (the ORT pass, run by the caller).
Gather = Callable[[list[Weight], str], dict[str, LayerHessian]]


def uniform_labels(weights: list[Weight], bits: int, rules: SearchRules, gather: Gather
                   ) -> tuple[dict[str, Label], dict[str, LayerHessian]]:
    """Every compressible weight at ``bits`` (after ``--keep`` and pins), compensated where
    ``rules`` ask and its layer's inputs can be read, at its pinned rank; and the Hessians that
    needs (from ``gather``)."""
    uniform = SearchRules((bits,), rules.keep, rules.pins, ranks=rules.ranks)
    studied = [w for w in weights if w.compressible]
    ranked = {w.key: r for w in studied if (r := pinned_rank(w, uniform))}
    needs = [w for w in studied if rules.compensate or w.key in ranked]
    hessians = gather(needs, "--compensate and --rank") if needs else {}
    check_factorisable(ranked, hessians, {w.key: w.shape for w in studied},
                       {w.key: allowed_bits(w, uniform) for w in studied if w.key in ranked})
    labels = {}
    for w in studied:
        (chosen_bits,) = allowed_bits(w, uniform)
        rank = ranked.get(w.key)
        labels[w.key] = Label(chosen_bits, bool(rules.compensate and w.key in hessians),
                              rules.rates[0] if not rank else 0.0, rank)
    return labels, hessians


def replayed_labels(weights: list[Weight], plan: Plan, gather: Gather
                    ) -> tuple[dict[str, Label], dict[str, LayerHessian]]:
    """A replayed plan's labels (float32 for weights it leaves out), checked, and the Hessians
    its compensated and factorised choices need."""
    studied = {w.key: w for w in weights if w.compressible}
    unknown = sorted(set(plan.choices) - set(studied))
    if unknown:
        raise OnnxL2Error(f"the plan names weights this model does not have or cannot compress: "
                          f"{', '.join(unknown[:5])}")
    labels = {}
    for key in studied:
        text = plan.choices.get(key, "float32")
        try:
            if not isinstance(text, str):
                raise ValueError(text)
            labels[key] = parse_label(text)
        except ValueError:
            raise OnnxL2Error(f"plan: unknown choice {text!r} for {key} (use float32, float16, int2..int12, "
                              "optionally +wide, +onestep, +gptq, +rN and +rankR in that order, e.g. int3+wide+gptq, int4+onestep+gptq+r0.3, int6+gptq+rank32)") from None
    needs = [studied[k] for k, p in labels.items() if p.compensated or p.rank]
    if not needs:
        return labels, {}
    hessians = gather(needs, "the plan's +gptq and +rank choices")
    missing = [w.key for w in needs if w.key not in hessians]
    if missing:
        raise OnnxL2Error(f"plan: {missing[0]} cannot be error-compensated or factorised (no supported consumer)")
    check_factorisable({k: p.rank for k, p in labels.items() if p.rank}, hessians,
                       {key: w.shape for key, w in studied.items()})
    return labels, hessians


def build_candidates(proto: ModelProto, weights: list[Weight], labels: Mapping[str, Label],
                     hessians: Mapping[str, LayerHessian]) -> tuple[dict[str, Candidate], dict[str, float]]:
    """The one candidate each label names, and the output positions per sample of the layers
    whose inputs were gathered."""
    biases = bias_weights(weights, hessians)
    chosen = {}
    for w in weights:
        if w.key in labels:
            chosen[w.key] = candidate_for(w.key, weight_array(proto, w), w.channel_axis, labels[w.key],
                                          hessians.get(w.key),
                                          weight_array(proto, biases[w.key]) if w.key in biases else None,
                                          merged=w.merged_channels)
    return chosen, output_positions(hessians)
