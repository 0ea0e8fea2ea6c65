"""The channel axis of a weight that no reader gives one: the axis that codes smallest.

A step per channel pays for itself where the channels differ in scale; along an axis where
they do not, the steps are side information for nothing. Each axis is tried at one bit-width
and scored by what it would cost at a common error: at high rate a quarter of the squared
error costs half a bit a weight more (``n / 2 * log2(error)``), so ``coded bits + n / 2 *
log2(mean squared error)`` ranks the axes as their coded sizes at equal error would.
"""
from __future__ import annotations

import numpy as np
from onnx import ModelProto, TensorProto

from .model import Weight, find_tensor, tensor_array
from .transforms.quantize import quantize_per_channel

#: Bits one step costs in the bitstream (its index on the step grid, entropy-coded; the
#: report's "steps add ... bits a step" on the benchmark models).
STEP_BITS = 8.5
#: The bit-width axes are compared at: the middle of the range the knapsack chooses from.
PROBE_BITS = 6
#: An axis whose channels hold fewer elements than this is not tried (its steps would cost more
#: than half a bit a weight), unless no axis has that many.
MIN_PER_CHANNEL = 16


def axis_cost(values: np.ndarray, axis: int, bits: int = PROBE_BITS) -> float:
    """Coded bits at ``bits`` plus the error term: lower is smaller at the same error."""
    q = quantize_per_channel(values, bits, axis)
    n = values.size
    counts = np.bincount(q.symbols.reshape(-1).astype(np.int64) + q.qmax)
    p = counts[counts > 0] / n
    coded = n * float(-(p * np.log2(p)).sum()) + q.scales.size * STEP_BITS
    error = float(np.mean(np.square(q.reconstruct().astype(np.float64) - values.astype(np.float64))))
    return coded + n / 2 * np.log2(max(error, np.finfo(np.float64).tiny))


def choose_axis(values: np.ndarray) -> int:
    """The axis of ``values`` (rank >= 1) whose per-channel steps code smallest; ties go to the
    lower axis. A tensor with infinities or NaNs keeps axis 0 (it is stored exactly anyway)."""
    if values.ndim <= 1 or not np.isfinite(values).all():
        return 0
    tried = [a for a in range(values.ndim) if values.size // max(values.shape[a], 1) >= MIN_PER_CHANNEL]
    tried = tried or [int(np.argmin(values.shape))]
    costs = [axis_cost(values, a) for a in tried]
    return tried[int(np.argmin(costs))]


def choose_axes(proto: ModelProto, weights: list[Weight]) -> None:
    """Give every compressible weight that no reader gives an axis the one that codes smallest
    (where its data are loaded)."""
    for w in weights:
        if w.compressible and w.channel_axis is None:
            tensor = find_tensor(proto, w)
            if tensor.data_location != TensorProto.EXTERNAL or tensor.HasField("raw_data"):
                w.channel_axis = choose_axis(tensor_array(tensor))
