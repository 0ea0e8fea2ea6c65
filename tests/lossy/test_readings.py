"""A CTC reader judged by its readings: which steps can change a reading, its outputs laid out
per sample, the expected string agreement, and the contract with --ctc end to end."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import genmodels
from onnxl2 import Contract, compress
from onnxl2.cli import main
from onnxl2.contract import Judge, expected_agreement, expected_reading_agreement
from onnxl2.errors import OnnxL2Error
from onnxl2.readings import by_sample, greedy_readings, reading_steps



def test_reading_steps_are_those_whose_flip_changes_the_reading():
    rng = np.random.default_rng(0)
    top = rng.integers(0, 4, (300, 9))
    top[rng.random(top.shape) < 0.4] = 0  # blanks, as a reader emits them
    runner_up = (top + rng.integers(1, 4, top.shape)) % 4
    changes = reading_steps(top, runner_up)
    readings = greedy_readings(top)
    for s, t in zip(*np.nonzero(np.ones_like(top, dtype=bool))):
        flipped = top[s].copy()
        flipped[t] = runner_up[s, t]
        assert changes[s, t] == (greedy_readings(flipped[None])[0] != readings[s]), (top[s], t, runner_up[s, t])
    assert 0.2 < changes.mean() < 0.95  # both kinds occur


def test_reading_steps_by_hand():
    # "1 1 0 2": the second 1 to blank keeps "12"; the blank to 1 or 2 keeps it; the first 1 to 2 does not
    top = np.array([[1, 1, 0, 2]])
    assert reading_steps(top, np.array([[2, 0, 1, 0]])).tolist() == [[True, False, False, True]]
    assert reading_steps(top, np.array([[0, 0, 2, 1]])).tolist() == [[False, False, False, True]]
    # "1 0 1": the blank between two 1s to 1 merges them: "11" becomes "1"
    assert reading_steps(np.array([[1, 0, 1]]), np.array([[0, 1, 0]])).tolist() == [[True, True, True]]


def test_outputs_are_laid_out_per_sample_in_time_order():
    steps = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # [samples, steps, classes]
    np.testing.assert_array_equal(by_sample(steps, 2, False), steps)
    time_first = steps.transpose(1, 0, 2)  # [steps, samples, classes], one call
    np.testing.assert_array_equal(by_sample(time_first, 2, False), steps)
    joined = np.concatenate([steps[0][:, None], steps[1][:, None]])  # [samples * steps, 1, classes]
    np.testing.assert_array_equal(by_sample(joined, 2, True), steps)
    assert by_sample(joined, 2, False) is None  # several samples a call, joined time first: no order
    assert by_sample(np.zeros((5, 4)), 2, False) is None


def test_steps_that_cannot_change_the_reading_do_not_count():
    rng = np.random.default_rng(1)
    margin = rng.uniform(0.05, 5.0, (16, 24))
    change = -rng.uniform(0, 0.3, margin.shape)
    steps = rng.random(margin.shape) < 0.5
    every = expected_agreement(margin.ravel(), change.ravel(), 24)
    assert expected_reading_agreement(margin, change, np.ones_like(steps)) == pytest.approx(every, rel=1e-12)
    fewer = expected_reading_agreement(margin, change, steps)
    assert every < fewer < 1
    # the near-tie steps moving between a blank and a repeat: no reading changes
    changed = np.where(steps, 0.0, change)
    assert expected_reading_agreement(margin, changed, steps) == 1.0
    assert expected_reading_agreement(margin, np.where(steps, np.nan, change), steps) == 0.0


def _reader_outputs(samples: int = 12, length: int = 8, classes: int = 5, seed: int = 0):
    """Logits [samples, steps, classes] with clear decisions, and the readings' steps."""
    rng = np.random.default_rng(seed)
    best = rng.integers(0, classes, (samples, length))
    best[:, 1] = best[:, 0] = rng.integers(1, classes, samples)  # a repeat: its first step can turn blank
    logits = rng.normal(0, 0.1, (samples, length, classes)).astype(np.float32)
    logits[np.arange(samples)[:, None], np.arange(length), best] += 4.0
    return logits, best


