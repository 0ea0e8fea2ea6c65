"""The two budget forms of the automatic mode (bytes, loss): the grouped knapsack, then verify
by running the model.

Two forms of one problem. In the *neighbourhood* form the plan is the smallest whose summed
loss change stays within ``max_loss`` (0: the loss may not rise). In the *size* form the plan
has the smallest summed loss change whose bitstream fits ``max_bytes``. The knapsack is solved
exactly under the additive estimate; the plan is then measured for real (the loss change of all
layers at once; the bitstream's true size), and if it leaves the neighbourhood or the budget the
bound is tightened by what was missed and the problem solved again, a bounded number of rounds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .errors import OnnxL2Error
from .knapsack import minimize_cost, minimize_size
from .sensitivity import NOISE_SIGMAS, Measurement, Sensitivity

MAX_ROUNDS = 10
#: After a rejection that the noise could explain, the next bound is at most this factor lower.
CAUTIOUS_STEP = 4.0
#: The size form accepts a plan that lands within this fraction below the budget.
SIZE_TOLERANCE = 0.02


@dataclass
class Round:
    """One solve-and-measure round, for the report."""

    index: int
    bound: float
    predicted_loss_change: float
    measured_loss_change: float | None
    measured_se: float | None
    bitstream_bytes: int | None
    optimality_gap: float
    accepted: bool
    note: str = ""


@dataclass
class Allocation:
    """The chosen candidate per weight and how it was reached."""

    choice: dict[str, int]
    rounds: list[Round] = field(default_factory=list)
    status: str = "ok"
    message: str = ""
    final: Measurement | None = None  # the chosen plan's loss change, measured on calibration data

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message,
                "rounds": [asdict(r) for r in self.rounds]}


def _groups(options: dict[str, list[Sensitivity]]) -> list[tuple[list[int], list[float]]]:
    return [([s.coded_bytes for s in rows], [s.cost for s in rows]) for rows in options.values()]


def _choice(options: dict[str, list[Sensitivity]], picks: list[int]) -> dict[str, int]:
    return dict(zip(options, picks))


def allocate_neighbourhood(options: dict[str, list[Sensitivity]], max_loss: float,
                           measure_loss: Callable[[dict[str, int]], Measurement],
                           noise_sigmas: float = 0.0) -> Allocation:
    """Smallest plan whose loss change, measured with all layers at once, is at most ``max_loss``.

    The knapsack bounds the summed distortion; the bound is searched (bisection in log scale,
    from the most aggressive plan down) for the largest one whose plan passes the measured
    check, keeping the smallest plan that passed. A plan that fails by less than the noise of its
    measurement says the boundary is near: the next bound is then at most ``CAUTIOUS_STEP``
    lower, where plain bisection from the most aggressive plan would drop it by decades on one
    unlucky draw. Every round is reported. With ``noise_sigmas`` a plan passes while its change
    is not measurably above the bound (mean - k se <= bound).
    """
    groups = _groups(options)
    allocation = Allocation({})
    highest = float(sum(max(costs) for _, costs in groups))
    positive = [c for _, costs in groups for c in costs if c > 0]
    lowest = min(positive) if positive else 0.0
    best: tuple[dict[str, int], int] | None = None
    if highest > 0:
        lo, hi = np.log(max(lowest, highest * 1e-9)), np.log(highest)
        bound = highest
        for index in range(MAX_ROUNDS):
            result = minimize_size(groups, bound)
            choice = _choice(options, list(result.choice))
            measured = measure_loss(choice)
            ok = result.success and measured.mean <= max_loss + noise_sigmas * measured.se
            allocation.rounds.append(Round(index, bound, result.total_cost, measured.mean, measured.se,
                                           None, result.gap, ok,
                                           "within noise of zero" if measured.within_noise else ""))
            if ok:
                if best is None or result.total_size < best[1]:
                    best = (choice, result.total_size)
                lo = np.log(bound)
                if index == 0:
                    break
                step = (lo + hi) / 2
            else:
                hi = np.log(bound)
                step = (lo + hi) / 2
                if measured.mean - NOISE_SIGMAS * measured.se <= max_loss:
                    # not measurably outside: the boundary is near, not decades below
                    step = max(step, hi - np.log(CAUTIOUS_STEP))
            bound = float(np.exp(step))
    if best is None:
        result = minimize_size(groups, 0.0)  # only candidates with no measurable distortion
        best = (_choice(options, list(result.choice)), result.total_size)
        allocation.status = "fallback"
        allocation.message = (f"no plan passed the loss check in {len(allocation.rounds)} rounds; "
                              "kept only candidates without measurable distortion")
    allocation.choice = best[0]
    return allocation


def allocate_size(options: dict[str, list[Sensitivity]], max_bytes: int, fixed_bytes: int,
                  measure_size: Callable[[dict[str, int]], int]) -> Allocation:
    """Least loss change whose bitstream is at most ``max_bytes`` (and within 2% below it)."""
    smallest = sum(min(s.coded_bytes for s in rows) for rows in options.values())
    if smallest + fixed_bytes > max_bytes:
        raise OnnxL2Error(
            f"the size budget of {max_bytes:,} bytes is out of reach: with every weight at its "
            f"smallest candidate the bitstream needs about {smallest + fixed_bytes:,} bytes")
    groups = _groups(options)
    payload = max_bytes - fixed_bytes
    largest = sum(max(s.coded_bytes for s in rows) for rows in options.values())
    allocation = Allocation({})
    best = None
    fits, too_big = None, None  # payload bounds known to fit / to overflow the real bitstream
    overshoots = 0
    for index in range(MAX_ROUNDS):
        result = minimize_cost(groups, payload)
        if not result.success:
            allocation.rounds.append(Round(index, payload, float("nan"), None, None, None, 0.0, False,
                                           result.message))
            payload = max(int(payload * 1.01) + 1, smallest)  # below the least achievable payload: grow
            continue
        choice = _choice(options, list(result.choice))
        real = measure_size(choice)
        under_budget = real <= max_bytes
        ok = under_budget and (real >= (1 - SIZE_TOLERANCE) * max_bytes or result.total_size >= largest)
        allocation.rounds.append(Round(index, payload, result.total_cost, None, None, real, result.gap,
                                       ok, "" if ok else f"bitstream {real:,} B against {max_bytes:,} B"))
        if under_budget and (best is None or real > best[1]):
            best = (choice, real)
        if ok:
            break
        if under_budget:
            fits = payload if fits is None else max(fits, payload)
        else:
            too_big = payload if too_big is None else min(too_big, payload)
        if fits is not None and too_big is not None:
            if too_big - fits <= 1:
                break
            payload = (fits + too_big) // 2
        elif under_budget:
            payload += max_bytes - real
        else:  # over: step down by the overshoot plus a margin that doubles while plans stay too big
            overshoots += 1
            payload -= real - max_bytes + int(SIZE_TOLERANCE / 8 * max_bytes * 2 ** overshoots)
    if best is None:
        raise OnnxL2Error(f"could not fit the bitstream under {max_bytes:,} bytes "
                          f"in {MAX_ROUNDS} rounds")
    allocation.choice = best[0]
    if not allocation.rounds[-1].accepted:
        allocation.status = "approximate"
        allocation.message = f"closest plan under the budget: {best[1]:,} bytes"
    return allocation
