"""Peer compressors (NNCodec, ZipNN) on one ONNX model, for benchmarks; one JSON object out.

Both peers need torch, so this runs under its own virtualenv and never imports onnxl2:

    .cache/peers-venv/bin/python tools/bench_peers.py nncodec --model IN.onnx --qp -32 \
        --out CAND.onnx --json RES.json
    .cache/peers-venv/bin/python tools/bench_peers.py zipnn --model IN.onnx --json RES.json

Coded tensors: every float32 initializer of the main graph and every float32 `value` of a main-graph
Constant node (PP-OCR keeps its weights there). NNCodec codes those of at least 16 elements (smaller
ones stay exact) and writes the decoded model to --out; ZipNN codes each such tensor losslessly.
The rest of the model (serialized with the coded tensors emptied, dims kept) is the "skeleton",
shipped as zstandard level 19. On any error the JSON holds status "failed" and the exit code is 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import zstandard
from onnx import numpy_helper

MIN_ELEMENTS = 16


def float_tensors(model: onnx.ModelProto, min_elements: int = MIN_ELEMENTS) -> dict[str, onnx.TensorProto]:
    """Main-graph float32 initializers and Constant values, keyed by tensor / node-output name."""
    found: dict[str, onnx.TensorProto] = {}
    candidates = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            candidates += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
    for key, tensor in candidates:
        if tensor.data_type == onnx.TensorProto.FLOAT and int(np.prod(tensor.dims)) >= min_elements:
            unique, n = key, 1
            while unique in found:
                unique, n = f"{key}#{n}", n + 1
            found[unique] = tensor
    return found


def skeleton_bytes(model: onnx.ModelProto, keys: list[str]) -> int:
    """zstd-19 size of the model serialized with the named tensors' data emptied (dims kept)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    bare_tensors = float_tensors(bare)
    for key in keys:
        tensor = bare_tensors[key]
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
    blob = bare.SerializeToString()
    return len(zstandard.ZstdCompressor(level=19).compress(blob))


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return float("nan")


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_nncodec(model_path: Path, qp: int, out_path: Path) -> dict:
    from nncodec.nn import decode, encode  # lazy: needs torch

    model = onnx.load(str(model_path))
    tensors = float_tensors(model)
    arrays = {k: np.ascontiguousarray(numpy_helper.to_array(t), dtype=np.float32) for k, t in tensors.items()}
    with tempfile.TemporaryDirectory(prefix="nncodec_") as tmpdir:
        args = {"qp": qp, "results": tmpdir, "verbose": False, "model": model_path.stem}
        t0 = time.perf_counter()
        bitstream = bytes(encode(dict(arrays), args=args))
        t1 = time.perf_counter()
        # decompress() only takes a bytearray as in-memory input (anything else is read as a path).
        decoded = decode(bytearray(bitstream), args=args)
        t2 = time.perf_counter()
    missing = sorted(set(arrays) - set(decoded))
    if missing:
        raise RuntimeError(f"NNCodec decode lost {len(missing)} tensors, e.g. {missing[0]}")
    for key, tensor in tensors.items():
        rec = np.asarray(decoded[key], dtype=np.float32).reshape(arrays[key].shape)
        tensor.CopyFrom(numpy_helper.from_array(rec, tensor.name))
    atomic_write(out_path, model.SerializeToString())
    coded = int(sum(a.size for a in arrays.values()))
    skeleton = skeleton_bytes(model, list(tensors))
    return {"method": "nncodec", "qp": qp, "bitstream_bytes": len(bitstream), "skeleton_bytes": skeleton,
            "shipped_bytes": len(bitstream) + skeleton, "coded_params": coded, "coded_tensors": len(arrays),
            "bits_per_param": 8.0 * len(bitstream) / max(coded, 1), "encode_s": round(t1 - t0, 4),
            "decode_s": round(t2 - t1, 4)}


def run_zipnn(model_path: Path) -> dict:
    from zipnn import ZipNN  # lazy: needs torch

    model = onnx.load(str(model_path))
    tensors = float_tensors(model)
    raws = {k: numpy_helper.to_array(t).astype("<f4", copy=False).tobytes() for k, t in tensors.items()}
    codec = ZipNN(method="zstd", input_format="byte", bytearray_dtype="float32")
    t0 = time.perf_counter()
    # compress() mutates its input in place: hand it a fresh, 4-byte-aligned copy.
    packed = {k: bytes(codec.compress(bytearray(r) + bytearray(-len(r) % 4))) for k, r in raws.items()}
    t1 = time.perf_counter()
    unpacked = {k: bytes(codec.decompress(p)) for k, p in packed.items()}
    t2 = time.perf_counter()
    exact = all(unpacked[k][:len(r)] == r for k, r in raws.items())
    tensor_bytes = sum(len(p) for p in packed.values())
    skeleton = skeleton_bytes(model, list(tensors))
    return {"method": "zipnn", "shipped_bytes": tensor_bytes + skeleton, "tensor_bytes": tensor_bytes,
            "skeleton_bytes": skeleton, "coded_tensors": len(raws),
            "coded_params": int(sum(len(r) for r in raws.values()) // 4), "round_trip_exact": bool(exact),
            "encode_s": round(t1 - t0, 4), "decode_s": round(t2 - t1, 4)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="method", required=True)
    nnc = sub.add_parser("nncodec", help="lossy NNCodec (NNR) coding of the float tensors")
    nnc.add_argument("--model", type=Path, required=True)
    nnc.add_argument("--qp", type=int, default=-32)
    nnc.add_argument("--out", type=Path, required=True, help="decoded candidate model (.onnx)")
    nnc.add_argument("--json", type=Path, required=True)
    zp = sub.add_parser("zipnn", help="lossless per-tensor ZipNN coding of the float tensors")
    zp.add_argument("--model", type=Path, required=True)
    zp.add_argument("--json", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.method == "nncodec":
            result = run_nncodec(args.model, args.qp, args.out)
        else:
            result = run_zipnn(args.model)
        result.update(peak_rss_mb=peak_rss_mb(), status="ok")
        code = 0
    except BaseException as exc:  # SystemExit too: NNCodec raises it on bad input
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        result = {"method": args.method, "status": "failed", "error": error, "peak_rss_mb": peak_rss_mb()}
        code = 1
    atomic_write(args.json, (json.dumps(result, indent=2) + "\n").encode())
    return code


if __name__ == "__main__":
    sys.exit(main())
