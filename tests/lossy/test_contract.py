"""The behaviour contract: its criteria on outputs whose change is known, the monotone decision
on noisy frontiers, the user's metric (API and CLI), and the automatic mode end to end."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import genmodels
from onnxl2 import compress
from onnxl2.cli import main
from onnxl2.contract import Contract, Criterion, Judge, OutputScale, channel_spread, decide, is_class_scores
from onnxl2.errors import OnnxL2Error
from onnxl2.runtime import make_session
from onnxl2.samples import holdout_split


# ----------------------------------------------------------------------------- criteria

def _detector_outputs(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """[samples, boxes, 4 + 3]: box coordinates in the hundreds beside class scores in 0..1."""
    boxes = rng.uniform(0, 640, size=(n, 50, 4))
    scores = rng.uniform(0, 1, size=(n, 50, 3))
    return np.concatenate([boxes, scores], axis=-1).astype(np.float32)


def test_score_channels_beside_box_coordinates_count_as_much_as_they_do():
    rng = np.random.default_rng(0)
    ref = _detector_outputs(rng)
    moved = ref.copy()
    moved[..., 4:] += 0.1 * rng.standard_normal(moved[..., 4:].shape)  # scores only, 0.35 of their spread
    judge = Judge(Contract(), {"det": ref}, None, "det")
    distance = judge.distances({"det": moved})["det"]
    assert distance == pytest.approx(np.sqrt(3 / 7 * (0.1 / ref[..., 4:].std()) ** 2), rel=0.05)
    raw_relative = np.linalg.norm(moved - ref) / np.linalg.norm(ref)
    assert raw_relative < 1e-3 < 0.05 < distance  # a raw relative distance would not see it
    assert not is_class_scores(ref)  # its arg-max would pick a box coordinate
    assert [c.name for c in judge.criteria({"det": moved})] == ["standardised distance 'det'"]


def test_agreement_and_distance_on_a_classifier_with_known_flips():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((100, 10)).astype(np.float32) * 3
    judge = Judge(Contract(agreement=0.99, max_distance=0.05), {"y": logits}, None, "y")
    flipped = logits.copy()
    for i in range(3):  # swap the top two classes of three samples
        top = np.argsort(flipped[i])[-2:]
        flipped[i, top] = flipped[i, top[::-1]]
    agreement, distance = judge.criteria({"y": flipped})
    assert agreement.observed == pytest.approx(0.97) and not agreement.met()
    assert 0.9 < agreement.value < 0.99  # the three changes, met by every sample's margin
    assert distance.value > 0
    same = judge.criteria({"y": logits})
    assert all(c.met() for c in same) and same[0].value == 1.0 and same[1].value == 0.0


def _noisy_logits(rng, samples: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.standard_normal((samples, 10)) * 3
    return logits, logits + sigma * rng.standard_normal(logits.shape)


def test_expected_agreement_is_nearer_the_population_than_a_count_of_flips():
    """Logits moved by noise of a known size: the population's agreement is known from a large
    draw, and 32 held-back samples estimate it closer, draw after draw, than their flips do."""
    from onnxl2.contract import decision_margins, expected_agreement
    rng = np.random.default_rng(7)
    sigma = 0.05
    big, big_moved = _noisy_logits(rng, 200_000, sigma)
    truth = float(np.mean(big.argmax(-1) == big_moved.argmax(-1)))
    assert 0.98 < truth < 0.99
    estimated, counted = [], []
    for _ in range(200):
        ref, moved = _noisy_logits(rng, 32, sigma)
        estimated.append(expected_agreement(*decision_margins(ref, moved), 1))
        counted.append(float(np.mean(ref.argmax(-1) == moved.argmax(-1))))
    estimated, counted = np.array(estimated), np.array(counted)
    assert abs(estimated.mean() - truth) < 0.01
    assert np.sqrt(np.mean((estimated - truth) ** 2)) < 0.5 * np.sqrt(np.mean((counted - truth) ** 2))
    one_flip = (counted < 1) & (counted > 0.96)  # a count of one flip in 32 fails 0.99 whatever the plan
    assert one_flip.any() and np.mean(estimated[one_flip] >= 0.99) > 0  # the estimate passes some of them


def test_margins_of_the_fitting_samples_count_where_the_held_back_ones_have_no_near_ties():
    rng = np.random.default_rng(9)
    held = rng.standard_normal((16, 5)) * 3
    held[:, 0] = held.max(-1) + 2.0  # every held-back decision 2 above the next
    moved = held + 0.3 * rng.standard_normal(held.shape)
    judge = Judge(Contract(), {"y": held}, None, "y")
    alone = judge.criteria({"y": moved})[0]
    ties = rng.standard_normal((16, 5))
    ties[:, 1] = ties[:, 0] + 0.01  # the same decisions elsewhere are near ties
    judge.add_margins({"y": ties})
    joined = judge.criteria({"y": moved})[0]
    assert alone.observed == joined.observed == 1.0
    assert joined.value < alone.value and joined.value < 0.99


def test_masked_classes_and_one_class_give_no_false_flips():
    from onnxl2.contract import decision_margins, expected_agreement
    masked = np.array([[2.0, -np.inf, -np.inf], [1.0, 0.5, -np.inf]] * 8)
    margin, change = decision_margins(masked, masked)
    assert expected_agreement(margin, change, 1) == 1.0  # the row with one finite class cannot flip
    one = np.ones((8, 1))
    judge = Judge(Contract(decisions=("y",)), {"y": one}, None, "y")
    assert judge.criteria({"y": one})[0].value == 1.0  # one class: nothing to flip
    moved = masked.copy()
    moved[1::2, 1] += np.nan
    assert expected_agreement(*decision_margins(masked, moved), 1) == 0.0  # a NaN output fails


def test_decision_margins_flip_exactly_where_the_change_is_below_minus_the_margin():
    from onnxl2.contract import decision_margins
    rng = np.random.default_rng(8)
    ref = rng.standard_normal((50, 4, 7)) * 2
    moved = ref + 0.8 * rng.standard_normal(ref.shape)
    margin, change = decision_margins(ref, moved)
    assert margin.shape == (200,) and np.all(margin >= 0)
    flipped = (ref.argmax(-1) != moved.argmax(-1)).ravel()
    assert flipped.any() and np.array_equal(flipped, change < -margin)
    probs = np.exp(ref) / np.exp(ref).sum(-1, keepdims=True)  # a softmax: compared as logarithms
    m2, c2 = decision_margins(probs, np.exp(moved) / np.exp(moved).sum(-1, keepdims=True))
    assert np.allclose(m2, margin) and np.allclose(c2, change)


def test_labelled_contract_fails_a_loss_that_rose_and_passes_one_that_did_not():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 200)
    logits = rng.standard_normal((200, 5)) + 4 * np.eye(5)[labels]

    def loss(out):
        z = out - out.max(-1, keepdims=True)
        return -(z[np.arange(len(z)), labels] - np.log(np.exp(z).sum(-1)))

    def correct(out):
        return (out.argmax(-1) == labels).astype(float)

    judge = Judge(Contract(confidence=0.95), {"y": logits}, labels, "y", loss, correct)
    worse = logits - 1.5 * np.eye(5)[labels]  # every sample less sure of its label
    loss_change, acc_change, distance = judge.criteria({"y": worse})
    assert loss_change.value > loss_change.slack > 0 and not loss_change.met()
    assert acc_change.value < 0 and acc_change.slack == 0 and not acc_change.met()
    assert not distance.met()  # a visible change, whatever the task figures say
    kept = judge.criteria({"y": logits + 1e-6 * rng.standard_normal(logits.shape)})
    assert all(c.met() for c in kept)
    assert kept[0].value > 0  # the loss rose, by far less than its noise: not shown higher


def test_class_scores_are_told_from_embeddings_and_maps():
    rng = np.random.default_rng(3)
    unit = rng.standard_normal((8, 384))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    softmax = np.exp(rng.standard_normal((8, 40, 100)))
    softmax /= softmax.sum(-1, keepdims=True)
    assert is_class_scores(rng.standard_normal((8, 10)).astype(np.float32))
    assert is_class_scores(softmax.astype(np.float32))
    assert not is_class_scores(unit.astype(np.float32))
    assert not is_class_scores(rng.uniform(size=(8, 1, 32, 32)).astype(np.float32))


def test_a_plan_that_moves_a_few_samples_far_is_judged_by_its_upper_bound():
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((30, 16))
    out = ref + 0.01 * rng.standard_normal(ref.shape)
    out[0] += 1.0  # one sample moved a whole spread: the mean square alone is 1/30
    judge = Judge(Contract(max_distance=0.2), {"e": ref}, None, "e")
    mean_only, bounded = judge.distances({"e": out})["e"], judge.distances({"e": out}, Contract().z)["e"]
    assert mean_only < 0.2 < bounded


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return (z / z.sum(-1, keepdims=True)).astype(np.float32)


def test_probabilities_are_compared_as_logits_so_every_sample_counts_alike():
    """The same logit noise on every sample: in probability space the few samples near the
    decision boundary carry the distance (and a held-back draw with or without them decides);
    on the log scale the distance is the noise's, whichever samples are drawn."""
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((400, 2)) * np.array([[8.0, 0.0]])  # most samples saturated
    moved = logits + 0.2 * rng.standard_normal(logits.shape)
    ref, out = _softmax(logits), _softmax(moved)
    scale = OutputScale.of(ref)
    assert scale.log and not OutputScale.of(logits).log
    per_sample = scale.errors(out)
    raw = ((out - ref) / ref.std(0)) ** 2
    top_share = lambda e: np.sort(e)[-20:].sum() / e.sum()  # the 5% largest samples' share
    assert top_share(per_sample) < 0.3 < 0.7 < top_share(raw.sum(-1))
    draws = [np.sqrt(per_sample[rng.choice(400, 26, replace=False)].mean()) for _ in range(200)]
    assert np.std(draws) / np.mean(draws) < 0.25
    log_ref = np.log(ref.astype(np.float64))
    expected = np.sqrt(np.mean(((np.log(out.astype(np.float64)) - log_ref) / log_ref.std(0)) ** 2))
    assert np.sqrt(per_sample.mean()) == pytest.approx(expected, rel=1e-6)


