"""Bench an exported artifact on a device profile: the host side. It writes a job and its inputs, runs the
torch-free `runner.py` isolated (`python -I`), and computes accuracy, ECE and NLL from the logits it returns;
the result is recorded beside the model for `report`."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..config import MAX_BENCH_RUNS, MAX_BENCH_SECONDS, MAX_BENCH_WARMUP
from ..data import DataConfig, TensorImages, check_classes, load_dataset
from ..errors import EdgeticketError
from ..export import NoMetadata, artifact_metadata, exported_provenance
from ..fileio import check_writable, size_on_disk, write_json
from ..host import CpuInfo, parse_cpuinfo
from ..metrics import accuracy, expected_calibration_error, negative_log_likelihood
from ..runtimes import Runtime, get_runtime, list_runtimes, runtime_for_path
from .devices import MAX_THREADS, DeviceProfile, announce, get_device, list_devices, positive_int, timing_note
from .runner import LatencyStats
from .transport import run_local


@dataclass
class BenchConfig:
    runs: int = 100             # timed runs, at least
    warmup: int = 10            # untimed runs first
    seconds: float = 1.0        # and keep timing for at least this long (the CLI's --seconds)
    threads: int | None = None  # override the profile's threads
    images: int | None = None   # accuracy on the first N test images (None: all)
    input_shape: tuple[int, ...] | None = None  # for a model whose graph leaves a dimension open
    timeout: float = 1800.0
    keep: bool = False          # on a board over ssh: leave what was pushed there (the next bench skips it)

    def __post_init__(self) -> None:
        """The CLI's bounds hold for the Python API too: no endless bench, no thousands of threads."""
        threads = self.threads
        if threads is not None and not (positive_int(threads) and threads <= MAX_THREADS):
            raise EdgeticketError(f"--threads {threads!r} is not a whole number from 1 to {MAX_THREADS}",
                                  hint="leave it out for the profile's own threads, or pass e.g. --threads 4")
        for name, value, least, most in (("runs", self.runs, 1, MAX_BENCH_RUNS),
                                         ("warmup", self.warmup, 0, MAX_BENCH_WARMUP),
                                         ("seconds", self.seconds, 0, MAX_BENCH_SECONDS)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and least <= value <= most):
                raise EdgeticketError(f"--{name} {value!r} is not a number from {least} to {most:g}",
                                      hint="bench defaults: --runs 100 --warmup 10 --seconds 1")


def thread_limit() -> int:
    """The most threads a bench here may run: 4 per CPU (beyond the cores, threads only add contention)."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads: int | None, profile: DeviceProfile | None = None) -> None:
    """A --threads override is bounded by this machine's CPUs. A board over ssh is not this machine, and its CPUs
    are known only once it is probed: there only BenchConfig's MAX_THREADS applies."""
    if threads is None or (profile is not None and profile.ssh):
        return
    if threads > thread_limit():
        raise EdgeticketError(f"--threads {threads} is more than 4 per CPU of this machine ({os.cpu_count()} CPUs, "
                              f"so at most {thread_limit()})",
                              hint=f"pass --threads {os.cpu_count()} or fewer: more threads than cores only slows "
                                   "the timing")


def result_name(profile: DeviceProfile, threads: int) -> str:
    """The name a result is recorded under: the profile's, or `PROFILE@Nt` when --threads overrode its threads,
    so MODEL.PROFILE.bench.json always holds what the profile itself measures."""
    return profile.name if threads == profile.threads else f"{profile.name}@{threads}t"


