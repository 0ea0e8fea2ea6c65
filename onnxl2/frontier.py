"""The measured rate-fidelity frontier, and the smallest plan on it that meets the contract.

The knapsack's size form (least summed distortion within a payload budget) is solved at a ladder
of budgets, geometric from the smallest plan the candidates allow to the largest; each plan's
bitstream is sized for real and the plan is run on the held-back samples, where every criterion
of the contract is measured. :func:`contract.decide` fits each criterion monotonically against
size and picks the smallest plan meeting them all; the boundary between it and the next smaller
plan is then bisected a few times, each new plan measured and the decision taken again on all
points, until the chosen plan is within ``RESOLUTION`` of the failing one below it. Every
plan measured is kept, in size order, for the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .contract import Criterion, decide
from .knapsack import minimize_cost
from .sensitivity import Sensitivity

#: Budgets of the first ladder, and at most this many bisections of the boundary after it.
LADDER_POINTS = 7
REFINEMENTS = 8
#: Bisection stops once the chosen plan is within this share of the size of the failing plan
#: below it: closer than the ratios of runs on disjoint calibration subsets agree (3-5% on the
#: benchmark's models), each further plan would cost its held-back passes for nothing.
RESOLUTION = 0.02


@dataclass
class FrontierPoint:
    """One plan of the frontier: its payload budget, choice, real size and measured criteria."""

    budget: int
    choice: dict[str, int]
    bitstream_bytes: int
    summed_distortion: float
    criteria: list[Criterion]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def to_dict(self, original_bytes: int) -> dict:
        return {"bitstream_bytes": self.bitstream_bytes, "file_ratio": original_bytes / self.bitstream_bytes,
                "summed_distortion": self.summed_distortion, "passed": self.passed,
                "criteria": [c.to_dict() for c in self.criteria]}


@dataclass
class Frontier:
    """Every plan measured, smallest first, and which one was chosen (None: none met the contract)."""

    points: list[FrontierPoint] = field(default_factory=list)
    chosen: int | None = None
    status: str = "ok"
    message: str = ""

    def larger_ratio_neighbours(self, count: int = 2) -> list[FrontierPoint]:
        """The next smaller plans below the chosen one (they failed the contract, or nearly)."""
        if self.chosen is None:
            return []
        return self.points[max(0, self.chosen - count):self.chosen][::-1]

    def to_dict(self, original_bytes: int) -> dict:
        return {"status": self.status, "message": self.message, "chosen": self.chosen,
                "points": [p.to_dict(original_bytes) for p in self.points]}


def _ladder(low: int, high: int, count: int) -> list[int]:
    if high <= low:
        return [low]
    return sorted({int(round(b)) for b in np.geomspace(low, high, count)})


def search_frontier(table: dict[str, list[Sensitivity]], measure_size: Callable[[dict[str, int]], int],
                    judge_plan: Callable[[dict[str, int]], list[Criterion]],
                    progress: Callable[[Iterable], Iterable] | None = None,
                    ladder: int = LADDER_POINTS, refinements: int = REFINEMENTS) -> Frontier:
    """Measure plans along the frontier and choose the smallest that meets the contract."""
    groups = [([s.coded_bytes for s in rows], [s.cost for s in rows]) for rows in table.values()]
    keys = list(table)
    low = sum(min(sizes) for sizes, _ in groups)
    high = sum(max(sizes) for sizes, _ in groups)
    frontier = Frontier()
    seen: set[tuple[int, ...]] = set()

    def measure(budget: int) -> bool:
        """Solve, size and judge the plan of one budget; False when it is no new plan."""
        result = minimize_cost(groups, budget)
        choice = dict(zip(keys, (int(i) for i in result.choice))) if result.success else None
        if choice is None or tuple(choice.values()) in seen:  # another budget gave the same plan
            return False
        seen.add(tuple(choice.values()))
        frontier.points.append(FrontierPoint(budget, choice, measure_size(choice), float(result.total_cost),
                                             judge_plan(choice)))
        return True

    budgets = _ladder(low, high, ladder)
    for budget in (progress(budgets) if progress else budgets):
        measure(budget)
    for round_ in range(refinements + 1):
        frontier.points.sort(key=lambda p: (p.bitstream_bytes, p.budget))
        frontier.chosen = decide([p.bitstream_bytes for p in frontier.points], [p.criteria for p in frontier.points])
        if frontier.chosen is None or frontier.chosen == 0 or round_ == refinements:
            break
        failing, chosen = frontier.points[frontier.chosen - 1], frontier.points[frontier.chosen]
        if chosen.bitstream_bytes <= failing.bitstream_bytes * (1 + RESOLUTION):
            break
        below, above = failing.budget, chosen.budget
        middle = int(round(np.sqrt(float(below) * float(above))))
        if not below < middle < above or not measure(middle):
            break
    if frontier.chosen is None:
        frontier.status = "fallback"
        frontier.message = (f"none of the {len(frontier.points)} plans measured meets the contract, not even "
                            "the largest; every weight is kept in float32")
    elif frontier.chosen == 0:
        frontier.message = "the smallest plan the candidates allow meets the contract"
    else:
        frontier.message = (f"the smallest of {len(frontier.points)} measured plans that meets the contract "
                            "(monotone fit over all of them)")
    return frontier
