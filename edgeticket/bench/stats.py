"""Latency statistics and the timing loop shared by every runtime runner."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
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
    """First call timed alone, then warm-up, then at least `runs` calls and at least `min_seconds`."""
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
