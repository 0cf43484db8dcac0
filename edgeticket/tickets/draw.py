"""Drawing a ticket: a method (how masks are found) applied at a pattern (what a group is)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..errors import EdgeticketError
from ..registry import Registry
from .channel import conv_channels, prune_channels
from .masks import apply_masks, masked_sparsity, prunable_weights
from .patterns import PATTERNS, select_masks
from .stats import ModelSize, measure
from .ticket import Ticket


@dataclass
class DrawConfig:
    method: str = "omp"               # omp | imp | a-imp | lmp
    pattern: str = "channel"          # unstructured | row | kernel | channel
    sparsity: float = 0.5             # masked: fraction of weights removed; channel: fraction of channels per layer
    scope: str = "layerwise"          # layerwise | global
    include_first_last: bool = False  # also prune the first conv and the classifier (masked patterns)
    options: dict = field(default_factory=dict)  # method-specific settings (rounds, epochs, data ...)

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise EdgeticketError(f"--sparsity {self.sparsity} is outside [0, 1)",
                                  hint="0.5 removes half; 0.9 removes 90%")
        if self.scope not in ("layerwise", "global"):
            raise EdgeticketError(f"unknown --scope '{self.scope}'", hint="choose layerwise or global")
        PATTERNS.get(self.pattern)
        METHODS.get(self.method)


@dataclass
class PruneState:
    """What a method produces: the pruned module plus the history/masks that let it be rebuilt."""
    model: nn.Module
    pruning_history: list
    masks: dict[str, torch.Tensor]


def magnitude_step(model: nn.Module, ticket: Ticket, config: DrawConfig, sparsity: float,
                   masks: dict[str, torch.Tensor] | None = None) -> PruneState:
    """One magnitude-pruning step to a cumulative `sparsity` (a fraction of the original weights/channels)."""
    if PATTERNS.get(config.pattern).physical:
        already = ticket.provenance.get("channel_ratio", 0.0)
        ratio = 1.0 - (1.0 - sparsity) / (1.0 - already)  # torch-pruning's ratio is of the current channels
        return PruneState(model, prune_channels(model, ticket, ratio, config.scope), {})
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
    reference = source.build_model()
    before = measure(reference, source)
    state = METHODS.get(config.method)(source, config)
    after = measure(state.model, source)
    physical = PATTERNS.get(config.pattern).physical
    if physical:
        achieved = 1.0 - conv_channels(state.model) / conv_channels(reference)
        removed = 1.0 - after.params / before.params
    else:
        achieved = masked_sparsity(state.masks)
        removed = 1.0 - after.nonzero_params / before.nonzero_params
    report = DrawReport(config.sparsity, achieved, removed, before, after)
    ticket = source.with_model(state.model, pruning_history=state.pruning_history, masks=state.masks,
                               provenance=dict(source.provenance))
    ticket.provenance.update(method=config.method, pattern=config.pattern, scope=config.scope,
                             sparsity=config.sparsity, achieved_sparsity=achieved, params_removed=removed,
                             channel_ratio=config.sparsity if physical else 0.0,
                             params_before=before.params, params_after=after.params,
                             macs_before=before.macs, macs_after=after.macs)
    ticket.add_stage("draw", **{k: v for k, v in asdict(config).items() if k != "options"}, **config.options)
    return ticket, report