def test_the_contract_ranks_candidates_by_the_distance_it_judges():
    """The knapsack adds up the contract's own distance: the KL divergence a size budget uses
    is carried by the few samples near the boundary, as the probabilities' distance is."""
    from dataclasses import replace
    from onnxl2.losses import make_loss
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((400, 2)) * np.array([[8.0, 0.0]])
    ref, out = _softmax(logits), _softmax(logits + 0.2 * rng.standard_normal(logits.shape))
    loss = make_loss("auto", "y", ref, None)
    ranked = replace(loss, scale=OutputScale.of(ref))
    np.testing.assert_array_equal(ranked.distortion(out), OutputScale.of(ref).errors(out))
    top_share = lambda e: np.sort(e)[-20:].sum() / e.sum()
    assert top_share(ranked.distortion(out)) < 0.3 < 0.5 < top_share(loss.distortion(out))


def test_of_many_classes_only_each_rows_top_classes_count():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((32, 10, 500)) * 2
    logits[..., 0] += 12  # one class on top at every step
    ref = _softmax(logits)
    tail = logits.copy()
    low = np.argsort(logits, axis=-1)[..., :400]  # far below the top five
    np.put_along_axis(tail, low, np.take_along_axis(logits, low, -1) + rng.standard_normal(low.shape), -1)
    scale = OutputScale.of(ref)
    moved_tail = np.sqrt(scale.errors(_softmax(tail)).mean())  # only through the normaliser
    every_class = np.sqrt(np.mean(((np.log(_softmax(tail)) - np.log(ref)) / channel_spread(np.log(ref.astype(np.float64)))) ** 2))
    assert moved_tail < 0.01 < 0.2 < every_class
    top = logits.copy()
    top[..., 0] += 0.5
    assert np.sqrt(scale.errors(_softmax(top)).mean()) > 0.05


