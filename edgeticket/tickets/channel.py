"""Physical channel removal with torch-pruning: the ticket becomes a smaller dense model.

`ratio` is torch-pruning's `pruning_ratio`: the fraction of output channels removed from every prunable
layer (coupled layers, e.g. across residual additions, are pruned together). Parameters and MACs fall by
about 1 - (1 - ratio)^2. The classifier keeps its outputs. `round_to` rounds each layer's remaining channels
down to a multiple of it (8 or 16 suit SIMD lanes and tensor cores); a layer that would keep fewer than
`round_to` channels is left whole, as torch-pruning never empties a layer.
"""

from __future__ import annotations

import torch_pruning as tp
from torch import nn

from ..console import info
from ..errors import EdgeticketError
from ..models import get_arch
from ..ticket import Ticket


def check_channel_prunable(arch: str) -> None:
    """Refuse, before any work, an architecture whose channels torch-pruning cannot remove correctly."""
    blocked = get_arch(arch).channel_pruning_blocked
    if blocked:
        raise EdgeticketError(f"{arch}: channel pruning is not supported: {blocked}",
                              hint="draw --pattern unstructured, row or kernel (masks) for this architecture, or "
                                   "pick one that prunes by channel (see `edgeticket models`)")


def grouped_convs(model: nn.Module) -> list[str]:
    """Convs split into groups of several channels (ResNeXt, RegNet; not depthwise): torch-pruning removes the same
    channels from every group of them."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]


def usable_round_to(model: nn.Module, round_to: int) -> int:
    """`round_to`, or 1 where it would leave layers whole: torch-pruning 1.6 rounds a grouped conv's per-group count
    of pruned channels against the whole layer's channels, overshoots the group and keeps the layer unpruned
    (measured, 0.5 channel at 224: regnet_y_400mf keeps 231M MACs at round-to 8 against 109M at 1, and runs 1.57x
    faster than dense instead of 2.18x; resnext50_32x4d 2.51x instead of 3.43x)."""
    grouped = grouped_convs(model) if round_to > 1 else []
    if grouped:
        info(f"--round-to {round_to} not applied: torch-pruning would leave the grouped convs ({grouped[0]}, ...) "
             "whole; channels are kept unrounded")
        return 1
    return round_to


def check_budget_prunable(arch: str, model: nn.Module) -> None:
    """A latency budget removes each channel group's own lowest channels, which a grouped conv cannot take (it needs
    the same channels gone from every group): refuse before any latency table is timed."""
    grouped = grouped_convs(model)
    if grouped:
        raise EdgeticketError(f"{arch}: a latency budget cannot prune its grouped convs ({grouped[0]}, ...)",
                              hint="draw with --sparsity instead (torch-pruning keeps the groups consistent)")


def ready_to_trace(model: nn.Module) -> None:
    """What torch-pruning's tracing needs of a model: eval mode (tracing must not touch BatchNorm running
    statistics) and gradients on (it traces the graph through autograd)."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(True)


def channel_pruner(model: nn.Module, ticket: Ticket, ratio: float, scope: str = "layerwise",
                   importance: tp.importance.Importance | None = None,
                   schedule: list[float] | None = None, round_to: int = 1) -> tp.pruner.BasePruner:
    """A torch-pruning pruner; with `schedule` (cumulative ratios of the original channels), one step per entry."""
    ready_to_trace(model)
    steps = schedule or [ratio]
    return tp.pruner.BasePruner(
        model, ticket.example_input(), importance=importance or tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, global_pruning=scope == "global", iterative_steps=len(steps),
        iterative_pruning_ratio_scheduler=lambda _ratio, _steps: [0.0] + list(steps),
        ignored_layers=[model.get_submodule(get_arch(ticket.arch).classifier)],
        round_to=round_to if round_to > 1 else None)


def prune_channels(model: nn.Module, ticket: Ticket, ratio: float, scope: str = "layerwise",
                   importance: tp.importance.Importance | None = None, round_to: int = 1) -> list:
    """Remove `ratio` of the channels in place; returns the ticket's pruning history extended by this step."""
    if ratio <= 0:
        return list(ticket.pruning_history)
    pruner = channel_pruner(model, ticket, ratio, scope, importance, round_to=round_to)
    pruner.step()
    return list(ticket.pruning_history) + list(pruner.pruning_history())


def kept_channels(count: int, ratio: float, round_to: int = 1) -> int:
    """How many of a group's `count` channels torch-pruning keeps at a layerwise `ratio` (its arithmetic)."""
    kept = int(count * (1 - ratio))
    kept -= kept % round_to
    return kept if kept > 0 else count


def conv_channels(model: nn.Module) -> int:
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
