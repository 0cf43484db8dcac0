"""Drawing to a latency budget on a device: `draw --max-latency-ms T --device D`.

1. The latency model: the source's conv blocks looked up in the device's latency table (bench/latency.py),
   measuring only what the cache lacks, and the table's error on five random channel configurations.
2. The draw: OMP, IMP or A-IMP with each group's kept channels chosen by tickets/allocate.py so that the
   prediction fits T (--sparsity, if given, a floor).
3. The check: the ticket exported and benched on D; if its p50 exceeds T, or falls under 0.9 T (latency left
   unspent), the next budget is its prediction times T / measured, and the ticket is drawn again, at most
   three times in all. The widest draw that fits is kept; if none does, the last is, and says so (its
   provenance holds both numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .bench.devices import DeviceProfile
from .bench.latency import ConvBlock, LatencyTable, conv_blocks, grid_blocks, grid_levels, measure
from .console import info
from .errors import EdgeticketError
from .models.normalize import Normalized
from .ticket import Ticket
from .tickets.allocate import (LatencyBudget, LatencyModel, LayerLatency, channel_groups, layer_channels,
                               check_reachable, layer_groups, prune_groups, smallest_counts)
from .tickets.channel import check_budget_prunable, check_channel_prunable
from .tickets.draw import DrawConfig, draw_ticket

ROUND_TO = 8             # channels a budgeted draw keeps in multiples of, when the profile names no round_to
ROUNDS = 3               # draws at most, each with the budget scaled by what the last one measured
SPENT = 0.9              # a ticket measuring under this share of its budget left latency unspent: drawn again, wider
ERROR_CONFIGURATIONS = 5  # random channel configurations the table's prediction is checked on
CHECK_RUNS = 50           # timed runs of the drawn ticket on the device
CHUNK = 200               # blocks per runner process, and between saves of the table


@dataclass
class TableReport:
    """The latency model a draw used: its table file, what was measured for it, and its error."""
    device: str
    file: str
    blocks: int               # grid points this network's layers use
    measured_blocks: int      # of them, measured by this draw (0: all from the cache)
    build_seconds: float      # time this draw spent measuring (0: from the cache)
    first_build_seconds: float  # time the table took when it was built for this network
    dense_ms: float           # the source as measured when the table was built
    errors: list[dict] = field(default_factory=list)  # predicted vs measured on random configurations

    @property
    def mean_error(self) -> float:
        return float(np.mean([abs(e["predicted_ms"] / e["measured_ms"] - 1) for e in self.errors])) if self.errors else 0.0


@dataclass
class BudgetRound:
    budget_ms: float
    predicted_ms: float
    measured_ms: float


@dataclass
class BudgetReport:
    max_latency_ms: float
    device: str
    rounds: list[BudgetRound]
    table: TableReport
    kept_channels: dict[str, list[int]]  # group (its root layer) -> [kept, of]
    kept_round: int = -1  # the draw written: the widest that fits, else the last

    @property
    def met(self) -> bool:
        return self.rounds[self.kept_round].measured_ms <= self.max_latency_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met, "table": {**asdict(self.table), "mean_error": self.table.mean_error}}


CALIBRATION = 2  # the networks' calibration: 2 = fixed cost and scale, fitted on the dense and the fastest network


def structure_key(blocks: dict, wiring: dict, round_to: int, classes: int) -> str:
    """A short hash of the network's conv blocks, their channel groups, its classes and the grid's step."""
    record = {"blocks": {name: block.key for name, block in sorted(blocks.items())}, "classes": classes,
              "calibration": CALIBRATION,
              "wiring": {name: list(pair) for name, pair in sorted(wiring.items())}, "round_to": round_to}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def random_counts(sizes: dict[str, int], round_to: int, rng: np.random.Generator) -> dict[str, int]:
    """Each group at a random multiple of `round_to` between `round_to` and its width (narrow groups whole)."""
    counts = {}
    for name, size in sizes.items():
        steps = size // round_to
        counts[name] = size if steps < 1 else int(rng.integers(1, steps + 1)) * round_to
    return counts


def pruned_copy(source: Ticket, counts: dict[str, int]) -> Normalized:
    """The source as deployed with its groups pruned to `counts` (lowest importance first)."""
    model = source.build_model()
    graph, groups = channel_groups(model, source)
    prune_groups(graph, groups, counts)
    return Normalized(model.eval(), source.mean, source.std).eval()


CALL = ConvBlock(1, 1, (1, 1), (1, 1), (0, 0), (1, 1), 1, 1, 1)  # the runtime's cost of one call, nearly no work


def layer_model(table: LatencyTable, grids: dict[str, tuple], fixed_ms: float | None = None,
                scale: float = 1.0) -> LatencyModel:
    """Each layer's block from the table, less one call's cost (a network pays it once, not per layer)."""
    call = table.points[CALL.key]

    def net(ms):
        return lambda in_channels, out_channels: max(ms(in_channels, out_channels) - call, 0.0)

    return LatencyModel([LayerLatency(name, (block.in_channels, block.out_channels),
                                      net(partial(table.block_ms, block, ins, outs)), in_group, out_group)
                         for name, (block, ins, outs, in_group, out_group) in grids.items()],
                        call if fixed_ms is None else fixed_ms, scale)


def calibrate(latency: LatencyModel, sizes: dict[str, int], fastest: dict[str, int], dense_ms: float,
              fastest_ms: float) -> None:
    """Fit the fixed cost and the scale through the measured dense and fastest networks: the layers' sum misses
    the work between them (pooling, additions, activations ORT does not fuse, squeeze-excitation), some of which
    shrinks with the channels and some of which does not."""
    call = latency.call_ms
    dense_sum, fastest_sum = (latency.total(c) - call for c in (sizes, fastest))
    if dense_sum > fastest_sum and dense_ms > fastest_ms:
        latency.scale = (dense_ms - fastest_ms) / (dense_sum - fastest_sum)
        latency.call_ms = dense_ms - latency.scale * dense_sum
    if dense_sum <= fastest_sum or dense_ms <= fastest_ms or latency.call_ms < 0:
        # timing noise (the fastest no faster than dense) or a line below zero: through the dense network alone
        latency.call_ms, latency.scale = call, (dense_ms - call) / dense_sum


def latency_model(source: Ticket, profile: DeviceProfile, round_to: int) -> tuple[LatencyModel, TableReport]:
    """The source's latency model on the profile's device, from the cached table, measuring what it lacks."""
    model = source.build_model()
    blocks = conv_blocks(model, source.example_input())
    _, groups = channel_groups(model, source)
    wiring = layer_groups(groups)
    sizes = {g.name: len(g.scores) for g in groups}
    levels = {name: grid_levels(size, round_to) for name, size in sizes.items()}
    table = LatencyTable.for_device(profile, source.arch, source.input_size)
    grids = {}
    for name, block in blocks.items():
        in_group, out_group = wiring.get(name, (None, None))
        grids[name] = (block, levels[in_group] if in_group else [block.in_channels],
                       levels[out_group] if out_group else [block.out_channels], in_group, out_group)
    needed = [CALL] + [b for block, ins, outs, _, _ in grids.values() for b in grid_blocks(block, ins, outs)]
    key = structure_key(blocks, wiring, round_to, source.num_classes)
    missing, network, unique = table.missing(needed), table.networks.get(key), len({b.key for b in needed})
    started = time.perf_counter()
    if missing or network is None:
        info(f"latency table for {source.arch} at {'x'.join(map(str, source.input_size))} on {profile.name}: "
             f"measuring {len(missing)} of {unique} blocks -> {table.path}")
        rng = np.random.default_rng(0)
        configurations = [random_counts(sizes, round_to, rng) for _ in range(ERROR_CONFIGURATIONS)]
        example = source.example_input()
        fastest = smallest_counts(sizes, round_to)
        networks = [(Normalized(source.build_model(), source.mean, source.std).eval(), example),
                    (pruned_copy(source, fastest), example)]
        networks += [(pruned_copy(source, counts), example) for counts in configurations]
        for start in range(0, len(missing), CHUNK):  # saved as it goes: a killed build resumes where it was
            chunk = missing[start:start + CHUNK]
            label = f": blocks {start + 1}-{start + len(chunk)} of {len(missing)}"
            table.points.update(zip((block.key for block in chunk), measure(profile, chunk, [], label)[0]))
            table.save()
        network_ms = measure(profile, [], networks, ": dense, fastest and random networks")[1]
        latency = layer_model(table, grids)
        calibrate(latency, sizes, fastest, network_ms[0], network_ms[1])
        network = {"dense_ms": network_ms[0], "fastest_ms": network_ms[1], "fixed_ms": latency.call_ms,
                   "scale": latency.scale,
                   "errors": [{"predicted_ms": latency.total(counts), "measured_ms": ms, "kept": counts}
                              for counts, ms in zip(configurations, network_ms[2:])],
                   "build_seconds": time.perf_counter() - started, "blocks": unique}
        table.networks[key] = network
        table.save()
    latency = layer_model(table, grids, network["fixed_ms"], network["scale"])
    report = TableReport(profile.name, str(table.path), network["blocks"], len(missing),
                         time.perf_counter() - started if missing else 0.0, network["build_seconds"],
                         network["dense_ms"], [{k: e[k] for k in ("predicted_ms", "measured_ms")}
                                               for e in network["errors"]])
    return latency, report


def measured_ms(ticket: Ticket, profile: DeviceProfile) -> float:
    """The ticket exported in the profile's format (checked against torch) and benched there: p50 ms."""
    from .bench import BenchConfig, bench_artifact
    from .export import export
    from .runtimes import get_runtime
    runtime = get_runtime(profile.runtime)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"ticket{runtime.suffix}"
        export(ticket, path, runtime.format)
        return bench_artifact(path, profile, BenchConfig(runs=CHECK_RUNS, warmup=5, seconds=0.5)).latency.p50_ms


