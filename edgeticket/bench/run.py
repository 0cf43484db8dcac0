"""Bench an exported artifact on a device profile, in a subprocess of its runtime; record it for `report`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data import DataConfig, TensorImages, load_dataset
from ..errors import EdgeticketError
from ..export import artifact_metadata
from ..fileio import size_on_disk, write_json
from ..host import CpuInfo
from .devices import DeviceProfile, get_device, timing_note
from .stats import LatencyStats


@dataclass
class BenchConfig:
    runs: int = 100             # timed runs, at least
    warmup: int = 10            # untimed runs first
    seconds: float = 1.0        # and keep timing for at least this long (the CLI's --seconds)
    threads: int | None = None  # override the profile's threads
    images: int | None = None   # accuracy on the first N test images (None: all)
    timeout: float = 1800.0


@dataclass
class BenchResult:
    model: str
    device: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    precision: str
    input_shape: list[int]
    file_size_bytes: int
    first_inference_ms: float
    latency: LatencyStats
    peak_memory_mb: float
    model_memory_mb: float
    accuracy: float | None          # top-1 % in this runtime on the target test set
    test_images: int | None
    max_abs_diff: float | None      # against torch on seeded images, when the ticket was at hand
    load_average: dict = field(default_factory=dict)
    timing_meaningful: bool = True
    note: str = ""
    host: dict = field(default_factory=dict)  # the CPU the runtime ran on: model, arch, relevant flags

    def as_dict(self) -> dict:
        return {**asdict(self), "latency": self.latency.as_dict()}


def default_device(path: str | Path) -> str:
    """The profile that runs an artifact as exported."""
    path = Path(path)
    if path.suffix == ".pte":
        return "executorch-xnnpack-1t"
    if path.suffix == ".ncnn" or path.is_dir():
        return "ncnn-cpu-1t"
    precision = artifact_metadata(path).get("edgeticket.precision", "fp32") if path.exists() else "fp32"
    return "ort-int8-1t" if precision == "int8" else "ort-cpu-1t"


def int8_weights_note(metadata: dict[str, str], cpu: CpuInfo) -> str | None:
    """An int8 model exported with full-range weights (on a VNNI or ARM CPU) saturates on x86 without VNNI."""
    if metadata.get("edgeticket.int8_weight_bits") == "8" and cpu.x86 and not cpu.vnni:
        return "8-bit int8 weights on x86 without VNNI can saturate: export on this machine for 7-bit weights"
    return None


def target_images(data: str, metadata: dict[str, str], root: str | None = None) -> TensorImages:
    input_size = json.loads(metadata["edgeticket.input_size"])
    return load_dataset(DataConfig(data, root, image_size=input_size[-1], channels=input_size[0])).test


def die_with_parent() -> None:
    """In the worker, before it starts: Linux sends it SIGKILL when the bench process dies, even by kill -9,
    so no worker outlives its bench. (An exception in the parent, SIGTERM and Ctrl-C included, already
    kills it through subprocess.run.)"""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def bench_artifact(path: str | Path, profile: DeviceProfile | str = "ort-cpu-1t", config: BenchConfig = BenchConfig(),
                   data: TensorImages | None = None,
                   reference: tuple[np.ndarray, np.ndarray] | None = None) -> BenchResult:
    """Latency, memory and (with `data`) accuracy of `path` in the profile's runtime, in a subprocess."""
    path = Path(path)
    if not path.exists():
        raise EdgeticketError(f"no such model: {path}", hint="export one with `edgeticket export TICKET -o model.onnx`")
    profile = get_device(profile) if isinstance(profile, str) else profile
    if config.threads:
        profile = DeviceProfile(**{**asdict(profile), "threads": config.threads})
    metadata = artifact_metadata(path)
    if path.suffix == ".onnx" and profile.format != "onnx" or path.suffix in (".pte", ".ncnn") and \
            profile.format != {".pte": "executorch", ".ncnn": "ncnn"}[path.suffix]:
        raise EdgeticketError(f"{path.name} cannot run on {profile.name} ({profile.runtime})",
                              hint=f"use --device {default_device(path)}, or export with --format {profile.format}")
    shape = [1] + json.loads(metadata["edgeticket.input_size"])
    with tempfile.TemporaryDirectory() as work:
        arrays = {}
        if data is not None:
            count = min(len(data), config.images or len(data))
            arrays.update(images=data.batch(np.arange(count))[0].numpy(), labels=data.labels[:count].numpy())
        if reference is not None:
            arrays.update(reference_inputs=reference[0], reference_logits=reference[1])
        npz = os.path.join(work, "data.npz")
        if arrays:
            np.savez(npz, **arrays)
        job = {"path": str(path), "profile": asdict(profile), "input_shape": shape, "runs": config.runs,
               "warmup": config.warmup, "min_seconds": config.seconds, "data": npz if arrays else None}
        load_before = os.getloadavg()
        process = subprocess.run([sys.executable, "-m", "edgeticket.bench.worker"], input=json.dumps(job),
                                 capture_output=True, text=True, timeout=config.timeout, preexec_fn=die_with_parent)
        load_after = os.getloadavg()
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        last = (process.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise EdgeticketError(f"{profile.runtime} failed on {path.name}: {last}", hint="see EDGETICKET_DEBUG=1")
    out = json.loads(lines[-1])
    cpu = CpuInfo.from_dict(out["host"])
    timing = timing_note(profile, cpu)
    note = "; ".join(filter(None, [timing, int8_weights_note(metadata, cpu)]))
    return BenchResult(str(path), profile.name, profile.runtime, out["runtime_version"], profile.provider,
                       profile.threads, metadata.get("edgeticket.precision", profile.precision), shape,
                       size_on_disk(path), out["first_inference_ms"], LatencyStats(**out["latency"]),
                       out["peak_memory_mb"], out["model_memory_mb"], out["accuracy"], out["test_images"],
                       out["max_abs_diff"], {"before": list(load_before), "after": list(load_after)},
                       timing is None, note, out["host"])


def bench_onnx(path: str | Path, config: BenchConfig = BenchConfig()) -> BenchResult:
    """The reference latency: onnxruntime on one CPU thread (threads from `config` if set)."""
    return bench_artifact(path, "ort-cpu-1t", config)


def record_bench(result: BenchResult) -> dict:
    """The result plus the ticket it was exported from, saved as `<model>.<device>.bench.json` for `report`."""
    meta = artifact_metadata(result.model)
    record = {**result.as_dict(), "ticket_sha256": meta.get("edgeticket.ticket_sha256", ""),
              "provenance": json.loads(meta.get("edgeticket.provenance", "{}"))}
    write_json(record, f"{result.model}.{result.device}.bench.json")
    return record
