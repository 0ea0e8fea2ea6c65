"""Regenerate the embedded default model and data in ``models/ppocr_cls/``.

    python tools/make_default_data.py            # data only (model.onnx kept if its sha256 is right)
    python tools/make_default_data.py --check    # also print the model's accuracy on calib / eval

* ``model.onnx``: ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` exactly as shipped in the
  rapidocr-onnxruntime 1.4.4 wheel (extracted from the zoo cache or a fresh ``pip download``,
  sha256-checked, never modified).
* ``calib.npz`` / ``eval.npz``: key ``x``, float32 ``(N, 3, 48, 192)``, rendered text lines
  preprocessed as rapidocr does (see tools/render_text.py); ``calib_labels.npy`` /
  ``eval_labels.npy``: int64, 0 = upright ('0'), 1 = turned by 180 degrees ('180'), exactly half
  of each set turned.  Calib and eval use different seeds.

The .npz files are ordinary zip archives read by ``numpy.load``, written with LZMA compression
(zip method 14, Python's ``zipfile``) instead of ``np.savez_compressed``'s DEFLATE: DEFLATE's
32 KiB window cannot see that the three colour planes (36 KiB each) of the grey text lines are
equal, so LZMA stores about 4x more samples in the same size.  Members carry a fixed timestamp,
so the bytes are reproducible for the same numpy, Pillow and fonts.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import render_text as rt  # noqa: E402
from tools import fetch_zoo  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "models" / "ppocr_cls"
ZOO_NAME = "ppocr_cls_v2"
CALIB_SEED = 20240611
EVAL_SEED = 20240612
CALIB_SAMPLES = 160
EVAL_SAMPLES = 160
SIZE_LIMIT = 2_000_000  # bytes, whole folder


def save_npz_lzma(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (readable by ``np.load``) with LZMA-compressed members and fixed timestamps."""
    fetch_zoo.save_npz(path, arrays, compression=zipfile.ZIP_LZMA)


def ensure_model(out_dir: Path) -> Path:
    spec = fetch_zoo.ZOO[ZOO_NAME]
    target = out_dir / "model.onnx"
    if target.exists() and fetch_zoo.sha256_file(target) == spec.sha256:
        print(f"{target.relative_to(REPO_ROOT)}: present, sha256 ok")
        return target
    paths = fetch_zoo.ensure(ZOO_NAME, verbose=True)
    data = paths["model"].read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec.sha256
    target.write_bytes(data)
    print(f"{target.relative_to(REPO_ROOT)}: copied from {paths['model']}")
    return target


def make(out_dir: Path, n_calib: int, n_eval: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_model(out_dir)
    for split, seed, n in (("calib", CALIB_SEED, n_calib), ("eval", EVAL_SEED, n_eval)):
        x, labels = rt.make_cls_batch(np.random.default_rng(seed), n, plain=True)
        save_npz_lzma(out_dir / f"{split}.npz", {"x": x})
        np.save(out_dir / f"{split}_labels.npy", labels.astype(np.int64))
        print(f"{split}: {n} samples, seed {seed}, {int(labels.sum())} turned by 180 degrees, "
              f"{(out_dir / f'{split}.npz').stat().st_size / 1e3:.0f} kB")


def accuracy(out_dir: Path) -> dict[str, float]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    result = {}
    for split in ("calib", "eval"):
        with np.load(out_dir / f"{split}.npz") as z:
            x = z["x"]
        y = np.load(out_dir / f"{split}_labels.npy")
        pred = sess.run(None, {"x": x})[0].argmax(axis=1)
        result[split] = float((pred == y).mean())
    return result


def folder_size(out_dir: Path) -> int:
    return sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--calib", type=int, default=CALIB_SAMPLES, help="calibration samples")
    ap.add_argument("--eval", type=int, default=EVAL_SAMPLES, help="evaluation samples")
    ap.add_argument("--check", action="store_true", help="print the model's accuracy on both sets")
    args = ap.parse_args(argv)
    make(args.out, args.calib, args.eval)
    size = folder_size(args.out)
    print(f"{args.out}: {size} bytes ({size / 2**20:.2f} MiB)")
    if args.check:
        for split, acc in accuracy(args.out).items():
            print(f"accuracy on {split}: {acc:.4f}")
    if size >= SIZE_LIMIT:
        print(f"error: {args.out} is {size} bytes, over the {SIZE_LIMIT} byte budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
