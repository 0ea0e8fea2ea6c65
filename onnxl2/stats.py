"""The one statistic every decision here rests on: a mean over samples and its standard error."""
from __future__ import annotations

import numpy as np


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean of per-sample values (float64) and its standard error; 0 for a single sample."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se
