"""The benchmark reuses a baseline row only while everything it was made from is unchanged."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools.bench import _cached_row, baseline_inputs, baseline_key  # noqa: E402


def test_key_follows_inputs(tmp_path):
    model, calib, peers = tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "python"
    model.write_bytes(b"model one")
    calib.write_bytes(b"calibration")

    def key(method="zstd -19 (file)", qp=None, python=peers):
        return baseline_key(method, qp, baseline_inputs(model, calib, python))

    first = key()
    assert first == key()
    assert first != key("lzma -9 (file)") and first != key(qp=-26) and first != key(python=tmp_path / "other")
    model.write_bytes(b"model two")
    assert first != key()
    model.write_bytes(b"model one")
    calib.write_bytes(b"other lines")
    assert first != key()


def test_row_without_its_artefact_is_made_again(tmp_path):
    made = tmp_path / "made.onnx"
    made.write_bytes(b"onnx")
    row = {"shipped_bytes": 10, "onnx_path": str(made), "onnx_sha256": hashlib.sha256(b"onnx").hexdigest()}
    (tmp_path / "k.json").write_text(json.dumps(row))
    assert _cached_row(tmp_path, "k")["shipped_bytes"] == 10
    assert _cached_row(tmp_path, "missing") is None
    made.write_bytes(b"another row's onnx")  # the same path, made again from other inputs
    assert _cached_row(tmp_path, "k") is None
    made.unlink()
    assert _cached_row(tmp_path, "k") is None
