"""The command line: the main commands work, and every bad input gives one line and exit != 0."""
from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import genmodels
from onnxl2.cli import main
from onnxl2.codec.container import FORMAT_VERSION, MAGIC
from onnxl2.runtime import cuda_status


@pytest.fixture()
def workdir(tmp_path):
    onnx.save_model(genmodels.mixed_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **genmodels.mixed_inputs())
    return tmp_path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _assert_one_line_error(result, *needles):
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("onnxl2: error:") and "Traceback" not in result.output
    for needle in needles:
        assert needle in err, err


def test_inspect_compress_decompress_validate(workdir):
    result = _invoke("inspect", workdir / "m.onnx")
    assert result.exit_code == 0
    assert "fc_w" in result.output and "Gemm" in result.output and "compressible: 5 weights" in result.output
    result = _invoke("compress", workdir / "m.onnx", "--data", workdir / "calib.npz", "--bits", 4,
                     "-o", workdir / "out", "--devices", "cpu")
    assert result.exit_code == 0, result.output
    assert "file ratio" in result.output
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["sizes"]["bitstream_bytes"] == (workdir / "out" / "m.l2b").stat().st_size
    result = _invoke("decompress", workdir / "out" / "m.l2b", "-o", workdir / "r.onnx")
    assert result.exit_code == 0
    assert (workdir / "r.onnx").read_bytes() == (workdir / "out" / "m.l2.onnx").read_bytes()
    result = _invoke("validate", workdir / "m.onnx", workdir / "out" / "m.l2b", "--data",
                     workdir / "calib.npz", "--devices", "cpu", "--json", workdir / "v.json")
    assert result.exit_code == 0 and "cos" in result.output
    assert json.loads((workdir / "v.json").read_text())["samples"] == 16


_CUDA_USABLE = cuda_status()[0]


@pytest.mark.parametrize("compress_args, validate_args, needle", [
    (["--devices", "gpu"], ["--devices", "cpu,tpu"], "devices are cpu and cuda"),
    pytest.param(["--data", "{calib}", "--devices", "cuda"], ["--devices", "cuda"], "would validate on nothing",
                 marks=pytest.mark.skipif(_CUDA_USABLE, reason="CUDA is usable here: a run on it alone validates")),
    (["--data", "{calib}", "--labels", "{labels}", "--model-output", "nope"],
     ["--labels", "{labels}", "--model-output", "nope"], "has no output 'nope'"),
    (["--data", "{calib}", "--model-output", "nope"], ["--model-output", "nope"], "has no output 'nope'"),
], ids=["unknown device", "cuda alone without cuda", "labels for a missing output", "a missing output"])
def test_bad_options_are_one_line_in_compress_and_validate_before_any_work(workdir, monkeypatch, compress_args,
                                                                         validate_args, needle):
    """Refused while the inputs are read: neither the compression nor a validation run starts."""
    import onnxl2.api

    def started(*args, **kwargs):
        raise AssertionError("work started before the options were refused")
    monkeypatch.setattr(onnxl2.api, "run_fixed", started)
    monkeypatch.setattr(onnxl2.api, "validate_models", started)
    labels = workdir / "y.npy"
    np.save(labels, np.zeros(16, dtype=np.int64))
    paths = {"calib": workdir / "calib.npz", "labels": labels}

    def fill(args: list[str]) -> list[str]:
        return [a.format(**paths) for a in args]

    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "--bits", 4, *fill(compress_args),
                                   "-o", workdir / "o"), needle)
    assert not (workdir / "o").exists()
    _assert_one_line_error(_invoke("validate", workdir / "m.onnx", workdir / "m.onnx", "--data",
                                   workdir / "calib.npz", *fill(validate_args)), needle)


def _with_nan_weight(workdir) -> str:
    from onnx import numpy_helper
    model = onnx.load(workdir / "m.onnx")
    init = next(i for i in model.graph.initializer if len(i.dims) >= 2 and np.prod(i.dims) >= 128)
    values = numpy_helper.to_array(init).copy()
    values.flat[3] = np.nan
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save_model(model, workdir / "nan.onnx")
    return init.name