def test_a_probability_that_underflows_to_zero_is_floored():
    ref = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]], dtype=np.float32)
    scale = OutputScale.of(ref)
    assert np.all(np.isfinite(scale.errors(ref[::-1].copy())))
    assert np.all(scale.errors(ref) == 0)


def test_a_constant_channel_is_not_divided_by_zero():
    ref = np.zeros((16, 4, 3))
    ref[..., :2] = np.random.default_rng(4).standard_normal((16, 4, 2))
    spread = channel_spread(ref)
    assert spread.shape == (1, 1, 3) and np.all(spread > 0)


# ----------------------------------------------------------------------------- the decision

def _noisy_frontier(seed: int, bound: float = 0.05, points: int = 16):
    """Plans of growing size whose true distance falls as 1/size^2, measured with noise."""
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(1000, 20000, points).astype(int)
    truth = 0.05 * (5000 / sizes) ** 2
    measured = truth * np.exp(0.35 * rng.standard_normal(points))
    crossing = int(np.argmax(truth <= bound))
    return sizes, measured, crossing


@pytest.mark.parametrize("seed", range(12))
def test_the_monotone_decision_lands_near_the_true_crossing(seed):
    sizes, measured, crossing = _noisy_frontier(seed)
    criteria = [[Criterion("d", float(v), 0.05, False)] for v in measured]
    chosen = decide(list(sizes), criteria)
    assert chosen is not None and abs(chosen - crossing) <= 2
    assert all(p[0].passed for p in criteria[chosen:])  # every larger plan meets it too


