"""The measured rate-fidelity frontier, and the smallest plan on it that meets the contract.

The knapsack's size form (least summed distortion within a payload budget) is solved at a ladder
of budgets, geometric from the smallest plan the candidates allow to the largest; each plan's
bitstream is sized for real and the plan is run on the held-back samples, where every criterion
of the contract is measured. :func:`contract.decide` fits each criterion monotonically against
size and picks the smallest plan meeting them all; the boundary between it and the next smaller
plan is then bisected a few times, each new plan measured and the decision taken again on all
points. Every plan measured is kept, in size order, for the report.

The uniform plans (every weight at one bit-width, as ``--bits`` would round it) are measured
beside them as a second family with its own monotone fit, and the smaller of the two families'
choices wins: the knapsack ranks candidates by a proxy that can misjudge a model (a document
classifier's knapsack plans at 4.1-4.4x moved the output six times as far as every weight at
8 bits did at 4.6x), and the contract should never return a larger model than plain uniform
bits would have met it with.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .candidates import parse_label
from .contract import Criterion, decide
from .knapsack import minimize_cost
from .sensitivity import Sensitivity

#: Budgets of the first ladder, and bisections of the boundary after it.
LADDER_POINTS = 7
REFINEMENTS = 4


@dataclass
class FrontierPoint:
    """One plan of the frontier: its payload budget, choice, real size and measured criteria."""

    budget: int
    choice: dict[str, int]
    bitstream_bytes: int
    summed_distortion: float
    criteria: list[Criterion]
    family: str = "knapsack"  # or "uniform": every weight at one bit-width

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def to_dict(self, original_bytes: int) -> dict:
        return {"bitstream_bytes": self.bitstream_bytes, "file_ratio": original_bytes / self.bitstream_bytes,
                "summed_distortion": self.summed_distortion, "passed": self.passed, "family": self.family,
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


def uniform_choices(table: dict[str, list[Sensitivity]]) -> list[dict[str, int]]:
    """For every integer bit-width offered, the plan with each weight at it (plain rounding,
    no factors; a weight without that width takes its nearest wider choice)."""
    plain = {key: [i for i, s in enumerate(rows) if parse_label(s.label).rank is None
                   and parse_label(s.label).rate == 0] for key, rows in table.items()}
    widths = sorted({s.bits for rows in table.values() for s in rows if s.bits < 16})
    plans = []
    for bits in widths:
        choice = {}
        for key, rows in table.items():
            wider = [i for i in plain[key] if rows[i].bits >= bits] or plain[key] or list(range(len(rows)))
            choice[key] = min(wider, key=lambda i: (rows[i].bits, i))
        plans.append(choice)
    return plans


def _decide_by_family(frontier: "Frontier") -> int | None:
    """Each family's choice by its own monotone fit; the smaller plan of the two."""
    chosen = []
    for family in ("knapsack", "uniform"):
        index = [i for i, p in enumerate(frontier.points) if p.family == family]
        if not index:
            continue
        pick = decide([frontier.points[i].bitstream_bytes for i in index], [frontier.points[i].criteria for i in index])
        if pick is not None:
            chosen.append(index[pick])
    return min(chosen, key=lambda i: frontier.points[i].bitstream_bytes) if chosen else None


def _knapsack_neighbours(frontier: "Frontier") -> tuple[int, int] | None:
    """Budgets of the knapsack plan the knapsack family chose and of the next smaller one."""
    index = [i for i, p in enumerate(frontier.points) if p.family == "knapsack"]
    pick = decide([frontier.points[i].bitstream_bytes for i in index], [frontier.points[i].criteria for i in index])
    if pick is None or pick == 0:
        return None
    return frontier.points[index[pick - 1]].budget, frontier.points[index[pick]].budget


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

    def add(choice: dict[str, int], budget: int, family: str) -> bool:
        """Size and judge one plan; False when it was measured already."""
        if tuple(choice.values()) in seen:  # another budget gave the same plan
            return False
        seen.add(tuple(choice.values()))
        cost = sum(table[k][i].cost for k, i in choice.items())
        frontier.points.append(FrontierPoint(budget, choice, measure_size(choice), float(cost),
                                             judge_plan(choice), family))
        return True

    def measure(budget: int) -> bool:
        """Solve, size and judge the knapsack plan of one budget; False when it is no new plan."""
        result = minimize_cost(groups, budget)
        if not result.success:
            return False
        return add(dict(zip(keys, (int(i) for i in result.choice))), budget, "knapsack")

    budgets = _ladder(low, high, ladder)
    for budget in (progress(budgets) if progress else budgets):
        measure(budget)
    for choice in reversed(uniform_choices(table)):  # widest first, down to the first that fails
        if add(choice, sum(table[k][i].coded_bytes for k, i in choice.items()), "uniform") and \
                not all(c.met() for c in frontier.points[-1].criteria):
            break
    for round_ in range(refinements + 1):
        frontier.points.sort(key=lambda p: (p.bitstream_bytes, p.budget))
        frontier.chosen = _decide_by_family(frontier)
        neighbours = _knapsack_neighbours(frontier)
        if frontier.chosen is None or neighbours is None or round_ == refinements:
            break
        below, above = neighbours
        middle = int(round(np.sqrt(float(below) * float(above))))
        if not below < middle < above or not measure(middle):
            break
    if frontier.chosen is None:
        frontier.status = "fallback"
        frontier.message = (f"none of the {len(frontier.points)} plans measured meets the contract, not even "
                            "the largest; every weight is kept in float32")
    elif frontier.chosen == 0:
        frontier.message = "the smallest plan the candidates allow meets the contract"
    elif frontier.points[frontier.chosen].family == "uniform":
        frontier.message = (f"the smallest of {len(frontier.points)} measured plans that meets the contract: every "
                            "weight at one bit-width (no knapsack plan that meets it is smaller; monotone fit "
                            "over each family)")
    else:
        frontier.message = (f"the smallest of {len(frontier.points)} measured plans that meets the contract "
                            "(monotone fit over the knapsack's plans and over the uniform ones)")
    return frontier
