"""Per-weight work spread over a few threads.

Why threads and not processes: threads share every weight and Hessian without copying them,
and start no interpreter that would re-import the caller's script. They overlap only what runs
with the GIL released (numpy's large array operations, the factorisations, constriction's rANS
passes). Small models stay on one thread: their work is shorter than the coordination.

While the threads run, the BLAS library gets the cores they leave it (one each when there are
as many threads as cores): each thread's matrix products would otherwise start a BLAS thread
per core, and the two kinds of threads then take turns on the same cores (MiniLM's candidates
on 2 cores: 130 s with BLAS threads per product, 94 s with one).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")

#: Below this many weight elements in all, everything runs on the calling thread.
MIN_PARALLEL_ELEMENTS = 1 << 20
MAX_WORKERS = 8


def worker_count(total_elements: int) -> int:
    """Threads for per-weight work on ``total_elements`` weight elements."""
    if total_elements < MIN_PARALLEL_ELEMENTS:
        return 1
    return max(1, min(MAX_WORKERS, available_cpus()))


def available_cpus() -> int:
    """CPUs this process may run on: its affinity where the platform tells it (a container or
    `taskset` often allows fewer than the machine has), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def map_by_size(fn: Callable[[T], R], items: Sequence[T], sizes: Sequence[int]) -> list[R]:
    """``[fn(item) for item in items]``, largest items started first on several threads when the
    total is large enough; results in the order of ``items``; the first exception is raised."""
    workers = worker_count(int(sum(sizes)))
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    order = sorted(range(len(items)), key=lambda i: -sizes[i])
    results: list = [None] * len(items)
    workers = min(workers, len(items))
    with threadpool_limits(limits=max(1, available_cpus() // workers), user_api="blas"), \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {i: pool.submit(fn, items[i]) for i in order}
        for i in order:
            results[i] = futures[i].result()
    return results
