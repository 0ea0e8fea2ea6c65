"""Sizes as people write them: '3MB', '512KiB', '1200000'."""
from __future__ import annotations

import re

from .errors import OnnxL2Error

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")


def parse_size(text: str) -> int:
    """'3MB' (10^6), '512KiB' (2^10), '1200000' (bytes)."""
    match = _SIZE.match(str(text))
    if not match:
        raise OnnxL2Error(f"cannot read size {text!r} (examples: 3MB, 512KiB, 1200000)")
    unit = (match.group(2) or "b").lower().rstrip("b")
    factor = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 2**10, "mi": 2**20, "gi": 2**30}[unit]
    return int(float(match.group(1)) * factor)
