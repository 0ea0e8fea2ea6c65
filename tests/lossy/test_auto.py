"""The automatic mode: neighbourhood and size forms, pins, plans, and the measured check."""
from __future__ import annotations

import json

import numpy as np
import pytest

import genmodels
from onnxl2 import compress
from onnxl2.budgets import allocate_neighbourhood, allocate_size
from onnxl2.losses import make_loss
from onnxl2.report import summary_rows
from onnxl2.errors import OnnxL2Error
from onnxl2.sensitivity import Measurement, Sensitivity


@pytest.fixture(scope="module")
def calib():
    return genmodels.mixed_inputs(48, seed=11)


def test_neighbourhood_plan_does_not_raise_the_calibration_loss(calib, tmp_path):
    """One standard error of slack: a plan whose change is pure noise must be able to pass (with
    none, a model this small can land in the fallback by the luck of the paired draws)."""
    result = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), out_dir=tmp_path,
                      noise_sigmas=1.0, max_loss_increase=0)
    alloc = result.report["allocation"]
    assert alloc["measured_loss_change"] <= alloc["measured_loss_change_se"]
    assert "pseudo-labels" in alloc["loss"]  # no labels: cross-entropy to the original's arg-max
    assert any(r["accepted"] for r in alloc["rounds"])
    assert result.report["sizes"]["file_ratio"] > 1.5
    for key, rows in alloc["candidates"].items():
        assert {r["label"].split("+")[0] for r in rows} >= {"int2", "int4", "int8", "float16", "float32"}
        for r in rows:
            assert r["first_order"] is not None and r["second_order"] is not None
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert set(plan["choices"]) == {w["name"] for w in result.report["weights"]}
    row = dict((name, text) for name, text in summary_rows(result.report))["calibration loss change"]
    after = alloc["calibration_loss"] + alloc["measured_loss_change"]
    assert f"loss {alloc['calibration_loss']:.4g} -> {after:.4g}" in row


def test_plan_replays_to_the_same_bitstream(calib, tmp_path):
    first = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), out_dir=tmp_path,
                     taylor=False)
    again = compress(genmodels.mixed_model(), calib, plan=tmp_path / "plan.json", quiet=True, devices=("cpu",))
    assert again.files == first.files and again.report["mode"] == "plan"


def test_wide_levels_make_the_wide_form_and_keep_the_narrowest_clipped_too(calib):
    """With ``wide_levels`` a width with room in its container is made wide only, the narrowest
    width in both forms, and the widths that fill their containers (4, 8) clipped."""
    result = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), taylor=False,
                      keep=("conv_*",), pins={"emb_w": 3}, max_loss_increase="50%", wide_levels=True,
                      bits_choices=(2, 3, 4, 6, 8, 32))
    rows = result.report["allocation"]["candidates"]
    assert {r["label"] for r in rows["emb_w"]} == {"int3", "int3+wide", "int3+onestep", "int3+wide+onestep", "float32"}
    per_channel = {r["label"].removesuffix("+gptq") for r in rows["fc_w"] if "onestep" not in r["label"] and "rank" not in r["label"]}
    assert per_channel == {"int2", "int2+wide", "int3+wide", "int4", "int6+wide", "int8", "float32"}


def test_wide_choices_store_symbols_past_their_width_in_the_same_container(calib, tmp_path):
    """A plan's +wide choices replay, and the compressed ONNX that ONNX Runtime ran in validation
    holds their symbols past the width's own bound (3 at 3 bits, 1 at 2) in its int4 tensors."""
    import onnx
    from onnx import numpy_helper
    plan = {"choices": {"fc_w": "int3+wide+gptq", "conv_w": "int2+wide"}}
    result = compress(genmodels.mixed_model(), calib, plan=plan, quiet=True, devices=("cpu",), out_dir=tmp_path)
    assert {w["name"]: w["choice"] for w in result.report["weights"]}["fc_w"] == "int3+wide+gptq"
    assert result.report["roundtrip"].startswith("bit-exact")
    runs = result.report["validation"]["devices"]
    assert runs and all(r["status"] == "ok" and r["outputs"][0]["cosine_mean"] > 0.5 for r in runs)
    model = onnx.load(tmp_path / "model.l2.onnx")
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4}
    assert 3 < np.abs(stored["fc_w_quantized"]).max() <= 7 and np.abs(stored["conv_w_quantized"]).max() > 1


