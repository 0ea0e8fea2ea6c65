"""Atomic output: write to a temporary name beside the target, then rename.

A failure half-way leaves no partial file and never touches an existing input.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OnnxL2Error


def write_files_atomically(files: dict[Path, bytes], protect: tuple[Path, ...] = ()) -> None:
    """Write several files so that either all appear or none does.

    ``protect`` lists inputs that must never be overwritten.
    """
    protected = {p.resolve() for p in protect if p.exists()}
    for target in files:
        if target.resolve() in protected:
            raise OnnxL2Error(f"refusing to overwrite input file {target}")
    staged: list[tuple[str, Path]] = []
    try:
        for target, payload in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
        for tmp, target in staged:
            os.replace(tmp, target)
        staged.clear()
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
