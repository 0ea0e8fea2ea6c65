"""The grouped knapsack against brute force (itertools.product over every plan), both forms.

Costs are compared with the solver's own feasibility rule in mind: a plan may exceed
``max_cost`` by summation noise (``COST_RTOL`` of the cost scale), so the solver's optimum must
be at least as good as brute force under the exact budget and no better than brute force under
the budget plus that tolerance.
"""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

from onnxl2.knapsack import COST_RTOL, KnapsackResult, minimize_cost, minimize_size, prune_dominated


# ----------------------------------------------------------------------------- helpers

def _random_groups(rng: np.random.Generator, size_low: int = 1, size_high: int = 1000,
                   cost_sd: float = 1e-3) -> list[tuple[list[int], list[float]]]:
    groups = []
    for _ in range(int(rng.integers(2, 6))):
        n = int(rng.integers(1, 6))
        sizes = rng.integers(size_low, size_high + 1, n)
        costs = rng.normal(0.0, cost_sd, n) * (rng.random(n) > 0.25)  # some exact zeros
        groups.append((sizes.tolist(), costs.tolist()))
    return groups


def _all_plans(groups) -> tuple[np.ndarray, np.ndarray]:
    """Total size (exact ints) and total cost (fsum) of every plan."""
    sizes, costs = [], []
    for plan in itertools.product(*(range(len(s)) for s, _ in groups)):
        sizes.append(sum(int(groups[g][0][i]) for g, i in enumerate(plan)))
        costs.append(math.fsum(groups[g][1][i] for g, i in enumerate(plan)))
    return np.array(sizes, dtype=object), np.array(costs)


def _cost_tol(groups) -> float:
    return COST_RTOL * math.fsum(max(abs(c) for c in costs) for _, costs in groups)


def _check_totals(groups, result: KnapsackResult) -> None:
    assert len(result.choice) == len(groups)
    assert all(0 <= i < len(groups[g][0]) for g, i in enumerate(result.choice))
    assert result.total_size == sum(int(groups[g][0][i]) for g, i in enumerate(result.choice))
    assert result.total_cost == pytest.approx(
        math.fsum(groups[g][1][i] for g, i in enumerate(result.choice)), rel=1e-12, abs=1e-18)


def _budgets(rng, values: np.ndarray, lowest: float, highest: float) -> list[float]:
    """An exact plan total (the edge), a random value in range, the extremes, one below."""
    exact = values[int(rng.integers(len(values)))]
    return [exact, lowest + (highest - lowest) * rng.random(), lowest, highest,
            lowest - abs(lowest) * 0.5 - 1e-3]


# ----------------------------------------------------------------------------- brute force

@pytest.mark.parametrize("kind", ["small", "huge_sizes", "tiny_costs", "ties"])
def test_both_forms_match_brute_force(kind):
    rng = np.random.default_rng({"small": 1, "huge_sizes": 2, "tiny_costs": 3, "ties": 4}[kind])
    instances = {"small": 200, "huge_sizes": 50, "tiny_costs": 50, "ties": 50}[kind]
    for _ in range(instances):
        if kind == "small":
            groups = _random_groups(rng)
        elif kind == "huge_sizes":  # sizes ~1e8 bits each that differ by single bits
            groups = _random_groups(rng, 10**8, 10**8 + 50)
        elif kind == "tiny_costs":  # the magnitudes the sensitivity sweep produces
            groups = _random_groups(rng, 1, 10**7, cost_sd=1e-6)
        else:  # many equal sizes and costs
            groups = [(s, np.round(np.array(c) * 1e3).tolist()) for s, c in _random_groups(rng, 1, 4)]
        sizes, costs = _all_plans(groups)
        tol = _cost_tol(groups)
        for max_cost in _budgets(rng, costs, costs.min(), costs.max()):
            _check_minimize_size(groups, sizes, costs, max_cost, tol)
        for max_size in _budgets(rng, sizes, min(sizes), max(sizes)):
            _check_minimize_cost(groups, sizes, costs, int(max_size), tol)


def _check_minimize_size(groups, sizes, costs, max_cost, tol) -> None:
    result = minimize_size(groups, max_cost)
    _check_totals(groups, result)
    exact = costs <= max_cost
    loose = costs <= max_cost + tol
    if not loose.any():
        assert (result.success, result.status) == (False, "infeasible")
        assert "smallest achievable total cost" in result.message
        assert result.total_cost == pytest.approx(costs.min(), rel=1e-12, abs=1e-18)
        return
    assert result.success and result.status == "optimal", result.message
    assert result.total_cost <= max_cost + tol
    assert result.total_size >= min(sizes[loose])
    if exact.any():
        assert result.total_size <= min(sizes[exact])


def _check_minimize_cost(groups, sizes, costs, max_size, tol) -> None:
    result = minimize_cost(groups, max_size)
    _check_totals(groups, result)
    feasible = np.array([s <= max_size for s in sizes])
    if not feasible.any():
        assert (result.success, result.status) == (False, "infeasible")
        assert f"{min(sizes):,}" in result.message
        assert result.total_size == min(sizes)
        return
    assert result.success and result.status == "optimal", result.message
    assert result.total_size <= max_size
    scale = math.fsum(max(abs(c) for c in cs) for _, cs in groups)
    assert result.total_cost == pytest.approx(costs[feasible].min(), rel=1e-9, abs=1e-9 * scale)


# ----------------------------------------------------------------------------- pruning