def test_one_lucky_small_plan_does_not_decide():
    sizes, measured, crossing = _noisy_frontier(0)
    measured[1] = 0.001  # a small plan that measured far better than it is
    criteria = [[Criterion("d", float(v), 0.05, False)] for v in measured]
    chosen = decide(list(sizes), criteria)
    assert chosen >= crossing - 2 and chosen != 1


def test_no_plan_meets_a_contract_that_even_the_largest_fails():
    criteria = [[Criterion("a", 0.5, 0.99, True)] for _ in range(5)]
    assert decide([1, 2, 3, 4, 5], criteria) is None


def test_holdout_split_is_spread_disjoint_and_refuses_too_few_samples():
    fit, held = holdout_split(10, 0.5)
    assert sorted(np.concatenate([fit, held])) == list(range(10)) and len(held) == 5
    assert sorted(held // 2) == list(range(5))  # one of every two samples, not the last half
    assert np.array_equal(holdout_split(10, 0.5)[1], held)  # the same split every run
    cycling = np.arange(128) % 4  # a calibration set ordered by four cycling classes
    assert np.bincount(cycling[holdout_split(128, 0.5)[1]], minlength=4).min() >= 8
    with pytest.raises(OnnxL2Error, match="too few"):
        holdout_split(3, 0.5)


def test_contract_values_are_checked_up_front():
    for bad in (dict(agreement=1.5), dict(max_distance=0), dict(confidence=1.0), dict(holdout=0.0),
                dict(max_drop=-1), dict(metric="not a function")):
        with pytest.raises(OnnxL2Error):
            Contract(**bad)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def calib():
    return genmodels.mixed_inputs(48, seed=11)


@pytest.fixture(scope="module")
def contract_run(calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("contract")
    result = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",), out_dir=out)
    return result, out


def test_the_default_automatic_mode_meets_its_contract_on_the_held_back_samples(contract_run, calib):
    result, out = contract_run
    alloc = result.report["allocation"]
    assert alloc["form"] == "contract" and alloc["contract"]["held_back_samples"] == 24
    frontier = alloc["frontier"]
    chosen = frontier["points"][frontier["chosen"]]
    assert chosen["passed"] and chosen["bitstream_bytes"] == result.report["sizes"]["bitstream_bytes"]
    assert all(p["passed"] for p in frontier["points"][frontier["chosen"]:])
    # re-judge the emitted model on the held-back samples: the report's figures are the runtime's
    fitting, held = holdout_split(48, 0.5)
    feeds = {k: v[held] for k, v in calib.items()}
    original = make_session(genmodels.mixed_model()).run(None, feeds)[0]
    on_fitting = make_session(genmodels.mixed_model()).run(None, {k: v[fitting] for k, v in calib.items()})[0]
    compressed = make_session(str(out / "mixed.l2.onnx" if (out / "mixed.l2.onnx").exists()
                                  else next(out.glob("*.l2.onnx")))).run(None, feeds)[0]
    judge = Judge(Contract(), {"y": original}, None, "y")
    judge.add_margins({"y": on_fitting})  # the original's margins on the fitting samples count too
    reported = {c["name"].split("'")[0]: c["value"] for c in chosen["criteria"]}
    again = {c.name.split("'")[0]: c.value for c in judge.criteria({"y": compressed})}
    assert again == pytest.approx(reported, rel=1e-4, abs=1e-6)
    agreement = [c for c in chosen["criteria"] if c["name"].startswith("top-1 agreement")]
    assert agreement and all(0 <= c["observed"] <= 1 for c in agreement)  # the count beside the estimate


def test_the_next_two_plans_are_kept_and_replay(contract_run, calib, tmp_path):
    result, out = contract_run
    frontier = result.report["allocation"]["frontier"]
    assert frontier["chosen"] >= 2, "the toy model's frontier should have two plans below the chosen one"
    nearest = json.loads((out / "plan-next-1.json").read_text())
    assert nearest["fitted_on"] == {"holdout": 0.5}
    replay = compress(genmodels.mixed_model(), calib, plan=out / "plan-next-1.json", quiet=True, devices=("cpu",))
    assert replay.report["plan"]["choices"] == nearest["choices"]
    measured = frontier["points"][frontier["chosen"] - 1]["bitstream_bytes"]
    assert abs(len(replay.bitstream) - measured) <= 4  # the header names the mode ("plan", not "auto")
    again = compress(genmodels.mixed_model(), calib, plan=out / "plan.json", quiet=True, devices=("cpu",))
    assert again.files == result.files  # the same ONNX (the bitstream's header names the mode)


def test_same_data_and_options_give_the_same_bytes(contract_run, calib):
    result, _ = contract_run
    again = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",))
    assert bytes(again.bitstream) == bytes(result.bitstream)


def test_the_report_charts_the_frontier(contract_run):
    _, out = contract_run
    page = (out / "report.html").read_text()
    section = page[page.index("Contract and frontier"):]
    assert section.count("<svg") >= 1 and "chosen" in section and "bound" in section
    assert "plan-next-1.json" in section


def test_a_users_metric_decides_through_the_api(calib):
    calls = []

    def top_class_kept(original, compressed):
        calls.append(sorted(original))
        return float(np.mean(original["y"].argmax(-1) == compressed["y"].argmax(-1)))

    strict = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",),
                      contract=Contract(metric=top_class_kept, metric_name="kept", max_drop=0.0))
    alloc = strict.report["allocation"]
    assert calls and calls[0] == ["y"]
    chosen = alloc["frontier"]["points"][alloc["frontier"]["chosen"]]
    assert [c["name"] for c in chosen["criteria"]] == ["kept"] and chosen["criteria"][0]["value"] == 1.0
    anything = compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",),
                        contract=Contract(metric=lambda a, b: 1.0, metric_name="constant"))
    assert anything.report["sizes"]["bitstream_bytes"] < strict.report["sizes"]["bitstream_bytes"]
    assert anything.report["allocation"]["frontier"]["chosen"] == 0