def test_the_judge_counts_readings_not_steps():
    logits, best = _reader_outputs()
    runner_up = np.where(best == 0, 1, 0)
    keep = ~reading_steps(best, runner_up)
    assert keep.any(axis=1).all()  # every sample has a step whose flip keeps its reading
    moved = logits.copy()
    rows, cols = np.nonzero(keep & (np.cumsum(keep, axis=1) == 1))  # the first such step of each sample
    moved[rows, cols, runner_up[rows, cols]] += 8.0  # it flips
    contract = Contract(ctc=("y",), decisions=())
    judge = Judge(contract, {"y": logits}, None, "y", samples=12)
    agreement = judge.criteria({"y": moved})[0]
    assert agreement.name == "string agreement 'y'" and agreement.observed == 1.0
    per_step = Judge(Contract(decisions=("y",)), {"y": logits}, None, "y", samples=12).criteria({"y": moved})[0]
    assert per_step.observed == 0.0
    s, t = np.argwhere(~keep)[0]  # a step that changes the reading when it flips
    wrong = logits.copy()
    wrong[s, t, runner_up[s, t]] += 8.0
    assert judge.criteria({"y": wrong})[0].observed == pytest.approx(11 / 12)


def test_ctc_outputs_are_checked():
    logits, _ = _reader_outputs()
    with pytest.raises(OnnxL2Error, match="--ctc names outputs the model does not have: z"):
        Judge(Contract(ctc=("z",)), {"y": logits}, None, "y", samples=12)
    with pytest.raises(OnnxL2Error, match="per-step class scores"):
        Judge(Contract(ctc=("y",)), {"y": logits.reshape(-1, 5)[:30]}, None, "y", samples=12)


def test_automatic_mode_judges_readings(tmp_path):
    model, data, _ = genmodels.sequence_model()
    result = compress(model, data, contract=Contract(ctc=("y",)), devices=("cpu",), quiet=True,
                      bits_choices=(2, 4, 8), out_dir=tmp_path / "out")
    contract = result.report["allocation"]["contract"]
    assert list(contract["ctc"]) == ["y"] and "CTC reading" in contract["statement"]
    frontier = result.report["allocation"]["frontier"]
    names = [c["name"] for c in frontier["points"][0]["criteria"]]
    assert names == ["string agreement 'y'", "standardised distance 'y'"]
    chosen = frontier["points"][frontier["chosen"]]
    assert chosen["criteria"][0]["fitted"] >= 0.99


def test_cli_takes_ctc(tmp_path):
    model, data, _ = genmodels.sequence_model()
    import onnx
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", **data)
    result = CliRunner().invoke(main, ["compress", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"),
                                       "--ctc", "nope", "--devices", "cpu", "--quiet", "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--ctc names outputs the model does not have: nope" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o" / "m.l2b").exists()


def test_validation_counts_readings_kept(tmp_path):
    from onnx import numpy_helper

    from onnxl2 import validate
    model, data, _ = genmodels.sequence_model()
    weight = numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight[:, 0] += 0.5  # the blank gains everywhere: some readings lose characters
    moved = type(model)()
    moved.CopyFrom(model)
    moved.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "w"))
    result = validate(model, moved.SerializeToString(), data, devices=("cpu",), ctc=("y",))
    out = result.cpu.outputs[0]
    logits = np.einsum("ntk,kc->ntc", data["x"], numpy_helper.to_array(model.graph.initializer[0]))
    expected = np.mean([a == b for a, b in zip(greedy_readings(logits.argmax(-1)),
                                                greedy_readings(np.einsum("ntk,kc->ntc", data["x"], weight).argmax(-1)))])
    assert out.string_agreement == pytest.approx(expected) and 0 < expected < 1
    assert validate(model, model.SerializeToString(), data, devices=("cpu",)).cpu.outputs[0].string_agreement is None
    with pytest.raises(OnnxL2Error, match="--ctc names outputs"):
        validate(model, model.SerializeToString(), data, devices=("cpu",), ctc=("z",))
