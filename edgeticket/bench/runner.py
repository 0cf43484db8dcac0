"""The bench runner: one self-contained script that times an exported model in its runtime and writes its logits.

It imports the standard library, numpy and the one runtime it runs (loading that runtime's file from
edgeticket/runtimes/, or a plugin's, by its path), nothing else: no edgeticket and no torch,
so a board needs neither and the memory it reports is the runtime's, not torch's. (ExecuTorch is the exception
it cannot avoid: its Python runtime imports torch itself, so a .pte needs torch on the board; the result says
so in `modules`.) The host runs it as `python -I runner.py JOB.json` and reads one JSON document from stdout;
it computes accuracy, ECE and NLL from the logits, so none of that code is needed here.

The job (paths relative to the job file): {"model", "runtime", "runtime_file", "provider", "threads", "precision",
"input_shape", "runs", "warmup", "min_seconds", "inputs": {NAME: FILE.npy}, "stop_when_stdin_closes"}
(optional, for ssh). A job with "timings": [{"model", "input_shape"}, ...] instead times each of those models
in turn (the latency table's layer blocks, edgeticket/bench/latency.py) and writes no logits. Each input is a batch [N, C, H, W]
of uint8 pixels (scaled to [0, 1] here, as edgeticket's data loader does) or float32 pixels in [0, 1]; its
logits go to NAME.logits.npy beside the job, one image at a time.

Timing: the first inference alone, then warm-up, then at least `runs` calls and at least `min_seconds`.
Memory (Linux, from /proc/self/status): the resident set before the runtime is imported (Python, numpy, the
inputs); its growth from importing the runtime and creating the session; its growth from there to the peak
while inferring; the runtime's own peak over both phases; and the process's peak (VmHWM, reset between the
phases where Linux allows, so a spike while the session is built is not counted as inference). Elsewhere,
ru_maxrss only: on Linux it survives exec, so it would report the parent's (torch-sized) peak."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np



@dataclass
class LatencyStats:
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float

    @classmethod
    def from_seconds(cls, samples: list[float]) -> "LatencyStats":
        if not samples:
            raise ValueError("no latency samples")
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(len(ms), float(p50), float(p90), float(p99), float(ms.mean()), float(ms.std()), float(ms.min()))

    def as_dict(self) -> dict:
        return asdict(self)


def timed_runs(run: Callable[[], object], runs: int, warmup: int, min_seconds: float = 0.0) -> tuple[float, LatencyStats]:
    """(first call in ms, stats): the first call timed alone, then warm-up, then at least `runs` calls and at
    least `min_seconds`."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    for _ in range(warmup):
        run()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < runs or time.perf_counter() - began < min_seconds:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return first * 1e3, LatencyStats.from_seconds(samples)


# --- the runtime: its file (edgeticket/runtimes/NAME.py, or a plugin's), loaded by path

def load_runtime(path: Path):
    """The runtime file as a module of its own name, so a file called onnxruntime.py shadows no package; its top
    level imports the standard library and numpy, its `open_model` the runtime itself. No __pycache__ is left
    beside it: on a board, the folder holds only what the host pushed (and removes)."""
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("edgeticket_runtime", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def runtime_version(runtime) -> str:
    """The runtime's version from whichever of its pip distributions is installed (onnxruntime-gpu provides
    onnxruntime), else its module's __version__."""
    for name in runtime.DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return getattr(sys.modules.get(runtime.MODULE), "__version__", "unknown")


# --- memory and the machine

def status_mb(field: str) -> float | None:
    """VmRSS or VmHWM of this process in MB (Linux, Android); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Set VmHWM back to the current resident set (Linux's clear_refs 5), so the next peak is this phase's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def max_rss_mb() -> float:
    """The fallback where /proc is missing. Linux carries ru_maxrss across exec, so there it would report the
    parent's peak (edgeticket's, torch and all) whenever that was larger: VmHWM is the process's own."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2 ** 20 if sys.platform == "darwin" else value / 1024  # bytes on macOS, KiB on Linux


def cpuinfo_block() -> str:
    """The first processor's block of /proc/cpuinfo (model and flags), for the host to read; "" elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    return text.split("\n\n")[0] + "\n" + "\n".join(line for line in text.splitlines()
                                                    if line.lower().startswith("hardware"))


def machine() -> dict:
    return {"arch": platform.machine() or "unknown", "cpuinfo": cpuinfo_block(), "system": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "processor": platform.processor(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# --- the job

def as_input(image: np.ndarray) -> np.ndarray:
    """One image of an input batch as the model's [1, C, H, W] float32 pixels in [0, 1]."""
    if image.dtype == np.uint8:
        return (image[None].astype(np.float32) / np.float32(255.0))
    return np.ascontiguousarray(image[None], dtype=np.float32)