def test_pins_are_honoured(calib):
    result = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), taylor=False,
                      keep=("conv_*",), pins={"emb_w": 3}, max_loss_increase="50%")
    choices = {w["name"]: w["choice"] for w in result.report["weights"]}
    bits = {w["name"]: w["bits"] for w in result.report["weights"]}
    assert choices["conv_w"] == "float32" and bits["emb_w"] == 3  # a pin fixes the width, not the step kind
    assert {r["label"] for r in result.report["allocation"]["candidates"]["emb_w"]} == {"int3", "int3+onestep", "float32"}
    assert [r["label"] for r in result.report["allocation"]["candidates"]["conv_w"]] == ["float32"]


def test_uniform_bits_with_pins(calib):
    result = compress(genmodels.mixed_model(), calib, bits=4, pins={"fc_w": 8}, keep=("tied_w",),
                      quiet=True, devices=("cpu",))
    choices = {w["name"]: w["choice"] for w in result.report["weights"]}
    assert choices == {"conv_w": "int4", "fc_w": "int8", "tied_w": "float32", "emb_w": "int4",
                       "const_w": "int4"}


def test_target_size_lands_within_two_percent_below(calib):
    model = genmodels.big_matmul_model(64, 64, layers=12)
    feeds = {"x": np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)}
    lossless = compress(model, lossless=True, quiet=True).report["sizes"]["bitstream_bytes"]
    budget = lossless // 5
    result = compress(model, feeds, target_size=budget, quiet=True, devices=("cpu",), taylor=False)
    size = result.report["sizes"]["bitstream_bytes"]
    assert 0.98 * budget <= size <= budget
    assert result.report["allocation"]["status"] == "ok"
    assert result.report["allocation"]["form"] == "size budget"


def test_unreachable_target_is_a_clear_error(calib):
    with pytest.raises(OnnxL2Error, match="out of reach"):
        compress(genmodels.mixed_model(), calib, target_ratio=500, quiet=True, taylor=False)


def test_automatic_mode_needs_data():
    with pytest.raises(OnnxL2Error, match="calibration data"):
        compress(genmodels.mixed_model(), quiet=True)


def _options(n_groups: int = 4):
    """Each group: float32 (big, no distortion), int8, int4, int2 (smaller, more distortion)."""
    options = {}
    for g in range(n_groups):
        rows = [Sensitivity(f"w{g}", label, bits, size, 0.0, 0.0, dist)
                for label, bits, size, dist in (("float32", 32, 4000, 0.0), ("int8", 8, 1000, 1e-4),
                                                ("int4", 4, 500, 1e-3), ("int2", 2, 250, 1e-2))]
        options[f"w{g}"] = rows
    return options


def test_neighbourhood_loop_recovers_when_the_additive_estimate_is_wrong():
    """Layers interact: the real loss change grows with the square of the summed distortion
    and is positive beyond a threshold the additive estimate cannot see."""
    options = _options()
    seen = []

    def measure(choice):
        total = sum(options[k][i].distortion for k, i in choice.items())
        seen.append(total)
        return Measurement(1e4 * total ** 2 - 0.05, 1e-4)

    allocation = allocate_neighbourhood(options, 0.0, measure)
    chosen = sum(options[k][i].distortion for k, i in allocation.choice.items())
    assert 1e4 * chosen ** 2 - 0.05 <= 0  # the chosen plan passes the real check
    assert not allocation.rounds[0].accepted and len(allocation.rounds) > 2
    assert any(r.accepted for r in allocation.rounds)
    assert chosen > 0  # and it is not the trivial all-float plan


