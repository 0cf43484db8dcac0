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
import tempfile
from pathlib import Path

import numpy as np

from ..console import native_output_captured
from ..errors import EdgeticketError
from ..fileio import atomic_dir, size_on_disk, write_json
from ..ticket import Ticket
from .checks import ExportReport, check_fp32, metadata

PARAM, BIN, META = "model.ncnn.param", "model.ncnn.bin", "metadata.json"


def runtime_available() -> str | None:
    try:
        import ncnn  # noqa: F401
        import pnnx  # noqa: F401
    except Exception as error:
        return f"ncnn/pnnx do not import ({type(error).__name__}); pip install 'edgeticket[edge]'"
    return None


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


def set_precision(opt, precision: str) -> None:
    """ncnn's defaults turn on fp16 storage, packing and arithmetic wherever the hardware has them (bf16 storage
    is one switch away): a model runs in the precision its profile names, so fp32 turns all of them off."""
    fp16 = precision == "fp16"
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16
    opt.use_bf16_storage = opt.use_bf16_packed = False


class NcnnModel:
    def __init__(self, folder: str | Path, threads: int = 1, vulkan: bool = False, precision: str = "fp32"):
        import ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        self.net.opt.use_vulkan_compute = vulkan
        set_precision(self.net.opt, precision)
        folder = Path(folder)
        if self.net.load_param(str(folder / PARAM)) != 0 or self.net.load_model(str(folder / BIN)) != 0:
            raise EdgeticketError(f"ncnn cannot load {folder}", hint="export it again with --format ncnn")
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


def export_ncnn(ticket: Ticket, path: str | Path, ticket_sha256: str | None = None) -> ExportReport:
    reason = runtime_available()
    if reason:
        raise EdgeticketError(f"cannot export to ncnn: {reason}", hint="use --format onnx")
    import pnnx
    with atomic_dir(path) as staging, tempfile.TemporaryDirectory() as work:
        traced = os.path.join(work, "model.pt")
        with native_output_captured():
            pnnx.export(ticket.deployable(), traced, (ticket.example_input(),), fp16=False)  # fp32 weights
        for name in (PARAM, BIN):
            shutil.copy(os.path.join(work, name), staging / name)
        diff, limit = check_fp32("ncnn", NcnnModel(staging), ticket)
        write_json(metadata(ticket, ticket_sha256), staging / META)
        size = size_on_disk(staging)
    return ExportReport(str(path), "ncnn", "fp32", size, "max |ncnn - torch|", diff, limit)
