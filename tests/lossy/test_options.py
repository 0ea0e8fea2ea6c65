"""One frozen options object: checked when made, the same for the CLI and the API."""
from __future__ import annotations

import dataclasses

import pytest

import genmodels
from onnxl2 import CompressOptions, Contract, compress
from onnxl2.errors import OnnxL2Error


@pytest.mark.parametrize("fields, needle", [
    (dict(lossless=True, bits=4), "--lossless takes no"),
    (dict(lossless=True, model_output="y"), "--lossless takes no --model-output"),
    (dict(bits=4, target_ratio=8.0), "either --bits or a target"),
    (dict(target_ratio=8.0, max_loss_increase=0), "either a target or --max-loss-increase"),
    (dict(bits=13), "between 2 and 12"),
    (dict(target_ratio=0.5), "above 1"),
    (dict(bits_choices=(4, 7, 33)), "bit choices"),
    (dict(sweep="sometimes"), "sweep must be"),
    (dict(loss="hinge"), "unknown loss"),
    (dict(devices=("tpu",)), "devices are"),
])
def test_options_are_checked_when_made(fields, needle):
    with pytest.raises(OnnxL2Error, match=needle):
        CompressOptions(**fields)


def test_options_are_frozen_and_name_their_mode():
    options = CompressOptions(bits=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.bits = 8
    assert options.mode == "uniform" and CompressOptions().mode == "auto"
    assert CompressOptions(lossless=True).mode == "lossless"
    assert CompressOptions().automatic().form == "contract"
    assert CompressOptions(max_loss_increase=0).automatic().form == "loss neighbourhood"
    assert CompressOptions(contract=Contract(agreement=0.9)).contract.agreement == 0.9


def test_keywords_and_the_options_object_are_the_same_run():
    by_object = compress(genmodels.mixed_model(), options=CompressOptions(bits=4, quiet=True))
    by_keywords = compress(genmodels.mixed_model(), bits=4, quiet=True)
    assert bytes(by_object.bitstream) == bytes(by_keywords.bitstream)
    with pytest.raises(TypeError, match="unexpected options: colour"):
        compress(genmodels.mixed_model(), colour="red")
