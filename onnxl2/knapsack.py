"""Exact grouped (multiple-choice) knapsack: one compression option per layer.

Why this exists. Following the LLC paper, the per-layer choice of bit width (more generally, of
compression candidate) is a grouped knapsack: each layer is a group, each candidate an option
with a size in bits and a cost, the estimated change of the loss; exactly one option is taken
per group. Inside the "lossless neighbourhood" the loss change of a whole plan is estimated as
the sum of the per-layer changes, so the best plan under that additive estimate is the optimum
of a small integer program. Solving it exactly (rather than greedily) means that when the
measured plan disappoints, the fault lies with the estimate and not with the search, which is
what the verify-and-tighten loop in :mod:`onnxl2.allocate` relies on.

Two forms of the same problem:

- :func:`minimize_size` - smallest total size whose summed cost is at most ``max_cost``
  (the neighbourhood form: the loss may rise by at most ``max_cost``);
- :func:`minimize_cost` - least summed cost whose total size is at most ``max_size``
  (the budget form).

Input format, for both: ``groups`` is a sequence of ``(sizes, costs)`` pairs, one per group, of
equally long 1-D sequences (lists or numpy arrays): ``sizes[i]`` a non-negative integer,
``costs[i]`` a finite float of any sign. The answer's ``choice[g]`` indexes group ``g``'s
options as given.

How. Options dominated within their group (another option is no larger and no costlier, and
strictly better in one) are dropped first: they can never be needed for an optimum, and dropping
them keeps the integer program small. Then ``scipy.optimize.milp`` (HiGHS) solves the binary
program - one equality per group, one budget inequality - with a tiny relative gap. Sizes are
large integers and costs tiny floats, so both are shifted by their per-group minimum and scaled
so the largest spread is ``_SPAN`` solver units before they reach HiGHS. The answer is checked
against the unscaled inputs (sizes exactly, costs up to summation noise, see :data:`COST_RTOL`):
a plan that the solver's tolerance let over the budget is cut off and the problem solved again
(the budget is tightened only if that repeats), and a final exact single-swap pass catches a
solver optimum that tolerances left a few bits short. Exact on all practical instances; with
per-group size spreads near 1e9 bits and a budget within ~1e-8 of a plan HiGHS can still, rarely,
miss the optimum by a sliver.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

#: ``groups`` argument of the solvers: one ``(sizes, costs)`` pair per group.
Groups = Sequence[tuple[Sequence[int], Sequence[float]]]

#: A plan's summed cost may exceed ``max_cost`` by this fraction of ``sum_g max_i |cost|``:
#: far above the rounding noise of adding the costs up, far below any cost worth telling apart.
COST_RTOL = 1e-12
#: Plans over the real budget (let through by the solver's tolerances) cut off one by one
#: before the budget row is tightened instead; then how many tightening rounds at most.
MAX_CUTS = 8
MAX_TIGHTEN = 4
#: First tightening below the offending plan, relative to the budget row's right-hand side
#: (HiGHS's tolerances act relative to it); ten times more each further round.
_TIGHTEN_RTOL = 1e-9
#: The largest per-group spread of sizes and of costs becomes this many solver units. Order one
#: (the textbook choice) puts a bit of a 1e9-bit spread at 1e-9, inside HiGHS's optimality and
#: feasibility tolerances, and HiGHS then returns plans some bits off the optimum; at 1e6 one
#: bit stays a thousandth of a unit while coefficients remain in a range HiGHS scales well.
_SPAN = 1e6
#: Absolute gap for the cost objective as a fraction of the largest cost spread (passed to
#: HiGHS verbatim): far below any difference between cost estimates.
_COST_ABS_GAP = 1e-10
_SCIPY_STATUS = {0: "optimal", 1: "limit", 2: "infeasible", 3: "unbounded", 4: "error"}


@dataclass
class KnapsackResult:
    """The answer, modelled on ``scipy.optimize.OptimizeResult``.

    ``choice[g]`` indexes group ``g``'s options as given (not the pruned list). ``gap`` is the
    relative optimality gap milp reached on the objective it solved (shifted so each group's
    cheapest option counts zero and scaled, hence never smaller than the gap on the raw
    objective of :func:`minimize_size`); 0 when the optimum needed no solver. ``bound`` is the
    solver's lower bound on the optimal objective in the caller's units. When ``success`` is
    False and ``status`` is ``"infeasible"``, ``choice`` is the plan closest to the budget
    (smallest size or smallest cost) so that a caller has something to fall back on.
    """

    choice: list[int]
    total_size: int
    total_cost: float
    status: str
    success: bool
    message: str
    gap: float = 0.0
    seconds: float = 0.0
    bound: float = float("nan")
    options_kept: int = 0


@dataclass
class _Problem:
    """Validated, pruned options of all groups, concatenated group after group.

    Within a group the kept options are sorted by size ascending, hence cost strictly
    descending: the first is the group's smallest option, the last its cheapest.
    """

    size: np.ndarray  # int64, kept options
    cost: np.ndarray  # float64, kept options
    original: np.ndarray  # index of each kept option in its group's input list
    group: np.ndarray  # group of each kept option
    starts: np.ndarray  # first kept option of each group
    ends: np.ndarray  # one past the last kept option of each group
    cost_tol: float = field(default=0.0)

    @property
    def n_groups(self) -> int:
        return len(self.starts)


# ---------------------------------------------------------------------------------------------
# Public API


def minimize_size(groups: Groups, max_cost: float, *, time_limit: float = 60.0,
                  mip_rel_gap: float = 1e-9) -> KnapsackResult:
    """Smallest total size over one option per group whose summed cost is at most ``max_cost``.

    ``time_limit`` (seconds) bounds the solver; ``mip_rel_gap`` is the relative gap at which it
    may stop (sizes are integers, so an absolute gap under one bit also proves optimality).
    Raises ``ValueError`` for malformed input; an unreachable ``max_cost`` is not an error but a
    result with ``status="infeasible"``.
    """
    max_cost = _check_budget(max_cost, "max_cost", integral=False)
    problem = _prepare(groups)
    return _solve(problem, "size", max_cost, time_limit, mip_rel_gap)


def minimize_cost(groups: Groups, max_size: int, *, time_limit: float = 60.0,
                  mip_rel_gap: float = 1e-9) -> KnapsackResult:
    """Least summed cost over one option per group whose total size is at most ``max_size``.

    Arguments and errors as for :func:`minimize_size`; an unreachable ``max_size`` gives a
    result with ``status="infeasible"``.
    """
    max_size = _check_budget(max_size, "max_size", integral=True)
    problem = _prepare(groups)
    return _solve(problem, "cost", max_size, time_limit, mip_rel_gap)


def prune_dominated(sizes: Sequence[int], costs: Sequence[float]) -> np.ndarray:
    """Indices of the options no other option dominates, sorted by size ascending.

    An option is dominated when another is no larger and no costlier, and strictly better in
    one; of exact duplicates the first is kept. No optimum of either form needs a dominated
    option (swapping it for its dominator keeps the plan feasible and no worse), so dropping
    them changes nothing but the size of the integer program.
    """
    sizes = np.asarray(sizes)
    costs = np.asarray(costs, dtype=np.float64)
    order = np.lexsort((np.arange(len(sizes)), costs, sizes))  # size, then cost, then index
    sorted_costs = costs[order]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], sorted_costs[:-1])))
    return order[sorted_costs < best_before]


# ---------------------------------------------------------------------------------------------
# Input checks and preparation


def _check_budget(value: float, name: str, *, integral: bool) -> float | int:
    """The budget as a Python number; NaN, or a fractional size, is a caller's mistake."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{name} is NaN")
    if not integral:
        return number
    if math.isinf(number):
        return math.inf if number > 0 else -math.inf
    if number != math.floor(number):
        raise ValueError(f"{name} must be an integer number of bits, got {value!r}")
    return int(value) if isinstance(value, (int, np.integer)) else int(number)


