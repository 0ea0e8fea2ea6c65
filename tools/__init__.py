"""Helper scripts for onnxl2: model zoo fetching, rendered calibration data."""
