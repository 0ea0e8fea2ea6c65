"""The grouped knapsack against brute force, both forms."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from onnxl2.knapsack import minimize_cost, minimize_size, pareto_options


def _random_instance(rng):
    groups = []
    for _ in range(rng.integers(1, 6)):
        n = rng.integers(1, 6)
        sizes = rng.integers(1, 1000, n)
        costs = np.round(rng.normal(0, 1e-3, n), 6) * (rng.random(n) > 0.2)
        groups.append((sizes.tolist(), costs.tolist()))
    return groups


def _all_plans(groups):
    for choice in itertools.product(*[range(len(s)) for s, _ in groups]):
        yield (choice, sum(groups[g][0][i] for g, i in enumerate(choice)),
               sum(groups[g][1][i] for g, i in enumerate(choice)))


@pytest.mark.parametrize("seed", range(120))
def test_both_forms_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    groups = _random_instance(rng)
    plans = list(_all_plans(groups))
    costs = sorted(c for _, _, c in plans)
    max_cost = costs[len(costs) // 2]
    feasible = [s for _, s, c in plans if c <= max_cost + 1e-12]
    result = minimize_size(groups, max_cost)
    assert result.success and result.total_size == min(feasible)
    assert result.total_cost <= max_cost + 1e-12
    sizes = sorted(s for _, s, _ in plans)
    budget = sizes[len(sizes) // 3]
    best = min(c for _, s, c in plans if s <= budget)
    result = minimize_cost(groups, budget)
    assert result.success and result.total_size <= budget
    assert result.total_cost == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert len(result.choice) == len(groups)


def test_infeasible_bounds_are_reported_not_raised():
    groups = [([10, 20], [0.5, 0.1]), ([5], [0.2])]
    result = minimize_cost(groups, 14)
    assert not result.success and result.status == "infeasible" and "15" in result.message
    result = minimize_size(groups, 0.1)
    assert not result.success and result.status == "infeasible"


def test_pruning_keeps_original_indices():
    sizes, costs = np.array([50, 10, 30, 10]), np.array([0.0, 0.5, 0.5, 0.4])
    assert pareto_options(sizes, costs).tolist() == [0, 3]
    result = minimize_size([(sizes, costs), ([7, 3], [0.0, 0.0])], 0.45)
    assert result.choice == [3, 1] and result.total_size == 13


@pytest.mark.parametrize("bad, message", [
    ([], "at least one group"),
    ([([1, 2], [0.1])], "one length"),
    ([([1, -2], [0.1, 0.2])], "non-negative"),
    ([([1, 2], [0.1, float("nan")])], "finite"),
])
def test_inputs_checked_up_front(bad, message):
    with pytest.raises(ValueError, match=message):
        minimize_size(bad, 1.0)


def test_large_instance_is_fast():
    rng = np.random.default_rng(0)
    groups = [(np.sort(rng.integers(100, 100_000, 8))[::-1].tolist(), np.sort(rng.random(8) * 1e-3).tolist())
              for _ in range(200)]
    start = time.perf_counter()
    result = minimize_cost(groups, sum(np.median(s) for s, _ in groups))
    assert result.success and time.perf_counter() - start < 10
