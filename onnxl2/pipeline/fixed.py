"""The modes whose choices are fixed before any measurement: uniform bits (``--bits N``, with
pins, ranks and compensation) and a replayed plan (``--plan``). Both are plans of labels, and
both get their candidates from the one plan builder."""
from __future__ import annotations

import numpy as np

from ..data import batch_size_for, fixed_batch, input_specs
from ..errors import OnnxL2Error
from ..hessian import layer_hessians
from ..layers.moments import LayerHessian
from ..model import Weight
from ..options import CompressOptions
from ..plans import Gather, Plan, build_candidates, replayed_labels, uniform_labels
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
            labels, hessians = replayed_labels(weights, replayed, _gatherer(inputs, data))
            chosen, positions = build_candidates(proto, weights, labels, hessians)
    else:
        with stages.stage("quantize"):
            labels, hessians = uniform_labels(weights, options.bits, rules, _gatherer(inputs, inputs.data))
            chosen, positions = build_candidates(proto, weights, labels, hessians)
    return Outcome(chosen, Plan.of(chosen, weights, fitted_on), positions)


def _gatherer(inputs: RunInputs, data: dict[str, np.ndarray] | None) -> Gather:
    """The input-moment pass over ``data`` for the weights a plan needs it for."""
    def gather(needs: list[Weight], who: str) -> dict[str, LayerHessian]:
        if data is None:
            raise OnnxL2Error(f"{who} need calibration data (--data): error compensation reads the layers' inputs")
        return layer_hessians(inputs.proto, needs, inputs.weights, data, batch_size_for(data, input_specs(inputs.proto)))
    return gather
