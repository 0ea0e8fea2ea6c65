"""Candidates made on several threads are the candidates made on one."""
from __future__ import annotations

import pytest

import genmodels
from onnxl2 import compress, workers


def test_threaded_candidates_give_the_same_bitstream(monkeypatch):
    calib = genmodels.mixed_inputs(32, seed=9)
    options = dict(quiet=True, devices=("cpu",), taylor=False, max_loss_increase="5%")
    serial = compress(genmodels.mixed_model(), calib, **options)
    calls = []
    real = workers.ThreadPoolExecutor

    def counting(*args, **kwargs):
        calls.append(kwargs.get("max_workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(workers, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(workers, "available_cpus", lambda: 3)
    monkeypatch.setattr(workers, "ThreadPoolExecutor", counting)
    threaded = compress(genmodels.mixed_model(), calib, **options)
    assert calls and calls[0] >= 2
    assert threaded.bitstream == serial.bitstream
    assert threaded.report["plan"] == serial.report["plan"]


def test_the_first_error_of_a_worker_is_raised(monkeypatch):
    monkeypatch.setattr(workers, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(workers, "available_cpus", lambda: 3)  # threads even on a one-core runner

    def fail_on_two(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        workers.map_by_size(fail_on_two, [1, 2, 3], [1, 1, 1])
    assert workers.map_by_size(lambda x: x * 10, [1, 2, 3], [1, 5, 2]) == [10, 20, 30]


def test_threads_follow_the_cpus_the_process_may_use(monkeypatch):
    monkeypatch.setattr(workers, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 64)
    assert workers.available_cpus() == 1
    assert workers.worker_count(10) == 1


def test_blas_gets_the_cores_the_threads_leave_while_they_run(monkeypatch):
    """Each worker's matrix products must not start a BLAS thread per core on top of the
    workers (they would take turns on the same cores); afterwards BLAS has its threads back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    if not before:
        pytest.skip("numpy runs no BLAS library that threadpoolctl can see")
    monkeypatch.setattr(workers, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(workers, "available_cpus", lambda: 2)

    def blas_threads(_: int) -> list[int]:
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

    seen = workers.map_by_size(blas_threads, [1, 2], [1, 1])  # two threads on two cores: one each
    assert all(n == [1] * len(before) for n in seen)
    assert blas_threads(0) == before