def test_a_users_metric_through_the_cli(tmp_path, calib):
    onnx.save_model(genmodels.mixed_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **calib)
    (tmp_path / "metric.py").write_text(
        "import numpy as np\n"
        "def agreement(original, compressed):\n"
        "    return float(np.mean(original['y'].argmax(-1) == compressed['y'].argmax(-1)))\n")
    result = CliRunner().invoke(main, ["compress", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "calib.npz"),
                                       "--metric", f"{tmp_path / 'metric.py'}:agreement", "--max-drop", "0.05",
                                       "-o", str(tmp_path / "out"), "--devices", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "metric.py:agreement" in result.output and "may drop by at most 0.05" in result.output
    for spec, needle in (("nothing.py:f", "no such metric file"), (f"{tmp_path / 'metric.py'}:missing", "no function"),
                         ("metric", "FILE.py:FUNCTION")):
        bad = CliRunner().invoke(main, ["compress", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "calib.npz"),
                                        "--metric", spec, "-o", str(tmp_path / "o2")])
        assert bad.exit_code == 1 and needle in bad.stderr


def test_a_failing_metric_is_one_clear_error(calib):
    def broken(original, compressed):
        raise KeyError("boxes")

    with pytest.raises(OnnxL2Error, match="metric .*failed: KeyError"):
        compress(genmodels.mixed_model(), calib, quiet=True, devices=("cpu",),
                 contract=Contract(metric=broken, metric_name="broken"))


def test_a_model_with_nothing_to_compress_is_one_clear_error():
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(OnnxL2Error, match="no weight of this model can be compressed"):
        compress(model, {"x": np.ones((8, 4), np.float32)}, quiet=True, devices=("cpu",))