def test_sweep_cache_is_reused(calib, tmp_path):
    first = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), taylor=False,
                     sweep_cache=tmp_path, max_loss_increase=0)
    assert len(list(tmp_path.glob("sweep-*.json"))) == 1
    second = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), taylor=False,
                      sweep_cache=tmp_path, max_loss_increase="10%")
    passes = [r.report["allocation"]["forward_passes"] for r in (first, second)]
    assert passes[1] < passes[0] / 2
    assert second.report["allocation"]["candidates"] == first.report["allocation"]["candidates"]


def test_proxy_sweep_measures_one_candidate_per_weight_and_kind_of_step(calib):
    result = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), sweep="proxy")
    alloc = result.report["allocation"]
    assert alloc["sweep"] == "proxy"
    for rows in alloc["candidates"].values():
        for one_step in (False, True):  # int4 of each kind measured, the rest of that kind scaled from it
            kind = [r for r in rows if r["bits"] != 32 and r["label"].startswith("int")
                    and ("+onestep" in r["label"]) == one_step]
            if not kind:
                continue
            assert [r["source"] for r in kind].count("measured") == 1
            int4 = next(r for r in kind if r["bits"] == 4)
            assert int4["source"] == "measured" and int4["first_order"] is not None
            assert all(r["source"] == "proxy" for r in kind if r is not int4)
    chosen = alloc["frontier"]["points"][alloc["frontier"]["chosen"]]
    assert chosen["passed"] and len(result.bitstream) == chosen["bitstream_bytes"]


def test_html_report_shows_the_allocation(calib, tmp_path):
    compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), taylor=False, out_dir=tmp_path,
             max_loss_increase=0)
    page = (tmp_path / "report.html").read_text()
    assert "Allocation (loss neighbourhood" in page and "predicted (Taylor) and measured" in page


def test_distance_loss_needs_a_bound_or_a_target(calib):
    with pytest.raises(OnnxL2Error, match="cannot fall below zero"):
        compress(genmodels.mixed_model(), calib, loss="distance", max_loss_increase=0, quiet=True)


def test_size_loop_gets_under_a_budget_that_the_same_plan_keeps_missing_by_a_byte():
    """The first plan's real bitstream is one byte over, while its estimate leaves room: stepping
    the payload down by the overshoot alone picks the same plan again, round after round."""
    options = {"w": [Sensitivity("w", label, bits, size, 0.0, 0.0, dist)
                     for label, bits, size, dist in (("float32", 32, 5941, 0.0), ("int8", 8, 5800, 1e-4),
                                                     ("int4", 4, 3000, 1e-2))]}

    def measure_size(choice):
        return sum(options[k][i].coded_bytes for k, i in choice.items()) + 60  # tables the estimate misses

    allocation = allocate_size(options, 6000, 0, measure_size)
    assert measure_size(allocation.choice) <= 6000
    assert options["w"][allocation.choice["w"]].label == "int8"


def test_size_loop_reaches_a_budget_only_the_smallest_plan_fits():
    """At the edge of feasibility a step down asks the knapsack for less than the smallest plan;
    the loop must jump back to that plan, not creep up 1% a round until its rounds run out."""
    options = {f"w{i}": [Sensitivity(f"w{i}", f"o{j}", 4, 600 + j, 0.0, 0.0, 1.0 / (1 + j)) for j in range(40)]
               for i in range(30)}

    def measure_size(choice):
        return sum(options[k][i].coded_bytes for k, i in choice.items()) + 100  # what the estimate misses

    allocation = allocate_size(options, 18101, 0, measure_size)
    assert measure_size(allocation.choice) <= 18101


