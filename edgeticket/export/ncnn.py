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

from ..bench.runner import NCNN_BIN as BIN, NCNN_PARAM as PARAM, NcnnModel  # noqa: F401 (the runner's, re-exported)
from ..console import native_output_captured
from ..errors import EdgeticketError
from ..fileio import atomic_dir, size_on_disk, write_json
from ..ticket import Ticket
from .checks import ExportReport, check_fp32, metadata

META = "metadata.json"


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
        try:
            model = NcnnModel(staging)
        except RuntimeError as error:
            raise EdgeticketError(f"pnnx's output does not load: {error}", hint="use --format onnx") from None
        diff, limit = check_fp32("ncnn", model, ticket)
        write_json(metadata(ticket, ticket_sha256), staging / META)
        size = size_on_disk(staging)
    return ExportReport(str(path), "ncnn", "fp32", size, "max |ncnn - torch|", diff, limit)
