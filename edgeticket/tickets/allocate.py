"""Channels to a latency budget: how many channels each torch-pruning group keeps so that the predicted latency
fits, keeping the most importance (the idea of NetAdapt and HALP; our own code).

A group is torch-pruning's set of coupled channels (a residual stream's convs, BatchNorms and the classifier's
inputs prune together), so its channels are counted once. Its importance per channel is torch-pruning's
`MagnitudeImportance(p=1)`, the L1 norm OMP ranks by, normalised by the group's mean so that groups compare (as
torch-pruning's global pruning compares them). A conv's latency depends on the groups that set its input and
output channels, so the cost is not a sum of per-group terms and an exact knapsack does not apply: the greedy
below removes, one `round_to` step at a time, the channels that lose the least importance per millisecond saved,
until the prediction fits; then it gives back, while they fit, the steps that return the most importance per
millisecond (the last removal can overshoot the budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from ..errors import EdgeticketError
from ..models import get_arch
from ..ticket import Ticket
from .channel import kept_channels, ready_to_trace


@dataclass
class LayerLatency:
    """One layer's milliseconds as a function of its (input, output) channels; `in_group`/`out_group` name the
    channel groups that set them (None: fixed at `channels`)."""
    name: str
    channels: tuple[int, int]
    ms: Callable[[int, int], float]
    in_group: str | None = None
    out_group: str | None = None


@dataclass
class LatencyModel:
    """Predicted latency of a network from its groups' channel counts: a fixed cost (`call_ms`: the call and the
    work between the layers that does not shrink with channels) plus the layers' sum times `scale` (the work
    between them that does). Both come from two measured networks, the dense one and the fastest one."""
    layers: list[LayerLatency]
    call_ms: float = 0.0
    scale: float = 1.0
    by_group: dict[str, list[LayerLatency]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_group = {}
        for layer in self.layers:
            for group in {layer.in_group, layer.out_group} - {None}:
                self.by_group.setdefault(group, []).append(layer)

    def layer_ms(self, layer: LayerLatency, counts: dict[str, int]) -> float:
        return layer.ms(counts.get(layer.in_group, layer.channels[0]), counts.get(layer.out_group, layer.channels[1]))

    def total(self, counts: dict[str, int]) -> float:
        return self.call_ms + self.scale * sum(self.layer_ms(layer, counts) for layer in self.layers)

    def of_layers(self, channels: dict[str, tuple[int, int]]) -> float:
        """The prediction for a network whose layers have these (input, output) channels, by layer name."""
        return self.call_ms + self.scale * sum(layer.ms(*channels[layer.name]) for layer in self.layers)

    def group_sizes(self) -> dict[str, int]:
        """Each group's channels in the network the model was built for (its source, before any pruning)."""
        return {layer.out_group: layer.channels[1] for layer in self.layers if layer.out_group}

    def change(self, counts: dict[str, int], group: str, count: int) -> float:
        """How much the prediction grows when `group` goes from its count to `count` (negative: it saves)."""
        layers = self.by_group.get(group, [])
        before = sum(self.layer_ms(layer, counts) for layer in layers)
        return self.scale * (sum(self.layer_ms(layer, {**counts, group: count}) for layer in layers) - before)


@dataclass
class LatencyBudget:
    """What a budgeted draw prunes to: at most `ms` predicted by `latency` (the source's model on a device)."""
    ms: float
    latency: LatencyModel


def smallest_counts(sizes: dict[str, int], round_to: int) -> dict[str, int]:
    """The fewest channels a group may keep: `round_to` (a group narrower than that stays whole)."""
    return {name: size if size <= round_to else round_to for name, size in sizes.items()}


def check_reachable(latency: LatencyModel, budget_ms: float, round_to: int, sizes: dict[str, int] | None = None,
                    network: str = "the network") -> None:
    """Refuse a budget below the prediction with every group at its fewest channels, naming that latency."""
    fastest = latency.total(smallest_counts(sizes or latency.group_sizes(), round_to))
    if budget_ms < fastest:
        at_least = float(f"{fastest * 1.0005:.4g}")  # rounded up: asking for what the hint says works
        raise EdgeticketError(f"--max-latency-ms {budget_ms:g} is below the smallest latency {network} reaches: "
                              f"{fastest:.4g} ms predicted with every channel group at {round_to} channels",
                              hint=f"ask for at least {at_least:g} ms, or a smaller --round-to")


def step_down(count: int, floor: int, round_to: int) -> int | None:
    """The next smaller multiple of `round_to`, or None below `floor`."""
    lower = (count - 1) // round_to * round_to
    return lower if lower >= floor else None


