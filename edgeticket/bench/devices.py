"""Device profiles (devices/*.toml): a runtime, its provider, threads, precision, and the device it stands for."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeticketError
from ..host import CpuInfo, cpu_info

RUNTIMES = {"onnxruntime": ("cpu", "cuda", "tensorrt"), "executorch": ("xnnpack",), "ncnn": ("cpu", "vulkan")}
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    runtime: str      # onnxruntime | executorch | ncnn
    provider: str     # cpu | cuda | tensorrt | xnnpack | vulkan
    threads: int
    precision: str    # fp32 | fp16 | int8
    stands_for: str

    @property
    def format(self) -> str:
        """The export format this profile runs."""
        return {"onnxruntime": "onnx", "executorch": "executorch", "ncnn": "ncnn"}[self.runtime]

    @property
    def int8(self) -> bool:
        return self.precision == "int8"


def device_dirs() -> list[Path]:
    """$EDGETICKET_DEVICES, ./devices, then the devices/ folder of this checkout."""
    dirs = [Path(os.environ["EDGETICKET_DEVICES"])] if os.environ.get("EDGETICKET_DEVICES") else []
    return dirs + [Path.cwd() / "devices", Path(__file__).resolve().parents[2] / "devices"]


def read_profile(path: Path) -> DeviceProfile:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise EdgeticketError(f"{path} is not valid TOML: {error}", hint="see devices/ort-cpu-1t.toml") from None
    fields = [f.name for f in dataclasses.fields(DeviceProfile) if f.name != "name"]
    missing = [f for f in fields if f not in raw]
    if missing or raw.get("provider") not in RUNTIMES.get(raw.get("runtime"), ()):
        raise EdgeticketError(f"bad device profile {path}: " + (f"missing {', '.join(missing)}" if missing else
                              f"runtime/provider {raw.get('runtime')}/{raw.get('provider')}"),
                              hint="runtimes and providers: " + "; ".join(f"{r}: {', '.join(p)}" for r, p in RUNTIMES.items()))
    return DeviceProfile(path.stem, **{f: raw[f] for f in fields})


def list_devices() -> list[DeviceProfile]:
    seen: dict[str, DeviceProfile] = {}
    for folder in device_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            seen.setdefault(path.stem, read_profile(path))
    return sorted(seen.values(), key=lambda p: p.name)


def get_device(name: str) -> DeviceProfile:
    """A profile by name, or a path to a profile's TOML."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise EdgeticketError(f"no such device profile: {name}", hint="see `edgeticket devices`")
        return read_profile(Path(name))
    profiles = {p.name: p for p in list_devices()}
    if name not in profiles:
        raise EdgeticketError(f"unknown device '{name}'", hint=f"choose one of: {', '.join(profiles)}")
    return profiles[name]


def unavailable_reason(profile: DeviceProfile) -> str | None:
    """None when the profile can run on this machine, else why not."""
    if profile.runtime == "onnxruntime":
        import onnxruntime as ort
        if ORT_PROVIDERS[profile.provider] not in ort.get_available_providers():
            return (f"onnxruntime here has {', '.join(ort.get_available_providers())}; {profile.provider} needs "
                    "onnxruntime-gpu and an NVIDIA GPU")
        return None
    if profile.runtime == "executorch":
        from ..export.executorch import runtime_available
        return runtime_available()
    from ..export.ncnn import runtime_available, vulkan_devices
    reason = runtime_available()
    if reason or profile.provider != "vulkan":
        return reason
    return None if vulkan_devices() else "no Vulkan device (install mesa-vulkan-drivers libvulkan1 for lavapipe, or use a GPU)"


def timing_note(profile: DeviceProfile, cpu: CpuInfo | None = None) -> str | None:
    """Why a profile's timings should not be read as the device's, when they should not (`cpu`: the one it ran on)."""
    cpu = cpu or cpu_info()
    if profile.runtime == "ncnn" and profile.provider == "cpu" and profile.precision == "fp16" and not cpu.fp16_arithmetic:
        return "no fp16 arithmetic on this CPU (asimdhp, avx512_fp16): ncnn runs its fp32 kernels, not the fp16 path"
    if profile.provider == "vulkan":
        from ..export.ncnn import is_software, vulkan_devices
        devices = vulkan_devices()
        if devices and all(is_software(d) for d in devices):
            return f"software Vulkan ({devices[0]['name']}): correctness only, timing not meaningful"
    return None
