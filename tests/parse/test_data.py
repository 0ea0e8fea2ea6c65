"""Data sources and their checks against the model's inputs."""
from __future__ import annotations

import numpy as np
import pytest

import genmodels
from onnxl2.data import batch_size_for, input_specs, load_data
from onnxl2.errors import DataError


@pytest.fixture()
def model():
    return genmodels.mixed_model()


def test_npz_folder_dict_and_reader_agree(tmp_path, model):
    feeds = genmodels.mixed_inputs(8)
    np.savez(tmp_path / "d.npz", **feeds)
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, array in feeds.items():
        np.save(folder / f"{name}.npy", array)

    class Reader:  # the CalibrationDataReader protocol: get_next() until None
        def __init__(self):
            self.items = iter([{k: v[i:i + 1] for k, v in feeds.items()} for i in range(8)])

        def get_next(self):
            return next(self.items, None)

    for source in (tmp_path / "d.npz", folder, feeds, Reader()):
        data = load_data(source, model)
        assert data["ids"].dtype == np.int64 and data["x"].shape == (8, 3, 8, 8)
        np.testing.assert_array_equal(data["x"], feeds["x"])


def test_float64_is_cast_and_int32_ids_stay_integer(model):
    feeds = genmodels.mixed_inputs(4)
    data = load_data({"x": feeds["x"].astype(np.float64), "ids": feeds["ids"].astype(np.int32)}, model)
    assert data["x"].dtype == np.float32 and data["ids"].dtype == np.int64


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("ids"), "no array for input 'ids'"),
    (lambda d: d.update(extra=d["x"]), "no such input"),
    (lambda d: d.update(x=d["x"][:, 0]), "input 'x': expected rank 4"),
    (lambda d: d.update(x=d["x"][:, :2]), "input 'x': dimension 1 must be 3"),
    (lambda d: d.update(ids=d["ids"].astype(np.float32)), "input 'ids': expected int64"),
    (lambda d: d.update(ids=d["ids"][:3]), "has 3 samples"),
])
def test_mismatches_name_the_input(model, mutate, message):
    feeds = genmodels.mixed_inputs(4)
    mutate(feeds)
    with pytest.raises(DataError, match=message):
        load_data(feeds, model)


def test_fixed_batch_dimension_feeds_sample_by_sample():
    model = genmodels.subgraph_model()
    data = load_data({"x": np.zeros((5, 32), np.float32)}, model)
    assert batch_size_for(data, input_specs(model)) == 1


def test_missing_data_file(tmp_path, model):
    with pytest.raises(DataError, match="no such data file"):
        load_data(tmp_path / "missing.npz", model)
