"""Per-sample losses that compression decisions are measured with.

Loss changes from compressing one layer are tiny, so every loss here is returned per sample in
float64: the sensitivity stage takes paired differences on the same samples and their standard
error. Without labels the loss is taken against the original model's own predictions: cross-entropy
to its arg-max for classifier outputs (a loss that compression can also lower), the squared
change in units of each channel's spread (``contract.channel_spread``) for any other output. Embedding models can instead be judged as retrievers:
"neighbour" is the cross-entropy of each sample's similarities to the other samples against the
original model's nearest neighbour, which, like the classifier's, compression can also lower.
Maps of independent probabilities (a text detector's per-pixel score) get "bce": binary
cross-entropy to the original's own decisions (p > 0.5), the per-pixel analogue of the arg-max.
Sequence outputs scored against label sequences (a text recogniser and its transcriptions) get
"ctc": the connectionist temporal classification loss, the task loss such models are trained
with, which, unlike the loss against the model's own decisions, compression can also lower
where the original is wrong or unsure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contract import OutputScale, channel_spread, is_class_scores, standardised_errors
from .errors import OnnxL2Error
from .readings import CTC_BLANK, greedy_ctc

LOSS_KINDS = ("auto", "ce", "bce", "ctc", "distance", "neighbour")
#: Padding of label sequences shorter than the longest.
LABEL_PAD = -1
NEIGHBOUR_TEMPERATURE = 0.05  # the usual contrastive temperature of sentence encoders


def _is_probabilities(output: np.ndarray) -> bool:
    """Softmax outputs already sum to one along the class axis; logits do not."""
    sample = output[: min(len(output), 8)].astype(np.float64)
    return bool(sample.min() >= 0 and np.allclose(sample.sum(axis=-1), 1.0, atol=1e-3))


def log_probabilities(output: np.ndarray, probabilities: bool) -> np.ndarray:
    out = output.astype(np.float64)
    if probabilities:
        return np.log(np.clip(out, 1e-30, None))
    out = out - out.max(axis=-1, keepdims=True)
    return out - np.log(np.exp(out).sum(axis=-1, keepdims=True))


def _normalised_distance(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    got = output.reshape(len(output), -1).astype(np.float64)
    return ((got - ref) ** 2).sum(axis=1) / np.maximum((ref ** 2).sum(axis=1), 1e-30)


def _unit_rows(output: np.ndarray) -> np.ndarray:
    rows = output.reshape(len(output), -1).astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)


def _neighbour_log_probabilities(output: np.ndarray) -> np.ndarray:
    """Row i: log-softmax over j != i of cosine(i, j) / temperature (self excluded)."""
    unit = _unit_rows(output)
    scores = unit @ unit.T / NEIGHBOUR_TEMPERATURE
    np.fill_diagonal(scores, -np.inf)
    return log_probabilities(scores, False)


def nearest_neighbours(output: np.ndarray) -> np.ndarray:
    """Index of each sample's most cosine-similar other sample."""
    unit = _unit_rows(output)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    return scores.argmax(axis=1)


def _is_probability_map(output: np.ndarray) -> bool:
    """Independent probabilities per element (sigmoid maps), not a distribution per row."""
    sample = output[: min(len(output), 8)]
    return output.dtype.kind == "f" and output.ndim >= 3 and bool(sample.min() >= 0 and sample.max() <= 1) \
        and not _is_probabilities(output)


