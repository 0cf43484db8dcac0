"""Latency, memory and accuracy of exported models in edge runtimes, per device profile."""

from .devices import BrokenProfile, DeviceProfile, get_device, list_devices, unavailable_reason  # noqa: F401
from .run import BenchConfig, BenchResult, TargetData, bench_artifact, bench_onnx, record_bench  # noqa: F401
from .runner import LatencyStats  # noqa: F401
