"""The automatic mode: search the candidates (``search``), then the plans it found."""
from __future__ import annotations

from pathlib import Path

from ..candidates import Candidate
from ..codec.container import encode_container
from ..options import CompressOptions
from ..plans import Plan
from ..progress import Stages
from .finish import Outcome, container_meta, emit
from .inputs import RunInputs
from .search import search


def run_automatic(inputs: RunInputs, options: CompressOptions, stages: Stages) -> Outcome:
    loaded, proto, weights = inputs.loaded, inputs.proto, inputs.weights
    rules = options.automatic(options.target_bytes(loaded.file_bytes))

    def bitstream_bytes(chosen: dict[str, Candidate]) -> int:
        files, _ = emit(proto, weights, chosen, False, loaded.stem)
        return len(encode_container(files, container_meta(options.mode, options.bits, loaded.path))[0])

    found = search(proto, weights, inputs.data, inputs.labels, rules, bitstream_bytes, stages,
                   cache_dir=Path(options.sweep_cache) if options.sweep_cache else None,
                   original_bytes=loaded.file_bytes)
    fitted_on = {"holdout": rules.contract.holdout} if rules.form == "contract" else None
    return Outcome(found.chosen, Plan.of(found.chosen, weights, fitted_on), found.positions, found.report,
                   [Plan.of(alt, weights, fitted_on) for alt in found.alternatives], found.sensitivities)