def test_cuda_alone_is_refused_only_where_something_would_be_validated(workdir):
    """A lossless run validates nothing, so the devices it names cannot leave it empty."""
    result = _invoke("compress", workdir / "m.onnx", "--lossless", "--devices", "cuda", "-o", workdir / "o")
    assert result.exit_code == 0, result.output


def test_a_weight_holding_nan_is_one_line_in_the_automatic_mode_and_kept_exactly_at_fixed_bits(workdir):
    """NaN reaching the output leaves nothing to measure changes against; at fixed bits with
    compensation the layers fed NaN get no moments (rounded plainly, not compensated through
    a NaN matrix) and the NaN weight is kept as it is."""
    name = _with_nan_weight(workdir)
    _assert_one_line_error(_invoke("compress", workdir / "nan.onnx", "--data", workdir / "calib.npz",
                                   "-o", workdir / "auto"), "NaN or infinite")
    assert not (workdir / "auto").exists()
    result = _invoke("compress", workdir / "nan.onnx", "--bits", 4, "--compensate", "--data", workdir / "calib.npz",
                     "-o", workdir / "fixed")
    assert result.exit_code == 0, result.output
    choices = json.loads((workdir / "fixed" / "plan.json").read_text())["choices"]
    clean = _invoke("compress", workdir / "m.onnx", "--bits", 4, "--compensate", "--data", workdir / "calib.npz",
                    "-o", workdir / "clean")
    assert clean.exit_code == 0
    clean_choices = json.loads((workdir / "clean" / "plan.json").read_text())["choices"]
    assert choices[name] == "float32"
    after = [k for k, v in clean_choices.items()
             if k != name and v.endswith("+gptq") and not choices[k].endswith("+gptq")]
    assert after, (choices, clean_choices)  # a layer compensated on clean inputs is not on NaN ones


def test_nan_only_in_a_held_back_sample_is_one_line(workdir):
    """The held-back samples judge every plan: an original NaN there would fail them all."""
    from onnxl2.data import fixed_batch, input_specs
    from onnxl2.samples import holdout_split
    from onnxl2.contract import Contract
    inputs = dict(np.load(workdir / "calib.npz"))
    _, held = holdout_split(16, Contract().holdout, fixed_batch(input_specs(onnx.load(workdir / "m.onnx"))))
    inputs["x"] = inputs["x"].copy()
    inputs["x"][held[0]] = np.nan
    np.savez(workdir / "nan_calib.npz", **inputs)
    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "--data", workdir / "nan_calib.npz",
                                   "-o", workdir / "auto"), "held back to judge")
    assert not (workdir / "auto").exists()


def test_option_names_are_the_api_field_names():
    """Every compress option that sets a CompressOptions field has that field's name."""
    import dataclasses

    from onnxl2 import CompressOptions
    fields = {f.name for f in dataclasses.fields(CompressOptions)}
    params = {p.name for p in main.commands["compress"].params}
    data_and_contract = {"model", "data", "labels", "eval_data", "eval_labels", "out_dir", "agreement",
                         "max_distance", "confidence", "metric_spec", "max_drop", "decisions", "ctc", "holdout"}
    assert params - data_and_contract == fields - {"contract", "pins"}  # pins come as --bits PATTERN=N


def test_missing_model(workdir):
    _assert_one_line_error(_invoke("compress", workdir / "none.onnx", "--bits", 4, "-o", workdir / "o"),
                           "no such file")
    assert not (workdir / "o").exists()


def test_not_onnx(workdir):
    (workdir / "bad.onnx").write_bytes(b"\x00garbage" * 100)
    for args in (("inspect", workdir / "bad.onnx"),
                 ("compress", workdir / "bad.onnx", "--bits", 4, "-o", workdir / "o")):
        _assert_one_line_error(_invoke(*args), "not an ONNX model")
    assert not (workdir / "o").exists()


