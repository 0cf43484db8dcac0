"""Latency (and accuracy) of exported models in edge runtimes."""

from .onnxruntime import BenchConfig, BenchResult, bench_onnx  # noqa: F401
from .stats import LatencyStats  # noqa: F401
