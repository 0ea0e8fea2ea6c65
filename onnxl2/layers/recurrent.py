"""LSTM, GRU and RNN: the input weight ``W`` (input 1) sees the sequence input in every
direction, the recurrent weight ``R`` (input 2) of each direction the hidden state of the step
before: the op's ``Y`` shifted by one step in the direction's own order, the initial state
first. A GRU's candidate-gate rows see ``r * h`` rather than ``h`` (unless
``linear_before_reset``), an approximation; padded steps of a batch with ``sequence_lens`` count
as steps. One op cannot be split in two, so there is no factor pair."""
from __future__ import annotations

import numpy as np
import onnx

from ..model import RECURRENT_OPS, Weight, node_attr
from .base import LayerGraph, LayerKind, Site, sampled


class RecurrentLayer(LayerKind):
    ops = RECURRENT_OPS

    def site(self, weight: Weight, node: onnx.NodeProto, slot: int, graph: LayerGraph) -> Site | None:
        if node.domain not in ("", "ai.onnx") or slot not in (1, 2) or len(weight.shape) != 3:
            return None
        if slot == 1:
            return Site(weight, "rnn", node.input[0], node, self, recurrent="input")
        return Site(weight, "rnn", node.output[0] if node.output else "", node, self, recurrent="hidden",
                    initial=node.input[5] if len(node.input) > 5 else "")

    def input_rows(self, site: Site, x: np.ndarray, max_rows: int, rng: np.random.Generator,
                   initial: np.ndarray | None) -> tuple[np.ndarray, int]:
        return sampled(recurrent_rows(site, x, initial), max_rows, rng)


def recurrent_rows(site: Site, x: np.ndarray, initial: np.ndarray | None) -> np.ndarray:
    """[steps * batch, directions, K]: what each direction's W or R multiplies at each step.

    W sees the sequence input X ([T, B, I], or [B, T, I] with ``layout`` 1) in every direction.
    R sees the hidden state before each step: from Y ([T, D, B, H], or [B, T, D, H]) the states
    of steps 0..T-2 with the initial state in front for a forward direction, of steps 1..T-1
    with it behind for a reverse one (which runs from the last step to the first).
    """
    directions = site.weight.shape[0]
    batch_first = bool(node_attr(site.node, "layout", 0))
    if site.recurrent == "input":
        seq = x.transpose(1, 0, 2) if batch_first else x  # [T, B, I]
        rows = seq.reshape(-1, 1, seq.shape[-1])
        return np.broadcast_to(rows, (rows.shape[0], directions, rows.shape[2]))
    y = x.transpose(1, 2, 0, 3) if batch_first else x  # [T, D, B, H]
    steps, _, batch, hidden = y.shape
    if initial is None:
        h0 = np.zeros((directions, batch, hidden), y.dtype)
    else:  # [D, B, H], or [B, D, H] with layout 1
        h0 = np.asarray(initial, y.dtype)
        h0 = (h0.transpose(1, 0, 2) if batch_first else h0).reshape(directions, batch, hidden)
    kinds = {b"forward": ["forward"], b"reverse": ["reverse"], b"bidirectional": ["forward", "reverse"]}
    order = kinds.get(node_attr(site.node, "direction", b"forward"), ["forward"])
    per_direction = []
    for d in range(directions):
        before = np.concatenate([h0[d][None], y[:-1, d]]) if order[min(d, len(order) - 1)] == "forward" else \
            np.concatenate([y[1:, d], h0[d][None]])
        per_direction.append(before.reshape(steps * batch, hidden))
    return np.stack(per_direction, axis=1)
