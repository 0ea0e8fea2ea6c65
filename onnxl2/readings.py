"""A CTC reader's output as the strings it reads: the greedy reading, the steps whose decision
can change it, and the output laid out as [samples, steps, classes].

A reader's per-step arg-max is not what it shows: the string is, with repeats merged and blanks
dropped. A step where one character ends, between the blank and a repeat of a neighbour, reads
the same either way, and a third of a reader's steps are such (8.4 of the captcha reader's 24);
judging every step as a decision stops the automatic mode at ratios whose strings are all kept
(the benchmark page's "strings versus steps"). These functions tell the steps that matter from
those that do not.
"""
from __future__ import annotations

import numpy as np

#: CTC: the class that marks "no symbol" (PaddleOCR, ddddocr and most exports put it first).
CTC_BLANK = 0
_NONE = -1  # no class: before the first step, after the last
_EMPTY = -2  # no symbol emitted


def greedy_ctc(output: np.ndarray, blank: int = CTC_BLANK) -> list[tuple[int, ...]]:
    """Best path of [samples, steps, classes] scores: arg-max per step, repeats merged, blanks dropped."""
    return greedy_readings(output.argmax(axis=-1), blank)


def greedy_readings(best: np.ndarray, blank: int = CTC_BLANK) -> list[tuple[int, ...]]:
    """The strings of [samples, steps] arg-max classes: repeats merged, blanks dropped."""
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(row[mask].tolist()) for row, mask in zip(best, keep)]


def reading_steps(top: np.ndarray, runner_up: np.ndarray, blank: int = CTC_BLANK) -> np.ndarray:
    """Per step of [samples, steps] classes, whether the step's decision moving from ``top`` to
    ``runner_up`` (each step alone) changes the greedy reading.

    A step emits its class where that is no blank and differs from the step before; changing
    step t changes what steps t and t+1 emit and nothing else, so the reading is the same
    exactly when those two steps emit the same symbols, in order, either way."""
    samples = len(top)
    before = np.concatenate([np.full((samples, 1), _NONE), top[:, :-1]], axis=1)
    after = np.concatenate([top[:, 1:], np.full((samples, 1), _NONE)], axis=1)
    next_emits = (after != _NONE) & (after != blank)

    def emitted(here: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emits_here = (here != blank) & (here != before)
        emits_next = next_emits & (after != here)
        first = np.where(emits_here, here, np.where(emits_next, after, _EMPTY))
        return first, np.where(emits_here & emits_next, after, _EMPTY)

    (a, b), (c, d) = emitted(top), emitted(runner_up)
    return (a != c) | (b != d)


def by_sample(output: np.ndarray, samples: int, one_per_call: bool) -> np.ndarray | None:
    """A per-step output of ``samples`` samples as [samples, steps, classes], steps in time
    order: batch first ([samples, steps, classes]), time first with one sample a call (calls
    joined: [samples * steps, 1, classes]), or time first with every sample in one call
    ([steps, samples, classes]). None where the layout is none of these."""
    if output.ndim < 2 or not samples:
        return None
    classes = output.shape[-1]
    if output.shape[0] == samples:
        return output.reshape(samples, -1, classes)
    if one_per_call and output.shape[0] % samples == 0:
        return output.reshape(samples, -1, classes)
    if output.ndim == 3 and output.shape[1] == samples:
        return output.transpose(1, 0, 2)
    return None
