"""How well held-back samples tell a plan's top-1 agreement: the contract's estimate from
margins against a count of flips, over random draws of the evaluation samples.

    python tools/agreement_draws.py .cache/zoo/ppocr_rec_v4/model.onnx \\
        --data .cache/zoo/ppocr_rec_v4/eval.npz --held 16 out_3.5x/model.l2.onnx out_4.5x/model.l2.onnx

Each compressed model is run beside the original on ``--data``; each draw holds back ``--held``
samples (their margins and changes) and takes the margins of ``--held`` others as the fitting
samples'. Prints, per model, a table row: agreement on all samples (counted), the estimate's
mean and spread over the draws and how often it meets ``--bound``, and the count's spread and
how often it meets the bound.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2.contract import decision_margins, expected_agreement, rows_per_sample  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, iter_batches, load_data  # noqa: E402
from onnxl2.runtime import make_session  # noqa: E402
from onnxl2.samples import sample_count  # noqa: E402


def _outputs(model: str, data: dict[str, np.ndarray], batch: int, output: str | None) -> np.ndarray:
    session = make_session(model)
    name = output or session.get_outputs()[0].name
    return np.concatenate([session.run([name], feeds)[0] for feeds in iter_batches(data, batch)], axis=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("compressed", nargs="+")
    parser.add_argument("--data", required=True, help="evaluation samples (.npz)")
    parser.add_argument("--held", type=int, default=16, help="samples held back per draw")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--bound", type=float, default=0.99)
    parser.add_argument("--output", default=None, help="the decision output (default: the first)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    proto = onnx.load(args.model, load_external_data=False)
    data = load_data(args.data, proto)
    samples, batch = sample_count(data), batch_size_for(data, input_specs(proto))
    if 2 * args.held > samples:
        parser.error(f"--held {args.held} needs {2 * args.held} samples, --data has {samples}")
    reference = _outputs(args.model, data, batch, args.output)
    per = rows_per_sample(reference.shape, samples, batch == 1)
    if per * samples != reference.reshape(-1, reference.shape[-1]).shape[0]:
        parser.error("the output's rows cannot be grouped by sample")
    rng = np.random.default_rng(args.seed)
    print("| plan | agreement on all samples | expected, mean of draws (spread) | passes | counted: spread, passes |")
    print("|---|---:|---:|---:|---:|")
    for path in args.compressed:
        out = _outputs(path, data, batch, args.output)
        margin, change = (a.reshape(samples, per) for a in decision_margins(reference, out))
        kept = (reference.argmax(-1) == out.argmax(-1)).reshape(samples, per).all(axis=1)
        expected, counted = [], []
        for _ in range(args.draws):
            order = rng.permutation(samples)
            held, fitting = order[:args.held], order[args.held:2 * args.held]
            expected.append(expected_agreement(margin[held].ravel(), change[held].ravel(), per,
                                               margin[fitting].ravel()))
            counted.append(kept[held].mean())
        expected, counted = np.array(expected), np.array(counted)
        print(f"| {path} | {kept.mean():.3f} | {expected.mean():.3f} ({expected.std():.3f}) | "
              f"{np.mean(expected >= args.bound):.0%} | {counted.std():.3f}, {np.mean(counted >= args.bound):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
