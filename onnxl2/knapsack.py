"""The grouped (multiple-choice) knapsack: exactly one option per layer.

"Compression for Better" (LLC) casts per-layer bit-width choice as this problem: each layer is a
group, each way of storing it an option with a size and a cost (its estimated loss effect). The
plan is the best one under that additive estimate only if the problem is solved exactly, so it
is a mixed-integer program (``scipy.optimize.milp``, HiGHS), after dropping options that another
option of the same group beats on both size and cost (which cannot change the optimum).

Both forms are here: the smallest plan whose summed cost stays within a bound, and the cheapest
plan whose summed size stays within a budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

Groups = Sequence[tuple[Sequence[int], Sequence[float]]]

#: Relative MIP gap asked of HiGHS: the result is optimal for every practical purpose.
MIP_REL_GAP = 1e-9


@dataclass
class KnapsackResult:
    """One option index per group (into the caller's lists), totals, and how the solve went."""

    choice: list[int]
    total_size: int
    total_cost: float
    status: str
    success: bool
    message: str
    gap: float
    seconds: float


def _check(groups: Groups) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(groups) == 0:
        raise ValueError("the knapsack needs at least one group")
    out = []
    for g, (sizes, costs) in enumerate(groups):
        sizes = np.asarray(sizes, dtype=np.int64)
        costs = np.asarray(costs, dtype=np.float64)
        if sizes.ndim != 1 or sizes.size == 0 or sizes.shape != costs.shape:
            raise ValueError(f"group {g}: sizes and costs must be non-empty 1-D sequences of one length")
        if (sizes < 0).any():
            raise ValueError(f"group {g}: sizes must be non-negative")
        if not np.isfinite(costs).all():
            raise ValueError(f"group {g}: costs must be finite")
        out.append((sizes, costs))
    return out


def pareto_options(sizes: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Indices of the options no other option beats on both size and cost (ties: first kept)."""
    order = np.lexsort((np.arange(sizes.size), costs, sizes))  # by size, then cost, then index
    keep, best_cost = [], np.inf
    for i in order:
        if costs[i] < best_cost:
            keep.append(i)
            best_cost = costs[i]
    return np.array(sorted(keep), dtype=np.int64)


def _solve(groups: Groups, objective: str, bound: float, time_limit: float) -> KnapsackResult:
    started = time.perf_counter()
    checked = _check(groups)
    kept = [pareto_options(s, c) for s, c in checked]
    sizes = np.concatenate([s[k] for (s, _), k in zip(checked, kept)]).astype(np.float64)
    costs = np.concatenate([c[k] for (_, c), k in zip(checked, kept)])
    owner = np.concatenate([np.full(k.size, g) for g, k in enumerate(kept)])
    min_size = float(sum(s.min() for s, _ in checked))
    min_cost = float(sum(c.min() for _, c in checked))
    if objective == "size" and bound < min_cost - 1e-12 * max(1.0, abs(min_cost)):
        return KnapsackResult([], 0, 0.0, "infeasible", False,
                              f"cost bound {bound:.6g} is below the least achievable {min_cost:.6g}",
                              0.0, time.perf_counter() - started)
    if objective == "cost" and bound < min_size:
        return KnapsackResult([], 0, 0.0, "infeasible", False,
                              f"size budget {bound:,.0f} is below the least achievable {min_size:,.0f}",
                              0.0, time.perf_counter() - started)
    size_scale = max(sizes.max(), 1.0)
    cost_scale = max(np.abs(costs).max(), 1e-300)
    one_hot = csr_array((np.ones(owner.size), (owner, np.arange(owner.size))),
                        shape=(len(kept), owner.size))
    if objective == "size":
        c, row, limit = sizes / size_scale, costs / cost_scale, bound / cost_scale
    else:
        c, row, limit = costs / cost_scale, sizes / size_scale, bound / size_scale
    constraints = [LinearConstraint(one_hot, 1, 1), LinearConstraint(row[None, :], -np.inf, limit)]
    res = milp(c, constraints=constraints, integrality=np.ones(owner.size), bounds=Bounds(0, 1),
               options={"mip_rel_gap": MIP_REL_GAP, "time_limit": time_limit, "presolve": True})
    seconds = time.perf_counter() - started
    if res.x is None:
        status = "infeasible" if res.status == 2 else "time_limit" if res.status == 1 else "failed"
        return KnapsackResult([], 0, 0.0, status, False, res.message, 0.0, seconds)
    picked = np.flatnonzero(res.x > 0.5)
    choice = [int(kept[g][np.flatnonzero(np.flatnonzero(owner == g) == p)[0]])
              for g, p in zip(owner[picked], picked)]
    order = np.argsort(owner[picked])
    choice = [choice[i] for i in order]
    total_size = int(sum(checked[g][0][i] for g, i in enumerate(choice)))
    total_cost = float(sum(checked[g][1][i] for g, i in enumerate(choice)))
    gap = float(getattr(res, "mip_gap", 0.0) or 0.0)
    return KnapsackResult(choice, total_size, total_cost, "optimal" if res.status == 0 else "time_limit",
                          True, res.message, gap, seconds)


def minimize_size(groups: Groups, max_cost: float, time_limit: float = 60.0) -> KnapsackResult:
    """Smallest total size with summed cost <= ``max_cost``; one option per group."""
    result = _solve(groups, "size", max_cost, time_limit)
    if result.success and result.total_cost > max_cost + 1e-9 * max(1.0, abs(max_cost)):
        return _tighten(groups, "size", max_cost, result, time_limit)
    return result


def minimize_cost(groups: Groups, max_size: float, time_limit: float = 60.0) -> KnapsackResult:
    """Least summed cost with total size <= ``max_size``; one option per group."""
    result = _solve(groups, "cost", max_size, time_limit)
    if result.success and result.total_size > max_size:
        return _tighten(groups, "cost", max_size, result, time_limit)
    return result


def _tighten(groups: Groups, objective: str, bound: float, result: KnapsackResult,
             time_limit: float) -> KnapsackResult:
    """The solver's tolerances let a solution exceed the bound by float noise: solve once more
    with the bound pulled in by that excess, and say so."""
    excess = (result.total_cost if objective == "size" else result.total_size) - bound
    retry = _solve(groups, objective, bound - 2 * excess, time_limit)
    retry.message += f" (bound tightened by {2 * excess:.3g} for solver tolerance)"
    return retry
