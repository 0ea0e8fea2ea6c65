"""The benchmark's models and how each is judged: task metrics on the held-out evaluation split.

Every model is judged against the original model's own outputs (cosine, relative L2 and a
task-level agreement), and against real labels where the data have them: the direction
classifier's turned/upright labels and the recogniser's rendered strings. A row is
*acceptable* by the bars of ``../shared/research/baselines.md``: cosine >= 0.999 and the task
agreement over its bar.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2.evaluate import compare_output  # noqa: E402
from onnxl2.losses import greedy_ctc, nearest_neighbours  # noqa: E402

DET_THRESHOLD = 0.3  # DBNet's binarisation threshold in rapidocr
COSINE_BAR = 0.999


@dataclass
class Task:
    """One benchmark model: its files, the output that is judged, and how."""

    name: str
    kind: str  # "cls", "ctc", "det" or "embed"
    folder: Path
    metric: str  # the task agreement that decides acceptability
    bar: float
    loss: str = "auto"  # onnxl2's calibration loss for this model
    charset: list[str] = field(default_factory=list)  # CTC table: blank first
    #: where the output is [steps, batch, classes] per call (ddddocr) rather than [batch, steps,
    #: classes]: the steps of one sample (calls of one sample each are joined on axis 0)
    steps_first: int = 0

    @property
    def model(self) -> Path:
        return self.folder / "model.onnx"

    def split(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def labels(self, split: str) -> Optional[Path]:
        path = self.folder / f"{split}_labels.npy"
        return path if path.exists() else None

    def texts(self, split: str) -> Optional[list[str]]:
        path = self.folder / f"{split}_texts.json"
        return json.loads(path.read_text()) if path.exists() else None

    def score(self, original: np.ndarray, candidate: np.ndarray, split: str = "eval") -> dict:
        """Fidelity to the original and task figures of one candidate's outputs."""
        scores = fidelity(original, candidate)
        scores.update(_TASK_SCORES[self.kind](self, original, candidate, split))
        scores["acceptable"] = bool(scores["cos_mean"] >= COSINE_BAR and scores[self.metric] >= self.bar)
        return scores


def fidelity(original: np.ndarray, candidate: np.ndarray) -> dict:
    """Per-sample cosine (mean and worst) and relative L2 error (mean), as onnxl2's validation."""
    c = compare_output("", original, candidate)
    return {"cos_mean": c.cosine_mean, "cos_min": c.cosine_min, "rel_l2": c.rel_l2_mean}


def _cls_scores(task: Task, original: np.ndarray, candidate: np.ndarray, split: str) -> dict:
    out = {"top1_agree": float((original.argmax(-1) == candidate.argmax(-1)).mean())}
    labels = task.labels(split)
    if labels is not None:
        y = np.load(labels)[:len(candidate)]  # --quick judges a prefix of the split
        out["accuracy"] = float((candidate.argmax(-1) == y).mean())
        out["accuracy_original"] = float((original.argmax(-1) == y).mean())
    return out


def ctc_decode(probs: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy CTC (onnxl2's best-path reading) as text."""
    return ["".join(charset[c] for c in seq) for seq in greedy_ctc(probs)]


def _same_text(a: str, b: str) -> bool:
    """Whitespace does not count: the recogniser drops most spaces between words and numbers."""
    return "".join(a.split()) == "".join(b.split())


def _ctc_scores(task: Task, original: np.ndarray, candidate: np.ndarray, split: str) -> dict:
    if task.steps_first:
        original, candidate = (a.reshape(-1, task.steps_first, a.shape[-1]) for a in (original, candidate))
    orig_text = ctc_decode(original, task.charset)
    cand_text = ctc_decode(candidate, task.charset)
    out = {"string_agree": float(np.mean([_same_text(a, b) for a, b in zip(orig_text, cand_text)])),
           "step_agree": float((original.argmax(-1) == candidate.argmax(-1)).mean())}
    texts = task.texts(split)
    if texts is not None:
        texts = texts[:len(candidate)]
        out["accuracy"] = float(np.mean([_same_text(t, c) for t, c in zip(texts, cand_text)]))
        out["accuracy_original"] = float(np.mean([_same_text(t, o) for t, o in zip(texts, orig_text)]))
    return out


def _det_scores(task: Task, original: np.ndarray, candidate: np.ndarray, split: str) -> dict:
    a = original.reshape(len(original), -1) > DET_THRESHOLD
    b = candidate.reshape(len(candidate), -1) > DET_THRESHOLD
    inter, union = (a & b).sum(1), (a | b).sum(1)
    per_sample = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"iou": float(inter.sum() / max(union.sum(), 1)), "iou_mean": float(per_sample.mean())}


def _embed_scores(task: Task, original: np.ndarray, candidate: np.ndarray, split: str) -> dict:
    """Nearest-neighbour agreement: does each sentence keep its closest other sentence?"""
    return {"nn_agree": float((nearest_neighbours(original) == nearest_neighbours(candidate)).mean())}


_TASK_SCORES: dict[str, Callable] = {"cls": _cls_scores, "ctc": _ctc_scores, "det": _det_scores,
                                     "embed": _embed_scores}


def _rec_charset(model: Path) -> list[str]:
    from tools.ctc_labels import model_charset
    return model_charset(model)


#: name -> (how to get its folder, kind, metric, bar, loss)
MODELS = ("default", "ppocr_det_v4", "ppocr_rec_v4", "minilm_l6_v2", "ddddocr_common")


def make_task(name: str) -> Task:
    """The task of one benchmark model, fetching or exporting its files when missing."""
    if name == "default":
        return Task("default", "cls", ROOT / "models" / "ppocr_cls", "top1_agree", 0.99)
    if name == "minilm_l6_v2":
        folder = ROOT / ".cache" / "zoo" / "minilm_l6_v2"
        if not (folder / "model.onnx").exists():
            _export_minilm(folder)
        return Task(name, "embed", folder, "nn_agree", 0.98, loss="neighbour")
    from tools import fetch_zoo
    paths = fetch_zoo.ensure(name)
    if name == "ppocr_det_v4":
        return Task(name, "det", paths["dir"], "iou", 0.95)
    if name == "ppocr_rec_v4":
        return Task(name, "ctc", paths["dir"], "string_agree", 0.98, charset=_rec_charset(paths["model"]))
    if name == "ppocr_cls_v2":
        return Task(name, "cls", paths["dir"], "top1_agree", 0.99)
    if name == "ddddocr_common":
        charset = json.loads(paths["charset"].read_text(encoding="utf-8"))
        from tools.render_text import CAPTCHA_SHAPE
        return Task(name, "ctc", paths["dir"], "string_agree", 0.98, charset=charset,
                    steps_first=CAPTCHA_SHAPE[2] // 8)  # its CNN keeps a step per 8 columns
    raise SystemExit(f"unknown benchmark model {name!r}; known: {', '.join(MODELS + ('ppocr_cls_v2',))}")


def _export_minilm(folder: Path) -> None:
    import subprocess
    try:
        import torch  # noqa: F401
    except ImportError:
        raise RuntimeError("the MiniLM export needs torch: pip install -e .[export]") from None
    subprocess.run([sys.executable, str(ROOT / "tools" / "export_minilm.py"), "--out", str(folder)], check=True)