def allocate(scores: dict[str, torch.Tensor], latency: LatencyModel, budget_ms: float, round_to: int = 1,
             caps: dict[str, int] | None = None) -> dict[str, int]:
    """Kept channels per group, each a multiple of `round_to` (or whole), with predicted latency <= `budget_ms`.

    `scores` are each group's channel importances; `caps` the most channels a group may keep (a sparsity floor).
    A budget below the smallest reachable latency is an error naming that latency."""
    step = max(round_to, 1)
    sizes = {name: len(s) for name, s in scores.items()}
    floor = smallest_counts(sizes, step)
    check_reachable(latency, budget_ms, step, sizes)
    ranked = {name: torch.sort(s.double()).values for name, s in scores.items()}  # lowest first: removed first
    counts = {name: min(sizes[name], (caps or {}).get(name, sizes[name])) for name in sizes}
    cap = dict(counts)

    def lost(name: str, count: int) -> float:
        """Importance of the channels between `count` and the group's current count (removed lowest first)."""
        low, high = sorted((sizes[name] - counts[name], sizes[name] - count))
        return float(ranked[name][low:high].sum())

    total = latency.total(counts)
    while total > budget_ms:
        best = None
        for name in sizes:
            lower = step_down(counts[name], floor[name], step)
            if lower is None:
                continue
            saved = -latency.change(counts, name, lower)
            cost = lost(name, lower)
            rank = (0, cost / saved) if saved > 0 else (1, cost)  # a step that saves nothing only as a last resort
            if best is None or rank < best[0]:
                best = (rank, name, lower)
        _, name, lower = best
        counts[name] = lower
        total = latency.total(counts)  # summed afresh: at the floor it is exactly the reachable minimum
    while True:  # give back what still fits, most importance per millisecond first
        best = None
        for name in sizes:
            higher = min(cap[name], (counts[name] // step + 1) * step)
            if higher <= counts[name]:
                continue
            if latency.total({**counts, name: higher}) > budget_ms:
                continue
            rank = lost(name, higher) / max(latency.change(counts, name, higher), 1e-12)
            if best is None or rank > best[0]:
                best = (rank, name, higher)
        if best is None:
            return counts
        _, name, higher = best
        counts[name] = higher


@dataclass
class ChannelGroup:
    """A torch-pruning group of coupled channels: named by its root layer, with its channel importances."""
    name: str
    group: object       # torch_pruning's Group (its dependencies, for pruning)
    scores: torch.Tensor
    out_layers: list[str]  # convs whose output channels are these
    in_layers: list[str]   # convs whose input channels are these


def channel_groups(model: nn.Module, ticket: Ticket) -> tuple[tp.DependencyGraph, list[ChannelGroup]]:
    """torch-pruning's graph of `model` and its prunable channel groups (the classifier keeps its outputs), each
    scored as OMP scores them."""
    ready_to_trace(model)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, ticket.example_input())
    names = {module: name for name, module in model.named_modules()}
    importance = tp.importance.MagnitudeImportance(p=1)
    classifier = model.get_submodule(get_arch(ticket.arch).classifier)
    groups = []
    for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=[nn.Conv2d, nn.Linear]):
        outs, ins = [], []
        for dep, _ in group:
            module = dep.target.module
            if isinstance(module, nn.Conv2d):
                (outs if graph.is_out_channel_pruning_fn(dep.handler) else ins).append(names[module])
                if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
                    ins.append(names[module])  # depthwise: its inputs are these channels too
        with torch.no_grad():
            scores = importance(group).detach().cpu()
        groups.append(ChannelGroup(names[group[0].dep.target.module], group, scores, outs, ins))
    return graph, groups


def prune_groups(graph: tp.DependencyGraph, groups: list[ChannelGroup], counts: dict[str, int]) -> list:
    """Remove each group's lowest-scoring channels down to its count, in place; torch-pruning's history of it."""
    for group in groups:
        drop = len(group.scores) - counts[group.name]
        if drop > 0:  # a fresh group for the indices: torch-pruning 1.6's Group.prune(idxs) records the whole group
            root = group.group[0].dep
            graph.get_pruning_group(root.target.module, root.handler,
                                    torch.argsort(group.scores, stable=True)[:drop].tolist()).prune()
    return list(graph.pruning_history())


def prune_to_budget(model: nn.Module, ticket: Ticket, budget: LatencyBudget, round_to: int = 1,
                    floor: float = 0.0) -> list:
    """Remove channels from `model` in place until the budget's model predicts <= its ms, removing at least `floor`
    of each group's source channels (--sparsity as a floor); returns the ticket's pruning history extended."""
    graph, groups = channel_groups(model, ticket)
    source = budget.latency.group_sizes()
    caps = {g.name: kept_channels(source.get(g.name, len(g.scores)), floor, round_to) for g in groups} if floor else None
    counts = allocate({g.name: g.scores for g in groups}, budget.latency, budget.ms, round_to, caps)
    return list(ticket.pruning_history) + prune_groups(graph, groups, counts)


def layer_channels(model: nn.Module) -> dict[str, tuple[int, int]]:
    """conv name -> its (input, output) channels now."""
    return {name: (m.in_channels, m.out_channels) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def layer_groups(groups: list[ChannelGroup]) -> dict[str, tuple[str | None, str | None]]:
    """conv name -> (the group setting its input channels, the one setting its output channels)."""
    ins = {layer: g.name for g in groups for layer in g.in_layers}
    outs = {layer: g.name for g in groups for layer in g.out_layers}
    return {layer: (ins.get(layer), outs.get(layer)) for layer in set(ins) | set(outs)}