@dataclass
class TargetData:
    """The test images accuracy is measured on, and what they are."""
    name: str
    test: TensorImages
    classes: int

    @classmethod
    def load(cls, name: str, shape: list[int], root: str | None = None) -> "TargetData":
        """The test set at the model's input size and channels."""
        splits = load_dataset(DataConfig(name, root, image_size=shape[-1], channels=shape[1]))
        return cls(splits.name, splits.test, len(splits.class_names))


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
    peak_memory_mb: float           # the runner's process at its peak: Python, numpy, inputs and the runtime
    runtime_memory_mb: float | None  # the runtime's own: import + session + inference (RSS growth to the peak)
    memory: dict                    # the runner's breakdown: baseline, session, inference, how it was measured
    accuracy: float | None          # top-1 % in this runtime on the target test set
    ece: float | None
    nll: float | None
    test_images: int | None
    data: str | None
    max_abs_diff: float | None      # against torch on seeded images, when the ticket was at hand
    load_average: dict = field(default_factory=dict)  # where it ran, before and after
    timing_meaningful: bool = True
    note: str = ""
    host: dict = field(default_factory=dict)     # the CPU the runtime ran on: model, arch, relevant flags
    profile_path: str = ""          # the TOML the profile came from
    profile: str = ""               # the profile's name (`device` is PROFILE@Nt when --threads overrode its threads)
    profile_threads: int | None = None  # the profile's own threads
    threads_overridden: bool = False    # `threads` came from --threads, not from the profile
    modules: dict = field(default_factory=dict)  # whether torch / edgeticket were loaded in the runner
    transport: str = "local"        # local | ssh
    board: dict = field(default_factory=dict)    # over ssh: the probe (CPU, governor, temperature...), what was pushed

    def as_dict(self) -> dict:
        return {**asdict(self), "latency": self.latency.as_dict()}

    @property
    def where(self) -> str:
        """Where it ran, in words: here, or the board over ssh as its probe found it."""
        if self.transport != "ssh":
            return "here"
        probe = self.board["probe"]
        heat = probe.get("temperature")
        return "ssh " + ", ".join(filter(None, [
            self.board["host"], probe.get("board") or probe.get("cpu"), probe["machine"], f"{probe['cpus']} cores",
            probe.get("governor") and f"governor {probe['governor']}", heat and f"{heat['celsius']:.0f} C"]))


def artifact_runtime(path: Path, profile: DeviceProfile | None = None) -> Runtime:
    """The runtime whose format `path` is by its suffix; for a suffix no runtime has, the profile's (the user
    said which runtime runs it)."""
    runtime = runtime_for_path(path)
    if runtime is not None:
        return runtime
    if profile is None:
        suffixes = ", ".join(r.suffix for r in list_runtimes())
        raise EdgeticketError(f"cannot tell which runtime runs '{path.name}' from its suffix (known: {suffixes})",
                              hint="pass --device NAME (see `edgeticket devices`), or name it with its format's suffix")
    return get_runtime(profile.runtime)


def default_device(path: str | Path) -> str:
    """The profile that runs an artifact as exported."""
    path = Path(path)
    runtime = artifact_runtime(path)
    precision = known_metadata(path).get("edgeticket.precision", "fp32") if path.exists() else "fp32"
    if precision in runtime.default_devices:
        return runtime.default_devices[precision]
    fits = [p.name for p in list_devices() if getattr(p, "runtime", None) == runtime.name and p.precision == precision]
    if not fits:
        raise EdgeticketError(f"no device profile runs {runtime.name} {precision}",
                              hint="pass --device with a profile's TOML (see `edgeticket devices`)")
    return fits[0]


def checked_model(path: str | Path) -> Path:
    """An exported model that exists (a file, or a folder runtime's folder); a ticket goes to --all-devices."""
    path = Path(path)
    if not path.exists():
        raise EdgeticketError(f"no such model: {path}", hint="export one with `edgeticket export TICKET -o model.onnx`")
    if path.suffix == ".ticket":
        raise EdgeticketError(f"{path.name} is a ticket, not an exported model",
                              hint="bench it on every profile with --all-devices, or export it first")
    runtime = runtime_for_path(path)
    if path.is_dir() and not (runtime and runtime.holds(path)):
        folders = [r for r in list_runtimes() if r.folder]
        raise EdgeticketError(f"{path} is a folder but not an {' or '.join(r.name for r in folders)} export (no "
                              f"{' or '.join(', '.join(r.folder_files) for r in folders)})",
                              hint="pass an exported file, or a folder from `edgeticket export`")
    return path


def known_metadata(path: Path) -> dict[str, str]:
    """edgeticket's metadata; {} for a model edgeticket did not export (a foreign ONNX is benched from its
    graph alone). A format that holds metadata inside and does not read is still an error."""
    try:
        return artifact_metadata(path)
    except NoMetadata:
        return {}


def int8_weights_note(metadata: dict[str, str], cpu: CpuInfo) -> str | None:
    """An int8 model exported with full-range weights (on a VNNI or ARM CPU) saturates on x86 without VNNI."""
    if metadata.get("edgeticket.int8_weight_bits") == "8" and cpu.x86 and not cpu.vnni:
        return "8-bit int8 weights on x86 without VNNI can saturate: export on this machine for 7-bit weights"
    return None


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' or '1x3x224x224' -> (1, 3, 224, 224); bench measures batch 1, as an edge device runs."""
    parts = [p for p in re.split(r"[,x ]+", text.strip()) if p]
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts) or parts[0] != "1":
        raise EdgeticketError(f"--input-shape '{text}' is not 1,C,H,W (bench measures batch 1)",
                              hint="e.g. --input-shape 1,3,224,224")
    return tuple(int(p) for p in parts)