def _check_group(index: int, pair: object) -> tuple[np.ndarray, np.ndarray]:
    """One group's options as (int64 sizes, float64 costs), or ValueError saying what's wrong."""
    try:
        sizes_in, costs_in = pair  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"group {index} must be a (sizes, costs) pair") from None
    sizes_f = np.asarray(sizes_in, dtype=np.float64) if len(sizes_in) else np.zeros(0)
    costs = np.asarray(costs_in, dtype=np.float64) if len(costs_in) else np.zeros(0)
    if sizes_f.ndim != 1 or costs.ndim != 1:
        raise ValueError(f"group {index}: sizes and costs must be 1-D sequences")
    if len(sizes_f) != len(costs):
        raise ValueError(f"group {index}: {len(sizes_f)} sizes but {len(costs)} costs")
    if len(sizes_f) == 0:
        raise ValueError(f"group {index} has no options")
    if np.isnan(costs).any():
        raise ValueError(f"group {index}: cost of option {int(np.flatnonzero(np.isnan(costs))[0])} is NaN")
    if not np.isfinite(costs).all():
        raise ValueError(f"group {index}: costs must be finite")
    if not np.isfinite(sizes_f).all() or (sizes_f != np.floor(sizes_f)).any():
        raise ValueError(f"group {index}: sizes must be integers")
    if (sizes_f < 0).any():
        raise ValueError(f"group {index}: size of option {int(np.flatnonzero(sizes_f < 0)[0])} "
                         "is negative")
    sizes = np.asarray(sizes_in, dtype=np.int64)
    return sizes, costs


