"""Latency statistics shared by every runtime runner."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
