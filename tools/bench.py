"""onnxl2 against what users would pick instead, on real models: one table per model.

    pip install -e .[bench]          # zstandard, psutil, pillow (and torch for the MiniLM export)
    python tools/bench.py [--models default ppocr_rec_v4 ...] [--quick] [--out bench]

For each model (the embedded default, the PP-OCR v4 detector and recogniser from
``tools/fetch_zoo.py``, all-MiniLM-L6-v2 from ``tools/export_minilm.py``) every method compresses
the same original file; the calibration split is all that methods may look at, the held-out
evaluation split judges. Rows: lossless (zstd -19, lzma -9, ZipNN, onnxl2 --lossless); ONNX
Runtime's int8 dynamic / static QDQ / MatMulNBits 4-bit and float16 (each shipped with zstd -19);
NNCodec at three qp; onnxl2's lossless neighbourhood, --target-ratio 10 and 20 (error-compensated
with bias correction, the automatic mode's default), --bits 8 and 4; and, to measure what
compensation brings, the neighbourhood and --target-ratio 10 with ``--no-compensate``.

Each method runs in its own process, so that its peak memory (VmHWM) is its own. ZipNN and
NNCodec need torch and run in a separate virtual environment (``--peers-python``, default
``.cache/peers-venv/bin/python``, made by ``bash tools/setup_peers.sh``); without it their rows
say "skipped". Writes ``OUT/results.json``, ``OUT/results.md`` and one
size-against-accuracy curve per model, ``OUT/<model>.svg``.

Baseline rows (everything but onnxl2's) are kept in ``OUT/cache/<model>/baselines``, keyed by
the method, the model and calibration files, the baseline scripts and the versions of the
packages they call. A later run with the same inputs reuses the row and its artefact while the
artefact's sha256 is the one recorded, instead of making it again (MiniLM's lzma, zstd and
NNCodec rows alone take 4 minutes): the file is judged again, the times are those of the run
that made it, and the row says when. ``--fresh-baselines`` makes them all again.

``--quick`` uses fewer samples (at most 32 per split; the detector calibrates on 8 pages and is
judged on 16), measures every candidate's sensitivity only when that fits 60 s (the proxy sweep
otherwise) and without the Taylor terms (reported, but the allocation does not use them), and
leaves out the comparison rows (plain rounding: ``--no-compensate``; bits alone:
``--no-lowrank``) unless ``--methods`` names them (``--methods compensate`` runs just the first
two; ``--methods "onnxl2 neighbourhood" "onnxl2 --target-ratio 10" no-lowrank`` puts the joint
bits + rank allocation beside bits alone).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.bench_tasks import MODELS, Task, make_task  # noqa: E402

PEERS_PYTHON = ROOT / ".cache" / "peers-venv" / "bin" / "python"
NNCODEC_QPS = (-38, -32, -26)
QUICK_SWEEP_S = 60.0  # --quick: measure every candidate when that fits this many seconds, else the proxy
ONNXL2_ROWS = {"onnxl2 --lossless": {"lossless": True},
               "onnxl2 contract (default)": {"contract": True},
               "onnxl2 contract --no-layer-steps": {"contract": True, "layer_steps": False},
               "onnxl2 contract --wide-levels": {"contract": True, "wide_levels": True},
               "onnxl2 contract --ctc": {"contract": True, "ctc": True},
               "onnxl2 neighbourhood (eps 0)": {"max_loss_increase": 0},
               "onnxl2 --target-ratio 10": {"target_ratio": 10.0},
               "onnxl2 --target-ratio 20": {"target_ratio": 20.0},
               "onnxl2 --bits 8": {"bits": 8},
               "onnxl2 --bits 4": {"bits": 4},
               "onnxl2 --no-compensate (eps 0)": {"max_loss_increase": 0, "compensate": False},
               "onnxl2 --no-compensate --target-ratio 10": {"target_ratio": 10.0, "compensate": False},
               "onnxl2 --no-lowrank (eps 0)": {"max_loss_increase": 0, "lowrank": False},
               "onnxl2 --no-lowrank --target-ratio 10": {"target_ratio": 10.0, "lowrank": False}}
#: Rows --quick leaves out unless --methods names them (they add minutes on the larger models).
SLOW_ROWS = ("onnxl2 --no-compensate (eps 0)", "onnxl2 --no-compensate --target-ratio 10",
             "onnxl2 --no-lowrank (eps 0)", "onnxl2 --no-lowrank --target-ratio 10")


# ----------------------------------------------------------------------------- data

def _limit(task: Task, quick: bool) -> tuple[int, int]:
    if not quick:
        return 10 ** 9, 10 ** 9
    return (8, 16) if task.kind == "det" else (32, 32)


def split_files(task: Task, work: Path, quick: bool) -> dict[str, Path]:
    """The calibration and evaluation npz (cut to the --quick sizes) and their labels."""
    calib_n, eval_n = _limit(task, quick)
    files = {}
    for split, n in (("calib", calib_n), ("eval", eval_n)):
        with np.load(task.split(split)) as z:
            arrays = {k: z[k] for k in z.files}
        total = len(next(iter(arrays.values())))
        if n >= total:
            files[split] = task.split(split)
        else:
            files[split] = work / f"{split}.npz"
            np.savez(files[split], **{k: v[:n] for k, v in arrays.items()})
        labels = task.labels(split)
        if labels is not None:
            y = np.load(labels)
            files[f"{split}_labels"] = labels if n >= total else work / f"{split}_labels.npy"
            if n < total:
                np.save(files[f"{split}_labels"], y[:n])
    return files


# ----------------------------------------------------------------------------- one method, own process

def _peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(spec: dict) -> dict:
    """Make one row's artefact in this process: sizes, times, the ONNX to judge."""
    from tools import bench_baselines as bb
    model, work, method = Path(spec["model"]), Path(spec["work"]), spec["method"]
    work.mkdir(parents=True, exist_ok=True)
    if method in bb.LOSSLESS:
        made = bb.LOSSLESS[method](model, work)
    elif method in bb.LOSSY:
        with np.load(spec["calib"]) as z:
            calib = {k: z[k] for k in z.files}
        made = bb.LOSSY[method](model, work, calib)
    else:
        made = _onnxl2(model, work, method, spec)
    row = asdict(made)
    row["onnx_path"] = str(made.onnx_path) if made.onnx_path else None
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def _onnxl2(model: Path, work: Path, method: str, spec: dict):
    import onnxl2
    from tools.bench_baselines import Made
    options = dict(ONNXL2_ROWS[method])
    out = work / method.replace(" ", "_").replace("(", "").replace(")", "").replace("--", "")
    readings = options.pop("ctc", False)
    if readings and not spec["ctc_outputs"]:
        from tools.bench_baselines import NotApplicable
        raise NotApplicable("not a CTC reader")
    if options.pop("contract", False):  # the default command: calibration data (and labels), nothing else
        options.update(data=spec["calib"], labels=spec.get("calib_labels"))
    if readings:  # the reader's output named as one: its strings judged, not its steps
        options["contract"] = onnxl2.Contract(ctc=tuple(spec["ctc_outputs"]))
    elif not options.get("lossless") and "bits" not in options:
        options.update(data=spec["calib"], labels=spec.get("calib_labels"), loss=spec["loss"], taylor=spec["taylor"],
                       sweep=spec["sweep"], sweep_budget=spec["sweep_budget_s"],
                       sweep_cache=spec["sweep_cache"])
    start = time.perf_counter()
    result = onnxl2.compress(model, out_dir=out, devices=("cpu",), quiet=True, **options)
    seconds = time.perf_counter() - start
    stem = next(out.glob("*.l2b"))
    start = time.perf_counter()
    decoded = onnxl2.decompress(stem, out / "decoded.onnx")
    decompress_s = time.perf_counter() - start
    note = ""
    if not options.get("lossless"):
        emitted = next(out.glob("*.l2.onnx"))
        assert (out / "decoded.onnx").read_bytes() == emitted.read_bytes(), "decode differs from the emitted ONNX"
        alloc = result.report.get("allocation") or {}
        notes = []
        if alloc.get("frontier"):
            frontier = alloc["frontier"]
            notes.append(f"contract ({alloc['contract']['form']}): {len(frontier['points'])} plans measured on "
                         f"{alloc['contract']['held_back_samples']} held-back samples, {frontier['message']}")
        elif alloc:
            notes.append(f"calib loss change {alloc.get('measured_loss_change', float('nan')):+.2e}")
            if alloc.get("sweep_cached"):
                notes.append("sweep reused from the first auto row")
        ints = result.report["sizes"].get("integer_weights")
        if ints:  # the coder against the order-0 bound of the same symbols
            notes.append(f"int symbols {ints['symbol_bits_per_weight']:.3f} bit/w coded vs "
                         f"{ints['order0_entropy_bits_per_weight']:.3f} order-0")
        compute = result.report.get("compute") or {}
        if compute.get("factorised_layers"):
            notes.append(f"{compute['factorised_layers']} layers low-rank, MACs/sample "
                         f"{compute['macs_per_sample_after'] / compute['macs_per_sample_before']:.0%} of the original")
        note = "; ".join(notes)
    else:
        assert decoded.files[0][1] == model.read_bytes(), "lossless round trip differs"
    return Made(stem.stat().st_size, seconds, decompress_s,
                onnx_path=None if options.get("lossless") else out / "decoded.onnx",
                lossless=bool(options.get("lossless")), note=note)


