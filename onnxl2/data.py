"""Calibration and evaluation data: load, check against the model's inputs, batch.

Data arrive as an ``.npz`` (keys are input names, first axis is samples), a folder of ``.npy``
files named after the inputs, one ``.npy`` for a model with one input, a dict of arrays, or an
ONNX Runtime ``CalibrationDataReader``.
Every mismatch with the model (names, ranks, dtypes, fixed dimensions) is reported up front in
one sentence naming the input, rather than as an ONNX Runtime error deep inside a pass.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import numpy as np
import onnx
from onnx import ModelProto

from .errors import DataError
from .model import graph_inputs

DataSource = Union[str, os.PathLike, Mapping[str, np.ndarray], Any]

#: A batch is kept below this many bytes of inputs, and below this many samples.
MAX_BATCH_BYTES = 64 << 20
MAX_BATCH_SAMPLES = 64


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (an int for fixed dims, None otherwise)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.name} [{dims}]"


def input_specs(proto: ModelProto) -> list[InputSpec]:
    specs = []
    for value in graph_inputs(proto):
        ttype = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise DataError(f"input '{value.name}' is not a tensor; only tensor inputs are supported")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        shape = None
        if ttype.HasField("shape"):
            shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                          for d in ttype.shape.dim)
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


def _from_reader(reader: Any) -> dict[str, np.ndarray]:
    batches: dict[str, list[np.ndarray]] = {}
    while (feed := reader.get_next()) is not None:
        for name, array in feed.items():
            batches.setdefault(name, []).append(np.asarray(array))
    if not batches:
        raise DataError("the CalibrationDataReader gave no data")
    return {name: np.concatenate(parts, axis=0) for name, parts in batches.items()}


def _from_path(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"no such data file or folder: {path}")
    if path.is_dir():
        arrays = {}
        for spec in specs:
            for candidate in (spec.name, spec.name.replace("/", "_").replace(":", "_")):
                file = path / f"{candidate}.npy"
                if file.exists():
                    arrays[spec.name] = _load_npy(file)
                    break
        if not arrays:
            raise DataError(f"folder {path} has no .npy file named after an input "
                            f"(expected {', '.join(s.name + '.npy' for s in specs)})")
        return arrays
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read data file {path} ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, np.ndarray):  # one .npy: the data of a model's only input
        if len(specs) != 1:
            raise DataError(f"{path} holds one array but the model has {len(specs)} inputs "
                            f"({', '.join(s.name for s in specs)}); use an .npz keyed by input name")
        return {specs[0].name: loaded}
    with loaded as archive:
        try:
            return {key: archive[key] for key in archive.files}
        except Exception as exc:
            raise DataError(f"cannot read data file {path} ({type(exc).__name__}: {exc})") from None


def _load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {file} ({type(exc).__name__})") from None


def load_data(source: DataSource, proto: ModelProto) -> dict[str, np.ndarray]:
    """Read data from any supported source and check it against the model's inputs."""
    specs = input_specs(proto)
    if isinstance(source, (str, os.PathLike)):
        raw = _from_path(Path(source), specs)
    elif isinstance(source, Mapping):
        raw = {k: np.asarray(v) for k, v in source.items()}
    elif hasattr(source, "get_next"):
        raw = _from_reader(source)
    else:
        raise DataError(f"unsupported data source of type {type(source).__name__}")
    return check_data(raw, specs)


def _same_kind(expected: np.dtype, got: np.dtype) -> bool:
    kinds = {"f": "f", "i": "i", "u": "i", "b": "b"}
    return kinds.get(expected.kind, expected.kind) == kinds.get(got.kind, got.kind)


def check_data(raw: Mapping[str, np.ndarray], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """Arrays cast to the inputs' dtypes; raises DataError naming the first mismatch."""
    names = [s.name for s in specs]
    for key in raw:
        if key not in names:
            raise DataError(f"data has an array '{key}' but the model has no such input "
                            f"(inputs: {', '.join(names)})")
    out: dict[str, np.ndarray] = {}
    count = None
    for spec in specs:
        if spec.name not in raw:
            raise DataError(f"data has no array for input '{spec.name}' (expected {spec.describe()})")
        array = np.asarray(raw[spec.name])
        if not _same_kind(spec.dtype, array.dtype):
            raise DataError(f"input '{spec.name}': expected {spec.describe()}, got {array.dtype.name} data")
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                raise DataError(f"input '{spec.name}': expected rank {len(spec.shape)} "
                                f"({spec.describe()}), got an array of shape {array.shape}")
            for axis, (want, got) in enumerate(zip(spec.shape[1:], array.shape[1:]), start=1):
                if want is not None and want != got:
                    raise DataError(f"input '{spec.name}': dimension {axis} must be {want} "
                                    f"({spec.describe()}), got an array of shape {array.shape}")
        if array.ndim == 0 or array.shape[0] == 0:
            raise DataError(f"input '{spec.name}': no samples (the first axis counts samples)")
        if count is not None and array.shape[0] != count:
            raise DataError(f"input '{spec.name}' has {array.shape[0]} samples, other inputs have {count}")
        count = array.shape[0]
        out[spec.name] = np.ascontiguousarray(array.astype(spec.dtype, copy=False))
    fixed = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    for batch in fixed:
        if count % batch:
            raise DataError(f"the model's batch dimension is fixed at {batch} but the data has "
                            f"{count} samples, not a multiple of it")
    return out


def num_samples(data: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(data.values())).shape[0])


def fixed_batch(specs: list[InputSpec]) -> int:
    """The model's fixed batch size (1 when the batch dimension is free): subsets of the data
    must hold whole batches of it."""
    fixed = [s.shape[0] for s in specs if s.shape and s.shape[0] is not None]
    return fixed[0] if fixed else 1


def batch_size_for(data: Mapping[str, np.ndarray], specs: list[InputSpec]) -> int:
    """Samples per ONNX Runtime call: the fixed batch dim if any, else what fits in memory."""
    fixed = [s.shape[0] for s in specs if s.shape and s.shape[0] is not None]
    if fixed:
        return fixed[0]
    per_sample = max(1, sum(a[:1].nbytes for a in data.values()))
    return int(max(1, min(MAX_BATCH_SAMPLES, MAX_BATCH_BYTES // per_sample, num_samples(data))))


def iter_batches(data: Mapping[str, np.ndarray], batch: int) -> Iterator[dict[str, np.ndarray]]:
    total = num_samples(data)
    for start in range(0, total, batch):
        yield {name: array[start:start + batch] for name, array in data.items()}


def load_labels(source: Any, count: int) -> np.ndarray:
    """Integer labels, one per sample (or one per sample and step)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"no such labels file: {path}")
        labels = _load_npy(path)
    else:
        labels = np.asarray(source)
    if labels.ndim == 0 or labels.shape[0] != count:
        raise DataError(f"labels have shape {labels.shape} but the data have {count} samples")
    if labels.dtype.kind not in "iub":
        raise DataError(f"labels must be integers (class indices), got {labels.dtype.name}")
    return labels.astype(np.int64)
