"""File names and paths read from files a user was sent: a model's external data locations and
the names a bitstream gives its files.

Both come from the file, not from the user, so both are hostile until checked: a location of
``../../etc/passwd`` would make the lossless mode embed that file, and a decoded file named
``../evil`` or ``/etc/x`` would be written outside the output folder.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import ModelError


def plain_name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain file name (one path component, nothing that climbs or roots
    a path on any platform), or None when it is one."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if name in (".", ".."):
        return "a reference to a folder"
    if "\x00" in name:
        return "a NUL character"
    if "/" in name or "\\" in name:
        return "a path separator"
    if PureWindowsPath(name).drive or ":" in name:
        return "a drive or stream specifier"
    return None


def external_data_path(model_path: Path, location: str) -> Path:
    """Where a model's external data file lies, refused unless it lies inside the model's folder.

    Symlinks are followed before the check, so a link beside the model that points elsewhere is
    refused as the path it names would be.
    """
    folder = model_path.parent
    if not isinstance(location, str) or not location or "\x00" in location:
        raise ModelError(f"{model_path.name} names external data with an unusable location {location!r}")
    pure = PurePosixPath(location.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(location).drive or ".." in pure.parts:
        raise ModelError(f"{model_path.name} names external data outside its folder ({location!r}); "
                         "onnxl2 reads external data only from the model's own folder")
    candidate = folder / Path(*pure.parts)
    real_folder = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(candidate))
    if real != real_folder and real_folder not in real.parents:
        raise ModelError(f"external data {location!r} of {model_path.name} resolves outside the "
                         f"model's folder (to {real}); onnxl2 does not follow it")
    return candidate