def _in_subprocess(spec: dict, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", f.name], capture_output=True,
                              text=True, timeout=timeout)
    finally:
        os.unlink(f.name)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "error": tail[:300]}
    return json.loads(lines[-1])


def _peer(kind: str, model: Path, work: Path, peers_python: Path, qp: int | None, timeout: float) -> dict:
    if not peers_python.exists():
        return {"status": "skipped", "error": f"no peers environment at {peers_python} (see peer-setup.md)"}
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / f"{kind}{qp if qp is not None else ''}.json"
    cmd = [str(peers_python), str(ROOT / "tools" / "bench_peers.py"), kind, "--model", str(model),
           "--json", str(result_path)]
    if kind == "nncodec":
        cmd += ["--qp", str(qp), "--out", str(work / f"nncodec_qp{qp}.onnx")]
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    if not result_path.exists():
        return {"status": "failed", "error": "no result written"}
    res = json.loads(result_path.read_text())
    if res.get("status") != "ok":
        return {"status": "failed", "error": res.get("error", "?")}
    row = {"shipped_bytes": res["shipped_bytes"], "compress_s": res["encode_s"], "decompress_s": res["decode_s"],
           "peak_rss_mb": res.get("peak_rss_mb"), "lossless": kind == "zipnn"}
    if kind == "nncodec":
        row["onnx_path"] = str(work / f"nncodec_qp{qp}.onnx")
        row["note"] = (f"bitstream {res['bitstream_bytes']:,} B + graph {res['skeleton_bytes']:,} B (zstd); "
                       f"{res['bits_per_param']:.2f} bit/param")
    else:
        row["note"] = "per tensor + zstd -19 of the rest; " + ("round trip exact" if res.get("round_trip_exact")
                                                               else "ROUND TRIP DIFFERS")
    return row


