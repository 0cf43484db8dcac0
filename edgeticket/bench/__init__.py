"""Latency, memory and accuracy of exported models in edge runtimes, per device profile."""

from .devices import DeviceProfile, get_device, list_devices, unavailable_reason  # noqa: F401
from .run import BenchConfig, BenchResult, bench_artifact, bench_onnx, record_bench  # noqa: F401
from .stats import LatencyStats  # noqa: F401
