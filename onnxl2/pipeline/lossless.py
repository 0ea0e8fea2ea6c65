"""The lossless mode: the model's own bytes coded, so that decoding gives back the original
file(s) bit for bit."""
from __future__ import annotations

import time
from pathlib import Path

from onnx import ModelProto

from ..model import ModelSource, model_stem
from ..progress import Stages
from ..report_parts import CompressReport, Sizes
from ..model_files import original_files
from .finish import CompressResult, container_meta, encode_and_verify, write_outputs


def run_lossless(model: ModelSource, out_dir, stages: Stages) -> CompressResult:
    started = time.perf_counter()
    path = None if isinstance(model, ModelProto) else Path(model)
    with stages.stage("read"):
        stored = original_files(model if path is None else path)
    original_bytes = sum(len(f.data) for f in stored)
    report = CompressReport(str(path or "<ModelProto>"), "lossless", None)
    blob, accounting, report.roundtrip = encode_and_verify(stored, container_meta("lossless", None, path), stages)
    report.sizes = Sizes(original_bytes, len(blob), coded_tensors=len(accounting))
    protect = [path.parent / f.name for f in stored] if path else []
    return write_outputs(report, blob, stored, out_dir, model_stem(path), stages, started, protect,
                         write_model=False)
