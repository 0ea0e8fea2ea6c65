"""Slow checks (``python -m pytest -m slow``): the automatic mode on the embedded default is
repeatable and its plan replays to the same bytes."""
from __future__ import annotations

import pytest

from onnxl2 import compress


@pytest.mark.slow
def test_the_automatic_mode_gives_the_same_bytes_twice_and_its_plan_replays_them(default_model_dir, tmp_path):
    model, calib = default_model_dir / "model.onnx", default_model_dir / "calib.npz"
    labels = default_model_dir / "calib_labels.npy"
    runs = [compress(model, calib, labels=labels, quiet=True, devices=("cpu",), out_dir=tmp_path / f"run{i}")
            for i in range(2)]
    assert runs[0].bitstream == runs[1].bitstream and runs[0].files == runs[1].files
    assert runs[0].report["plan"] == runs[1].report["plan"]
    replay = compress(model, calib, labels=labels, plan=tmp_path / "run0" / "plan.json", quiet=True,
                      devices=("cpu",))
    assert replay.files == runs[0].files  # the header says "plan" instead of "auto"; the model is the same
    for name in ("plan-next-1.json", "plan-next-2.json"):  # the frontier's next points replay too
        if (tmp_path / "run0" / name).exists():
            other = compress(model, calib, labels=labels, plan=tmp_path / "run0" / name, quiet=True,
                             devices=("cpu",))
            assert len(other.bitstream) < len(runs[0].bitstream)
