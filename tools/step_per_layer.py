"""Per-channel steps against one step per layer, at the same coded bytes: an experiment.

    python tools/step_per_layer.py .cache/zoo/ppocr_det_v4/model.onnx --data bench/cache/ppocr_det_v4/calib.npz --bits 8

onnxl2 gives every output channel its own step (max|w| of the channel over qmax, clip-searched),
so every channel gets the same number of levels. For the layer's output error at a given rate
that is not the best split: all output channels of a layer see the same inputs, so equal
absolute steps (one per layer, the symbols' range left to the entropy coder, which is what
NNCodec does) halve the weight error at the same coded size. Whether the model's output agrees
depends on what follows the layer (a normalisation downstream weighs a small channel's relative
error, not its absolute one). This tool measures both on one model: for every compressible weight
with a channel axis, plain rounding at ``--bits`` per channel, and one step for the layer
bisected to the same classed-coder bytes (int8 symbols where they fit, int16 otherwise); then the
summed squared weight error and the output cosine against the original on ``--data`` for each.
Nothing is compensated, and no bitstream is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from onnx import ModelProto, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxl2.codec.classed import encode_classed  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, load_data  # noqa: E402
from onnxl2.evaluate import compare_output, make_session, run_model  # noqa: E402
from onnxl2.model import discover_weights, find_tensor, load_model, weight_array  # noqa: E402
from onnxl2.transforms.fold import fold_batchnorm  # noqa: E402
from onnxl2.transforms.quantize import quantize_per_channel  # noqa: E402

BISECTION_STEPS = 20


def one_step(weight: np.ndarray, step: float) -> np.ndarray:
    """Symbols of ``weight`` on one grid (int8 when they fit, else int16)."""
    q = np.clip(np.rint(weight / step), -32767, 32767)
    return q.astype(np.int8 if np.abs(q).max() <= 127 else np.int16)


def step_for_bytes(weight: np.ndarray, budget: int) -> tuple[float, int]:
    """The finest single step whose symbols the classed coder fits in ``budget`` bytes."""
    rows = weight.reshape(weight.shape[0], -1)
    top = float(np.abs(weight).max()) or 1.0
    lo, hi = np.log(top / 2 ** 15), np.log(top)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if len(encode_classed(one_step(rows, float(np.exp(mid))))) > budget:
            lo = mid
        else:
            hi = mid
    step = float(np.exp(hi))
    return step, len(encode_classed(one_step(rows, step)))


def outputs(proto: ModelProto, data: dict[str, np.ndarray]) -> np.ndarray:
    """The model's first output on ``data``, in the batches the automatic mode uses."""
    session = make_session(proto)
    result = run_model(session, data, batch_size_for(data, input_specs(proto)))
    return result.outputs[session.get_outputs()[0].name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", required=True, help="calibration data (.npz or folder of .npy)")
    parser.add_argument("--bits", type=int, default=8, help="per-channel bit-width (2..12)")
    args = parser.parse_args()
    proto, _ = fold_batchnorm(load_model(args.model).proto)
    data = load_data(args.data, proto)
    reference = outputs(proto, data)
    per_channel, per_layer = ModelProto(), ModelProto()
    per_channel.CopyFrom(proto)
    per_layer.CopyFrom(proto)
    totals = {"channel": [0, 0.0], "layer": [0, 0.0]}
    for w in discover_weights(proto):
        if not w.compressible or w.channel_axis is None or len(w.shape) < 2:
            continue
        weight = np.moveaxis(weight_array(proto, w).astype(np.float32), w.channel_axis, 0)
        q = quantize_per_channel(weight, args.bits, 0)
        budget = len(encode_classed(q.symbols))
        step, coded = step_for_bytes(weight, budget)
        layer_values = one_step(weight, step).astype(np.float32) * np.float32(step)
        for name, values, size in (("channel", q.reconstruct(), budget), ("layer", layer_values, coded)):
            totals[name][0] += size
            totals[name][1] += float(np.square(values.astype(np.float64) - weight).sum())
            target = per_channel if name == "channel" else per_layer
            tensor = find_tensor(target, w)
            restored = np.moveaxis(values.astype(np.float32), 0, w.channel_axis)
            tensor.CopyFrom(numpy_helper.from_array(restored, tensor.name))
    for name, key, model in (("a step per channel", "channel", per_channel),
                             ("one step per layer", "layer", per_layer)):
        size, error = totals[key]
        fidelity = compare_output(name, reference, outputs(model, data))
        print(f"{name}: {size:,} B of symbols, squared weight error {error:.4g}, "
              f"cosine {fidelity.cosine_mean:.5f} (min {fidelity.cosine_min:.5f})")


if __name__ == "__main__":
    main()
