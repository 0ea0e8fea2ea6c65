"""Task metrics written as a user writes one for ``onnxl2 compress --metric FILE.py:FUNCTION``.

Each takes the original's and the compressed model's outputs (dicts of output name -> array, the
held-back calibration samples first) and returns a number where higher is better; the contract
then lets it fall by at most ``--max-drop`` from its value on the original. They are the
benchmark's task figures (``tools/bench_tasks.py``) in that form:

    onnxl2 compress .cache/zoo/minilm_l6_v2/model.onnx --data .cache/zoo/minilm_l6_v2/calib.npz \\
        --metric tools/metrics.py:neighbour_agreement --max-drop 0.02 -o out/
"""
from __future__ import annotations

import numpy as np

DET_THRESHOLD = 0.3  # PP-OCR's DB post-processing binarises the map at 0.3


def _first(outputs: dict) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())), dtype=np.float64)


def _nearest(rows: np.ndarray) -> np.ndarray:
    unit = rows.reshape(len(rows), -1)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-30)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    return scores.argmax(axis=1)


def neighbour_agreement(original: dict, compressed: dict) -> float:
    """Share of samples whose most similar other sample (cosine) is the same as the original's."""
    return float(np.mean(_nearest(_first(original)) == _nearest(_first(compressed))))


def map_iou(original: dict, compressed: dict) -> float:
    """Intersection over union of the binarised probability maps (a text detector's regions)."""
    a, b = _first(original) > DET_THRESHOLD, _first(compressed) > DET_THRESHOLD
    return float((a & b).sum() / max((a | b).sum(), 1))


def top1_agreement(original: dict, compressed: dict) -> float:
    """Share of samples whose arg-max class is the original's."""
    return float(np.mean(_first(original).argmax(-1) == _first(compressed).argmax(-1)))