def test_neighbour_loss_targets_the_original_nearest_neighbour():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    noise = rng.normal(size=(8, 16))
    emb = np.repeat(centres, 2, axis=0) + 0.6 * noise  # pairs of twins
    loss = make_loss("neighbour", "emb", emb.astype(np.float32), None)
    assert list(loss.targets) == [1, 0, 3, 2, 5, 4, 7, 6]
    base = loss.per_sample(emb)
    assert (base > 1e-7).all()  # not saturated
    # pulling each sample towards its twin lowers the loss: compression can also improve it
    assert (loss.per_sample(np.repeat(centres, 2, axis=0) + 0.3 * noise) < base).all()
    # moving each sample away from its twin raises it
    assert (loss.per_sample(np.repeat(centres, 2, axis=0) + 1.2 * noise) > base).all()
    with pytest.raises(OnnxL2Error, match="no labels"):
        make_loss("neighbour", "emb", emb, np.zeros(8, dtype=np.int64))


def test_probability_maps_get_binary_cross_entropy_to_the_original_decisions():
    rng = np.random.default_rng(1)
    maps = (1 / (1 + np.exp(-3 * rng.normal(size=(4, 1, 8, 8))))).astype(np.float32)
    loss = make_loss("auto", "maps", maps, None)
    assert loss.kind == "bce" and "decisions" in loss.describe()
    base = loss.per_sample(maps)
    sharper = (1 / (1 + np.exp(-6 * np.log(maps / (1 - maps)) / 3))).astype(np.float32)  # more confident
    assert (loss.per_sample(sharper) < base).all()  # compression may also lower it
    assert (loss.distortion(maps) == 0).all() and (loss.distortion(sharper) > 0).all()
    with pytest.raises(OnnxL2Error, match="probabilities"):
        make_loss("bce", "maps", maps * 3 - 1, None)


def test_noise_sigmas_let_a_change_within_noise_pass():
    options = _options()

    def measure(choice):  # every compressed plan: a small rise, well within its standard error
        compressed = any(options[k][i].bits != 32 for k, i in choice.items())
        return Measurement(1e-4 if compressed else 0.0, 1e-3)

    strict = allocate_neighbourhood(options, 0.0, measure)
    tolerant = allocate_neighbourhood(options, 0.0, measure, noise_sigmas=2.0)
    assert strict.status == "fallback" and not any(r.accepted for r in strict.rounds)
    assert tolerant.rounds[0].accepted and all(options[k][i].bits == 2 for k, i in tolerant.choice.items())


def test_auto_sweep_drops_taylor_terms_before_measuring_fewer_candidates():
    from onnxl2.candidates import make_candidates
    from onnxl2.pipeline.search import sweep_mode
    from onnxl2.rules import SearchRules

    weight = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
    cands = {f"w{i}": make_candidates(f"w{i}", weight, 0, (2, 3, 4, 8)) for i in range(10)}  # 40 passes
    assert sweep_mode(SearchRules(sweep_budget=1e9), cands, 0.8) == ("proxy", False)  # the contract
    options = SearchRules(sweep_budget=100.0, max_loss_increase=0)  # the neighbourhood
    assert sweep_mode(options, cands, 0.8) == ("full", True)  # 3 x 40 x 0.8 = 96 s
    assert sweep_mode(options, cands, 2.0) == ("full", False)  # 80 s
    assert sweep_mode(options, cands, 3.0) == ("proxy", True)  # full 120 s; proxy 3 x 10 x 3 = 90 s
    assert sweep_mode(options, cands, 5.0) == ("proxy", False)  # 50 s
    assert sweep_mode(options, cands, 50.0) == ("proxy", False)  # nothing fits: the cheapest
    assert sweep_mode(SearchRules(sweep="full"), cands, 50.0) == ("full", True)  # asked for: as asked


def test_plan_choices_that_are_not_labels_are_one_error(calib):
    """A plan file is input: a choice that is no string, or one-step with low rank, is refused."""
    from onnxl2 import OnnxL2Error
    for bad in (4, None, ["int4"], "int4+onestep+rank4"):
        with pytest.raises(OnnxL2Error, match="unknown choice"):
            compress(genmodels.mixed_model(), calib, plan={"choices": {"conv_w": bad}}, quiet=True, devices=("cpu",))