def model_io(path: Path, runtime: Runtime | None) -> tuple[list[int | str], list[int | str]] | None:
    """The model's input and output dimensions from its graph, where its runtime reads them (None where not)."""
    return runtime.model_io(path) if runtime and runtime.model_io else None


def input_shape(path: Path, metadata: dict[str, str], override: tuple[int, ...] | None,
                runtime: Runtime | None = None) -> list[int]:
    """Batch 1 at the size the model was exported for; a foreign model's from its graph (ONNX), where a dynamic batch
    becomes 1 and any other open dimension needs --input-shape (which must agree with the fixed ones)."""
    runtime = runtime or runtime_for_path(path)
    io = model_io(path, runtime) if override or "edgeticket.input_size" not in metadata else None
    if override and io:
        dims, _ = io
        if len(override) != len(dims) or any(isinstance(d, int) and d > 0 and d != want
                                             for d, want in list(zip(dims, override))[1:]):
            raise EdgeticketError(f"--input-shape {','.join(map(str, override))} does not fit {path.name}'s input "
                                  f"{dims}", hint="keep its fixed dimensions as they are; only open ones are yours")
    if override:
        return list(override)
    if "edgeticket.input_size" in metadata:
        return [1] + json.loads(metadata["edgeticket.input_size"])
    if not io:
        raise EdgeticketError(f"{path.name} has no edgeticket metadata to read its input shape from",
                              hint="pass --input-shape 1,C,H,W")
    dims, _ = io
    shape = [1 if i == 0 and (not isinstance(d, int) or d == 0) else d for i, d in enumerate(dims)]
    if shape and shape[0] != 1:
        raise EdgeticketError(f"{path.name}'s batch is fixed at {shape[0]}; bench measures batch 1",
                              hint="export the model with a batch of 1 or a dynamic batch")
    open_dims = [f"{i}:{d}" for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
    if open_dims or len(shape) != 4:
        what = f"has open dimensions ({', '.join(open_dims)})" if open_dims else "is not N, C, H, W"
        example = ",".join(str(d) if isinstance(d, int) and d > 0 else "224" for d in shape)
        raise EdgeticketError(f"{path.name}'s input {dims} {what}", hint=f"pass --input-shape, e.g. {example}")
    return shape


def model_classes(path: Path, metadata: dict[str, str], runtime: Runtime | None) -> int | None:
    """How many classes the model predicts, where it says: edgeticket's class names, or a fixed graph output."""
    if "edgeticket.class_names" in metadata:
        return len(json.loads(metadata["edgeticket.class_names"]))
    io = model_io(path, runtime)
    if io:
        per_image = io[1][1:]  # [N, 10] and [N, 10, 1, 1] both predict 10 classes
        if per_image and all(isinstance(d, int) and d > 0 for d in per_image):
            return math.prod(per_image)
    return None


def metadata_target(metadata: dict[str, str]) -> str | None:
    """The dataset the exported ticket was finetuned on, from its provenance."""
    return json.loads(metadata.get("edgeticket.provenance") or "{}").get("target")


def bench_artifact(path: str | Path, profile: DeviceProfile | str = "ort-cpu-1t", config: BenchConfig = BenchConfig(),
                   data: TargetData | None = None,
                   reference: tuple[np.ndarray, np.ndarray] | None = None) -> BenchResult:
    """Latency, memory and (with `data`) accuracy, ECE and NLL of `path` in the profile's runtime, measured by
    the torch-free runner in its own process."""
    path = checked_model(path)
    profile = get_device(profile) if isinstance(profile, str) else profile
    own = profile
    if config.threads is not None:
        check_threads(config.threads, profile)
        profile = replace(profile, threads=config.threads)
    runtime = artifact_runtime(path, profile)
    if runtime.name != profile.runtime:
        raise EdgeticketError(f"{path.name} cannot run on {profile.name} ({profile.runtime})",
                              hint=f"use --device {default_device(path)}, or export with --format {profile.format}")
    metadata = known_metadata(path)
    shape = input_shape(path, metadata, config.input_shape, runtime)
    if data is not None:
        check_classes(path.name, model_classes(path, metadata, runtime), data.name, data.classes)
    inputs = {}
    if data is not None:
        inputs["test"] = data.test.images[:config.images or len(data.test)].numpy()  # uint8: scaled there
    if reference is not None:
        inputs["reference"] = reference[0]
    job = {"model": str(path.resolve()), "runtime": profile.runtime, "provider": profile.provider,
           "threads": profile.threads, "precision": profile.precision, "input_shape": shape, "runs": config.runs,
           "warmup": config.warmup, "min_seconds": config.seconds}
    board = {}
    if profile.ssh:
        from .ssh import run_on_board  # paramiko is imported only for a board
        out, logits, board = run_on_board(profile.ssh, job, inputs, config.timeout, config.keep)
        load_before = board["probe"]["load_average"]
    else:
        if config.keep:
            announce("keep", "--keep applies to a board over ssh; nothing is pushed for a local profile")
        load_before = os.getloadavg()
        out, logits = run_local(job, inputs, config.timeout)
    load_after = out["machine"]["load_average"]
    metrics = {"accuracy": None, "ece": None, "nll": None, "test_images": None}
    if data is not None:
        scores = torch.from_numpy(logits["test"]).double()
        labels = data.test.labels[:len(scores)]
        check_classes(path.name, scores.shape[1], data.name, data.classes)
        metrics = {"accuracy": 100 * accuracy(scores, labels), "test_images": len(labels),
                   "ece": expected_calibration_error(scores.softmax(1), labels),
                   "nll": negative_log_likelihood(scores, labels)}
    diff = float(np.abs(logits["reference"] - reference[1]).max()) if reference is not None else None
    cpu = parse_cpuinfo(out["machine"]["cpuinfo"], out["machine"]["arch"])
    timing = timing_note(profile, cpu, out["machine"]["cpus"])
    notes = [timing, int8_weights_note(metadata, cpu),
             f"{profile.runtime}'s Python runtime loads torch: its memory is in these figures"
             if out["modules"]["torch"] else None,
             None if metadata else "foreign model: pixels in [0, 1] at batch 1" + (
                 f"; {data.name} images resized to {shape[2]}x{shape[3]}, {shape[1]} channel(s)" if data else "")]
    memory = out["memory"]
    return BenchResult(str(path), result_name(own, profile.threads), profile.runtime, out["runtime_version"], profile.provider,
                       profile.threads, metadata.get("edgeticket.precision", profile.precision), shape,
                       size_on_disk(path), out["first_inference_ms"], LatencyStats(**out["latency"]),
                       memory["peak_mb"], memory["runtime_mb"], memory, **metrics, data=data.name if data else None,
                       max_abs_diff=diff, load_average={"before": load_before and list(load_before), "after": load_after},
                       timing_meaningful=timing is None, note="; ".join(filter(None, notes)), host=cpu.as_dict(),
                       profile_path=profile.path, profile=own.name, profile_threads=own.threads,
                       threads_overridden=profile.threads != own.threads, modules=out["modules"],
                       transport="ssh" if profile.ssh else "local", board=board)


def bench_model(path: str | Path, device: str | None = None, data: str | None = None,
                config: BenchConfig = BenchConfig(), data_root: str | None = None) -> BenchResult:
    """`edgeticket bench MODEL`: on the profile that runs its format unless `device` says; accuracy on `data`,
    which defaults to the target the exported ticket was finetuned on (a foreign model has none: latency only)."""
    path = checked_model(path)
    profile = get_device(device or default_device(path))
    metadata = known_metadata(path)
    name = data or metadata_target(metadata)
    shape = input_shape(path, metadata, config.input_shape, artifact_runtime(path, profile)) if name else None
    target = TargetData.load(name, shape, data_root) if name else None
    return bench_artifact(path, profile, config, target)


def bench_onnx(path: str | Path, config: BenchConfig = BenchConfig()) -> BenchResult:
    """The reference latency: onnxruntime on one CPU thread (threads from `config` if set)."""
    return bench_artifact(path, "ort-cpu-1t", config)


def check_record_writable(model: str | Path) -> None:
    """Before benching: the folder that will hold MODEL.DEVICE.bench.json takes new files (a read-only folder
    failed only after the whole run)."""
    check_writable(Path(f"{model}.bench.json"))


def record_bench(result: BenchResult) -> dict:
    """The result plus the ticket it was exported from, saved as `<model>.<device>.bench.json` for `report` (the
    device is PROFILE@Nt for a --threads override: the profile's own result is not overwritten)."""
    meta = known_metadata(Path(result.model))
    record = {**result.as_dict(), "ticket_sha256": meta.get("edgeticket.ticket_sha256", ""),
              "provenance": exported_provenance(Path(result.model), meta)}
    write_json(record, f"{result.model}.{result.device}.bench.json")
    return record