def draw_to_budget(source: Ticket, config: DrawConfig, profile: DeviceProfile) -> tuple[Ticket, BudgetReport]:
    """Draw with `config` (its max_latency_ms set) to fit on `profile`, check by bench, and redraw with the budget
    scaled by the miss, tighter when it measured over, wider when it left more than 1 - SPENT of it unspent."""
    target = config.max_latency_ms
    check_channel_prunable(source.arch)
    check_budget_prunable(source.arch, source.build_model())
    latency, table = latency_model(source, profile, config.round_to)
    info(f"latency model on {profile.name}: dense {table.dense_ms:.3g} ms; predicted vs measured on "
         f"{len(table.errors)} random configurations: " + ", ".join(
             f"{e['predicted_ms']:.3g}/{e['measured_ms']:.3g}" for e in table.errors)
         + f" ms (mean error {table.mean_error:.1%})")
    check_reachable(latency, target, config.round_to, network=f"{source.arch} on {profile.name}")
    fastest = latency.total(smallest_counts(latency.group_sizes(), config.round_to))
    if target >= table.dense_ms and not config.sparsity:
        info(f"the budget, {target:g} ms, is above the dense {source.arch}'s {table.dense_ms:.3g} ms on "
             f"{profile.name}: no channel needs to go (a lower --max-latency-ms prunes)")
    rounds, drawn, budget = [], [], target
    for _ in range(ROUNDS):
        ticket, _ = draw_ticket(source, dataclasses.replace(config, budget=LatencyBudget(budget, latency)))
        channels = layer_channels(ticket.build_model())
        predicted, measured = latency.of_layers(channels), measured_ms(ticket, profile)
        rounds.append(BudgetRound(budget, predicted, measured))
        drawn.append((ticket, channels))
        info(f"budget {budget:.3g} ms: predicted {predicted:.3g} ms, measured {measured:.3g} ms on {profile.name}")
        whole = all(channels[group][1] == size for group, size in latency.group_sizes().items())
        if SPENT * target <= measured <= target or (measured > target and budget <= fastest) or (
                measured < target and whole):
            break
        budget = max(fastest, predicted * target / measured)  # the prediction, scaled by the miss
    fits = [i for i, r in enumerate(rounds) if r.measured_ms <= target]
    chosen = max(fits, key=lambda i: rounds[i].measured_ms) if fits else len(rounds) - 1
    ticket, channels = drawn[chosen]
    kept = {group: [channels[group][1], size] for group, size in latency.group_sizes().items()}  # its root layer's
    report = BudgetReport(target, profile.name, rounds, table, kept, chosen)
    if not report.met:
        info(f"the ticket measures {rounds[-1].measured_ms:.3g} ms on {profile.name} after {len(rounds)} draws, over "
             f"the {target:g} ms budget: it is written anyway (a busy machine times slower; bench it again)")
    elif len(rounds) > 1:
        info(f"kept draw {chosen + 1}: the widest that measured within the budget")
    ticket.provenance = dataclasses.replace(
        ticket.provenance, latency_budget_ms=target, latency_device=profile.name,
        predicted_latency_ms=rounds[chosen].predicted_ms, measured_latency_ms=rounds[chosen].measured_ms)
    ticket.provenance.stages[-1].details["latency"] = report.as_dict()
    return ticket, report


def check_budget_device(device: str | None) -> DeviceProfile:
    if not device:
        raise EdgeticketError("--max-latency-ms needs the device the latency is measured on",
                              hint="add --device NAME, e.g. --device ort-cpu-1t (see `edgeticket devices`)")
    from .bench import get_device
    profile = get_device(device)
    if profile.int8:
        raise EdgeticketError(f"--max-latency-ms times fp32 blocks and exports; {profile.name} runs int8",
                              hint="draw to the budget on the fp32 profile of the same runtime (e.g. --device "
                                   "ort-cpu-1t), then export --int8 and bench it")
    return profile
