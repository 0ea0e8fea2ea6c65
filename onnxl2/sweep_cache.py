"""Sweeps, layer Hessians and candidates kept in a folder (``--sweep-cache``) and found again.

Each is keyed by what decides it: the model and calibration data, then the candidate rules,
then the labels, loss and sweep rules. A rerun with another bound or target on the same inputs
skips the work; anything else makes it afresh.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import numpy as np
from onnx import ModelProto

from .candidates import Candidate
from .fileio import write_files_atomically
from .rules import SearchRules
from .sensitivity import Sensitivity

#: Bumped whenever what a sweep measures changes, so that caches of older sweeps are not reused.
SWEEP_VERSION = 11


class SweepCache:
    """The cache folder of one run (``folder`` None: nothing is kept or read)."""

    def __init__(self, folder: Path | None, proto: ModelProto, data: Mapping[str, np.ndarray]) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._digest = _data_digest(proto, data) if folder is not None else None

    def hessians_path(self) -> Path | None:
        return self.folder / f"hessians-{self._digest.hexdigest()[:32]}.npz" if self.folder else None

    def candidates_path(self, rules: SearchRules) -> Path | None:
        return self.folder / f"candidates-{_candidates_key(self._digest, rules)}.npz" if self.folder else None

    def load_sweep(self, labels: np.ndarray | None, rules: SearchRules, output: str,
                   candidates: Mapping[str, list[Candidate]]) -> dict | None:
        """The cached sweep of these candidates, or None."""
        if self.folder is None:
            return None
        path = self.folder / f"sweep-{_sweep_key(self._digest, labels, rules, output)}.json"
        if not path.is_file():
            return None
        rows = json.loads(path.read_text())
        table = {k: [Sensitivity(**{f: r[f] for f in Sensitivity.__dataclass_fields__}) for r in v]
                 for k, v in rows.items()}
        if {k: [r.label for r in v] for k, v in table.items()} != \
                {k: [c.label for c in v] for k, v in candidates.items()}:
            return None
        return table

    def store_sweep(self, labels: np.ndarray | None, rules: SearchRules, output: str, table: dict) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({k: [r.to_dict() for r in v] for k, v in table.items()}).encode()
        key = _sweep_key(self._digest, labels, rules, output)
        write_files_atomically({self.folder / f"sweep-{key}.json": payload})


def _data_digest(proto: ModelProto, data: Mapping[str, np.ndarray]):
    """Hash of the model and the calibration data: what Hessians and sweeps are keyed by."""
    digest = hashlib.sha256(proto.SerializeToString(deterministic=True))
    for name in sorted(data):
        digest.update(name.encode() + np.ascontiguousarray(data[name]).tobytes())
    return digest


def _candidates_key(data_digest, rules: SearchRules) -> str:
    """Same model, data and candidate rules: same candidates (the loss does not enter)."""
    digest = data_digest.copy()
    digest.update(json.dumps([rules.bits_choices, rules.keep, sorted(rules.pins.items()),
                              rules.compensate, list(rules.rates), rules.lowrank, sorted(rules.ranks.items()),
                              rules.layer_steps, rules.wide_levels, SWEEP_VERSION]).encode())
    return digest.hexdigest()[:32]


def _sweep_key(data_digest, labels: np.ndarray | None, rules: SearchRules, output: str) -> str:
    """Same candidates, labels, loss and sweep rules: same sweep."""
    digest = hashlib.sha256(_candidates_key(data_digest, rules).encode())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(json.dumps([rules.loss, output, rules.taylor, rules.sweep, rules.form == "contract"]).encode())
    return digest.hexdigest()[:32]