# ----------------------------------------------------------------------------- judging

def run_model(path: str | Path, feeds: dict[str, np.ndarray], batch: int = 8) -> tuple[np.ndarray, float]:
    """The first output on all samples, and milliseconds per sample (median batch, warm-up excluded)."""
    import onnx

    from onnxl2.data import fixed_batch, input_specs
    from onnxl2.evaluate import run_model as run_batches
    from onnxl2.runtime import make_session
    fixed = [s.shape[0] for s in input_specs(onnx.load(str(path), load_external_data=False))
             if s.shape and s.shape[0] is not None]
    batch = fixed[0] if fixed else batch  # a model of batch 1 (ddddocr's) runs sample by sample
    session = make_session(str(path))
    result = run_batches(session, feeds, batch)
    return result.outputs[session.get_outputs()[0].name], result.latency_ms / batch


def methods(quick: bool) -> list[tuple[str, str, int | None]]:
    from tools import bench_baselines as bb
    rows = [(m, "base", None) for m in bb.LOSSLESS] + [("ZipNN (per tensor)", "zipnn", None)]
    rows += [("onnxl2 --lossless", "onnxl2", None)]
    rows += [(m, "base", None) for m in bb.LOSSY]
    rows += [(f"NNCodec qp {qp}", "nncodec", qp) for qp in NNCODEC_QPS]
    rows += [(m, "onnxl2", None) for m in ONNXL2_ROWS if m != "onnxl2 --lossless"]
    return rows


