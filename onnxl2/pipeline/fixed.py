"""The modes whose choices are fixed before any measurement: uniform bits (``--bits N``, with
pins, ranks and compensation) and a replayed plan (``--plan``). Both are plans of labels, and
both get their candidates from the one plan builder."""
from __future__ import annotations

from ..data import fixed_batch, input_specs
from ..options import CompressOptions
from ..plans import Plan, build_candidates, replayed_labels, uniform_labels
from ..progress import Stages
from .finish import Outcome
from .inputs import RunInputs


def run_fixed(inputs: RunInputs, options: CompressOptions, stages: Stages) -> Outcome:
    rules = options.automatic()
    proto, weights = inputs.proto, inputs.weights
    fitted_on = None
    if options.mode == "plan":
        replayed = Plan.read(options.plan)
        replayed.apply_axes(weights)
        fitted_on = replayed.fitted_on
        with stages.stage("quantize"):
            data = replayed.fitted_part(inputs.data, fixed_batch(input_specs(proto)))
            labels, hessians = replayed_labels(proto, weights, replayed, data)
            chosen, positions = build_candidates(proto, weights, labels, hessians)
    else:
        with stages.stage("quantize"):
            labels, hessians = uniform_labels(proto, weights, options.bits, rules, inputs.data)
            chosen, positions = build_candidates(proto, weights, labels, hessians)
    return Outcome(chosen, Plan.of(chosen, weights, fitted_on), positions)
