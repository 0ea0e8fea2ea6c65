"""How much of each layer's output a low-rank cut loses, against plain 4-bit rounding of it.

    python tools/lowrank_spectra.py .cache/zoo/minilm_l6_v2/model.onnx --data calib.npz

For every layer onnxl2 can factorise: the ranks it offers, the layer-output error on the
calibration data that the cut alone leaves at each (before any rounding), and the one plain
per-channel 4-bit rounding of the whole layer leaves, both as shares of the output's energy
(``sum ||x W||^2``). A pair is only worth its bytes where the first is near the second.
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
from onnxl2.transforms.compensate import output_error  # noqa: E402
from onnxl2.transforms.fold import fold_batchnorm  # noqa: E402
from onnxl2.transforms.lowrank import candidate_ranks, truncated  # noqa: E402
from onnxl2.transforms.quantize import quantize_per_channel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", required=True, help="calibration data (.npz or folder of .npy)")
    args = parser.parse_args()
    proto, _ = fold_batchnorm(load_model(args.model).proto)
    weights = discover_weights(proto)
    studied = [w for w in weights if w.compressible]
    data = load_data(args.data, proto)
    hessians = layer_hessians(proto, studied, weights, data, batch_size_for(data, input_specs(proto)))
    print(f"{'weight':32s} {'shape':>16s}  cut leaves (rank: share)       int4 leaves")
    for w in studied:
        h = hessians.get(w.key)
        ranks = candidate_ranks(w.shape, h.layout, h.groups) if h is not None else []
        if not ranks:
            continue
        values = weight_array(proto, w)
        total = output_error(values, np.zeros_like(values), h)
        int4 = output_error(values, quantize_per_channel(values, 4, w.channel_axis).reconstruct(), h)
        cuts = "  ".join(f"{r}: {output_error(values, truncated(values, h, r), h) / total:7.2%}" for r in ranks)
        print(f"{w.name[:32]:32s} {'x'.join(map(str, w.shape)):>16s}  {cuts:30s}  {int4 / total:7.2%}")


if __name__ == "__main__":
    main()