def test_every_output_of_a_two_output_model_is_judged():
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array((rng.standard_normal((32, 10)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, 3)) * 0.3).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["logits"]), helper.make_node("MatMul", ["x", "w2"], ["h"]),
         helper.make_node("Mul", ["h", "scale"], ["s"]), helper.make_node("Reshape", ["s", "shape"], ["boxes"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [None, 1, 3])],  # [samples, boxes, 3]
        [w1, w2, numpy_helper.from_array(np.array([300.0], np.float32), "scale"),
         numpy_helper.from_array(np.array([-1, 1, 3], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = compress(model, {"x": rng.standard_normal((40, 32)).astype(np.float32)}, quiet=True, devices=("cpu",))
    frontier = result.report["allocation"]["frontier"]
    names = [c["name"] for c in frontier["points"][frontier["chosen"]]["criteria"]]
    assert names == ["top-1 agreement 'logits'", "standardised distance 'logits'", "standardised distance 'boxes'"]


def test_the_user_names_the_outputs_that_hold_decisions():
    rng = np.random.default_rng(8)
    ref = {"boxes": rng.standard_normal((20, 4)), "logits": rng.standard_normal((20, 5))}
    assert [c.name for c in Judge(Contract(), ref, None, "boxes").criteria(ref)][:2] == [
        "top-1 agreement 'boxes'", "top-1 agreement 'logits'"]  # both look like logits
    named = Judge(Contract(decisions=("logits",)), ref, None, "boxes").criteria(ref)
    assert [c.name for c in named] == ["top-1 agreement 'logits'", "standardised distance 'boxes'",
                                       "standardised distance 'logits'"]
    assert not any("agreement" in c.name for c in Judge(Contract(decisions=()), ref, None, "boxes").criteria(ref))
    with pytest.raises(OnnxL2Error, match="does not have: scores"):
        Judge(Contract(decisions=("scores",)), ref, None, "boxes")


def test_a_fixed_batch_keeps_whole_batches_on_each_side(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    from onnxl2.samples import sweep_samples
    fit, held = holdout_split(36, 0.5, block=4)
    assert len(fit) % 4 == 0 and len(held) % 4 == 0 and sorted(np.concatenate([fit, held])) == list(range(36))
    picked = sweep_samples(400, 1e9, 100, block=4)
    assert len(picked) % 4 == 0 and np.all(picked.reshape(-1, 4) - picked.reshape(-1, 4)[:, :1] == np.arange(4))
    rng = np.random.default_rng(9)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    data = {"x": rng.standard_normal((36, 64)).astype(np.float32)}  # 9 batches: 18 samples each side would not fit
    result = compress(model, data, quiet=True, devices=("cpu",), out_dir=tmp_path)
    assert result.report["allocation"]["contract"]["held_back_samples"] % 4 == 0
    again = compress(model, data, plan=tmp_path / "plan.json", quiet=True, devices=("cpu",))
    assert again.files == result.files


def test_an_output_whose_shape_changed_fails_its_criteria():
    rng = np.random.default_rng(10)
    ref = {"dets": rng.standard_normal((12, 6)), "logits": rng.standard_normal((12, 3))}
    judge = Judge(Contract(decisions=("logits",)), ref, None, "dets")
    fewer = {"dets": ref["dets"][:-1], "logits": ref["logits"][:-1]}  # one detection fewer, say
    assert not any(c.met() for c in judge.criteria(fewer))


def _step_logits_model(classes: int = 12, transpose_head: bool = False) -> onnx.ModelProto:
    """A CTC-style reader: [1, steps, features] -> a Gemm per step -> [steps, 1, classes] logits
    (time first, as ddddocr writes them), and a second output that no linear layer makes."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Reshape", ["x", "rows"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["scores"], transB=1, name="head"),
             helper.make_node("Reshape", ["scores", "steps_first"], ["logits"], name="steps_first"),
             helper.make_node("Sigmoid", ["scores"], ["gated"], name="gated"),
             helper.make_node("Reshape", ["gated", "steps_first"], ["gates"], name="gates")]
    inits = [numpy_helper.from_array((rng.standard_normal((classes, 8)) * 0.5).astype(np.float32), "head_w"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "head_b"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "rows"),
             numpy_helper.from_array(np.array([-1, 1, classes], np.int64), "steps_first")]
    graph = helper.make_graph(nodes, "steps", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("gates", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_per_step_logits_of_a_linear_head_are_decisions():
    from onnxl2.contract import is_decision
    from onnxl2.model import linear_head_outputs
    model = _step_logits_model()
    heads = linear_head_outputs(model)
    assert heads == {"logits": 12}  # the Sigmoid's output is no linear layer's
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((64 * 6, 1, 12)).astype(np.float32)
    assert not is_class_scores(logits) and is_decision(logits, heads["logits"])
    assert not is_decision(logits, 7)  # the last axis no longer holds the layer's features
    judge = Judge(Contract(), {"logits": logits}, None, "logits", heads=heads, samples=64, one_per_call=True)
    flipped = logits.copy()
    for i in (0, 1, 2, 3, 4, 5, 6, 7, 100):  # 9 of 384 steps: all of sample 0, two of 1, one of 16
        top = np.argsort(flipped[i, 0])[-2:]
        flipped[i, 0, top] = flipped[i, 0, top[::-1]]
    agreement = judge.criteria({"logits": flipped})[0]
    assert agreement.name.startswith("top-1 agreement") and agreement.observed == pytest.approx(1 - 3 / 64)
    assert not agreement.met()
    per_row = 1 - agreement.value ** (1 / 6)  # six steps a sample: the chance one of them flips
    for rows in ({}, {"samples": 64}):  # samples unknown, or several a call with time first: per row
        per_step = Judge(Contract(), {"logits": logits}, None, "logits", heads=heads, **rows)
        row = per_step.criteria({"logits": flipped})[0]
        assert row.observed == pytest.approx(1 - 9 / 384) and row.value == pytest.approx(1 - per_row)
    batch_first = Judge(Contract(), {"logits": logits.reshape(64, 6, 12)}, None, "logits", heads=heads, samples=64)
    grouped = batch_first.criteria({"logits": flipped.reshape(64, 6, 12)})[0]
    assert grouped.observed == pytest.approx(1 - 3 / 64) and grouped.value == pytest.approx(agreement.value)


def test_validation_reports_agreement_of_per_step_logits():
    from onnxl2.evaluate import validate_models
    model = _step_logits_model()
    other = onnx.ModelProto()
    other.CopyFrom(model)
    w = next(t for t in other.graph.initializer if t.name == "head_w")
    values = onnx.numpy_helper.to_array(w) + 0.3
    w.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), "head_w"))
    data = {"x": np.random.default_rng(4).standard_normal((10, 6, 8)).astype(np.float32)}
    result = validate_models(model.SerializeToString(), other.SerializeToString(), data, devices=("cpu",),
                             spec_model=model)
    outputs = {o.name: o for o in result.cpu.outputs}
    assert outputs["logits"].top1_agreement is not None and outputs["gates"].top1_agreement is None


def test_the_frontier_is_bisected_until_the_boundary_is_known_to_its_resolution():
    from onnxl2.frontier import REFINEMENTS, RESOLUTION, search_frontier
    from onnxl2.sensitivity import Sensitivity
    rng = np.random.default_rng(3)
    table = {}  # 40 layers, each a point per bit (distortion a quarter a bit) and float32
    for layer in range(40):
        params, weight = int(rng.integers(1000, 20000)), float(rng.uniform(0.1, 10))
        table[f"w{layer}"] = [Sensitivity(f"w{layer}", f"int{b}", b, params * b // 8, None, None,
                                          weight * 4.0 ** -b) for b in range(2, 13)]
        table[f"w{layer}"].append(Sensitivity(f"w{layer}", "float32", 32, params * 4, None, None, 0.0))
    bound = 1e-3

    def judge(choice):
        total = sum(table[k][i].distortion for k, i in choice.items())
        return [Criterion("d", total, bound, False)]

    frontier = search_frontier(table, lambda choice: sum(table[k][i].coded_bytes for k, i in choice.items()), judge)
    chosen, failing = frontier.points[frontier.chosen], frontier.points[frontier.chosen - 1]
    assert chosen.passed and not failing.passed
    assert chosen.bitstream_bytes <= failing.bitstream_bytes * (1 + RESOLUTION)
    assert len(frontier.points) < 7 + REFINEMENTS  # it stopped at the resolution, not at the cap
