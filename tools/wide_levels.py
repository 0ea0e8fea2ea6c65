"""Clipped against wide levels, per layer: the coded bytes of a wide candidate against those the
clipped widths need for the same layer-output error.

    python tools/wide_levels.py .cache/zoo/ppocr_rec_v4/model.onnx --data .cache/zoo/ppocr_rec_v4/calib.npz --largest 25

For each of the ``--largest`` weights whose layer inputs can be captured, compensated candidates
(GPTQ, as the automatic mode makes them, without bias correction) at 2..8 bits in the clipped form
and at 2, 3, 5, 6, 7 bits in the wide form, each with its exact coded bytes and its layer-output
error on the calibration inputs. The clipped widths make a curve of log error against bytes; a
wide candidate's saving is its bytes against that curve's at its error (between two widths, the
log error taken as linear in bytes). Prints a row per layer and the median and mean saving per
width.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2.candidates import make_candidates  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, load_data  # noqa: E402
from onnxl2.hessian import layer_hessians  # noqa: E402
from onnxl2.model import discover_weights, load_model, weight_array  # noqa: E402

CLIPPED = tuple(range(2, 9))
WIDE = (2, 3, 5, 6, 7)


def savings(curve_bytes: np.ndarray, curve_error: np.ndarray, wide: list[tuple[int, int, float]]) -> dict[int, float]:
    """Per wide width, its bytes over the clipped curve's bytes at the same error, minus one
    (negative: smaller); widths whose error lies outside the curve are left out."""
    log_error = np.log(curve_error)
    out = {}
    for bits, coded, error in wide:
        if not log_error[-1] <= np.log(error) <= log_error[0]:
            continue
        out[bits] = coded / float(np.interp(-np.log(error), -log_error, curve_bytes)) - 1.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True, help="calibration samples (.npz)")
    parser.add_argument("--largest", type=int, default=25, help="how many of the largest weights")
    args = parser.parse_args()
    loaded = load_model(args.model)
    data = load_data(args.data, loaded.proto)
    every = discover_weights(loaded.proto)
    studied = sorted((w for w in every if w.compressible and not w.merged_channels), key=lambda w: -w.numel)
    hessians = layer_hessians(loaded.proto, studied, every, data, batch_size_for(data, input_specs(loaded.proto)))
    studied = [w for w in studied if w.key in hessians][:args.largest]
    forms = {b: (False,) + ((True,) if b in WIDE else ()) for b in CLIPPED}
    by_width: dict[int, list[float]] = {b: [] for b in WIDE}
    print("| weight | shape | " + " | ".join(f"{b}-bit step, wide" for b in WIDE) + " |")
    print("|---|---|" + "---:|" * len(WIDE))
    for w in studied:
        cands = make_candidates(w.key, weight_array(loaded.proto, w), w.channel_axis, CLIPPED, always_float32=False,
                                hessian=hessians[w.key], forms=forms)
        clipped = sorted((c for c in cands if not c.wide), key=lambda c: c.bits)
        found = savings(np.array([c.coded_bytes for c in clipped], float),
                        np.array([max(c.output_error, 1e-300) for c in clipped]),
                        [(c.bits, c.coded_bytes, max(c.output_error, 1e-300)) for c in cands if c.wide])
        for bits, value in found.items():
            by_width[bits].append(value)
        cells = [f"{found[b]:+.1%}" if b in found else "-" for b in WIDE]
        print(f"| {w.name} | {'x'.join(map(str, w.shape))} | " + " | ".join(cells) + " |")
    print()
    for bits, values in by_width.items():
        if values:
            print(f"{bits}-bit step, wide: median {np.median(values):+.1%}, mean {np.mean(values):+.1%} "
                  f"over {len(values)} layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
