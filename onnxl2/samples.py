"""Which calibration samples do which job: fit, judge, or rank in the sweep.

The contract holds some samples back from every choice to judge the plans; the sweep may rank
candidates on a spread subset of the rest. Both splits follow from the sample count alone, so
the same data split the same way on every run and machine.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import OnnxL2Error

#: The contract's sweep spends about this many multiply-adds at most (layers measured x samples x
#: multiply-adds a sample): past it, it measures on fewer of the fit samples, evenly spread, and
#: never on fewer than MIN_SWEEP_SAMPLES. The decision is taken on the frontier, whose plans are
#: measured on every held-back sample; the sweep only ranks candidates. A rule on work, not on
#: seconds, so that the same data give the same plan on any machine.
SWEEP_MACS = 6e11
MIN_SWEEP_SAMPLES = 8


def holdout_split(count: int, share: float, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the samples that fit and of those held back to judge: the blocks of samples
    (``block``: a model's fixed batch) fall into consecutive strata of about 1 / ``share`` blocks
    and one block of each stratum, drawn with a seed fixed by ``count``, is held back. So the
    held-back samples are spread evenly over the data (calibration sets are often ordered by
    class or source), a periodic order cannot line them up with one class (every other sample
    held back took only two of a document classifier's four cycling orientations), the same
    data split the same way every run, and both parts hold whole batches."""
    blocks = np.arange(count // block)
    stratum = np.floor(blocks * share).astype(np.int64)
    draw = np.random.default_rng(count).random(blocks.size)
    order = np.lexsort((draw, stratum))  # by stratum, then by draw
    last = np.append(stratum[order][1:] != stratum[order][:-1], True)  # the largest draw of each stratum
    picked = np.zeros(blocks.size, dtype=bool)
    picked[order[last]] = True
    held = np.repeat(picked, block)
    if held.sum() < 2 or (~held).sum() < 2:
        raise OnnxL2Error(f"the contract holds back {share:g} of the calibration samples and needs at least "
                          f"2 on each side; {count} samples are too few (give more, or a --target-ratio)")
    index = np.arange(held.size)
    return index[~held], index[held]


def sweep_samples(count: int, macs_per_sample: float, layers: int, block: int = 1) -> np.ndarray:
    """Indices of the fit samples the contract's sweep measures on (see ``SWEEP_MACS``), in
    whole blocks of ``block`` (a model's fixed batch)."""
    if macs_per_sample <= 0 or layers == 0:
        return np.arange(count)
    wanted = int(SWEEP_MACS / (macs_per_sample * layers))
    if wanted >= count:
        return np.arange(count)
    blocks = count // block
    wanted_blocks = max(-(-MIN_SWEEP_SAMPLES // block), -(-wanted // block))
    picked = np.unique(np.linspace(0, blocks - 1, min(blocks, wanted_blocks)).round().astype(np.int64))
    return (picked[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def sample_subset(data: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The samples ``index`` of every input."""
    return {k: np.ascontiguousarray(v[index]) for k, v in data.items()}


def labelled_subset(data: Mapping[str, np.ndarray], labels: np.ndarray | None, index: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The samples ``index`` of the data and of their labels."""
    return sample_subset(data, index), (labels[index] if labels is not None else None)


def sample_count(data: Mapping[str, np.ndarray]) -> int:
    """Samples in a set of input arrays (all share their first axis)."""
    return len(next(iter(data.values())))
