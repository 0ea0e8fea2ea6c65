"""What a user would pick instead of onnxl2: whole-file compressors and ONNX Runtime's own tools.

Each function makes one shipped artefact from the original model and returns a ``Made``: the
bytes a user would ship, the ONNX that runs (None for lossless rows) and the time to make and
to unpack it. ONNX Runtime rows are shipped zstd-compressed (level 19), as a user would.
Recipes follow ``../shared/research/peer-setup.md``: Constant-node weights become initializers
first (the quantizers do not see them otherwise), ``quant_pre_process`` runs before quantizing,
and static QDQ is per tensor (per channel gives invalid graphs on the PP-OCR models).
"""
from __future__ import annotations

import lzma
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx


@dataclass
class Made:
    shipped_bytes: int
    compress_s: float
    decompress_s: float
    onnx_path: Optional[Path] = None  # the model that runs, when the row is lossy
    lossless: bool = False
    note: str = ""


class NotApplicable(Exception):
    """The method does not apply to this model (reported as n/a, not as a failure)."""


def _zstd(data: bytes) -> tuple[bytes, float, float]:
    import zstandard
    start = time.perf_counter()
    packed = zstandard.ZstdCompressor(level=19).compress(data)
    mid = time.perf_counter()
    assert zstandard.ZstdDecompressor().decompress(packed) == data
    return packed, mid - start, time.perf_counter() - mid


def zstd_file(model: Path, work: Path) -> Made:
    packed, comp, dec = _zstd(model.read_bytes())
    return Made(len(packed), comp, dec, lossless=True)


def lzma_file(model: Path, work: Path) -> Made:
    data = model.read_bytes()
    start = time.perf_counter()
    packed = lzma.compress(data, preset=9)
    mid = time.perf_counter()
    assert lzma.decompress(packed) == data
    return Made(len(packed), mid - start, time.perf_counter() - mid, lossless=True)


def _shipped(path: Path, seconds: float, note: str = "") -> Made:
    packed, comp, dec = _zstd(path.read_bytes())
    return Made(len(packed), seconds + comp, dec, onnx_path=path,
                note=(note + "; " if note else "") + f"{path.stat().st_size:,} B before zstd")


def constants_to_initializers(model: Path, out: Path) -> Path:
    """Main-graph Constant tensors as initializers (same outputs, bit for bit)."""
    proto = onnx.load(str(model))
    kept = []
    for node in proto.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) \
            if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if value is None:
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        proto.graph.initializer.append(tensor)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    onnx.save(proto, str(out))
    return out


def _prepared(model: Path, work: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process
    plain = work / "constants_as_initializers.onnx"
    prepared = work / "prepared.onnx"
    if not prepared.exists():
        constants_to_initializers(model, plain)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
    return prepared


def ort_dynamic_int8(model: Path, work: Path, calib: dict) -> Made:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    start = time.perf_counter()
    out = work / "ort_dynamic_int8.onnx"
    quantize_dynamic(str(_prepared(model, work)), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return _shipped(out, time.perf_counter() - start, "per channel")


class _Reader:
    """ONNX Runtime's CalibrationDataReader over the calibration split, one sample per feed."""

    def __init__(self, calib: dict) -> None:
        self._iter: Iterator = iter([{k: v[i:i + 1] for k, v in calib.items()}
                                     for i in range(len(next(iter(calib.values()))))])

    def get_next(self):
        return next(self._iter, None)


def ort_static_qdq_int8(model: Path, work: Path, calib: dict) -> Made:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    start = time.perf_counter()
    out = work / "ort_static_qdq_int8.onnx"
    quantize_static(str(_prepared(model, work)), str(out), _Reader(calib), quant_format=QuantFormat.QDQ,
                    per_channel=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return _shipped(out, time.perf_counter() - start, "QDQ, MinMax, per tensor")


def ort_matmul_4bit(model: Path, work: Path, calib: dict) -> Made:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    prepared = onnx.load(str(_prepared(model, work)))
    names = {t.name for t in prepared.graph.initializer if len(t.dims) == 2}
    if not any(n.op_type == "MatMul" and n.input[1] in names for n in prepared.graph.node):
        raise NotApplicable("no MatMul with a constant 2-D weight")
    start = time.perf_counter()
    quantizer = MatMulNBitsQuantizer(prepared, bits=4, block_size=32, is_symmetric=True,
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    out = work / "ort_matmul_4bit.onnx"
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return _shipped(out, time.perf_counter() - start, "MatMulNBits, block 32, symmetric, MatMul only")


def ort_float16(model: Path, work: Path, calib: dict) -> Made:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    start = time.perf_counter()
    proto = onnx.load(str(constants_to_initializers(model, work / "constants_as_initializers.onnx")))
    half = convert_float_to_float16(proto, keep_io_types=True)
    out = work / "ort_float16.onnx"
    onnx.save(half, str(out))
    return _shipped(out, time.perf_counter() - start, "keep_io_types")


def float_params(model: Path) -> int:
    proto = onnx.load(str(model))
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in tensors
                   if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)))


LOSSLESS = {"zstd -19 (file)": zstd_file, "lzma -9 (file)": lzma_file}
LOSSY = {"ORT dynamic int8 + zstd": ort_dynamic_int8, "ORT static QDQ int8 + zstd": ort_static_qdq_int8,
         "ORT MatMulNBits 4-bit + zstd": ort_matmul_4bit, "float16 + zstd": ort_float16}
