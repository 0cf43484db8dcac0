"""ONNX Runtime on the CPU at batch 1: the reference latency runner."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import EdgeticketError
from .stats import LatencyStats


@dataclass
class BenchConfig:
    threads: int = 1         # intra-op threads; 1 stands for one phone core
    runs: int = 100          # timed runs at least
    warmup: int = 10         # untimed runs before timing
    min_seconds: float = 0.0  # keep running until this much time has passed too


@dataclass
class BenchResult:
    model: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    input_shape: list[int]
    file_size_bytes: int
    first_inference_ms: float
    latency: LatencyStats

    def as_dict(self) -> dict:
        return {**asdict(self), "latency": self.latency.as_dict()}


def open_session(path: str | Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise EdgeticketError(f"onnxruntime cannot load {Path(path).name}: {str(error).splitlines()[0][:160]}",
                              hint="export it again with `edgeticket export`") from None


def timed_runs(run, config: BenchConfig) -> tuple[float, LatencyStats]:
    """First call timed alone, then warm-up, then at least `runs` calls and at least `min_seconds`."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    for _ in range(config.warmup):
        run()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < config.runs or time.perf_counter() - began < config.min_seconds:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return first * 1e3, LatencyStats.from_seconds(samples)


def bench_onnx(path: str | Path, config: BenchConfig = BenchConfig()) -> BenchResult:
    if not Path(path).is_file():
        raise EdgeticketError(f"no such model: {path}", hint="export one with `edgeticket export TICKET -o model.onnx`")
    session = open_session(path, config.threads)
    spec = session.get_inputs()[0]
    shape = [1] + [int(d) for d in spec.shape[1:]]
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    first_ms, latency = timed_runs(lambda: session.run(None, {spec.name: images}), config)
    return BenchResult(str(path), "onnxruntime", ort.__version__, "cpu", config.threads, shape,
                       os.path.getsize(path), first_ms, latency)


def record_bench(result: BenchResult) -> dict:
    """The result plus the ticket it was exported from, saved as `<model>.bench.json` for `report`."""
    import json

    from ..export.onnx import read_metadata
    from ..fileio import write_json
    meta = read_metadata(result.model)
    record = {**result.as_dict(), "ticket_sha256": meta.get("edgeticket.ticket_sha256", ""),
              "provenance": json.loads(meta.get("edgeticket.provenance", "{}")), "load_average": os.getloadavg()}
    write_json(record, f"{result.model}.bench.json")
    return record
