#!/usr/bin/env bash
# The NNCodec and ZipNN baselines of tools/bench.py need torch (and numpy < 2 for NNCodec), so they
# live in their own virtual environment, never in onnxl2's. Usage: bash tools/setup_peers.sh [VENV]
set -euo pipefail
venv="${1:-$(dirname "$0")/../.cache/peers-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$venv/bin/pip" install -q "numpy<2" click scikit-learn tqdm h5py pybind11 pandas ptflops torchmetrics \
    opencv-python-headless safetensors onnx onnxruntime zstandard
# --no-deps: nncodec pins opencv-python (needs libGL) and would resolve torch a second time
"$venv/bin/pip" install -q --no-deps nncodec==2.1.3 zipnn==0.5.4
"$venv/bin/python" -c "import nncodec, zipnn; print('peers ready in $venv')"