def _digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _versions() -> str:
    """Versions of what the in-process baselines run on (ORT's quantizers, onnx, zstd)."""
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for package in ("onnx", "onnxruntime", "zstandard", "numpy"):
        try:
            found.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            found.append(f"{package}=-")
    return ",".join(found)


def baseline_inputs(model: Path, calib: Path, peers_python: Path) -> bytes:
    """Digest of what every baseline row of a model depends on besides its method: the model and
    calibration files, the scripts that run the baselines, the packages they call (the peers'
    venv by its path). Computed once per model (a large model takes a while to hash)."""
    h = hashlib.sha256("\0".join([str(peers_python), _versions()]).encode())
    for path in (model, calib, ROOT / "tools" / "bench_baselines.py", ROOT / "tools" / "bench_peers.py"):
        h.update(_digest(path))
    return h.digest()


def baseline_key(method: str, qp: int | None, inputs: bytes) -> str:
    """The key a baseline row is kept under: its method (and qp) and :func:`baseline_inputs`."""
    return hashlib.sha256(f"{method}\0{qp}\0".encode() + inputs).hexdigest()[:32]


def _cached_row(folder: Path, key: str) -> dict | None:
    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    made = row.get("onnx_path")
    if made and (not Path(made).is_file() or _digest(Path(made)).hex() != row.get("onnx_sha256")):
        return None  # its artefact is gone or was overwritten (by a row of other inputs): make it again
    return row


def task_output(model: Path) -> str:
    """The output the task scores (the model's first, as ``run_model`` takes it)."""
    import onnx
    return onnx.load(str(model), load_external_data=False).graph.output[0].name


