"""The bench runner: one self-contained script that times an exported model in its runtime and writes its logits.

It imports the standard library, numpy and the one runtime it runs, nothing else: no edgeticket and no torch,
so a board needs neither and the memory it reports is the runtime's, not torch's. (ExecuTorch is the exception
it cannot avoid: its Python runtime imports torch itself, so a .pte needs torch on the board; the result says
so in `modules`.) The host runs it as `python -I runner.py JOB.json` and reads one JSON document from stdout;
it computes accuracy, ECE and NLL from the logits, so none of that code is needed here.

The job (paths relative to the job file): {"model", "runtime", "provider", "threads", "precision",
"input_shape", "runs", "warmup", "min_seconds", "inputs": {NAME: FILE.npy}, "stop_when_stdin_closes"}
(optional, for ssh). Each input is a batch [N, C, H, W]
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

Predict = Callable[[np.ndarray], np.ndarray]
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


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


# --- the runtimes: each opens a model for a provider, threads and precision, and maps [1, C, H, W] -> logits

def onnxruntime_session(path: str | Path, threads: int = 1, provider: str = "cpu", precision: str = "fp32"):
    """One onnxruntime session, for bench, eval and export checks alike: `threads` intra-op threads, nothing else."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    fp16 = provider == "tensorrt" and precision == "fp16"
    return ort.InferenceSession(str(path), options, providers=[ORT_PROVIDERS[provider]],
                                provider_options=[{"trt_fp16_enable": True}] if fp16 else None)


def open_onnxruntime(path: str, provider: str, threads: int, precision: str) -> Predict:
    session = onnxruntime_session(path, threads, provider, precision)
    name = session.get_inputs()[0].name  # looked up once: this is the timed loop
    return lambda images: session.run(None, {name: images})[0]


def executorch_method(path: str | Path, threads: int = 1):
    """The program's `forward`. ExecuTorch's pip runtime imports torch (it links libtorch), so this does too."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's worker threads
    return Runtime.get().load_program(str(path)).load_method("forward")


def open_executorch(path: str, provider: str, threads: int, precision: str) -> Predict:
    method = executorch_method(path, threads)
    import torch  # already loaded by ExecuTorch: its tensors are the method's inputs
    return lambda images: method.execute([torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))])[0].numpy()


NCNN_PARAM, NCNN_BIN = "model.ncnn.param", "model.ncnn.bin"


def set_ncnn_precision(opt, precision: str) -> None:
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
        set_ncnn_precision(self.net.opt, precision)
        folder = Path(folder)
        if self.net.load_param(str(folder / NCNN_PARAM)) != 0 or self.net.load_model(str(folder / NCNN_BIN)) != 0:
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


def open_ncnn(path: str, provider: str, threads: int, precision: str) -> Predict:
    return NcnnModel(path, threads, vulkan=provider == "vulkan", precision=precision)


# runtime -> (the function that opens a model, its importable module, its pip distributions)
RUNTIMES = {"onnxruntime": (open_onnxruntime, "onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
            "executorch": (open_executorch, "executorch", ("executorch",)),
            "ncnn": (open_ncnn, "ncnn", ("ncnn",))}


def runtime_version(runtime: str) -> str:
    """The runtime's version from whichever of its pip distributions is installed (onnxruntime-gpu provides
    onnxruntime), else its module's __version__."""
    _, module, distributions = RUNTIMES[runtime]
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return getattr(sys.modules.get(module), "__version__", "unknown")


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


def run(job: dict, folder: Path) -> dict:
    if job.get("stop_when_stdin_closes"):
        stop_when_stdin_closes()
    inputs = {name: np.load(folder / file) for name, file in job.get("inputs", {}).items()}  # before memory is measured
    baseline, startup_peak = status_mb("VmRSS"), status_mb("VmHWM")
    resets = baseline is not None and reset_peak()
    open_model = RUNTIMES[job["runtime"]][0]
    predict = open_model(str(folder / job["model"]), job["provider"], job["threads"], job["precision"])
    loaded, session_peak = status_mb("VmRSS"), status_mb("VmHWM")
    resets = resets and reset_peak()
    images = np.random.default_rng(0).random(job["input_shape"], dtype=np.float32)
    first_ms, latency = timed_runs(lambda: predict(images), job["runs"], job["warmup"], job["min_seconds"])
    logits = {}
    for name, batch in inputs.items():
        logits[name] = f"{name}.logits.npy"
        outputs = [np.asarray(predict(as_input(image)), np.float32).reshape(-1) for image in batch]
        np.save(folder / logits[name], np.stack(outputs) if outputs else np.zeros((0, 0), np.float32))
    return {"runtime": job["runtime"], "runtime_version": runtime_version(job["runtime"]),
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
