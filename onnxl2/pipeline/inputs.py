"""The first stage of every lossy mode: the model (BatchNormalization folded), its weights, and
the calibration and judging data, each checked against the model before any work starts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import ModelProto

from ..axes import choose_axes
from ..data import DataSource, load_data, load_labels
from ..errors import OnnxL2Error
from ..model import LoadedModel, ModelSource, Weight, checked_output, discover_weights, load_model
from ..options import CompressOptions
from ..progress import Stages
from ..runtime import check_validation_devices
from ..samples import sample_count
from ..transforms.fold import fold_batchnorm


@dataclass
class RunInputs:
    """What a lossy run works on."""

    loaded: LoadedModel
    proto: ModelProto  # the graph compressed (BatchNormalization folded unless told not to)
    folded: int  # BatchNormalization nodes folded
    weights: list[Weight]
    data: dict[str, np.ndarray] | None  # calibration
    labels: np.ndarray | None
    judge_data: dict[str, np.ndarray] | None  # what validation runs on: --eval-data, else --data
    judge_labels: np.ndarray | None
    judged_split: str  # "--eval-data" or "--data"

    @property
    def model_name(self) -> str:
        return str(self.loaded.path or "<ModelProto>")


def load_inputs(model: ModelSource, data: DataSource | None, labels: Any, eval_data: DataSource | None,
                eval_labels: Any, options: CompressOptions, stages: Stages) -> RunInputs:
    """Read and check the model and the data (the automatic mode needs calibration data)."""
    with stages.stage("load"):
        loaded = load_model(model)
        proto, folded = fold_batchnorm(loaded.proto) if options.fold else (loaded.proto, 0)
        weights = discover_weights(proto)
        choose_axes(proto, weights)
        if labels is not None and data is None:
            raise OnnxL2Error("labels need data (--data) to go with them")
        if options.mode == "auto" and data is None:
            raise OnnxL2Error("the automatic mode needs calibration data (--data); "
                              "or give --bits N for uniform quantization")
        checked_output(proto, options.model_output)
        arrays = load_data(data, loaded.proto) if data is not None else None
        label_array = load_labels(labels, sample_count(arrays)) if labels is not None else None
        judge = (load_data(eval_data, loaded.proto), None) if eval_data is not None else (arrays, label_array)
        if eval_labels is not None:
            judge = (judge[0], load_labels(eval_labels, sample_count(judge[0])))
        if judge[0] is not None:
            check_validation_devices(options.devices)
    return RunInputs(loaded, proto, folded, weights, arrays, label_array, judge[0], judge[1],
                     "--eval-data" if eval_data is not None else "--data")
