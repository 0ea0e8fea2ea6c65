"""ONNX Runtime sessions: one place that picks providers and logging, for every stage that runs
a model (layer inputs, the sweep, the frontier, validation)."""
from __future__ import annotations

import onnxruntime as ort
from onnx import ModelProto

from .errors import OnnxL2Error

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(model: ModelProto | bytes | str, device: str = "cpu", arena: bool = True) -> ort.InferenceSession:
    """One ONNX Runtime session; quiet logging, the provider asked for and nothing else.

    ``arena=False``: activations are freed after each run instead of kept in the session's
    memory arena at their peak, for a session that runs a few times beside others (the pass
    that caches the activations at the sweep's cuts).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    source = model.SerializeToString() if isinstance(model, ModelProto) else model
    providers = [PROVIDERS[device]] + ([PROVIDERS["cpu"]] if device != "cpu" else [])
    return ort.InferenceSession(source, options, providers=providers)


def cuda_status() -> tuple[bool, str]:
    """Whether CUDA can run here, and why not when it cannot."""
    if PROVIDERS["cuda"] not in ort.get_available_providers():
        return False, "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return True, "available"


def check_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    """The devices asked for, each one this module knows, each once (CUDA is skipped cleanly
    at run time where it is absent)."""
    devices = tuple(dict.fromkeys(devices))
    unknown = [d for d in devices if d not in PROVIDERS]
    if unknown or not devices:
        raise OnnxL2Error(f"devices are {' and '.join(PROVIDERS)}; got {list(devices)}")
    return devices


def check_validation_devices(devices: tuple[str, ...]) -> None:
    """Where a run validates, something it asked for must be able to run: CUDA alone where it
    cannot would validate nothing and succeed."""
    if "cpu" not in devices:
        usable, why = cuda_status()
        if not usable:
            raise OnnxL2Error(f"--devices {','.join(devices)} would validate on nothing: {why} "
                              "(add cpu to validate there)")
