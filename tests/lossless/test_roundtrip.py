"""Round trips: lossless is bit-exact with the original; lossy decodes to the emitted ONNX."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import genmodels
from onnxl2 import compress, decompress
from onnxl2.codec.container import read_manifest
from onnxl2.runtime import make_session


def _run(model_bytes: bytes, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _save(model: onnx.ModelProto, path, external: bool = False):
    if external:
        onnx.save_model(model, path, save_as_external_data=True, location=path.name + ".data",
                        size_threshold=0)
    else:
        onnx.save_model(model, path)
    return path


@pytest.mark.parametrize("external", [False, True])
def test_lossless_is_bit_exact(tmp_path, external):
    path = _save(genmodels.mixed_model(), tmp_path / "m.onnx", external)
    result = compress(path, lossless=True, out_dir=tmp_path / "out", quiet=True)
    restored = decompress(tmp_path / "out" / "m.l2b", tmp_path / "r" / "m.onnx")
    assert (tmp_path / "r" / "m.onnx").read_bytes() == path.read_bytes()
    if external:
        assert (tmp_path / "r" / "m.onnx.data").read_bytes() == (tmp_path / "m.onnx.data").read_bytes()
    assert len(restored.files) == (2 if external else 1)
    assert result.report["sizes"]["file_ratio"] > 1.0
    assert not (tmp_path / "out" / "m.l2.onnx").exists()
    assert result.files == restored.files


def test_lossless_int16_tensors_of_narrow_and_wide_range(tmp_path):
    """int16 tensors whose values span a symbol-sized range go to the classed coder, the rest to
    the array codec: both come back bit for bit."""
    rng = np.random.default_rng(5)
    narrow = np.clip(np.rint(rng.standard_normal((64, 96)) * 300), -2047, 2047).astype(np.int16)
    wide = (rng.integers(-3, 4, size=(64, 96)) * 9000).astype(np.int16)  # few values, a range past 8192
    nodes = [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT) for name in ("narrow", "wide")]
    nodes.append(helper.make_node("Add", ["narrow_f", "wide_f"], ["y"]))
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 96])],
                              [numpy_helper.from_array(narrow, "narrow"), numpy_helper.from_array(wide, "wide")])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "i16.onnx")
    result = compress(path, lossless=True, out_dir=tmp_path / "out", quiet=True)
    decompress(tmp_path / "out" / "i16.l2b", tmp_path / "back.onnx")
    assert (tmp_path / "back.onnx").read_bytes() == path.read_bytes()
    codecs = {span[2] for span in read_manifest(result.bitstream)["files"][0]["spans"]}
    assert codecs == {"classed", "array"}


def test_lossless_keeps_non_canonical_bytes(tmp_path):
    """A file whose fields are not in canonical protobuf order still comes back byte for byte."""
    model = genmodels.mixed_model()
    data = model.SerializeToString()
    producer = onnx.ModelProto(producer_version="9.9").SerializeToString()
    path = tmp_path / "odd.onnx"
    path.write_bytes(data + producer)  # a field repeated at the end: valid protobuf, not canonical
    compress(path, lossless=True, out_dir=tmp_path / "out", quiet=True)
    decompress(tmp_path / "out" / "odd.l2b", tmp_path / "back.onnx")
    assert (tmp_path / "back.onnx").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
@pytest.mark.parametrize("factory", [genmodels.mixed_model, lambda: genmodels.mixed_model(opset=11)],
                         ids=["opset13", "opset11"])
def test_lossy_decodes_to_emitted_onnx(tmp_path, bits, factory):
    path = _save(factory(), tmp_path / "m.onnx")
    feeds = genmodels.mixed_inputs()
    result = compress(path, feeds, bits=bits, out_dir=tmp_path / "out", quiet=True,
                      devices=("cpu",))
    emitted = (tmp_path / "out" / "m.l2.onnx").read_bytes()
    restored = decompress(tmp_path / "out" / "m.l2b", tmp_path / "restored.onnx")
    assert (tmp_path / "restored.onnx").read_bytes() == emitted
    model = onnx.load_model_from_string(emitted)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == (21 if bits <= 4 else 13)  # int4 DequantizeLinear: 21
    made_by = {out: n.op_type for n in model.graph.node for out in n.output}
    # symbols above 8 bits are folded into float when the session starts
    assert made_by["conv_w"] == made_by["emb_w"] == ("Mul" if bits > 8 else "DequantizeLinear")
    int_types = {t.data_type for t in model.graph.initializer if t.name.endswith("_quantized")}
    assert int_types == {onnx.TensorProto.INT4 if bits <= 4 else onnx.TensorProto.INT8 if bits <= 8
                         else onnx.TensorProto.INT16}
    ref, got = _run(path.read_bytes(), feeds), _run(emitted, feeds)
    cosine = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cosine > {2: 0.5, 4: 0.95, 8: 0.9999, 12: 0.999999}[bits]
    v = result.report["validation"]["devices"][0]
    assert v["status"] == "ok" and abs(v["outputs"][0]["cosine_mean"] - cosine) < 0.05
    assert restored.meta["mode"] == "uniform" and restored.meta["bits"] == bits
    assert [w["name"] for w in result.report["weights"]] == ["conv_w", "fc_w", "tied_w", "emb_w", "const_w"]


def test_lossy_subgraph_model(tmp_path):
    model = genmodels.subgraph_model()
    feeds = {"x": np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)}
    result = compress(model, feeds, bits=8, quiet=True, devices=("cpu",))
    emitted = result.files[0][1]
    assert decompress(result.bitstream).files[0][1] == emitted
    names = {w["name"] for w in result.report["weights"]}
    assert names == {"in_w", "outer_w", "then_w", "else_w"}
    cpu = result.report["validation"]["devices"][0]
    assert cpu["outputs"][0]["cosine_min"] > 0.999
    assert result.report["validation"]["batch_size"] == 1  # fixed batch dim: sample by sample


def test_lossy_with_external_data_source(tmp_path):
    path = _save(genmodels.mixed_model(), tmp_path / "m.onnx", external=True)
    result = compress(path, genmodels.mixed_inputs(), bits=4, quiet=True, devices=("cpu",))
    assert result.report["validation"]["devices"][0]["outputs"][0]["cosine_mean"] > 0.95


def test_same_inputs_same_bytes(tmp_path):
    model = genmodels.mixed_model()
    a = compress(model, bits=4, quiet=True)
    b = compress(model, bits=4, quiet=True)
    assert a.bitstream == b.bitstream and a.files == b.files


def test_manifest_records_sizes(tmp_path):
    result = compress(genmodels.big_matmul_model(256, 256, layers=2), bits=4, quiet=True)
    manifest = read_manifest(result.bitstream)
    assert manifest["meta"]["bits"] == 4
    sizes = result.report["sizes"]
    assert sizes["weight_ratio"] > 6  # 4-bit symbols of Gaussian weights code below 4 bits
    for row in result.report["weights"]:
        assert row["bits_per_param"] < 4.2


def test_lossy_loop_body_weight():
    feeds = {"x": np.random.default_rng(4).standard_normal((6, 24)).astype(np.float32)}
    result = compress(genmodels.loop_model(), feeds, bits=8, quiet=True, devices=("cpu",))
    assert [(w["name"], w["graph"]) for w in result.report["weights"]] == [("body_w", "main/loop.body")]
    assert decompress(result.bitstream).files[0][1] == result.files[0][1]
    assert result.report["validation"]["devices"][0]["outputs"][0]["cosine_min"] > 0.999


def test_emitted_model_past_the_protobuf_limit_goes_to_external_data(monkeypatch, tmp_path):
    """Past 2 GB the compressed ONNX moves its tensors to NAME.data; shown here with a low limit."""
    from onnxl2 import model_files

    monkeypatch.setattr(model_files, "EXTERNAL_DATA_THRESHOLD", 2_000)
    feeds = genmodels.mixed_inputs()
    result = compress(genmodels.mixed_model(), feeds, bits=8, out_dir=tmp_path / "out", quiet=True,
                      devices=("cpu",))
    assert [name for name, _ in result.files] == ["model.l2.onnx", "model.l2.onnx.data"]
    restored = decompress(tmp_path / "out" / "model.l2b", tmp_path / "r" / "model.l2.onnx")
    for name, data in result.files:
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "out" / name).read_bytes() == data
    assert len(restored.files) == 2
    session = ort.InferenceSession(str(tmp_path / "r" / "model.l2.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feeds)[0], _run(result.model.SerializeToString(), feeds),
                               rtol=1e-5, atol=1e-6)
    assert result.report["validation"]["devices"][0]["outputs"][0]["cosine_min"] > 0.999


@pytest.mark.parametrize("bits", [3, 8, 10])
def test_candidate_size_is_the_coded_size(tmp_path, bits):
    """The counter the allocation trusts is the container's own coder: per weight, the bytes a
    candidate claims are exactly the bytes its tensors take in the bitstream, section entries
    (each coded tensor's length as a varint) included."""
    from onnxl2.codec.container import _read_sections
    from onnxl2.codec.varint import varint_length
    from onnxl2.codec.tensor_spans import tensor_spans

    path = _save(genmodels.big_matmul_model(96, 160, layers=2), tmp_path / "m.onnx")
    result = compress(path, bits=bits, out_dir=tmp_path / "out", quiet=True)
    files = read_manifest(result.bitstream)["files"]
    assert len(files) == 1
    spans = files[0]["spans"]  # in payload-section order (2, 3, ...), by offset in the file
    name_at = {s.offset: s.name for s in tensor_spans(dict(result.files)[files[0]["name"]])}
    payload = {name_at[span[0]]: len(section)
               for span, section in zip(spans, _read_sections(result.bitstream)[2:], strict=True)}
    rows = [w for w in result.report["weights"] if w["bits"] == bits]
    assert rows
    for row in rows:
        coded = [n for n in payload if n in (f"{row['name']}_quantized", f"{row['name']}_scale")]
        assert coded
        assert row["coded_bytes"] == sum(payload[n] for n in coded)
        assert row["candidate_bytes"] == row["coded_bytes"] + sum(varint_length(payload[n]) for n in coded)
    assert "classed" in {span[2] for span in spans}


#: Bitstreams written by earlier onnxl2 versions (``compress(genmodels.mixed_model(), bits=4)``
#: at the last commit of each format): 1 order-0 payloads and a 12-byte entry and checksum per
#: section, 2 the classed codec, 3 varint section lengths and one checksum, 4 steps as grid
#: indices (5, spans without names and section numbers, is what the writer makes now).
OLD_FORMATS = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_bitstreams_of_older_formats_still_decode(tmp_path, version):
    """Each decodes to files whose sha256 the bitstream recorded (the decoder checks it), and the
    ONNX among them runs."""
    blob = (OLD_FORMATS / f"format{version}.l2b").read_bytes()
    assert blob[8:10] == bytes([version, 0])
    restored = decompress(blob, tmp_path / "m.onnx")
    assert [name for name, _ in restored.files] == ["model.l2.onnx"]
    x = genmodels.mixed_inputs(4, seed=1)
    assert make_session(str(tmp_path / "m.onnx")).run(None, x)[0].shape[0] == 4
