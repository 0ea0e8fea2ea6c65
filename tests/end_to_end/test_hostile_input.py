"""Files a user was sent: crafted bitstreams (checksums recomputed, as an attacker would), models
whose external data point out of their folder, custom-domain opsets, odd data files, and an
output set whose writing fails part way. Each gives one clear error and writes nothing, or works.
"""
from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import genmodels
from onnxl2 import api
from onnxl2.cli import main
from onnxl2.codec import lzma_raw
from onnxl2.codec.container import OUTPUT_RATIO, decode_container
from onnxl2.codec.manifest import parse_manifest
from onnxl2.errors import BitstreamError, DataError, ModelError, OnnxL2Error
from onnxl2.runtime import make_session

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools.bitstream_fuzz import lzma_bomb, manifest_of, pack, unpack, with_manifest  # noqa: E402


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("onnxl2: error:"), err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def lossless_external(tmp_path_factory) -> bytes:
    """A lossless bitstream of a model with external data: two files, so names matter."""
    folder = tmp_path_factory.mktemp("ext")
    onnx.save_model(genmodels.mixed_model(), str(folder / "m.onnx"), save_as_external_data=True,
                    location="m.onnx.data", size_threshold=256)
    return bytes(api.compress(folder / "m.onnx", lossless=True, quiet=True).bitstream)


def _renamed(blob: bytes, index: int, name: str) -> bytes:
    parts = unpack(blob)
    doc = manifest_of(parts)
    doc["files"][index]["name"] = name
    return pack(with_manifest(parts, doc))


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ----------------------------------------------------------------------------- traversal on decode

@pytest.mark.parametrize("name", ["a/b/c/../../evil.txt", "../evil.txt", "..", ".", "", "sub/m.onnx.data",
                                  "C:evil.txt", "a\\b.txt", "evil\x00.txt"])
def test_decoded_names_that_are_not_plain_are_refused_before_writing(tmp_path, lossless_external, name):
    out = tmp_path / "out" / "deep"
    out.mkdir(parents=True)
    before = _tree(tmp_path)
    crafted = _renamed(lossless_external, 1, name)
    with pytest.raises(BitstreamError, match="not a plain file name"):
        api.decompress(crafted, out / "model.onnx")
    assert _tree(tmp_path) == before


def test_absolute_name_does_not_write_or_overwrite_outside_the_output_folder(tmp_path, lossless_external):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    crafted = _renamed(lossless_external, 1, str(victim))
    result = _cli("decompress", crafted_file(tmp_path, crafted), "-o", out / "model.onnx")
    _one_line_error(result, "not a plain file name")
    assert victim.read_bytes() == b"keep me" and not any(out.iterdir())


def crafted_file(folder: Path, blob: bytes) -> Path:
    path = folder / "crafted.l2b"
    path.write_bytes(blob)
    return path


def test_a_name_given_twice_or_equal_to_the_output_is_refused(tmp_path, lossless_external):
    with pytest.raises(BitstreamError, match="same file twice"):
        api.decompress(_renamed(lossless_external, 1, "m.onnx"), tmp_path / "x.onnx")
    with pytest.raises(BitstreamError, match="beside its model"):
        api.decompress(lossless_external, tmp_path / "m.onnx.data")
    assert not any(tmp_path.iterdir())


def test_decoded_files_go_beside_the_output_and_nowhere_else(tmp_path, lossless_external):
    result = api.decompress(lossless_external, tmp_path / "sub" / "restored.onnx")
    assert sorted(p.name for p in result.written) == ["m.onnx.data", "restored.onnx"]
    assert _tree(tmp_path) == {"sub", "sub/restored.onnx", "sub/m.onnx.data"}


# ----------------------------------------------------------------------------- external data

