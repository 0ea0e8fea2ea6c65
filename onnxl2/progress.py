"""Stage timing and terminal progress.

Every stage is timed for the report; a line per stage is printed to stderr only when stderr is
a terminal and the caller did not ask for quiet, so pipes and CI logs stay clean.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


class Stages:
    def __init__(self, verbose: bool | None = None) -> None:
        self.verbose = sys.stderr.isatty() if verbose is None else verbose
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.verbose:
            print(f"  {name} ...", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self.verbose:
                print(f" {elapsed:.2f} s", file=sys.stderr, flush=True)
