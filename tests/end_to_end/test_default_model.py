"""The embedded PP-OCR direction classifier: the figures the README promises."""
from __future__ import annotations

import lzma

import numpy as np
import onnx
import pytest

from onnxl2 import compress, decompress


@pytest.fixture(scope="module")
def default(default_model_dir):
    return {"model": default_model_dir / "model.onnx", "data": default_model_dir / "eval.npz",
            "labels": default_model_dir / "eval_labels.npy"}


def test_bits8_keeps_accuracy(default, tmp_path):
    result = compress(default["model"], default["data"], bits=8, labels=default["labels"],
                      out_dir=tmp_path, quiet=True, devices=("cpu",))
    cpu = result.report["validation"]["devices"][0]
    assert cpu["accuracy_original"] > 0.9
    assert cpu["accuracy_compressed"] == cpu["accuracy_original"]
    assert cpu["outputs"][0]["top1_agreement"] >= 0.99
    assert decompress(tmp_path / "model.l2b").files[0][1] == (tmp_path / "model.l2.onnx").read_bytes()


def test_bits4_file_ratio_at_least_6(default, tmp_path):
    result = compress(default["model"], default["data"], bits=4, labels=default["labels"],
                      out_dir=tmp_path, quiet=True, devices=("cpu",))
    ratio = default["model"].stat().st_size / (tmp_path / "model.l2b").stat().st_size
    assert ratio >= 6
    assert result.report["sizes"]["file_ratio"] == pytest.approx(ratio)
    assert result.report["folded_batchnorm"] > 0
    model = onnx.load(tmp_path / "model.l2.onnx")
    assert any(t.data_type == onnx.TensorProto.INT4 for t in model.graph.initializer)


def test_lossless_bit_exact_and_beats_lzma(default, tmp_path):
    compress(default["model"], lossless=True, out_dir=tmp_path, quiet=True)
    decompress(tmp_path / "model.l2b", tmp_path / "back.onnx")
    original = default["model"].read_bytes()
    assert (tmp_path / "back.onnx").read_bytes() == original
    assert (tmp_path / "model.l2b").stat().st_size < len(lzma.compress(original, preset=9))


def test_calibration_data_reader(default):
    arrays = np.load(default["data"])["x"][:6]

    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"x": arrays[i:i + 1]} for i in range(len(arrays)))

        def get_next(self):
            return next(self.feeds, None)

    result = compress(onnx.load(default["model"]), Reader(), bits=8, quiet=True, devices=("cpu",))
    assert result.report["validation"]["samples"] == 6