def _model_with_external(folder: Path, location: str) -> Path:
    """A model whose one weight lives in external data at ``location`` (written as given)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32), "w")
    onnx.external_data_helper.set_external_data(w, location=location, offset=0, length=len(w.raw_data))
    w.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _outside_cases(tmp_path: Path) -> list[tuple[str, Path]]:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(512, dtype=np.float32).tobytes())
    folders = []
    for label, location in (("relative", "../secret.bin"), ("absolute", str(secret)), ("symlink", "link.bin")):
        folder = tmp_path / label
        folder.mkdir()
        if label == "symlink":
            os.symlink(secret, folder / "link.bin")
        folders.append((label, _model_with_external(folder, location)))
    return folders


def test_external_data_outside_the_model_folder_is_refused_in_every_mode(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.ones((4, 32), np.float32))
    for label, model in _outside_cases(tmp_path):
        for call in (lambda: api.compress(model, lossless=True, out_dir=tmp_path / "o", quiet=True),
                     lambda: api.compress(model, bits=4, out_dir=tmp_path / "o", quiet=True),
                     lambda: api.compress(model, tmp_path / "x.npz", out_dir=tmp_path / "o", quiet=True),
                     lambda: api.inspect(model),
                     lambda: api.validate(model, model, tmp_path / "x.npz", devices=("cpu",))):
            with pytest.raises(ModelError, match="outside"):
                call()
        assert not (tmp_path / "o").exists(), label
        _one_line_error(_cli("compress", model, "--lossless", "-o", tmp_path / "o"), "outside")


def test_external_data_inside_the_folder_still_works(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.arange(512, dtype=np.float32).tobytes())
    model = _model_with_external(folder, "w.bin")
    result = api.compress(model, lossless=True, out_dir=tmp_path / "o", quiet=True)
    assert [name for name, _ in api.decompress(result.bitstream).files] == ["model.onnx", "w.bin"]
    assert api.inspect(model).weights[0].external


# ----------------------------------------------------------------------------- bombs

def _refused(call, match: str | None = None) -> int:
    """Bytes allocated at the peak of ``call``, which must raise BitstreamError."""
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=match):
            call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _bits4() -> bytes:
    return bytes(api.compress(genmodels.mixed_model(), bits=4, quiet=True).bitstream)


def _span_bomb(blob: bytes, codec: str, elements: int, shape: list[int] | None = None) -> bytes:
    """The first span of ``codec`` made to declare ``elements`` elements, with the length they
    fill and its file grown to match, so that only the inner decoders stand in the way."""
    parts = unpack(blob)
    doc = manifest_of(parts)
    entry = doc["files"][0]
    index, span = next((i, s) for i, s in enumerate(entry["spans"]) if s[2] == codec)
    length = {TensorProto.INT4: (elements + 1) // 2, TensorProto.FLOAT: 4 * elements}.get(span[3], elements)
    grow = length - span[1]
    span[1], span[4] = length, elements
    if shape is not None:
        span[5] = shape
    entry["size"] += grow
    for later in entry["spans"][index + 1:]:
        later[0] += grow
    return pack(with_manifest(parts, doc))


@pytest.mark.parametrize("codec, shape", [("classed", [1 << 12, 1 << 12]), ("array", None)])
def test_spans_declaring_millions_of_elements_allocate_what_their_output_justifies(codec, shape):
    crafted = _span_bomb(_bits4(), codec, 1 << 24, shape)
    assert len(crafted) < 8000
    assert _refused(lambda: decode_container(crafted), "allow more") < 1 << 20
    # a user who allows the output gets an error still (the payload does not hold what the span
    # declares), having allocated no more than a few times the output allowed
    allowed = 1 << 27
    assert _refused(lambda: decode_container(crafted, max_output_bytes=allowed), "checksum|array header declares") < allowed


def test_an_array_header_claiming_more_than_its_span_is_refused_before_allocating():
    from onnxl2.codec.floatcodec import encode_array
    from onnxl2.codec.varint import encode_varints
    parts = unpack(_bits4())
    doc = manifest_of(parts)
    index = next(i for i, s in enumerate(doc["files"][0]["spans"]) if s[2] == "array")
    coded = encode_array(np.ones(16, np.float32))
    name_len = coded[0]
    huge = coded[:1 + name_len] + encode_varints(np.array([2, 1 << 40, 1 << 40])) + coded[-1:]
    parts.sections[2 + index] = huge
    crafted = pack(parts)
    peak = _refused(lambda: decode_container(crafted))
    assert peak < 8 << 20


def test_symbol_and_adaptive_streams_with_huge_counts_are_refused():
    from onnxl2.codec.adaptive import decode_adaptive
    from onnxl2.codec.entropy import CodecError, decode_symbols
    from onnxl2.codec.varint import encode_varints
    with pytest.raises(CodecError, match="implausible"):
        decode_symbols(encode_varints(np.array([1 << 40, 2, 0, 1])), 1000)
    with pytest.raises(CodecError, match="1000 expected"):  # a count the caller did not expect
        decode_symbols(encode_varints(np.array([1 << 30, 2, 0, 1])), 1000)
    crafted = _span_bomb(bytes((Path(__file__).resolve().parents[1] / "data" / "format1.l2b").read_bytes()), "nibbles", 1 << 29)
    assert _refused(lambda: decode_container(crafted)) < 8 << 20
    # the adaptive coder trusts the caller's count: a stream that ends early fills no gigabytes
    stream = encode_varints(np.array([0, 3])) + b"\x01\x00\x00\x00"
    with pytest.raises(CodecError):
        decode_adaptive(stream, 1 << 10, False)


def test_lzma_bombs_are_cut_off_at_their_declared_size():
    blob = _bits4()
    bomb = lzma_bomb(6 << 30)  # 6 GiB of zeros in about a megabyte
    assert len(bomb) < 2 << 20
    for section in (0, 1):  # the manifest, then the skeleton
        parts = unpack(blob)
        parts.sections[section] = bomb
        crafted = pack(parts)
        peak = _refused(lambda: decode_container(crafted))
        assert peak < 64 << 20, section
    with pytest.raises(ValueError, match="inflates past"):
        lzma_raw.decompress(bomb, 1 << 20)


def test_declared_output_past_the_limit_needs_the_users_permission(tmp_path):
    blob = _bits4()
    parts = unpack(blob)
    doc = manifest_of(parts)
    doc["files"][0]["size"] = OUTPUT_RATIO * len(blob) * 4
    crafted = crafted_file(tmp_path, pack(with_manifest(parts, doc)))
    _one_line_error(_cli("decompress", crafted, "-o", tmp_path / "m.onnx"), "--max-output-size")
    # allowed, it goes on to the next check (the skeleton does not hold what the manifest says)
    _one_line_error(_cli("decompress", crafted, "-o", tmp_path / "m.onnx", "--max-output-size", "1GB"),
                    "skeleton")
    assert not (tmp_path / "m.onnx").exists()


def test_a_legitimate_bitstream_past_the_ratio_is_written_and_says_how_to_decode_it(tmp_path):
    zeros = numpy_helper.from_array(np.zeros((1024, 1024), np.float32), "z")
    graph = helper.make_graph([helper.make_node("Add", ["x", "z"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, 1024])], [zeros])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = api.compress(model, lossless=True, quiet=True)
    assert result.report["sizes"]["file_ratio"] > OUTPUT_RATIO
    assert "--max-output-size" in result.report["roundtrip"]
    with pytest.raises(BitstreamError, match="allow more"):
        api.decompress(result.bitstream)
    restored = api.decompress(result.bitstream, max_output_size="8MiB")
    assert restored.files[0][1] == model.SerializeToString()


# ----------------------------------------------------------------------------- malformed manifests

def test_overflowing_dims_are_an_error_not_an_overflow():
    doc = manifest_of(unpack(_bits4()))
    span = next(s for s in doc["files"][0]["spans"] if s[2] == "classed")
    span[4], span[5] = 0, [1 << 33, 1 << 31]  # int64 product wraps to 0
    with pytest.raises(BitstreamError, match="multiply"):
        parse_manifest(doc, 5, 2 + len(doc["files"][0]["spans"]))
    span[5] = [1 << 70, 1 << 70]
    with pytest.raises(BitstreamError):
        parse_manifest(doc, 5, 2 + len(doc["files"][0]["spans"]))


@pytest.mark.parametrize("damage", ["no meta", "meta not an object", "files not a list", "size a string",
                                    "size true", "negative offset", "unknown codec", "bad sha256"])
def test_malformed_manifests_raise_the_projects_error(tmp_path, damage):
    parts = unpack(_bits4())
    doc = manifest_of(parts)
    entry, span = doc["files"][0], doc["files"][0]["spans"][0]
    if damage == "no meta":
        del doc["meta"]
    elif damage == "meta not an object":
        doc["meta"] = [1]
    elif damage == "files not a list":
        doc["files"] = {"a": 1}
    elif damage == "size a string":
        entry["size"] = str(entry["size"])
    elif damage == "size true":
        entry["size"] = True
    elif damage == "negative offset":
        span[0] = -5
    elif damage == "unknown codec":
        span[2] = "zip"
    else:
        entry["sha256"] = "../" * 8
    crafted = crafted_file(tmp_path, pack(with_manifest(parts, doc)))
    with pytest.raises(BitstreamError):
        api.decompress(crafted)
    _one_line_error(_cli("decompress", crafted, "-o", tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


def test_a_decoded_model_naming_external_data_it_lacks_is_an_error():
    from onnxl2.model_files import files_to_model
    model = genmodels.mixed_model()
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="missing.bin", offset=0, length=16)
    tensor.ClearField("raw_data")
    with pytest.raises(BitstreamError, match="not among the decoded files"):
        files_to_model([("m.onnx", model.SerializeToString())])
    with pytest.raises(BitstreamError, match="outside"):
        files_to_model([("m.onnx", model.SerializeToString()), ("missing.bin", b"\0" * 8)])
    with pytest.raises(BitstreamError, match="not an ONNX model"):
        files_to_model([("m.onnx", b"\xff" * 40)])


# ----------------------------------------------------------------------------- models and data

def test_a_model_importing_a_custom_domain_compresses_and_runs(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                               helper.make_node("Gelu", ["h"], ["y"], domain="com.microsoft")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save_model(model, tmp_path / "m.onnx")
    result = _cli("compress", tmp_path / "m.onnx", "--bits", 4, "-o", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.output
    emitted = onnx.load(str(tmp_path / "o" / "m.l2.onnx"))
    assert {o.domain: o.version for o in emitted.opset_import} == {"": 21, "com.microsoft": 1}
    x = {"x": rng.standard_normal((3, 64)).astype(np.float32)}
    got = make_session(str(tmp_path / "o" / "m.l2.onnx")).run(None, x)[0]
    want = make_session(str(tmp_path / "m.onnx")).run(None, x)[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_a_single_npy_feeds_a_one_input_model_and_is_refused_for_more(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 64)).astype(np.float32))
    result = api.compress(model, tmp_path / "x.npy", bits=4, quiet=True)
    assert result.report["validation"]["samples"] == 8
    two_inputs = genmodels.mixed_model()
    with pytest.raises(DataError, match="holds one array"):
        api.compress(two_inputs, tmp_path / "x.npy", bits=4, quiet=True)


# ----------------------------------------------------------------------------- all or nothing

def test_a_failed_rename_leaves_none_of_the_output_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_bytes(b"an earlier report")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the third file of the set cannot be renamed
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        api.compress(genmodels.mixed_model(), bits=4, out_dir=out, quiet=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert (out / "report.json").read_bytes() == b"an earlier report"


def test_errors_reach_the_api_as_the_projects_error_type():
    for blob in (b"", b"ONNXL2B\x00", b"ONNXL2B\x00" + bytes(40), b"not a bitstream at all"):
        with pytest.raises(OnnxL2Error):
            api.decompress(blob)


def test_a_decoded_set_must_be_one_model_and_the_data_files_it_names(lossless_external):
    with pytest.raises(BitstreamError, match="its model names"):
        api.decompress(_renamed(lossless_external, 1, "other.data"))  # a plain name, but not the model's
    parts = unpack(lossless_external)
    doc = manifest_of(parts)
    doc["files"].reverse()
    with pytest.raises(BitstreamError):
        api.decompress(pack(with_manifest(parts, doc)))


@pytest.mark.parametrize("dims", [[64, 64], [1 << 20, 1 << 20]])
def test_a_tensor_whose_data_do_not_fill_its_shape_is_one_clear_error(tmp_path, dims):
    w = TensorProto()
    w.name, w.data_type, w.raw_data = "w", TensorProto.FLOAT, bytes(64)
    w.dims.extend(dims)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save_model(model, tmp_path / "m.onnx")
    _one_line_error(_cli("compress", tmp_path / "m.onnx", "--bits", 4, "-o", tmp_path / "o"), "does not hold")
    assert not (tmp_path / "o").exists()


def test_a_weight_holding_nan_or_infinity_is_kept_as_it_is(tmp_path):
    import warnings
    model = genmodels.mixed_model()
    tensor = next(t for t in model.graph.initializer if t.name == "fc_w")
    values = numpy_helper.to_array(tensor).copy()
    values[0, 0], values[1, 1] = np.nan, np.inf
    tensor.CopyFrom(numpy_helper.from_array(values, "fc_w"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = api.compress(model, bits=4, quiet=True)
    rows = {w["name"]: w["choice"] for w in result.report["weights"]}
    assert rows["fc_w"] == "float32" and rows["conv_w"] == "int4"
