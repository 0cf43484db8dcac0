"""ncnn through pnnx: a folder `<name>.ncnn/` holding model.ncnn.param, model.ncnn.bin and metadata.json
(the layout `yolo export format=ncnn` users know). Runs on ncnn's CPU path or its Vulkan GPU path.

Weights are stored in fp32 (pnnx stores fp16 by default, which an fp32 profile would silently run); an fp16
profile converts them at load time through ncnn's fp16 storage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

NAME, FORMAT, SUFFIX, ORDER = "ncnn", "ncnn", ".ncnn", 2
PROVIDERS = ("cpu", "vulkan")
PRECISIONS = ("fp32", "fp16")
# ncnn's own kernels (Winograd included) on fp32 weights: measured <= 7e-6 at logits of +-18 (resnet18
# 224x224); pnnx's default fp16 weights gave 3.5e-3
TOLERANCE = (1e-3, 1e-4)
MODULE, DISTRIBUTIONS = "ncnn", ("ncnn",)
PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"
FOLDER_FILES = (PARAM, BIN)
DEFAULT_DEVICES = {"fp32": "ncnn-cpu-1t"}


def set_precision(opt, precision: str) -> None:
    """ncnn's defaults turn on fp16 storage, packing and arithmetic wherever the hardware has them (bf16 storage
    is one switch away): a model runs in the precision its profile names, so fp32 turns all of them off."""
    fp16 = precision == "fp16"
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16
    opt.use_bf16_storage = opt.use_bf16_packed = False


class NcnnModel:
    """An ncnn folder (model.ncnn.param + model.ncnn.bin) on ncnn's CPU path or its Vulkan GPU path."""

    def __init__(self, folder: str | Path, threads: int = 1, vulkan: bool = False, precision: str = "fp32"):
        import ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        self.net.opt.use_vulkan_compute = vulkan
        set_precision(self.net.opt, precision)
        folder = Path(folder)
        if self.net.load_param(str(folder / PARAM)) != 0 or self.net.load_model(str(folder / BIN)) != 0:
            raise RuntimeError(f"ncnn cannot load {folder}")
        self.input, self.output = self.net.input_names()[0], self.net.output_names()[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import ncnn
        outputs = []
        for image in images:
            extractor = self.net.create_extractor()
            extractor.input(self.input, ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)).clone())
            _, out = extractor.extract(self.output)
            outputs.append(np.array(out).reshape(-1))
        return np.stack(outputs)


def open_model(path: str, provider: str, threads: int, precision: str) -> NcnnModel:
    return NcnnModel(path, threads, vulkan=provider == "vulkan", precision=precision)


def vulkan_devices() -> list[dict]:
    """Vulkan devices ncnn sees, probed in a subprocess (ncnn's loader prints to the terminal)."""
    probe = ("import json, ncnn\n"
             "print(json.dumps([{'name': ncnn.get_gpu_info(i).device_name(), 'type': ncnn.get_gpu_info(i).type()}"
             " for i in range(ncnn.get_gpu_count())]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    return json.loads(lines[-1]) if result.returncode == 0 and lines else []


def is_software(device: dict) -> bool:
    """Vulkan's device type 3 is a CPU: Mesa's lavapipe/llvmpipe, good for correctness, not for timings."""
    return device["type"] == 3 or "llvmpipe" in device["name"].lower()


def unavailable_reason(provider: str) -> str | None:
    try:
        import ncnn  # noqa: F401
        import pnnx  # noqa: F401
    except Exception as error:
        return f"ncnn/pnnx do not import ({type(error).__name__}); pip install 'edgeticket[edge]'"
    if provider == "vulkan" and not vulkan_devices():
        return "no Vulkan device (install mesa-vulkan-drivers libvulkan1 for lavapipe, or use a GPU)"
    return None


def timing_note(profile, cpu) -> str | None:
    if profile.provider == "cpu" and profile.precision == "fp16" and not cpu.fp16_arithmetic:
        return "no fp16 arithmetic on this CPU (asimdhp, avx512_fp16): ncnn runs its fp32 kernels, not the fp16 path"
    if profile.provider == "vulkan" and not profile.ssh:  # a board's GPU is its own
        devices = vulkan_devices()
        if devices and all(is_software(d) for d in devices):
            return f"software Vulkan ({devices[0]['name']}): correctness only, timing not meaningful"
    return None


def write(module, example, path: Path) -> None:
    """pnnx writes its intermediates (model.pt, model.pnnx.onnx, ...: a few MB) beside the traced file: in this
    process's work folder ($TMPDIR/edgeticket-UID/PID), which the next command sweeps if this one is killed."""
    import pnnx

    from edgeticket.fileio import work_dir
    with work_dir() as work:
        traced = os.path.join(work, "model.pt")
        try:
            pnnx.export(module, traced, (example,), fp16=False)  # fp32 weights
        except SyntaxError:  # pnnx then imports its Python copy of the model (model_pnnx.py, unused here), which
            # is invalid for some (RegNet's); the ncnn files are written by then, and the parity check follows
            if not all(os.path.exists(os.path.join(work, name)) for name in FOLDER_FILES):
                raise
        for name in FOLDER_FILES:
            shutil.copy(os.path.join(work, name), Path(path) / name)
