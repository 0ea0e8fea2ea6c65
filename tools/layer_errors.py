"""Layer-output error of plain rounding and of compensated rounding (GPTQ), with columns as
stored and in order of decreasing input energy (act-order), on calibration and held-out inputs.

    python tools/layer_errors.py .cache/zoo/ppocr_rec_v4/model.onnx --data calib.npz --eval eval.npz --bits 3 4

For every layer with gathered inputs, the output error each rounding leaves as a share of the
layer's output energy (``sum ||x W||^2``), summed over layers; the rounding is fitted on the
calibration inputs and measured on both (the held-out column says whether a lower error is
real or fitted to the calibration rows). ``--per-layer`` prints every layer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxl2.data import batch_size_for, input_specs, load_data  # noqa: E402
from onnxl2.hessian import layer_hessians  # noqa: E402
from onnxl2.model import discover_weights, load_model, weight_array  # noqa: E402
from onnxl2.transforms.compensate import compensated_round, output_error  # noqa: E402
from onnxl2.transforms.fold import fold_batchnorm  # noqa: E402
from onnxl2.transforms.quantize import quantize_per_channel  # noqa: E402

METHODS = ("plain", "gptq (stored order)", "gptq (act-order)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", required=True, help="calibration data (.npz or folder of .npy)")
    parser.add_argument("--eval", required=True, help="held-out data, same form")
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--per-layer", action="store_true")
    args = parser.parse_args()
    proto, _ = fold_batchnorm(load_model(args.model).proto)
    every = discover_weights(proto)
    studied = [w for w in every if w.compressible]
    moments = {}
    for split, path in (("calibration", args.data), ("held-out", args.eval)):
        data = load_data(path, proto)
        moments[split] = layer_hessians(proto, studied, every, data, batch_size_for(data, input_specs(proto)))
    fitted = moments["calibration"]
    for bits in args.bits:
        totals = np.zeros((len(METHODS), 2))
        for w in studied:
            if w.key not in fitted or w.key not in moments["held-out"]:
                continue
            values = weight_array(proto, w).astype(np.float64)
            base = quantize_per_channel(values, bits, w.channel_axis)
            approx = [base.reconstruct()] + [
                compensated_round(values, w.channel_axis, [base], fitted[w.key], by_energy=order)[0].reconstruct()
                for order in (False, True)]
            energy = [output_error(values, np.zeros_like(values), moments[split][w.key]) for split in moments]
            shares = np.array([[output_error(values, np.asarray(a, np.float64), moments[split][w.key]) / e
                                for split, e in zip(moments, energy)] for a in approx])
            totals += shares
            if args.per_layer:
                cells = "  ".join(f"{c:7.3%} / {e:7.3%}" for c, e in shares)
                print(f"int{bits} {w.name[:40]:40s} {cells}")
        print(f"int{bits}: summed share of layer-output energy lost, calibration / held-out")
        for name, (calib, held) in zip(METHODS, totals):
            print(f"  {name:22s} {calib:8.4f} / {held:8.4f}")


if __name__ == "__main__":
    main()
