"""How well held-back samples tell a plan's top-1 agreement: the contract's estimate from
margins against a count of flips, over random draws of the evaluation samples.

    python tools/agreement_draws.py .cache/zoo/ppocr_rec_v4/model.onnx \\
        --data .cache/zoo/ppocr_rec_v4/eval.npz --held 16 out_3.5x/model.l2.onnx out_4.5x/model.l2.onnx

Each compressed model is run beside the original on ``--data``; each draw holds back ``--held``
samples (their margins and changes) and takes the margins of ``--held`` others as the fitting
samples'. Prints, per model, a table row: agreement on all samples (counted), the estimate's
mean and spread over the draws and how often it meets ``--bound``, and the count's spread and
how often it meets the bound.

With ``--choose`` (the compressed models being plans of one model at several sizes, each
``model.l2.onnx`` beside its ``model.l2b``) each draw also picks a plan as the contract's
frontier does (``contract.decide``: the monotone fit over the plans, the smallest that meets
the bound with every larger one meeting it), by the estimate and by the count; printed: how
often each plan is picked, and the share of three draws whose picks all lie within 10% of
their median ratio, as the stability criterion asks of three calibration subsets.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2.contract import Criterion, decide, decision_margins, expected_agreement, rows_per_sample  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, iter_batches, load_data  # noqa: E402
from onnxl2.runtime import make_session  # noqa: E402
from onnxl2.samples import sample_count  # noqa: E402


def _outputs(model: str, data: dict[str, np.ndarray], batch: int, output: str | None) -> np.ndarray:
    session = make_session(model)
    name = output or session.get_outputs()[0].name
    return np.concatenate([session.run([name], feeds)[0] for feeds in iter_batches(data, batch)], axis=0)


def plans_parser(description: str, plans_required: bool = True) -> argparse.ArgumentParser:
    """The arguments of a tool that runs compressed models beside their original on samples."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model")
    parser.add_argument("compressed", nargs="+" if plans_required else "*")
    parser.add_argument("--data", required=True, help="evaluation samples (.npz)")
    parser.add_argument("--output", default=None, help="the decision output (default: the first)")
    return parser


def main() -> int:
    parser = plans_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=16, help="samples held back per draw")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--bound", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--choose", action="store_true", help="pick a plan per draw as the frontier does")
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
    orders = [rng.permutation(samples) for _ in range(args.draws)]
    picks: dict[str, list[np.ndarray]] = {"expected": [], "counted": []}
    print("| plan | agreement on all samples | expected, mean of draws (spread) | passes | counted: spread, passes |")
    print("|---|---:|---:|---:|---:|")
    for path in args.compressed:
        out = _outputs(path, data, batch, args.output)
        margin, change = (a.reshape(samples, per) for a in decision_margins(reference, out))
        kept = (reference.argmax(-1) == out.argmax(-1)).reshape(samples, per).all(axis=1)
        expected, counted = [], []
        for order in orders:
            held, fitting = order[:args.held], order[args.held:2 * args.held]
            expected.append(expected_agreement(margin[held].ravel(), change[held].ravel(), per,
                                               margin[fitting].ravel()))
            counted.append(kept[held].mean())
        expected, counted = np.array(expected), np.array(counted)
        picks["expected"].append(expected)
        picks["counted"].append(counted)
        print(f"| {path} | {kept.mean():.3f} | {expected.mean():.3f} ({expected.std():.3f}) | "
              f"{np.mean(expected >= args.bound):.0%} | {counted.std():.3f}, {np.mean(counted >= args.bound):.0%} |")
    if args.choose:
        _print_choices(args, proto_bytes(args.model), picks)
    return 0


def proto_bytes(model: str) -> int:
    """The original's bytes on disk (the .onnx and its external data files)."""
    from onnxl2.model import load_model
    loaded = load_model(model, load_data=False)
    return loaded.file_bytes


def _print_choices(args: argparse.Namespace, original: int, picks: dict[str, list[np.ndarray]]) -> None:
    sizes = [(Path(p).parent / (Path(p).name.removesuffix(".l2.onnx") + ".l2b")).stat().st_size for p in args.compressed]
    ratios = np.array([original / s for s in sizes])
    print()
    print("| judged by | plan picked (ratio: share of draws) | three draws within 10% of their median |")
    print("|---|---|---:|")
    for how, values in picks.items():
        table = np.stack(values, axis=1)  # [draws, plans]
        chosen = []
        for row in table:
            index = decide(sizes, [[Criterion("agreement", float(v), args.bound, True)] for v in row])
            chosen.append(ratios[index] if index is not None else np.nan)
        chosen = np.array(chosen)
        shares = ", ".join(f"{r:.2f}x: {np.mean(chosen == r):.0%}" for r in sorted(set(ratios)) if np.any(chosen == r))
        none = np.mean(np.isnan(chosen))
        triples = chosen[: len(chosen) // 3 * 3].reshape(-1, 3)
        median = np.median(triples, axis=1, keepdims=True)
        within = np.mean(np.all(np.abs(triples - median) <= 0.1 * median, axis=1))
        print(f"| {how} | {shares}{f', none: {none:.0%}' if none else ''} | {within:.0%} |")


if __name__ == "__main__":
    sys.exit(main())