def stop_when_stdin_closes() -> None:
    """Over ssh the host holds the runner's stdin open. When the bench ends early (a timeout, Ctrl-C, kill -9
    of the host's process) the connection closes, stdin reaches EOF, and the runner stops, rather than run on
    unseen on the board and skew the next bench."""
    def watch() -> None:  # the raw fd: a daemon thread blocked in sys.stdin's reader aborts interpreter shutdown
        while os.read(0, 65536):
            pass
        os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def time_models(job: dict, folder: Path) -> dict:
    """Each of the job's `timings` models opened and timed in turn, in this one process: the latency table
    measures hundreds of small blocks, and a process per block would spend most of its time starting up."""
    runtime = load_runtime(folder / job["runtime_file"])
    latencies = []
    for entry in job["timings"]:
        predict = runtime.open_model(str(folder / entry["model"]), job["provider"], job["threads"], job["precision"])
        images = np.random.default_rng(0).random(entry["input_shape"], dtype=np.float32)
        latencies.append(timed_runs(lambda: predict(images), job["runs"], job["warmup"], job["min_seconds"])[1].as_dict())
        del predict
    return {"runtime": job["runtime"], "runtime_version": runtime_version(runtime), "latencies": latencies,
            "machine": machine()}


def run(job: dict, folder: Path) -> dict:
    if job.get("stop_when_stdin_closes"):
        stop_when_stdin_closes()
    if "timings" in job:
        return time_models(job, folder)
    inputs = {name: np.load(folder / file) for name, file in job.get("inputs", {}).items()}  # before memory is measured
    baseline, startup_peak = status_mb("VmRSS"), status_mb("VmHWM")
    resets = baseline is not None and reset_peak()
    runtime = load_runtime(folder / job["runtime_file"])
    predict = runtime.open_model(str(folder / job["model"]), job["provider"], job["threads"], job["precision"])
    loaded, session_peak = status_mb("VmRSS"), status_mb("VmHWM")
    resets = resets and reset_peak()
    images = np.random.default_rng(0).random(job["input_shape"], dtype=np.float32)
    first_ms, latency = timed_runs(lambda: predict(images), job["runs"], job["warmup"], job["min_seconds"])
    logits = {}
    for name, batch in inputs.items():
        logits[name] = f"{name}.logits.npy"
        outputs = [np.asarray(predict(as_input(image)), np.float32).reshape(-1) for image in batch]
        np.save(folder / logits[name], np.stack(outputs) if outputs else np.zeros((0, 0), np.float32))
    return {"runtime": job["runtime"], "runtime_version": runtime_version(runtime),
            "first_inference_ms": first_ms, "latency": latency.as_dict(),
            "memory": memory_record(baseline, startup_peak, loaded, session_peak, status_mb("VmHWM"), resets),
            "logits": logits, "modules": {name: name in sys.modules for name in ("torch", "edgeticket")},
            "machine": machine()}


def memory_record(baseline: float | None, startup_peak: float | None, loaded: float | None,
                  session_peak: float | None, last_peak: float | None, resets: bool) -> dict:
    """MB figures from /proc/self/status readings: before the runtime, after its session, and the peaks.
    Without resets, each VmHWM is the process's peak so far, so the phases cannot be told apart at the peak."""
    if baseline is None:
        return {"measure": "ru_maxrss", "baseline_mb": None, "session_mb": None, "inference_mb": None,
                "runtime_mb": None, "peak_mb": max_rss_mb()}
    return {"measure": "VmRSS/VmHWM, reset per phase" if resets else "VmRSS/VmHWM",
            "baseline_mb": baseline, "session_mb": loaded - baseline,
            "inference_mb": max(last_peak - loaded, 0.0) if resets else None,
            "runtime_mb": max(session_peak, last_peak) - baseline,
            "peak_mb": max(startup_peak, session_peak, last_peak)}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -I runner.py JOB.json", file=sys.stderr)
        return 2
    job_path = Path(argv[0])
    try:
        result = run(json.loads(job_path.read_text()), job_path.parent)
    except Exception as error:  # the runtime's own message, whole, on one line: the host shows it
        print(json.dumps({"error": f"{type(error).__name__}: {' '.join(str(error).split())}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
