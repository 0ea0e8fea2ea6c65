"""Foundation benchmark: lossless ratio against zstd -19 / lzma -9 of the whole file, and the
time and peak memory of compressing and decompressing a 10M-parameter model.

    python tools/bench_foundation.py [--models PATH ...] [--params 10000000]

Each measurement runs in a fresh subprocess so that its peak memory (VmHWM) is its own;
peak memory is reported as the rise above the process's resident size before the step, next
to the model's size. Needs the `bench` extra (zstandard).
"""
from __future__ import annotations

import argparse
import json
import lzma
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_STEP = r"""
import json, sys, time, psutil
import onnxl2

def high_water_mark():  # VmHWM is per process image; ru_maxrss survives exec and misleads here
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

mode, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
base = psutil.Process().memory_info().rss
start = time.perf_counter()
if mode == "decompress":
    onnxl2.decompress(model, out)
else:
    onnxl2.compress(model, bits=None if mode == "lossless" else int(mode), lossless=mode == "lossless",
                    out_dir=out, quiet=True)
seconds = time.perf_counter() - start
peak = high_water_mark()
print(json.dumps({"seconds": seconds, "peak_rise_bytes": peak - base}))
"""


def _step(mode: str, model: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _STEP, mode, str(model), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def lossless_row(path: Path, work: Path) -> dict:
    import zstandard
    data = path.read_bytes()
    start = time.perf_counter()
    zstd = len(zstandard.ZstdCompressor(level=19).compress(data))
    zstd_s = time.perf_counter() - start
    start = time.perf_counter()
    xz = len(lzma.compress(data, preset=9))
    xz_s = time.perf_counter() - start
    out = work / path.stem
    step = _step("lossless", path, out)
    l2b = next(out.glob("*.l2b"))
    back = _step("decompress", l2b, work / f"{path.stem}.restored.onnx")
    exact = (work / f"{path.stem}.restored.onnx").read_bytes() == data
    return {"model": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "file_bytes": len(data),
            "zstd19_ratio": len(data) / zstd, "zstd19_s": zstd_s,
            "lzma9_ratio": len(data) / xz, "lzma9_s": xz_s,
            "onnxl2_lossless_ratio": len(data) / l2b.stat().st_size,
            "onnxl2_compress_s": step["seconds"], "onnxl2_decompress_s": back["seconds"],
            "bit_exact": exact}


def speed_rows(params: int, work: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    import genmodels
    import onnx
    side = 1024
    layers = max(1, -(-params // (side * side)))
    path = work / "big.onnx"
    onnx.save_model(genmodels.big_matmul_model(side, side, layers=layers), path)
    rows = []
    for mode in ("lossless", "4", "8"):
        out = work / f"big_{mode}"
        enc = _step(mode, path, out)
        dec = _step("decompress", next(out.glob("*.l2b")), work / f"big_{mode}.restored.onnx")
        rows.append({"mode": mode if mode == "lossless" else f"--bits {mode}",
                     "params": layers * side * side, "model_bytes": path.stat().st_size,
                     "compress_s": enc["seconds"], "compress_peak_rise_x": enc["peak_rise_bytes"] / path.stat().st_size,
                     "decompress_s": dec["seconds"], "decompress_peak_rise_x": dec["peak_rise_bytes"] / path.stat().st_size,
                     "bitstream_bytes": next(out.glob("*.l2b")).stat().st_size})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", type=Path,
                        default=[ROOT / "models" / "ppocr_cls" / "model.onnx",
                                 *sorted((ROOT / ".cache" / "zoo").glob("*/model.onnx"))])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--json", type=Path, help="Write the results here as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lossless = [lossless_row(p, work) for p in args.models if p.exists()]
        speed = speed_rows(args.params, work)
    print("| model | bytes | zstd -19 | lzma -9 | onnxl2 --lossless | enc s | dec s | bit-exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in lossless:
        print(f"| {r['model']} | {r['file_bytes']:,} | {r['zstd19_ratio']:.3f}x | {r['lzma9_ratio']:.3f}x | "
              f"{r['onnxl2_lossless_ratio']:.3f}x | {r['onnxl2_compress_s']:.2f} | "
              f"{r['onnxl2_decompress_s']:.2f} | {r['bit_exact']} |")
    print()
    print("| mode | params | compress s | peak rise / model | decompress s | peak rise / model | bitstream |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in speed:
        print(f"| {r['mode']} | {r['params']:,} | {r['compress_s']:.2f} | {r['compress_peak_rise_x']:.2f}x | "
              f"{r['decompress_s']:.2f} | {r['decompress_peak_rise_x']:.2f}x | {r['bitstream_bytes']:,} |")
    if args.json:
        args.json.write_text(json.dumps({"lossless": lossless, "speed": speed}, indent=2))


if __name__ == "__main__":
    main()
