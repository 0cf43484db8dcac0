"""One runner per runtime: load an artifact for a device profile, then map images [1,C,H,W] -> logits.
Imported only inside the bench worker subprocess, so each runtime lives in its own process."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Callable

import numpy as np

from .devices import ORT_PROVIDERS, DeviceProfile

Runner = Callable[[np.ndarray], np.ndarray]


def onnxruntime_runner(path: Path, profile: DeviceProfile) -> Runner:
    from ..export.onnx import open_session
    fp16 = profile.provider == "tensorrt" and profile.precision == "fp16"
    session = open_session(path, profile.threads, ORT_PROVIDERS[profile.provider],
                           {"trt_fp16_enable": True} if fp16 else None)
    name = session.get_inputs()[0].name  # looked up once: the runner is the timed loop
    return lambda images: session.run(None, {name: images})[0]


def executorch_runner(path: Path, profile: DeviceProfile) -> Runner:
    from ..export.executorch import load_method, run_method
    method = load_method(path, profile.threads)
    return lambda images: run_method(method, images)


def ncnn_runner(path: Path, profile: DeviceProfile) -> Runner:
    from ..export.ncnn import NcnnModel
    return NcnnModel(path, profile.threads, vulkan=profile.provider == "vulkan", precision=profile.precision)


RUNNERS = {"onnxruntime": onnxruntime_runner, "executorch": executorch_runner, "ncnn": ncnn_runner}


def open_runner(path: str | Path, profile: DeviceProfile) -> Runner:
    return RUNNERS[profile.runtime](Path(path), profile)


def runtime_version(runtime: str) -> str:
    """Each runtime's pip distribution has the runtime's own name."""
    return importlib.metadata.version(runtime)
