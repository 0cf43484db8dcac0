"""Drawing a ticket: a method (how masks are found) applied at a pattern (what a group is)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..config import AttackConfig, TrainConfig
from ..data import DataConfig, load_dataset
from ..errors import EdgeticketError
from ..masks import apply_masks, masked_sparsity, prunable_weights
from ..registry import Registry
from ..ticket import Ticket
from .allocate import LatencyBudget, prune_to_budget
from .channel import check_budget_prunable, check_channel_prunable, conv_channels, prune_channels, usable_round_to
from .patterns import PATTERNS, select_masks
from .stats import ModelSize, measure


@dataclass
class DrawTraining:
    """For methods that train while drawing (imp, a-imp, lmp): on what, how long, against which attack."""
    on: str = "downstream"            # downstream (target data: DS tickets) | upstream (source data: US tickets)
    data: str | None = None           # dataset name; upstream defaults to the source's pretraining data
    data_root: str | None = None
    subset: int | None = 1000         # training images (stratified, seeded)
    rate: float = 0.2                 # imp/a-imp: fraction of the remaining weights/channels pruned per round
    epochs: int = 1                   # imp/a-imp: epochs between rounds; lmp: epochs of mask learning
    lr: float = 0.01
    attack: str = "l2:1.0"            # a-imp's PGD threat model (paper eq. 1)
    steps: int = 3
    rewind: bool = False              # imp/a-imp: reset surviving weights to the pretrained values each round
    seed: int = 0


@dataclass
class DrawConfig:
    method: str = "omp"               # omp | imp | a-imp | lmp
    pattern: str = "channel"          # unstructured | row | kernel | channel
    sparsity: float = 0.5             # masked: fraction of weights removed; channel: fraction of channels per layer
    scope: str = "layerwise"          # layerwise | global
    include_first_last: bool = False  # also prune the first conv and the classifier (masked patterns)
    round_to: int = 1                 # channel: keep a multiple of this many channels per layer (8, 16: SIMD)
    training: DrawTraining = field(default_factory=DrawTraining)
    max_latency_ms: float | None = None  # channel omp/imp/a-imp: prune to this latency on a device (sparsity: a floor)
    budget: LatencyBudget | None = None  # the latency model the budget is predicted with (edgeticket/budget.py sets it)

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise EdgeticketError(f"--sparsity {self.sparsity} is outside [0, 1)",
                                  hint="0.5 removes half; 0.9 removes 90%")
        if self.scope not in ("layerwise", "global"):
            raise EdgeticketError(f"unknown --scope '{self.scope}'", hint="choose layerwise or global")
        PATTERNS.get(self.pattern)
        METHODS.get(self.method)
        if self.max_latency_ms is not None and not (math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0):
            raise EdgeticketError(f"--max-latency-ms {self.max_latency_ms} is not a positive number of milliseconds",
                                  hint="e.g. --max-latency-ms 20")
        if self.max_latency_ms is not None and (not PATTERNS.get(self.pattern).physical
                                                or self.method not in BUDGET_METHODS):
            raise EdgeticketError(f"--max-latency-ms prunes channels with {', '.join(BUDGET_METHODS)}, not "
                                  f"--method {self.method} --pattern {self.pattern}",
                                  hint="use --pattern channel with --method omp, imp or a-imp")
        if self.round_to < 1 or (self.round_to > 1 and not PATTERNS.get(self.pattern).physical):
            raise EdgeticketError(f"--round-to {self.round_to} needs a whole number >= 1 and --pattern channel",
                                  hint="8 or 16 keep channel counts SIMD-friendly; masked patterns keep every channel")
        if self.method == "lmp" and PATTERNS.get(self.pattern).physical and self.scope == "global":
            raise EdgeticketError("channel LMP learns a mask per channel group, so it prunes layerwise only",
                                  hint="drop --scope global, or use --method omp for a global channel ranking")
        if self.training.on not in ("downstream", "upstream"):
            raise EdgeticketError(f"unknown --on '{self.training.on}'", hint="choose downstream or upstream")
        if not 0 < self.training.rate < 1:
            raise EdgeticketError(f"--rate {self.training.rate} is outside (0, 1)", hint="0.2 prunes 20% per round")
        # checked for every method: a typo in an option omp ignores is still a typo
        AttackConfig.parse(self.training.attack, self.training.steps)
        TrainConfig(epochs=self.training.epochs, lr=self.training.lr, seed=self.training.seed).validate()


BUDGET_METHODS = ("omp", "imp", "a-imp")  # the ones that prune by magnitude, where a latency budget can steer


@dataclass
class PruneState:
    """What a method produces: the pruned module plus the history/masks that let it be rebuilt."""
    model: nn.Module
    pruning_history: list
    masks: dict[str, torch.Tensor]
    class_names: list[str] | None = None  # set when the method trained a new head (downstream data)


def magnitude_step(model: nn.Module, ticket: Ticket, config: DrawConfig, sparsity: float,
                   masks: dict[str, torch.Tensor] | None = None) -> PruneState:
    """One magnitude-pruning step: to `sparsity` of the weights (masked patterns; pruned weights stay pruned),
    or removing `sparsity` of the current channels (channel)."""
    if PATTERNS.get(config.pattern).physical and config.budget:
        return PruneState(model, prune_to_budget(model, ticket, config.budget, config.round_to, sparsity), {})
    if PATTERNS.get(config.pattern).physical:
        return PruneState(model, prune_channels(model, ticket, sparsity, config.scope, round_to=config.round_to), {})
    weights = {name: p.detach() for name, p in prunable_weights(model, ticket.arch, config.include_first_last).items()}
    new_masks = select_masks(weights, PATTERNS.get(config.pattern), sparsity, config.scope)
    if masks:  # a weight once pruned stays pruned
        new_masks = {name: new_masks[name] & masks[name] for name in new_masks}
    apply_masks(model, new_masks)
    return PruneState(model, list(ticket.pruning_history), new_masks)


class Method(Protocol):
    def __call__(self, ticket: Ticket, config: DrawConfig) -> PruneState: ...


METHODS: Registry[Method] = Registry("ticket method")


@METHODS.register("omp")
def one_shot_magnitude(ticket: Ticket, config: DrawConfig) -> PruneState:
    """OMP (paper II-B ①): remove the smallest-magnitude groups of the pretrained weights, once."""
    return magnitude_step(ticket.build_model(), ticket, config, config.sparsity, dict(ticket.masks))


def list_methods() -> list[str]:
    return METHODS.names()


def training_data(ticket: Ticket, training: DrawTraining):
    """The images a drawing method trains on: the target (downstream) or the source task (upstream)."""
    name = training.data or (ticket.provenance.source_data if training.on == "upstream" else None)
    if not name:
        raise EdgeticketError(f"this method trains while drawing: it needs the {training.on} dataset",
                              hint="pass --data NAME (the target task for downstream, the source task for upstream)")
    return load_dataset(DataConfig(name, training.data_root, training.subset, training.seed,
                                   ticket.input_size[-1], ticket.input_size[0]))


@dataclass
class DrawReport:
    target_sparsity: float
    achieved_sparsity: float   # masked: zero fraction of prunable weights; channel: fraction of conv channels removed
    params_removed: float      # fraction of all stored (channel) or non-zero (masked) parameters removed
    before: ModelSize
    after: ModelSize

    def as_dict(self) -> dict:
        return {**asdict(self), "before": self.before.as_dict(), "after": self.after.as_dict()}


def draw_ticket(source: Ticket, config: DrawConfig) -> tuple[Ticket, DrawReport]:
    config.validate()
    if config.max_latency_ms is not None and config.budget is None:
        raise EdgeticketError("a latency budget needs the device's latency model to draw with",
                              hint="call edgeticket.draw(..., max_latency_ms=T, device=D), which builds it")
    physical = PATTERNS.get(config.pattern).physical
    if physical:
        check_channel_prunable(source.arch)
    reference = source.build_model()
    if physical and config.budget is not None:
        check_budget_prunable(source.arch, reference)
    elif physical:
        config = dataclasses.replace(config, round_to=usable_round_to(reference, config.round_to))
    before = measure(reference, source)
    state = METHODS.get(config.method)(source, config)
    after = measure(state.model, source)
    if physical:
        achieved = 1.0 - conv_channels(state.model) / conv_channels(reference)
        removed = 1.0 - after.params / before.params
        if achieved == 0 and config.sparsity and config.round_to > 1:
            widest = max(m.out_channels for m in reference.modules() if isinstance(m, nn.Conv2d))
            raise EdgeticketError(f"--round-to {config.round_to} leaves every layer whole (the widest conv has "
                                  f"{widest} channels): nothing was removed",
                                  hint="use a multiple that fits the layers, such as 8 or 16")
    else:
        achieved = masked_sparsity(state.masks)
        removed = 1.0 - after.nonzero_params / before.nonzero_params
    report = DrawReport(config.sparsity, achieved, removed, before, after)
    names = state.class_names or source.class_names
    ticket = source.with_model(state.model, pruning_history=state.pruning_history, masks=state.masks,
                               class_names=list(names),
                               arch_kwargs={**source.arch_kwargs, "num_classes": len(names)})
    ticket.provenance = dataclasses.replace(
        ticket.provenance, method=config.method, pattern=config.pattern, scope=config.scope, round_to=config.round_to,
        sparsity=config.sparsity, achieved_sparsity=achieved, params_removed=removed, params_before=before.params,
        params_after=after.params, macs_before=before.macs, macs_after=after.macs, latency_budget_ms=None,
        latency_device=None, predicted_latency_ms=None, measured_latency_ms=None)  # a budgeted draw sets them after
    record = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in ("training", "budget")}
    ticket.add_stage("draw", **record, **({"training": asdict(config.training)} if config.method != "omp" else {}))
    return ticket, report