def _bitstream(workdir) -> bytes:
    assert _invoke("compress", workdir / "m.onnx", "--bits", 4, "-o", workdir / "out").exit_code == 0
    return (workdir / "out" / "m.l2b").read_bytes()


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b"junk" + b[4:], "not an onnxl2 bitstream"),
    (lambda b: b + b"\0", "trailing"),
])
def test_damaged_bitstreams(workdir, damage, needle):
    (workdir / "bad.l2b").write_bytes(damage(_bitstream(workdir)))
    _assert_one_line_error(_invoke("decompress", workdir / "bad.l2b", "-o", workdir / "r.onnx"), needle)
    assert not (workdir / "r.onnx").exists()


def test_every_flipped_bit_region_is_caught(workdir):
    blob = _bitstream(workdir)
    for position in np.linspace(0, len(blob) - 1, 25).astype(int):
        flipped = bytearray(blob)
        flipped[position] ^= 0x10
        (workdir / "bad.l2b").write_bytes(bytes(flipped))
        result = _invoke("decompress", workdir / "bad.l2b", "-o", workdir / "r.onnx")
        _assert_one_line_error(result)
        assert not (workdir / "r.onnx").exists()


def test_newer_format_version(workdir):
    blob = bytearray(_bitstream(workdir))
    struct.pack_into("<H", blob, len(MAGIC), FORMAT_VERSION + 1)
    (workdir / "new.l2b").write_bytes(bytes(blob))
    _assert_one_line_error(_invoke("decompress", workdir / "new.l2b", "-o", workdir / "r.onnx"),
                           f"version {FORMAT_VERSION + 1} is newer")


@pytest.mark.parametrize("feeds, needle", [
    ({"x": np.zeros((4, 3, 8, 8), np.float32)}, "no array for input 'ids'"),
    ({"x": np.zeros((4, 3, 9, 8), np.float32), "ids": np.zeros((4, 5), np.int64)}, "input 'x'"),
    ({"x": np.zeros((4, 3, 8, 8), np.float32), "ids": np.zeros((4, 5), np.float32)}, "input 'ids'"),
])
def test_data_that_does_not_match(workdir, feeds, needle):
    np.savez(workdir / "bad.npz", **feeds)
    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "--data", workdir / "bad.npz",
                                   "--bits", 4, "-o", workdir / "o"), needle)
    _assert_one_line_error(_invoke("validate", workdir / "m.onnx", workdir / "m.onnx", "--data",
                                   workdir / "bad.npz"), needle)
    assert not (workdir / "o").exists()


def test_inputs_are_never_overwritten(workdir):
    blob = _bitstream(workdir)
    result = _invoke("decompress", workdir / "out" / "m.l2b", "-o", workdir / "out" / "m.l2b")
    _assert_one_line_error(result, "refusing to overwrite")
    assert (workdir / "out" / "m.l2b").read_bytes() == blob
    original = (workdir / "m.onnx").read_bytes()
    (workdir / "m2.onnx").write_bytes(original)
    result = _invoke("compress", workdir / "m2.onnx", "--lossless", "-o", workdir)
    assert result.exit_code == 0 and (workdir / "m2.onnx").read_bytes() == original


def test_bits_out_of_range_and_mode_conflicts(workdir):
    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "--bits", 13, "-o", workdir / "o"), "2 and 12")
    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "-o", workdir / "o"), "--bits")
    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "--bits", 4, "--lossless",
                                   "-o", workdir / "o"), "--lossless takes no")
    _assert_one_line_error(_invoke("compress", workdir / "m.onnx", "--lossless", "--data", workdir / "calib.npz",
                                   "-o", workdir / "o"), "--lossless takes no --data")
    assert not (workdir / "o").exists()


def test_html_report_is_written(workdir):
    result = _invoke("compress", workdir / "m.onnx", "--bits", 4, "-o", workdir / "out")
    assert result.exit_code == 0
    page = (workdir / "out" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "fc_w" in page