def test_prune_dominated_matches_definition():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        sizes = rng.integers(0, 6, n)
        costs = rng.integers(-3, 4, n).astype(float)
        kept = set(prune_dominated(sizes, costs).tolist())
        for i in range(n):
            beaten = any((sizes[j] <= sizes[i] and costs[j] <= costs[i]
                          and (sizes[j] < sizes[i] or costs[j] < costs[i]
                               or j < i))  # an earlier exact duplicate also wins
                         for j in range(n) if j != i)
            assert (i in kept) == (not beaten), (sizes, costs, i)


def test_pruning_keeps_original_indices():
    # group 0: options 0, 2 and 4 are dominated (4 duplicates 1); the optimum needs option 3
    groups = [([900, 100, 150, 200, 100], [5.0, 3.0, 4.0, 1.0, 3.0]),
              ([50, 10, 10], [0.0, 2.0, 2.5])]
    assert prune_dominated(*groups[0]).tolist() == [1, 3]
    result = minimize_size(groups, 2.5)
    assert result.success
    assert result.choice == [3, 0]  # 200 + 50 bits at cost 1 + 0
    assert (result.total_size, result.total_cost) == (250, 1.0)
    assert result.options_kept == 4
    result = minimize_cost(groups, 150)
    assert result.choice == [1, 0] and result.total_cost == 3.0


# ----------------------------------------------------------------------------- infeasible

def test_infeasible_budgets_are_reported_not_raised():
    groups = [([10, 20], [0.5, 0.1]), ([5, 7, 9], [0.3, 0.2, -0.1])]
    result = minimize_cost(groups, 14)
    assert (result.success, result.status) == (False, "infeasible")
    assert "max_size=14" in result.message and "15" in result.message
    assert result.choice == [0, 0] and result.total_size == 15  # the closest plan
    result = minimize_size(groups, -0.01)
    assert (result.success, result.status) == (False, "infeasible")
    assert "smallest achievable total cost 0" in result.message
    assert result.choice == [1, 2]
    assert minimize_cost(groups, 15).success  # exactly at the smallest size
    assert minimize_size(groups, 0.0).success  # exactly at the smallest cost


def test_budget_that_does_not_bind():
    groups = [([10, 20], [0.5, 0.1]), ([5, 7], [0.3, 0.2])]
    assert minimize_size(groups, math.inf).choice == [0, 0]
    assert minimize_cost(groups, 10**12).choice == [1, 1]
    assert minimize_cost(groups, 10**12).gap == 0.0


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("groups, match", [
    ([], "empty"),
    ([([1], [0.0]), ([], [])], "group 1 has no options"),
    ([([1, 2], [0.0])], "2 sizes but 1 costs"),
    ([([1, 2], [0.0, float("nan")])], "NaN"),
    ([([1, 2], [0.0, float("inf")])], "finite"),
    ([([1, -2], [0.0, 1.0])], "negative"),
    ([([1, 2.5], [0.0, 1.0])], "integers"),
    ([([[1, 2]], [[0.0, 1.0]])], "1-D"),
    ([(1, 2, 3)], "pair"),
])
def test_bad_input_raises(groups, match):
    with pytest.raises(ValueError, match=match):
        minimize_size(groups, 1.0)
    with pytest.raises(ValueError, match=match):
        minimize_cost(groups, 10)


def test_bad_budget_raises():
    groups = [([1, 2], [0.0, 1.0])]
    with pytest.raises(ValueError, match="NaN"):
        minimize_size(groups, float("nan"))
    with pytest.raises(ValueError, match="integer"):
        minimize_cost(groups, 2.5)


def test_numpy_inputs_accepted():
    groups = [(np.array([10, 20], dtype=np.int32), np.array([0.5, 0.1], dtype=np.float32)),
              (np.array([5, 7]), np.array([0.3, 0.2]))]
    result = minimize_cost(groups, np.int64(25))
    assert result.success and result.choice == [1, 0]


# ----------------------------------------------------------------------------- scale

def _layered_instance(rng, n_groups: int = 200, n_options: int = 8):
    """Per layer: bit widths 2..9, size = params * bits, cost ~ params * 4**-bits, noisy."""
    groups = []
    for _ in range(n_groups):
        params = int(rng.integers(1_000, 600_000))
        bits = np.arange(2, 2 + n_options)
        sizes = params * bits + rng.integers(0, 64, n_options)
        costs = 1e-2 * 4.0 ** -(bits - 2) * rng.lognormal(0, 0.5, n_options)
        costs += rng.normal(0, 1e-6, n_options)  # noise: some estimates negative
        groups.append((sizes.tolist(), costs.tolist()))
    return groups


def test_large_instance_is_fast_and_consistent():
    rng = np.random.default_rng(11)
    groups = _layered_instance(rng)
    smallest = sum(min(s) for s, _ in groups)
    largest = sum(max(s) for s, _ in groups)
    max_size = (smallest + largest) // 2
    started = time.perf_counter()
    by_size = minimize_cost(groups, max_size)
    cost_budget = by_size.total_cost
    by_cost = minimize_size(groups, cost_budget)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0
    assert by_size.success and by_cost.success, (by_size.message, by_cost.message)
    _check_totals(groups, by_size)
    _check_totals(groups, by_cost)
    assert by_size.total_size <= max_size
    assert by_size.gap <= 1e-6 and by_cost.gap <= 1e-6
    # duality of the two forms: the least-cost plan under max_size is feasible for the
    # size form at its own cost, so the smallest plan there is no larger.
    assert by_cost.total_size <= by_size.total_size
    assert by_cost.total_cost <= cost_budget + _cost_tol(groups)
    assert by_cost.bound <= by_cost.total_size + 1