def _bernoulli_log(output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.clip(output.reshape(len(output), -1).astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p), np.log1p(-p)


def ctc_negative_log_likelihood(log_probs: np.ndarray, labels: np.ndarray, blank: int = CTC_BLANK) -> np.ndarray:
    """-log p(label sequence | outputs) per sample, summed over steps (the CTC forward pass).

    ``log_probs`` [N, T, C]; ``labels`` [N, L] padded with LABEL_PAD. Vectorised over samples and
    over the extended label (blank, l1, blank, l2, ..., blank); one loop over the T steps.
    """
    n, steps, _ = log_probs.shape
    lengths = (labels != LABEL_PAD).sum(axis=1)
    width = 2 * labels.shape[1] + 1
    ext = np.full((n, width), blank, dtype=np.int64)
    ext[:, 1::2] = np.where(labels == LABEL_PAD, blank, labels)
    valid = np.arange(width)[None] < (2 * lengths + 1)[:, None]
    skip = np.zeros((n, width), dtype=bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    emit = np.take_along_axis(log_probs, np.broadcast_to(ext[:, None, :], (n, steps, width)), axis=2)
    alpha = np.full((n, width), -np.inf)
    alpha[:, 0] = emit[:, 0, 0]
    alpha[:, 1] = np.where(lengths > 0, emit[:, 0, 1], -np.inf)
    for t in range(1, steps):
        one = np.concatenate([np.full((n, 1), -np.inf), alpha[:, :-1]], axis=1)
        two = np.concatenate([np.full((n, 2), -np.inf), alpha[:, :-2]], axis=1)
        alpha = np.logaddexp(np.logaddexp(alpha, one), np.where(skip, two, -np.inf)) + emit[:, t]
        alpha = np.where(valid, alpha, -np.inf)
    last = 2 * lengths
    end = np.logaddexp(alpha[np.arange(n), last], np.where(lengths > 0, alpha[np.arange(n), np.maximum(last - 1, 0)],
                                                           -np.inf))
    return -end


def sequence_correct(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per sample, whether its greedy CTC reading equals its label sequence."""
    truth = [tuple(row[row != LABEL_PAD].tolist()) for row in labels]
    return np.array([a == b for a, b in zip(greedy_ctc(output), truth)], dtype=bool)


def sequence_accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose greedy CTC reading equals their label sequence."""
    return float(sequence_correct(output, labels).mean())


def is_sequence_labels(labels: np.ndarray | None, output_shape: tuple[int, ...]) -> bool:
    """Label sequences for a [N, T, C] output: [N, L] that are not one class per step."""
    return labels is not None and labels.ndim == 2 and len(output_shape) == 3 \
        and tuple(labels.shape) != tuple(output_shape[:2])


@dataclass
class Loss:
    """A loss on one model output, ready to score candidate outputs against fixed targets."""

    kind: str  # "ce" (labels or pseudo-labels), "distance" or "neighbour"
    output: str
    targets: np.ndarray  # class (or neighbour) indices, the original output for "distance"
    reference: np.ndarray  # the original model's output
    probabilities: bool = False
    pseudo_labels: bool = False
    spread: np.ndarray | None = None  # "distance": each channel's spread on the original
    #: the contract's measure of the output's change: when set, the distortion the knapsack adds
    #: up is the distance the contract judges plans by
    scale: OutputScale | None = None

    def distortion(self, output: np.ndarray) -> np.ndarray:
        """How far each sample's output moved from the original's, >= 0.

        KL divergence from the original class distribution for classifiers (averaged over
        steps), normalised squared distance otherwise. Unlike a task loss it cannot fall by
        chance, and the distortions of independent perturbations add up (to second order),
        which is what the knapsack's additive estimate needs.
        """
        if self.scale is not None:
            return self.scale.errors(output)
        if self.kind == "bce":
            p_on, p_off = _bernoulli_log(self.reference)
            q_on, q_off = _bernoulli_log(output)
            kl = np.exp(p_on) * (p_on - q_on) + np.exp(p_off) * (p_off - q_off)
            return np.maximum(kl.mean(axis=1), 0.0)
        if self.kind == "distance":
            return standardised_errors(self.reference, output, self.spread)
        if self.kind not in ("ce", "ctc"):
            return _normalised_distance(output, self.reference)
        p_log = log_probabilities(self.reference, self.probabilities)
        q_log = log_probabilities(output, self.probabilities)
        kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=-1)
        return np.maximum(kl.reshape(len(kl), -1).mean(axis=1), 0.0)

    def per_sample(self, output: np.ndarray) -> np.ndarray:
        """Loss of every sample (averaged over steps for sequence outputs), in float64."""
        if self.kind == "ce":
            logp = log_probabilities(output, self.probabilities)
            picked = np.take_along_axis(logp, self.targets[..., None], axis=-1)[..., 0]
            return -picked.reshape(len(picked), -1).mean(axis=1)
        if self.kind == "bce":
            on, off = _bernoulli_log(output)
            return -np.where(self.targets, on, off).mean(axis=1)
        if self.kind == "neighbour":
            logp = _neighbour_log_probabilities(output)
            return -logp[np.arange(len(logp)), self.targets]
        if self.kind == "ctc":
            return ctc_negative_log_likelihood(log_probabilities(output, self.probabilities), self.targets)
        return standardised_errors(self.reference, output, self.spread)

    def describe(self) -> str:
        if self.kind == "distance":
            return (f"squared change of '{self.output}' in units of each channel's spread on the original "
                    "(standardised distance)")
        if self.kind == "bce":
            return f"binary cross-entropy of '{self.output}' against the original's decisions (p > 0.5)"
        if self.kind == "ctc":
            return f"CTC loss of '{self.output}' against the label sequences (blank = class {CTC_BLANK})"
        if self.kind == "neighbour":
            return (f"cross-entropy of '{self.output}' similarities (cosine / {NEIGHBOUR_TEMPERATURE}) "
                    "against the original's nearest neighbour among the other samples")
        source = "the original model's arg-max (pseudo-labels)" if self.pseudo_labels else "the labels"
        return f"cross-entropy of '{self.output}' against {source}"


def make_loss(kind: str, output_name: str, original_output: np.ndarray,
              labels: np.ndarray | None) -> Loss:
    """Choose the loss: task cross-entropy with labels, else against the original's predictions."""
    if kind not in LOSS_KINDS:
        raise OnnxL2Error(f"unknown loss {kind!r} (choose from {', '.join(LOSS_KINDS)})")
    classifier = is_class_scores(original_output) or (
        labels is not None and original_output.dtype.kind == "f" and original_output.ndim in (2, 3)
        and original_output.shape[-1] >= 2)
    if kind == "auto" and is_sequence_labels(labels, original_output.shape):
        kind = "ctc"
    if kind == "ctc":
        return _ctc_loss(output_name, original_output, labels)
    if kind == "auto":
        kind = "ce" if classifier or labels is not None else \
            "bce" if _is_probability_map(original_output) else "distance"
    if kind == "bce":
        if labels is not None:
            raise OnnxL2Error("the bce loss takes its targets from the original model; give no labels")
        if not (original_output.min() >= 0 and original_output.max() <= 1):
            raise OnnxL2Error(f"binary cross-entropy needs probabilities in [0, 1]; output '{output_name}' "
                              f"ranges over [{original_output.min():.3g}, {original_output.max():.3g}]")
        return Loss("bce", output_name, original_output.reshape(len(original_output), -1) > 0.5, original_output)
    if kind == "distance":
        reference = original_output.astype(np.float64)
        return Loss("distance", output_name, reference, reference, spread=channel_spread(reference))
    if kind == "neighbour":
        if labels is not None:
            raise OnnxL2Error("the neighbour loss takes its targets from the original model; give no labels")
        if len(original_output) < 3:
            raise OnnxL2Error(f"the neighbour loss needs at least 3 calibration samples; got {len(original_output)}")
        return Loss("neighbour", output_name, nearest_neighbours(original_output), original_output)
    if not classifier:
        raise OnnxL2Error(f"cross-entropy needs class scores on the last axis; output "
                          f"'{output_name}' has shape {list(original_output.shape)}")
    probabilities = _is_probabilities(original_output)
    if labels is not None:
        if labels.shape != original_output.shape[:-1]:
            raise OnnxL2Error(f"labels of shape {list(labels.shape)} do not fit output "
                              f"'{output_name}' of shape {list(original_output.shape)}")
        return Loss("ce", output_name, labels.astype(np.int64), original_output, probabilities)
    return Loss("ce", output_name, original_output.argmax(axis=-1), original_output, probabilities,
                pseudo_labels=True)


def _ctc_loss(output_name: str, original_output: np.ndarray, labels: np.ndarray | None) -> Loss:
    if labels is None or labels.ndim != 2:
        raise OnnxL2Error("the ctc loss needs label sequences: an integer array [samples, length] "
                          f"padded with {LABEL_PAD}")
    if original_output.ndim != 3 or original_output.dtype.kind != "f":
        raise OnnxL2Error(f"the ctc loss needs per-step class scores [samples, steps, classes]; output "
                          f"'{output_name}' has shape {list(original_output.shape)}")
    n, steps, classes = original_output.shape
    if labels.shape[0] != n:
        raise OnnxL2Error(f"{labels.shape[0]} label sequences for {n} samples")
    real = labels[labels != LABEL_PAD]
    if real.size and (real.min() < 0 or real.max() >= classes or (real == CTC_BLANK).any()):
        raise OnnxL2Error(f"label sequences must hold classes 1..{classes - 1} (class {CTC_BLANK} is the "
                          f"blank; {LABEL_PAD} pads)")
    lengths = (labels != LABEL_PAD).sum(axis=1)
    repeats = ((labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] != LABEL_PAD)).sum(axis=1)
    too_long = np.flatnonzero(lengths + repeats > steps)
    if too_long.size:
        raise OnnxL2Error(f"label sequence {int(too_long[0])} needs {int(lengths[too_long[0]] + repeats[too_long[0]])} "
                          f"steps; output '{output_name}' has {steps}")
    return Loss("ctc", output_name, labels.astype(np.int64), original_output, _is_probabilities(original_output))
