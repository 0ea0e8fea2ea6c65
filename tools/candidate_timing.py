"""How long making candidates takes, on one thread and on several, and where the time goes.

    python tools/candidate_timing.py .cache/zoo/minilm_l6_v2/model.onnx --data calib.npz --layers 12

Makes the automatic mode's candidates (default bit choices, low rank on) for the first
``--layers`` compressible weights twice, serially and through ``onnxl2.workers`` with the
threshold lifted, and prints both wall times; then profiles the serial run and prints the share
of its time spent coding candidates for their size (``integer_payload_bytes``) and in the clip
search (``quantize_per_channel``).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxl2 import workers  # noqa: E402
from onnxl2.codec import memo  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, load_data  # noqa: E402
from onnxl2.hessian import bias_weights, layer_hessians  # noqa: E402
from onnxl2.mixed import MixedOptions, weight_candidates  # noqa: E402
from onnxl2.model import discover_weights, load_model, weight_array  # noqa: E402
from onnxl2.transforms.fold import fold_batchnorm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", required=True, help="calibration data (.npz or folder of .npy)")
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    proto, _ = fold_batchnorm(load_model(args.model).proto)
    every = discover_weights(proto)
    studied = [w for w in every if w.compressible][:args.layers]
    data = load_data(args.data, proto)
    hessians = layer_hessians(proto, studied, every, data, batch_size_for(data, input_specs(proto)))
    biases = bias_weights(every, hessians)

    options = MixedOptions(compensate=True)  # the automatic mode's defaults

    def make(w):
        return weight_candidates(w, weight_array(proto, w), options, hessians.get(w.key),
                                 weight_array(proto, biases[w.key]) if w.key in biases else None, {})

    def timed(threshold: int) -> float:
        workers.MIN_PARALLEL_ELEMENTS = threshold
        memo.clear()  # each run codes from scratch
        started = time.perf_counter()
        workers.map_by_size(make, studied, [w.numel for w in studied])
        return time.perf_counter() - started

    serial, threaded = timed(1 << 62), timed(0)
    print(f"{len(studied)} weights: {serial:.1f} s on one thread, {threaded:.1f} s on "
          f"{workers.worker_count(1 << 62)} threads")
    memo.clear()
    workers.MIN_PARALLEL_ELEMENTS = 1 << 62
    profile = cProfile.Profile()
    profile.runcall(workers.map_by_size, make, studied, [w.numel for w in studied])
    stats = pstats.Stats(profile)
    total = stats.total_tt
    for name in ("integer_payload_bytes", "quantize_per_channel", "compensated_round"):
        cumulative = sum(v[3] for k, v in stats.stats.items() if k[2] == name)
        print(f"  {name:24s} {cumulative:6.1f} s  {cumulative / total:5.1%} of the serial run")


if __name__ == "__main__":
    main()
