"""Write the embedded default's outputs in each mode, or compare them with an earlier run's.

A refactor that moves code must not change a byte: run this before (``--write REF``) and after
(``--check REF``). Modes: ``--lossless``, ``--bits 4``, ``--bits 8``, the automatic mode (the
README's first command) and a replay of the automatic run's plan (``--plan``). Compared: bitstreams, ONNX files, plans, and the reports past their timings.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "ppocr_cls"
DATA = ["--data", str(MODEL / "calib.npz"), "--labels", str(MODEL / "calib_labels.npy"),
        "--eval-data", str(MODEL / "eval.npz"), "--eval-labels", str(MODEL / "eval_labels.npy")]
COMPARED = ("model.l2b", "model.l2.onnx", "plan.json", "plan-next-1.json", "plan-next-2.json")
VOLATILE = ("timings_s", "latency_ms_original", "latency_ms_compressed", "seconds_per_pass")


def _steady(value):
    """A report without what changes from run to run (timings)."""
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def _modes(out: Path) -> dict[str, list[str]]:
    return {"lossless": ["--lossless"], "bits4": ["--bits", "4", *DATA], "bits8": ["--bits", "8", *DATA],
            "auto": DATA, "replay": ["--plan", str(out / "auto" / "plan.json"), *DATA]}


def write(out: Path) -> None:
    """Run every mode into ``out/<mode>/`` (the replay reads the automatic run's plan)."""
    for mode, flags in _modes(out).items():
        subprocess.run([sys.executable, "-m", "onnxl2.cli", "compress", str(MODEL / "model.onnx"), *flags,
                        "-o", str(out / mode), "--quiet"], check=True, stdout=subprocess.DEVNULL)


def check(reference: Path) -> list[str]:
    """The files that differ from ``reference``'s (a fresh run in a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        differ = []
        for mode in _modes(reference):
            for name in COMPARED:
                ref, new = reference / mode / name, Path(tmp) / mode / name
                if ref.exists() != new.exists() or ref.exists() and not filecmp.cmp(ref, new, shallow=False):
                    differ.append(f"{mode}/{name}")
            reports = [json.loads((root / mode / "report.json").read_text()) for root in (reference, Path(tmp))]
            if _steady(reports[0]) != _steady(reports[1]):
                differ.append(f"{mode}/report.json (past its timings)")
        return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="folder to write the reference outputs to")
    group.add_argument("--check", type=Path, help="reference folder to compare a fresh run with")
    args = parser.parse_args()
    if args.write:
        write(args.write)
        return 0
    differ = check(args.check)
    print("same bytes in every mode" if not differ else "differ: " + ", ".join(differ))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