def _prepare(groups: Groups) -> _Problem:
    """Check every group, prune dominated options and lay the rest out flat for the solver."""
    if groups is None or len(groups) == 0:
        raise ValueError("groups is empty: need at least one (sizes, costs) group")
    checked = [_check_group(g, pair) for g, pair in enumerate(groups)]
    kept = [prune_dominated(sizes, costs) for sizes, costs in checked]
    counts = np.array([len(k) for k in kept])
    ends = np.cumsum(counts)
    cost_scale = math.fsum(float(np.abs(costs).max()) for _, costs in checked)
    return _Problem(
        size=np.concatenate([s[k] for (s, _), k in zip(checked, kept)]),
        cost=np.concatenate([c[k] for (_, c), k in zip(checked, kept)]),
        original=np.concatenate(kept),
        group=np.repeat(np.arange(len(kept)), counts),
        starts=ends - counts,
        ends=ends,
        cost_tol=COST_RTOL * cost_scale,
    )


# ---------------------------------------------------------------------------------------------
# Solving


def _solve(problem: _Problem, objective: str, budget: float, time_limit: float,
           rel_gap: float) -> KnapsackResult:
    """Either form: trivial answers first, then milp with feasibility fix-ups."""
    start = time.perf_counter()
    # Each group's option with least of the constrained quantity, and with least objective.
    closest = problem.ends - 1 if objective == "size" else problem.starts
    greedy = problem.starts if objective == "size" else problem.ends - 1
    if not _fits(problem, closest, objective, budget):
        return _infeasible(problem, closest, objective, budget, start)
    if _fits(problem, greedy, objective, budget):
        return _result(problem, greedy, "optimal", "the budget does not bind: every group "
                       "takes its best option", 0.0, _objective(problem, greedy, objective), start)
    return _solve_milp(problem, objective, budget, closest, time_limit, rel_gap, start)


def _solve_milp(problem: _Problem, objective: str, budget: float, closest: np.ndarray,
                time_limit: float, rel_gap: float, start: float) -> KnapsackResult:
    """Solve the scaled program; while its answer breaks the real budget, cut that plan off.

    HiGHS accepts rows violated by up to its feasibility tolerance, which in scaled units can be
    worth many bits. A plan that breaks the unscaled budget is excluded by a no-good cut (its
    options may not all be taken together) - exact, as it removes no other plan. After
    ``MAX_CUTS`` such plans the budget row is tightened instead, to end the loop for sure.
    """
    obj, obj_scale, obj_offset = _scaled(problem, "size" if objective == "size" else "cost")
    con, con_scale, con_offset = _scaled(problem, "cost" if objective == "size" else "size")
    slack = 0.5 if objective == "cost" else problem.cost_tol  # integral sizes: half a bit free
    rhs = (budget - con_offset + slack) / con_scale
    abs_gap = 0.5 / obj_scale if objective == "size" else _COST_ABS_GAP * _SPAN
    cuts: list[np.ndarray] = []
    tightened = 0.0
    for attempt in range(MAX_CUTS + MAX_TIGHTEN):
        remaining = time_limit - (time.perf_counter() - start)
        res = _milp(problem, obj, con, rhs, cuts, max(remaining, 1e-3), rel_gap, abs_gap)
        status = _status(res)
        notes = _notes(len(cuts), tightened * con_scale, objective)
        if res.x is None:
            if status == "infeasible":  # only after fix-ups: the closest plan fits (checked)
                return _approximate(problem, closest, objective, start,
                                    "milp found the tightened problem infeasible", notes)
            return _result(problem, closest, status, f"milp found no plan ({res.message})",
                           math.inf, math.nan, start, success=False)
        picks = _picks(problem, res.x)
        if _fits(problem, picks, objective, budget):
            picks, swaps = _polish(problem, picks, objective, budget)
            if swaps:
                notes.append(f"{swaps} single-option swap(s) improved the solver's plan")
            return _result(problem, picks, status, "; ".join([str(res.message), *notes]),
                           _gap(res, status), _bound(res, obj_scale, obj_offset), start,
                           success=status == "optimal")
        if len(cuts) < MAX_CUTS:
            cuts.append(picks)
        else:
            step = _TIGHTEN_RTOL * 10.0 ** (attempt - MAX_CUTS) * max(1.0, abs(rhs))
            new_rhs = min(rhs, float(con[picks].sum())) - step
            tightened += rhs - new_rhs
            rhs = new_rhs
    return _approximate(problem, closest, objective, start,
                        "milp kept returning plans over the budget", notes)


