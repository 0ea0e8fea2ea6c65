"""Atomic output: write to temporary names beside the targets, then rename them all.

A failure half-way leaves no partial file and never touches an existing input; when several
files are written, either all of them appear or none does: a rename that fails part way undoes
the renames before it and puts back the files they replaced.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import OnnxL2Error


def _temporary_beside(target: Path, kind: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{kind}", dir=target.parent)
    os.close(fd)
    return tmp


def _keep_copy(target: Path) -> str | None:
    """A copy of the file ``target`` holds now, to put back if the set fails (None: no file)."""
    if not os.path.lexists(target) or target.is_dir():
        return None
    backup = _temporary_beside(target, "bak")
    os.unlink(backup)
    try:  # the same file (or link) under a second name, at no cost
        os.link(target, backup, follow_symlinks=False)
    except OSError:
        shutil.copy2(target, backup, follow_symlinks=False)
    return backup


def write_files_atomically(files: dict[Path, bytes], protect: tuple[Path, ...] = ()) -> None:
    """Write several files so that either all appear or none does.

    ``protect`` lists inputs that must never be overwritten.
    """
    protected = {p.resolve() for p in protect if p.exists()}
    for target in files:
        if target.resolve() in protected:
            raise OnnxL2Error(f"refusing to overwrite input file {target}")
    staged: list[tuple[str, Path]] = []
    replaced: list[tuple[Path, str | None]] = []  # targets renamed so far, with what they held
    try:
        for target, payload in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temporary_beside(target, "tmp")
            staged.append((tmp, target))
            with open(tmp, "wb") as handle:
                handle.write(payload)
        for tmp, target in staged:
            backup = _keep_copy(target)
            try:
                os.replace(tmp, target)
            except BaseException:
                if backup is not None:
                    os.unlink(backup)
                raise
            replaced.append((target, backup))
    except BaseException:
        for target, backup in reversed(replaced):
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(backup, target)
        replaced.clear()
        raise
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for _, backup in replaced:
            if backup is not None and os.path.exists(backup):
                os.unlink(backup)