def bench_model(name: str, out: Path, quick: bool, peers_python: Path, timeout: float,
                only: list[str] | None = None, fresh_baselines: bool = False) -> dict:
    from tools.bench_baselines import float_params
    task = make_task(name)
    work = out / "cache" / name
    work.mkdir(parents=True, exist_ok=True)
    files = split_files(task, work, quick)
    with np.load(files["eval"]) as z:
        feeds = {k: z[k] for k in z.files}
    original_bytes = task.model.stat().st_size
    reference, base_ms = run_model(task.model, feeds)
    original_scores = task.score(reference, reference)
    sweep_cache = work / "sweeps"
    for stale in sweep_cache.glob("*"):  # every run measures its own sweep once
        stale.unlink()
    spec_base = {"model": str(task.model), "calib": str(files["calib"]),
                 "calib_labels": str(files["calib_labels"]) if "calib_labels" in files else None,
                 "loss": task.loss, "sweep": "auto", "taylor": not quick, "sweep_budget_s": QUICK_SWEEP_S if quick else 300.0,
                 "sweep_cache": str(sweep_cache),
                 "ctc_outputs": [task_output(task.model)] if task.kind == "ctc" else []}
    inputs = baseline_inputs(task.model, files["calib"], peers_python)
    rows = []
    for method, kind, qp in methods(quick):
        if only and not any(part in method for part in only):
            continue
        if quick and not only and method in SLOW_ROWS:
            continue
        print(f"[{name}] {method} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        key = baseline_key(method, qp, inputs) if kind != "onnxl2" else None
        row = None if key is None or fresh_baselines else _cached_row(work / "baselines", key)
        if row is not None:
            row["cached"] = True
        elif kind in ("zipnn", "nncodec"):
            row = _peer(kind, task.model, work / "peers", peers_python, qp, timeout)
        else:
            row = _in_subprocess({**spec_base, "method": method, "work": str(work / "made")}, timeout)
        row = {"method": method, "status": row.pop("status", "ok"), **row}
        if key is not None and not row.get("cached") and row["status"] in ("ok", "n/a"):
            (work / "baselines").mkdir(exist_ok=True)
            artefact = {"onnx_sha256": _digest(Path(row["onnx_path"])).hex()} if row.get("onnx_path") else {}
            (work / "baselines" / f"{key}.json").write_text(
                json.dumps({**row, **artefact, "made": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
        if row["status"] == "ok":
            row["ratio"] = original_bytes / row["shipped_bytes"]
            if row.get("onnx_path"):
                try:
                    cand, ms = run_model(row["onnx_path"], feeds)
                    row.update(task.score(reference, cand), latency_ms=ms)
                except Exception as exc:  # a baseline whose model does not run is a result
                    row.update(status="failed", error=f"does not run: {str(exc).splitlines()[0][:200]}")
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(f"[{name}] {method}: {_brief(row, task)}", file=sys.stderr, flush=True)
    return {"model": name, "kind": task.kind, "metric": task.metric, "bar": task.bar,
            "original_bytes": original_bytes, "float_params": float_params(task.model),
            "calib_samples": _count(files["calib"]), "eval_samples": _count(files["eval"]),
            "original": {**original_scores, "latency_ms": base_ms}, "rows": rows}


def _count(path: Path) -> int:
    with np.load(path) as z:
        return len(z[z.files[0]])


def _brief(row: dict, task: Task) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('error', '')}"
    text = f"{row['ratio']:.2f}x"
    if task.metric in row:
        text += f", {task.metric} {row[task.metric]:.4f}, cos {row['cos_mean']:.5f}"
    if "accuracy" in row:
        text += f", accuracy {row['accuracy']:.4f}"
    return text


# ----------------------------------------------------------------------------- outputs

def markdown(result: dict) -> str:
    metric, orig = result["metric"], result["original"]
    has_acc = "accuracy" in orig
    lines = [f"### {result['model']} ({result['original_bytes']:,} B, {result['float_params']:,} float params; "
             f"calib {result['calib_samples']} / eval {result['eval_samples']} samples"
             + (f"; original accuracy {orig['accuracy_original']:.4f}" if has_acc else "") + ")", "",
             "| method | shipped bytes | ratio | " + ("accuracy | " if has_acc else "")
             + f"{metric} | cos mean / min | ok | compress s | decompress s | peak MB | notes |",
             "|---|---:|---:|" + ("---:|" if has_acc else "") + "---:|---|---|---:|---:|---:|---|"]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | - | - | " + ("- | " if has_acc else "")
                         + f"- | - | - | - | - | - | {r['status']}: {r.get('error', '')[:120]} |")
            continue
        lossy = "cos_mean" in r
        acc = (f"{r['accuracy']:.4f} | " if lossy else "= | ") if has_acc else ""
        task = f"{r[metric]:.4f} | {r['cos_mean']:.5f} / {r['cos_min']:.4f} | {'yes' if r['acceptable'] else 'no'}" \
            if lossy else "lossless | - | yes"
        peak = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
        note = r.get("note", "")
        if r.get("cached"):  # sizes and the files judged are the same; the times are from that run
            note = f"made {r.get('made', 'earlier')} (same inputs; its times)" + (f"; {note}" if note else "")
        lines.append(f"| {r['method']} | {r['shipped_bytes']:,} | {r['ratio']:.2f}x | {acc}{task} | "
                     f"{r['compress_s']:.1f} | {r['decompress_s']:.2f} | {peak} | {note} |")
    return "\n".join(lines) + "\n"


def svg_curve(result: dict) -> str:
    """Size against accuracy: file ratio (log axis) against the task figure, onnxl2 in one colour."""
    y_key = "accuracy" if "accuracy" in result["original"] else result["metric"]
    points = [(r["ratio"], r[y_key], r["method"]) for r in result["rows"]
              if r["status"] == "ok" and y_key in r]
    if not points:
        return ""
    w, h, left, bottom, top, right = 720, 420, 60, 50, 30, 200
    xs = np.log([p[0] for p in points])
    ys = [p[1] for p in points] + [result["original"].get("accuracy_original", 1.0)]
    x0, x1 = min(xs.min(), 0.0), xs.max() + 0.1
    y0, y1 = max(0.0, min(ys) - 0.02), min(1.0, max(ys)) + 0.01
    px = lambda v: left + (v - x0) / (x1 - x0) * (w - left - right)  # noqa: E731
    py = lambda v: h - bottom - (v - y0) / (y1 - y0) * (h - bottom - top)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             'font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="18" font-size="13">{result["model"]}: {y_key} (eval) against file ratio</text>',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>']
    for tick in (1, 2, 4, 8, 16, 32):
        if x0 <= np.log(tick) <= x1:
            parts.append(f'<text x="{px(np.log(tick)):.1f}" y="{h - bottom + 15}" text-anchor="middle">{tick}x</text>')
    for tick in np.linspace(y0, y1, 5):
        parts.append(f'<text x="{left - 5}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.3f}</text>')
    ref = result["original"].get("accuracy_original", 1.0)
    parts.append(f'<line x1="{left}" y1="{py(ref):.1f}" x2="{w - right}" y2="{py(ref):.1f}" stroke="#999" '
                 'stroke-dasharray="4 3"/><text x="{0}" y="{1:.1f}" fill="#666">original</text>'
                 .format(w - right + 4, py(ref) + 4))
    ours = sorted((p for p in points if p[2].startswith("onnxl2")), key=lambda p: p[0])
    if len(ours) > 1:
        path = " ".join(f"{px(np.log(r)):.1f},{py(v):.1f}" for r, v, _ in ours)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#c0392b" stroke-width="1.5"/>')
    legend_y = top
    for ratio, value, method in points:
        colour = "#c0392b" if method.startswith("onnxl2") else "#2c6fbb"
        parts.append(f'<circle cx="{px(np.log(ratio)):.1f}" cy="{py(value):.1f}" r="4" fill="{colour}">'
                     f'<title>{method}: {ratio:.2f}x, {value:.4f}</title></circle>')
        parts.append(f'<text x="{w - right + 10}" y="{legend_y}" fill="{colour}">{method}: {ratio:.1f}x, '
                     f'{value:.3f}</text>')
        legend_y += 14
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">file ratio (log scale)</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    parser.add_argument("--methods", nargs="*", help="only rows whose name contains one of these")
    parser.add_argument("--fresh-baselines", action="store_true",
                        help="make every baseline row again, even where one with the same inputs is kept")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        from tools.bench_baselines import NotApplicable
        try:
            row = run_worker(json.loads(Path(args.worker).read_text()))
        except NotApplicable as exc:  # e.g. MatMulNBits on a model without MatMul weights
            row = {"status": "n/a", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a target no plan can reach is a result, not a crash
            if "out of reach" not in str(exc):
                raise
            row = {"status": "out of reach", "error": str(exc)}
        print(json.dumps(row))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    for name in args.models:
        try:
            results.append(bench_model(name, args.out, args.quick, args.peers_python, args.timeout, args.methods,
                                       args.fresh_baselines))
        except Exception as exc:  # a model that cannot be prepared is reported, the others still run
            results.append({"model": name, "status": "skipped", "error": f"{type(exc).__name__}: {exc}"})
    doc = {"date": time.strftime("%Y-%m-%d"), "command": "python tools/bench.py " + " ".join(sys.argv[1:]),
           "quick": args.quick, "seconds": round(time.perf_counter() - started, 1),
           "baseline_rows_reused": sum(bool(r.get("cached")) for m in results for r in m.get("rows", [])),
           "models": results}
    (args.out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    reused = f"; {doc['baseline_rows_reused']} baseline rows reused" if doc["baseline_rows_reused"] else ""
    text = [f"Command: `{doc['command']}` ({doc['date']}, {doc['seconds']:.0f} s{reused})\n"]
    for result in results:
        if result.get("status") == "skipped":
            text.append(f"### {result['model']}\n\nskipped: {result['error']}\n")
            continue
        text.append(markdown(result))
        svg = svg_curve(result)
        if svg:
            (args.out / f"{result['model']}.svg").write_text(svg)
    (args.out / "results.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