def _polish(problem: _Problem, picks: np.ndarray, objective: str,
            budget: float) -> tuple[np.ndarray, int]:
    """Take the best single-group swap that keeps the unscaled budget, while one improves.

    A proven optimum admits none; when the budget lies within the solver's relative tolerance
    of a plan (spreads near 1e9 bits) HiGHS can stop a few bits or a sliver of cost short, and
    this exact check catches the common case of that. Vectorised over all options per pass.
    """
    picks = picks.copy()
    for swaps in range(problem.n_groups + 1):
        current = picks[problem.group]
        if objective == "size":
            gain = (problem.size[current] - problem.size).astype(np.float64)
            room = problem.cost_tol + budget - math.fsum(problem.cost[picks].tolist())
            fits = problem.cost - problem.cost[current] <= room
        else:
            gain = problem.cost[current] - problem.cost
            room = budget - int(problem.size[picks].sum())
            fits = problem.size - problem.size[current] <= room
        gain = np.where(fits, gain, 0.0)
        best = int(np.argmax(gain))
        if gain[best] <= (0.0 if objective == "size" else problem.cost_tol):
            return picks, swaps
        picks[problem.group[best]] = best
    return picks, problem.n_groups


def _notes(cuts: int, tightened: float, objective: str) -> list[str]:
    """What the feasibility fix-ups did, for the result's message."""
    notes = []
    if cuts:
        notes.append(f"{cuts} plan(s) over the budget by solver tolerance cut off")
    if tightened:
        unit = "bits" if objective == "cost" else "in cost"
        notes.append(f"budget tightened by {tightened:.3g} {unit} for solver tolerance "
                     "(the optimum may be missed by that much)")
    return notes


def _scaled(problem: _Problem, quantity: str) -> tuple[np.ndarray, float, float]:
    """Per-group-min-shifted values divided by their largest spread, the scale and the offset.

    Shifting makes every group's best option count zero, so the budget row and objective start
    at zero and scale to order one whatever the raw magnitudes (bits ~1e9, costs ~1e-6).
    """
    if quantity == "size":
        mins = problem.size[problem.starts]
        shifted = (problem.size - mins[problem.group]).astype(np.float64)
        offset = float(int(mins.sum()))
    else:
        mins = problem.cost[problem.ends - 1]
        shifted = problem.cost - mins[problem.group]
        offset = math.fsum(mins.tolist())
    scale = (float(shifted.max()) or 1.0) / _SPAN
    return shifted / scale, scale, offset


def _milp(problem: _Problem, obj: np.ndarray, con: np.ndarray, rhs: float,
          cuts: Sequence[np.ndarray], time_limit: float, rel_gap: float, abs_gap: float):
    """One binary program: exactly one option per group, the budget row, no-good cuts."""
    from scipy import sparse  # scipy.optimize costs a third of a second: import it when solving
    from scipy.optimize import LinearConstraint, milp

    n, g = len(obj), problem.n_groups
    one_each = sparse.csr_array((np.ones(n), (problem.group, np.arange(n))), shape=(g, n))
    cut_rows = [sparse.csr_array((np.ones(g), (np.zeros(g, dtype=np.int64), picks)), shape=(1, n))
                for picks in cuts]
    rows = sparse.vstack([one_each, sparse.csr_array(con.reshape(1, -1)), *cut_rows], format="csr")
    lower = np.concatenate((np.ones(g), np.full(1 + len(cuts), -np.inf)))
    upper = np.concatenate((np.ones(g), [rhs], np.full(len(cuts), g - 1.0)))
    options = {"time_limit": time_limit, "mip_rel_gap": rel_gap, "disp": False,
               # passed verbatim to HiGHS by scipy (its warning says so); not its feasibility
               # tolerances: tightening those makes HiGHS's presolve return wrong optima
               "mip_abs_gap": abs_gap}
    with warnings.catch_warnings(), _solver_output_silenced():
        warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
        return milp(obj, constraints=LinearConstraint(rows, lower, upper),
                    integrality=np.ones(n), bounds=(0, 1), options=options)


