"""The latency table: how long a network's conv blocks take on a device, at the channel counts a budget can pick.

Each conv layer is timed alone as a block (conv + BatchNorm + the activation that follows it, at the layer's
input size) in the device's runtime; budget.py turns the blocks into a network's prediction (a fixed cost plus
the blocks' sum times a scale, both fitted through the measured dense and fastest networks). A block is
measured on a grid of (input, output) channel counts: multiples of `round_to` near each eighth of the layer's
width, plus `round_to` itself; between grid points the table interpolates bilinearly.

Per-layer blocks rather than whole-network deltas: a block's cost depends on both of its channel counts, so
deltas measured one group at a time do not add up once several groups shrink together, and a whole network
takes longer to export than a block does to time. Many blocks are timed in one runner process (a process per
block would spend its time starting up). Measured points are cached per device, runtime version, threads,
precision, machine, architecture and input size, and accumulate: a second draw measures only what the first
did not.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..console import progress_bar
from ..errors import EdgeticketError
from ..fileio import cache_dir, write_json
from ..host import cpu_info
from ..runtimes import get_runtime
from .devices import DeviceProfile
from .transport import run_local

TIMED_RUNS, WARMUP = 10, 3  # per block and per network: the table's p50s (one runner process times them all)


@dataclass(frozen=True)
class ConvBlock:
    """One conv + BatchNorm + activation as the table measures it: its channels, geometry, input size and the
    activation that follows it in the network (onnxruntime fuses a ReLU into the conv, not a hardswish or SiLU)."""
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    height: int
    width: int
    activation: str = "relu"

    @property
    def depthwise(self) -> bool:
        """Input and output channels are one group of channels (torch-pruning prunes them together)."""
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def with_channels(self, in_channels: int, out_channels: int) -> "ConvBlock":
        return replace(self, in_channels=in_channels, out_channels=out_channels,
                       groups=in_channels if self.depthwise else self.groups)

    @property
    def key(self) -> str:
        return (f"{self.in_channels}x{self.out_channels}/g{self.groups}-k{self.kernel[0]}x{self.kernel[1]}"
                f"-s{self.stride[0]}x{self.stride[1]}-p{self.padding[0]}x{self.padding[1]}"
                f"-d{self.dilation[0]}x{self.dilation[1]}@{self.height}x{self.width}"
                + ("" if self.activation == "relu" else f"-{self.activation}"))

    @property
    def input_shape(self) -> list[int]:
        return [1, self.in_channels, self.height, self.width]

    def module(self) -> nn.Module:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride, self.padding, self.dilation,
                         self.groups, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(self.out_channels), ACTIVATIONS[self.activation]()).eval()

    def example(self) -> torch.Tensor:
        return torch.rand(self.input_shape)


ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU,
               "hardsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid, "none": nn.Identity}


def conv_blocks(model: nn.Module, example: torch.Tensor) -> dict[str, ConvBlock]:
    """Every Conv2d of `model` as a block at the input size it sees on `example`, by module name, with the
    activation module called next (after its BatchNorm, if any)."""
    calls: list[tuple[str, nn.Module, torch.Size]] = []
    handles = [m.register_forward_pre_hook(
        lambda module, inputs, name=name: calls.append((name, module, inputs[0].shape if inputs else None)))
               for name, m in model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    kinds = {cls: name for name, cls in ACTIVATIONS.items()}
    blocks: dict[str, ConvBlock] = {}
    for index, (name, conv, shape) in enumerate(calls):
        if not isinstance(conv, nn.Conv2d):
            continue
        following = [module for _, module, _ in calls[index + 1:index + 3]]
        if following and isinstance(following[0], nn.BatchNorm2d):
            following = following[1:]
        activation = kinds.get(type(following[0]), "none") if following else "none"
        height, width = shape[-2:]
        blocks[name] = ConvBlock(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
                                 tuple(conv.padding), tuple(conv.dilation), conv.groups, int(height), int(width),
                                 activation)
    return blocks


def grid_levels(size: int, round_to: int) -> list[int]:
    """The channel counts a block is measured at along one axis: `round_to`, the multiples of it nearest each
    eighth of `size`, and `size` itself."""
    step = max(round_to, 1)
    levels = {size, min(step, size)}
    levels.update(max(step, round(size * k / 8 / step) * step) for k in range(1, 8))
    return sorted(level for level in levels if level <= size)


def bracket(levels: list[int], value: float) -> tuple[int, int, float]:
    """The grid levels around `value` and its position between them (0 at the lower, 1 at the upper); beyond
    the grid, the nearest pair, extrapolated linearly."""
    if len(levels) == 1:
        return levels[0], levels[0], 0.0
    upper = next((i for i, level in enumerate(levels) if level >= value), len(levels) - 1)
    upper = min(max(upper, 1), len(levels) - 1)
    low, high = levels[upper - 1], levels[upper]
    return low, high, (value - low) / (high - low)


@dataclass
class TableKey:
    """What a measured point depends on besides the block: where and how it ran."""
    device: str
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    precision: str
    machine: str
    arch: str
    input_size: list[int]
    version: int = 1  # of how blocks are written and timed: a change makes new tables

    def file(self) -> Path:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        size = "x".join(map(str, self.input_size))
        return cache_dir() / "latency" / f"{self.device}-{self.arch}-{size}-t{self.threads}-{digest}.json"


def machine_name(profile: DeviceProfile) -> str:
    """The machine a profile's latency belongs to: this one's CPU model and host name (a board's when remote)."""
    if profile.ssh:
        return f"ssh {profile.ssh.label}"
    return f"{platform.node()} {cpu_info().model}"


class LatencyTable:
    """Measured p50 milliseconds per block, and per network structure its dense latency and the table's error;
    kept in one JSON file per TableKey under the cache folder."""

    def __init__(self, key: TableKey):
        self.key, self.path = key, key.file()
        record = json.loads(self.path.read_text()) if self.path.is_file() else {}
        same = record.get("key") == asdict(key)
        self.points: dict[str, float] = record.get("points", {}) if same else {}
        self.networks: dict[str, dict] = record.get("networks", {}) if same else {}

    @classmethod
    def for_device(cls, profile: DeviceProfile, arch: str, input_size: tuple[int, ...]) -> "LatencyTable":
        runtime = get_runtime(profile.runtime)
        why = None if profile.ssh else runtime.unavailable_reason(profile.provider)  # a board's probe says
        if why:
            raise EdgeticketError(f"cannot measure latency on {profile.name}: {why}",
                                  hint="pick a profile that runs here (see `edgeticket devices`)")
        return cls(TableKey(profile.name, runtime.name, runtime.version() or "unknown", profile.provider,
                            profile.threads, profile.precision, machine_name(profile), arch, list(input_size)))

    def missing(self, blocks: list[ConvBlock]) -> list[ConvBlock]:
        return list({b.key: b for b in blocks if b.key not in self.points}.values())

    def block_ms(self, block: ConvBlock, in_levels: list[int], out_levels: list[int], in_channels: int,
                 out_channels: int) -> float:
        """`block` (at full width, measured on `in_levels` x `out_levels`) with these channel counts, interpolated."""
        if block.depthwise:
            low, high, t = bracket(in_levels, in_channels)
            return ((1 - t) * self.points[block.with_channels(low, low).key]
                    + t * self.points[block.with_channels(high, high).key])
        in_low, in_high, s = bracket(in_levels, in_channels)
        out_low, out_high, t = bracket(out_levels, out_channels)
        ms = {(i, o): self.points[block.with_channels(i, o).key] for i in (in_low, in_high) for o in (out_low, out_high)}
        return ((1 - s) * (1 - t) * ms[in_low, out_low] + (1 - s) * t * ms[in_low, out_high]
                + s * (1 - t) * ms[in_high, out_low] + s * t * ms[in_high, out_high])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json({"key": asdict(self.key), "points": self.points, "networks": self.networks}, self.path)


def grid_blocks(block: ConvBlock, in_levels: list[int], out_levels: list[int]) -> list[ConvBlock]:
    """The blocks a layer is measured as: every grid point (the diagonal only for a depthwise conv)."""
    if block.depthwise:
        return [block.with_channels(c, c) for c in in_levels]
    return [block.with_channels(i, o) for i in in_levels for o in out_levels]


def measure(profile: DeviceProfile, blocks: list[ConvBlock], networks: list[tuple[nn.Module, torch.Tensor]],
            label: str = "", timeout: float = 1800.0) -> tuple[list[float], list[float]]:
    """p50 ms of each block and each (module, example) network, written in the profile's format and timed by
    the runner, all in one process: here, or on the profile's board over ssh (pushed, run, removed)."""
    runtime = get_runtime(profile.runtime)
    with tempfile.TemporaryDirectory() as work, progress_bar() as bar:
        task = bar.add_task(f"latency table on {profile.name}{label}", total=len(blocks) + len(networks) + 1,
                            status="writing blocks")
        folder, timings = Path(work), []
        for index, block in enumerate(blocks):
            path = folder / f"block{index}{runtime.suffix}"
            runtime.write_block(block, path)
            timings.append({"model": str(path), "input_shape": block.input_shape})
            bar.update(task, advance=1)
        bar.update(task, status="writing networks")
        for index, (module, example) in enumerate(networks):
            path = folder / f"network{index}{runtime.suffix}"
            runtime.write(module, example, path)
            timings.append({"model": str(path), "input_shape": list(example.shape)})
            bar.update(task, advance=1)
        bar.update(task, status=f"timing {len(timings)} models")
        job = {"model": str(folder), "runtime": profile.runtime, "provider": profile.provider,
               "threads": profile.threads, "precision": profile.precision, "runs": TIMED_RUNS, "warmup": WARMUP,
               "min_seconds": 0.0, "timings": timings}
        if profile.ssh:
            from .ssh import run_on_board  # paramiko is imported only for a board
            out = run_on_board(profile.ssh, job, {}, timeout)[0]
        else:
            out = run_local(job, {}, timeout)[0]
        bar.update(task, advance=1)
    p50 = [entry["p50_ms"] for entry in out["latencies"]]
    return p50[:len(blocks)], p50[len(blocks):]
