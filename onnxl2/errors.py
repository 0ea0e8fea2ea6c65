"""Errors a user can cause.

Everything a user can get wrong (a missing file, a file that is not ONNX, data that does not fit
the model, a damaged bitstream) raises :class:`OnnxL2Error`, so that the CLI can print one line
and exit non-zero instead of a traceback. Bugs stay ordinary exceptions.
"""
from __future__ import annotations


class OnnxL2Error(Exception):
    """A problem with the user's input, worded as one line for the user."""

    exit_code: int = 1


class BitstreamError(OnnxL2Error):
    """The bitstream is truncated, corrupted, or of a format this version cannot read."""


class DataError(OnnxL2Error):
    """Calibration or evaluation data do not match the model's inputs."""


class ModelError(OnnxL2Error):
    """The model file is missing, unreadable, or not ONNX."""
