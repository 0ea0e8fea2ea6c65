"""Sweep passes from cached activations at a cut give the outputs of whole-model passes."""
from __future__ import annotations

import numpy as np
import pytest

from onnxl2 import suffixes
from onnxl2.model import checked_output, discover_weights
from onnxl2.sensitivity import Probe
from onnxl2.suffixes import choose_cuts, outer_reads, output_cone
from tests.genmodels import big_matmul_model, mixed_inputs, mixed_model, subgraph_model


def _probe(proto, data, batch: int = 4) -> Probe:
    weights = [w for w in discover_weights(proto) if w.compressible]
    return Probe(proto, weights, data, batch, checked_output(proto, None))


def _perturbed(probe: Probe) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {k: (v * (1 + 0.1 * rng.standard_normal(v.shape))).astype(v.dtype) for k, v in probe.originals.items()}


def _same_outputs_with_cuts(probe: Probe, costs: dict[str, float]) -> int:
    """Every weight's perturbed pass, cut and uncut, agree; returns how many ran from a cut."""
    changed = _perturbed(probe)
    whole = {k: probe.outputs({k: v}) for k, v in changed.items()}
    probe.cut(costs)
    from_cut = sum(probe.suffixes.cut_for({k}) is not None for k in changed)
    for key, values in changed.items():
        np.testing.assert_allclose(probe.outputs({key: values}), whole[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.outputs({}), probe.outputs({}), rtol=0)
    assert sum(c.session is not None for c in probe.suffixes.cuts) <= 1  # one cut's arena at a time
    probe.uncut()
    assert probe.suffixes is None
    return from_cut


def test_a_stack_is_cut_and_late_layers_run_from_a_cut():
    proto = big_matmul_model(32, 32, layers=8)
    data = {"x": np.random.default_rng(0).standard_normal((12, 32)).astype(np.float32)}
    probe = _probe(proto, data)
    assert _same_outputs_with_cuts(probe, {k: 1.0 for k in probe.originals}) >= 4


def test_subgraph_readers_and_outer_scope_weights():
    proto = subgraph_model()
    data = {"x": np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)}
    probe = _probe(proto, data, batch=1)
    cone = output_cone(probe.model.graph, probe.output)
    if_node = next(n for n in cone if n.op_type == "If")
    assert {"outer_w", "h"} <= outer_reads(if_node)  # read inside both branches
    costs = {k: (100.0 if "in_w" in k else 1.0) for k in probe.originals}
    assert _same_outputs_with_cuts(probe, costs) == 3  # the If's weights, read past the first layer


def test_tied_constant_and_gathered_weights_agree():
    proto = mixed_model()
    probe = _probe(proto, mixed_inputs(12))
    costs = {k: (100.0 if k == "conv_w" else 1.0) for k in probe.originals}  # the first layer is the work
    assert _same_outputs_with_cuts(probe, costs) >= 3


def test_no_cache_room_means_no_cut(monkeypatch):
    monkeypatch.setattr(suffixes, "CACHE_BYTES", 0)
    proto = big_matmul_model(32, 32, layers=8)
    probe = _probe(proto, {"x": np.ones((8, 32), np.float32)})
    assert _same_outputs_with_cuts(probe, {k: 1.0 for k in probe.originals}) == 0


def test_cuts_pay_for_themselves():
    assert choose_cuts({"a": 0, "b": 5}, {"a": 1.0, "b": 1.0}) == []  # too few passes to save
    many = {f"w{i}": 3 * i for i in range(60)}
    cuts = choose_cuts(many, {k: 1.0 for k in many})
    assert cuts and 0 not in cuts and cuts == sorted(cuts) and set(cuts) <= set(many.values())
    # a cut right before the one expensive late layer, none where nothing follows that costs
    late = {"a": 0, "b": 1, "c": 2, "d": 50}
    assert choose_cuts(late, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}) == []
    assert choose_cuts({f"e{i}": 0 for i in range(40)} | {"late": 9}, {"late": 1.0}) == []


@pytest.mark.parametrize("price", [0.0, 1e9])
def test_the_price_of_a_cut_decides(monkeypatch, price):
    monkeypatch.setattr(suffixes, "CUT_PRICE", price)
    many = {f"w{i}": i for i in range(20)}
    cuts = choose_cuts(many, {k: 1.0 for k in many})
    assert (cuts == []) == (price > 0)


def test_a_cut_the_runtime_refuses_falls_back_to_whole_passes(monkeypatch):
    proto = big_matmul_model(32, 32, layers=8)
    probe = _probe(proto, {"x": np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)})
    changed = _perturbed(probe)
    whole = {k: probe.outputs({k: v}) for k, v in changed.items()}
    opened = suffixes.make_session

    def refuse_cut_models(model, device="cpu", arena=True):
        if isinstance(model, bytes):  # a cut's serialised model; the caching pass takes a proto
            raise RuntimeError("refused")
        return opened(model, device, arena)

    monkeypatch.setattr(suffixes, "make_session", refuse_cut_models)
    probe.cut({k: 1.0 for k in probe.originals})
    assert probe.suffixes.cuts
    for key, values in changed.items():
        np.testing.assert_allclose(probe.outputs({key: values}), whole[key], rtol=1e-5, atol=1e-6)
    assert probe.suffixes.cuts == []
