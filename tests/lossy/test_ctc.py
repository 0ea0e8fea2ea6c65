"""The CTC loss for label sequences: exact against enumeration, chosen from the labels' shape,
and usable end to end (calibration loss and sequence accuracy)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import genmodels
from onnxl2 import compress
from onnxl2.errors import OnnxL2Error
from onnxl2.evaluate import accuracy
from onnxl2.losses import ctc_negative_log_likelihood, greedy_ctc, make_loss


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, prev = [], None
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return tuple(out)


@pytest.mark.parametrize("label", [[], [1], [1, 1], [1, 2], [2, 1, 2], [3, 3, 1]])
def test_ctc_equals_the_sum_over_every_alignment(label):
    rng = np.random.default_rng(len(label))
    steps, classes = 6, 4
    p = _softmax(rng.standard_normal((1, steps, classes)))
    total = sum(np.prod([p[0, t, c] for t, c in enumerate(path)])
                for path in itertools.product(range(classes), repeat=steps) if _collapse(path) == tuple(label))
    padded = np.array([label + [-1] * (4 - len(label))])
    np.testing.assert_allclose(ctc_negative_log_likelihood(np.log(p), padded), [-np.log(total)], rtol=1e-10)


def test_sequence_labels_choose_ctc_and_bad_ones_are_refused():
    rng = np.random.default_rng(0)
    out = _softmax(rng.standard_normal((3, 8, 5))).astype(np.float32)
    labels = np.array([[1, 2, -1], [3, -1, -1], [4, 4, 2]])
    loss = make_loss("auto", "y", out, labels)
    assert loss.kind == "ctc" and loss.per_sample(out).shape == (3,)
    assert make_loss("auto", "y", out, out.argmax(-1)).kind == "ce"  # one class per step: cross-entropy
    with pytest.raises(OnnxL2Error, match="blank"):
        make_loss("ctc", "y", out, np.array([[0, 1], [1, -1], [2, -1]]))
    with pytest.raises(OnnxL2Error, match="needs 9 steps"):
        make_loss("ctc", "y", out, np.array([[1, 1, 1, 1, 1], [1, -1, -1, -1, -1], [2, -1, -1, -1, -1]]))
    with pytest.raises(OnnxL2Error, match="label sequences"):
        make_loss("ctc", "y", out, None)


def test_sequence_accuracy_reads_the_best_path():
    out = np.zeros((2, 5, 4))
    out[0, np.arange(5), [1, 1, 0, 2, 2]] = 1  # "1 2"
    out[1, np.arange(5), [3, 0, 3, 3, 0]] = 1  # "3 3"
    assert greedy_ctc(out) == [(1, 2), (3, 3)]
    assert accuracy(out, np.array([[1, 2], [3, -1]])) == 0.5


def test_automatic_mode_measures_the_ctc_loss_and_sequence_accuracy(tmp_path):
    model, data, labels = genmodels.sequence_model()
    result = compress(model, data, labels=labels, max_loss_increase="10%", bits_choices=(2, 4, 8),
                      devices=("cpu",), quiet=True, sweep="full", taylor=False)
    alloc = result.report["allocation"]
    assert alloc["loss"].startswith("CTC loss of 'y'")
    assert np.isfinite(alloc["calibration_loss"]) and alloc["calibration_loss"] > 0
    cpu = result.report["validation"]["devices"][0]
    assert cpu["accuracy_original"] == pytest.approx(accuracy(np.asarray(_softmax(
        np.einsum("ntk,kc->ntc", data["x"], numpy_helper.to_array(model.graph.initializer[0])))), labels))