@contextlib.contextmanager
def _solver_output_silenced():
    """HiGHS writes debugging lines straight to file descriptor 1 even with disp=False; keep
    them out of the user's output (and out of piped JSON)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout (some embedded interpreters): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _status(res) -> str:
    """scipy's integer status as a word; status 1 says which limit from the message."""
    status = _SCIPY_STATUS.get(res.status, "error")
    if status == "limit" and "time" in str(res.message).lower():
        return "time_limit"
    return status


def _picks(problem: _Problem, x: np.ndarray) -> np.ndarray:
    """Position of the chosen option of each group in the flat arrays (largest x wins)."""
    chosen = np.flatnonzero(x > 0.5)
    if len(chosen) == problem.n_groups and (problem.group[chosen] == np.arange(problem.n_groups)).all():
        return chosen
    return np.array([s + int(np.argmax(x[s:e])) for s, e in zip(problem.starts, problem.ends)])


def _gap(res, status: str) -> float:
    """milp's reported relative gap; 0 for a proven optimum that reports none."""
    gap = getattr(res, "mip_gap", None)
    if gap is not None and math.isfinite(gap):
        return float(gap)
    return 0.0 if status == "optimal" else math.inf


def _bound(res, scale: float, offset: float) -> float:
    """The solver's dual bound in the caller's units."""
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not math.isfinite(dual):
        return math.nan
    return float(dual) * scale + offset


# ---------------------------------------------------------------------------------------------
# Plans


def _fits(problem: _Problem, picks: np.ndarray, objective: str, budget: float) -> bool:
    """Whether a plan keeps the unscaled budget: sizes exactly, costs up to summation noise."""
    if objective == "size":
        return math.fsum(problem.cost[picks].tolist()) <= budget + problem.cost_tol
    return int(problem.size[picks].sum()) <= budget


def _objective(problem: _Problem, picks: np.ndarray, objective: str) -> float:
    if objective == "size":
        return float(int(problem.size[picks].sum()))
    return math.fsum(problem.cost[picks].tolist())


def _approximate(problem: _Problem, closest: np.ndarray, objective: str, start: float,
                 why: str, notes: Sequence[str]) -> KnapsackResult:
    """Fix-ups ran out: fall back on the plan closest to the budget, which is known to fit."""
    best = "smallest" if objective == "cost" else "least costly"
    return _result(problem, closest, "approximate", "; ".join(
        [f"{why}; returning the {best} plan, which fits but is not optimal", *notes]),
        math.inf, math.nan, start, success=False)


def _infeasible(problem: _Problem, closest: np.ndarray, objective: str, budget: float,
                start: float, notes: Sequence[str] = ()) -> KnapsackResult:
    """No plan keeps the budget: say how close one can get, and return that plan."""
    if objective == "size":
        smallest = math.fsum(problem.cost[closest].tolist())
        message = (f"max_cost={budget:.6g} is below the smallest achievable total cost "
                   f"{smallest:.6g}")
    else:
        smallest = int(problem.size[closest].sum())
        message = f"max_size={budget:,} is below the smallest achievable total size {smallest:,}"
    message += "".join(f"; {n}" for n in notes)
    return _result(problem, closest, "infeasible", message, math.inf, math.nan, start,
                   success=False)


def _result(problem: _Problem, picks: np.ndarray, status: str, message: str, gap: float,
            bound: float, start: float, *, success: bool | None = None) -> KnapsackResult:
    return KnapsackResult(
        choice=[int(i) for i in problem.original[picks]],
        total_size=int(problem.size[picks].sum()),
        total_cost=math.fsum(problem.cost[picks].tolist()),
        status=status,
        success=(status == "optimal") if success is None else success,
        message=message,
        gap=gap,
        seconds=time.perf_counter() - start,
        bound=bound,
        options_kept=len(problem.size),
    )
