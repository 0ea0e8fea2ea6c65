"""Mixed precision against uniform bits on one model: size against accuracy, in one run.

    python tools/bench_allocation.py [--model models/ppocr_cls] [--targets 10 20] [--no-taylor]

The model folder holds model.onnx, calib.npz and eval.npz (and calib_labels.npy /
eval_labels.npy when the task has labels): models/ppocr_cls, or a zoo folder made by
tools/fetch_zoo.py (.cache/zoo/NAME). Calibration data drive every choice; the evaluation split
only judges. Rows: uniform --bits 2..8, the lossless neighbourhood (eps 0), and each
--target-ratio; every target row is printed next to the uniform rows of nearest size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxl2  # noqa: E402


def _row(name: str, result, seconds: float) -> dict:
    cpu = result.report["validation"]["devices"][0]
    out = cpu["outputs"][0]
    return {"method": name, "bytes": result.report["sizes"]["bitstream_bytes"],
            "ratio": result.report["sizes"]["file_ratio"],
            "accuracy": cpu.get("accuracy_compressed"), "accuracy_original": cpu.get("accuracy_original"),
            "top1_agreement": out.get("top1_agreement"), "cosine": out["cosine_mean"],
            "calib_loss_change": (result.report.get("allocation") or {}).get("measured_loss_change"),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "ppocr_cls")
    parser.add_argument("--targets", type=float, nargs="*", default=[10.0, 20.0])
    parser.add_argument("--bits", type=int, nargs="*", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--no-taylor", action="store_true")
    parser.add_argument("--loss", default="auto", help="auto, ce or distance (use distance for embeddings)")
    parser.add_argument("--max-loss-increase", default="0", help="bound of the neighbourhood row")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "sweeps",
                        help="sweep cache folder (reruns with the same model and data skip the sweep)")
    args = parser.parse_args()
    folder = args.model
    labels = {split: folder / f"{split}_labels.npy" for split in ("calib", "eval")}
    common = dict(eval_data=folder / "eval.npz", devices=("cpu",), quiet=True,
                  labels=labels["calib"] if labels["calib"].exists() else None,
                  eval_labels=labels["eval"] if labels["eval"].exists() else None)
    rows = []
    for bits in args.bits:
        start = time.perf_counter()
        result = onnxl2.compress(folder / "model.onnx", folder / "calib.npz", bits=bits, **common)
        rows.append(_row(f"uniform --bits {bits}", result, time.perf_counter() - start))
    for name, extra in [(f"neighbourhood (max loss increase {args.max_loss_increase})",
                         {"max_loss_increase": args.max_loss_increase})] + [
            (f"--target-ratio {t:g}", {"target_ratio": t}) for t in args.targets]:
        start = time.perf_counter()
        try:
            result = onnxl2.compress(folder / "model.onnx", folder / "calib.npz", sweep_cache=args.cache,
                                     taylor=not args.no_taylor, loss=args.loss, **common, **extra)
        except onnxl2.OnnxL2Error as exc:
            print(f"{name}: {exc}")
            continue
        rows.append(_row(name, result, time.perf_counter() - start))
    has_acc = rows[0]["accuracy"] is not None
    print(f"model {folder} (accuracy of the original on eval: "
          f"{rows[0]['accuracy_original'] if has_acc else 'no labels'})\n")
    print("| method | bitstream bytes | file ratio | " + ("eval accuracy | " if has_acc else "")
          + "top-1 agreement | cosine | calib loss change | seconds |")
    print("|---|---:|---:|" + ("---:|" if has_acc else "") + "---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["ratio"]):
        change = "-" if r["calib_loss_change"] is None else f"{r['calib_loss_change']:+.2e}"
        print(f"| {r['method']} | {r['bytes']:,} | {r['ratio']:.2f}x | "
              + (f"{r['accuracy']:.4f} | " if has_acc else "")
              + f"{r['top1_agreement']:.4f} | {r['cosine']:.5f} | {change} | {r['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
