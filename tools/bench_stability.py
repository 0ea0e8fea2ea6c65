"""How stable the automatic mode's answer is: the same command on disjoint calibration subsets of
one size, and twice on the same subset.

    python tools/bench_stability.py models/ppocr_cls/model.onnx --data models/ppocr_cls/calib.npz \\
        --labels models/ppocr_cls/calib_labels.npy --eval-data models/ppocr_cls/eval.npz \\
        --eval-labels models/ppocr_cls/eval_labels.npy --splits 3

Each subset takes every k-th sample (k = --splits, offset 0..k-1), so the subsets are disjoint and
alike. Prints each run's file ratio, its distance from the median (the aim: within 10%), the
evaluation figures, the time, and whether a second run on the first subset gave the same bytes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxl2  # noqa: E402
from onnxl2.report import validation_rows  # noqa: E402


def _subset(path: Path, start: int, step: int, folder: Path, name: str) -> Path:
    out = folder / name
    if path.suffix == ".npy":
        np.save(out.with_suffix(".npy"), np.load(path)[start::step])
        return out.with_suffix(".npy")
    with np.load(path) as z:
        np.savez(out.with_suffix(".npz"), **{k: z[k][start::step] for k in z.files})
    return out.with_suffix(".npz")


def _figures(report: dict) -> str:
    """The CPU validation rows of the report, latency left out."""
    rows = validation_rows({"devices": report["validation"]["devices"][:1]})
    return "; ".join(value for label, value in rows if not label.startswith("latency"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument("--eval-labels", type=Path)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--no-layer-steps", action="store_true", help="leave out one-step-per-layer candidates")
    parser.add_argument("--wide-levels", action="store_true", help="wide instead of clipped levels (--wide-levels)")
    parser.add_argument("--ctc", action="append", default=[], metavar="OUTPUT",
                        help="judge this CTC output by its readings (--ctc; repeatable)")
    args = parser.parse_args()
    options = {"layer_steps": not args.no_layer_steps, "wide_levels": args.wide_levels,
               "contract": onnxl2.Contract(ctc=tuple(args.ctc))}
    ratios, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for start in range(args.splits):
            data = _subset(args.data, start, args.splits, folder, f"calib{start}")
            labels = _subset(args.labels, start, args.splits, folder, f"labels{start}") if args.labels else None
            began = time.perf_counter()
            result = onnxl2.compress(args.model, data, labels=labels, eval_data=args.eval_data,
                                     eval_labels=args.eval_labels, devices=("cpu",), quiet=True, **options)
            seconds = time.perf_counter() - began
            samples = result.report["allocation"]["contract"]["held_back_samples"]
            ratios.append(result.report["sizes"]["file_ratio"])
            print(f"subset {start} ({samples} held back): {ratios[-1]:.2f}x, {_figures(result.report)}, {seconds:.0f} s")
            if start == 0:
                first = (data, labels, bytes(result.bitstream))
        again = onnxl2.compress(args.model, first[0], labels=first[1], devices=("cpu",), quiet=True, **options)
        same = bytes(again.bitstream) == first[2]
    median = float(np.median(ratios))
    spread = max(abs(r / median - 1) for r in ratios)
    print(f"median {median:.2f}x; largest distance from it {100 * spread:.1f}% (aim: within 10%)")
    print(f"second run on subset 0: {'the same bytes' if same else 'DIFFERENT bytes'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
