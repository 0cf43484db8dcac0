"""LMP (paper II-B ③, eq. 2): learn a mask over frozen pretrained weights.

Every prunable weight gets a learnable score, initialised from |w| (divided by the layer's mean |w|, so
the optimizer's step is relative to the scores). The forward pass uses the top-k mask
of the scores (k set by the sparsity, chosen per pattern group exactly as OMP chooses), the backward pass
is straight-through (d mask / d score = 1). The pretrained weights never change; on downstream data a new
head is trained alongside the scores (a new task has no pretrained head).

For `channel`, the scores belong to torch-pruning's channel groups (channels coupled by a residual addition
or a depthwise conv share one score, initialised from OMP's group L1 norm) and gate the outputs of every
BatchNorm in the group. A gated-off channel is then exactly a removed one, so at the end torch-pruning
removes the channels the gates switched off and the pruned model computes what was learned.

BatchNorm's affine weights stay frozen, but its statistics follow the mask: batch statistics while
learning, re-estimated over the training images at the end. Statistics of the dense network do not describe
a masked one; measured on the quick demo's natural source (digits, 300 images, 30 epochs), frozen statistics
gave 36% (channel, 0.5) and 85% (unstructured, 0.5) test accuracy, following ones 68% and 95%.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.func import functional_call

from ..batchnorm import reestimate_batchnorm
from ..config import TrainConfig
from ..console import progress_bar
from ..masks import prunable_weights
from ..models import get_arch
from ..models.normalize import Normalized
from ..ticket import Ticket
from ..train import Distributed, epoch_batches, replace_head
from .channel import channel_pruner, kept_channels, prune_channels
from .draw import METHODS, DrawConfig, PruneState, training_data
from .patterns import PATTERNS, select_masks


def straight_through(scores: dict[str, torch.Tensor], hard: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward: the 0/1 mask; backward: the gradient goes to the scores unchanged."""
    return {name: hard[name].float() + scores[name] - scores[name].detach() for name in scores}


class ChannelGroupGates:
    """LMP's channel scores, one per channel of each torch-pruning group, gating its BatchNorm outputs."""

    def __init__(self, model: nn.Module, ticket: Ticket, sparsity: float, round_to: int = 1):
        pruner = channel_pruner(model, ticket, sparsity)  # only for its dependency graph
        self.sparsity, self.round_to = sparsity, round_to
        self.members: dict[nn.Module, list[tuple[nn.Module, torch.Tensor, torch.Tensor]]] = {}
        self.scores: dict[nn.Module, nn.Parameter] = {}
        for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types):
            norms = [(item.dep.layer, torch.as_tensor(item.idxs), torch.as_tensor(item.root_idxs)) for item in group
                     if item.dep.pruning_fn == tp.pruner.function.prune_batchnorm_out_channels]
            if norms:
                root = group[0].dep.target.module
                magnitude = tp.importance.GroupMagnitudeImportance(p=1)(group)
                self.members[root] = norms
                self.scores[root] = nn.Parameter(magnitude / magnitude.mean())
        self.gates: dict[nn.Module, torch.Tensor] = {}
        self.hooks = [bn.register_forward_hook(self.gate) for norms in self.members.values() for bn, _, _ in norms]

    def ranks(self) -> dict[nn.Module, torch.Tensor]:
        """Each group's channels ranked by score (0 = lowest): distinct values, so the keep mask below and
        torch-pruning's own sort pick the same channels."""
        ranks = {}
        for root, score in self.scores.items():
            rank = torch.empty(len(score))
            rank[torch.argsort(score.detach(), stable=True)] = torch.arange(len(score), dtype=torch.float)
            ranks[root] = rank
        return ranks

    def keep_masks(self) -> dict[nn.Module, torch.Tensor]:
        """The highest-ranked channels of each group, as many as torch-pruning will keep."""
        return {root: rank >= len(rank) - kept_channels(len(rank), self.sparsity, self.round_to)
                for root, rank in self.ranks().items()}

    def set_masks(self, group_masks: dict[nn.Module, torch.Tensor]) -> None:
        """Spread each group's (straight-through) mask over its BatchNorm layers."""
        self.gates = {bn: torch.ones(bn.num_features).index_put((idxs,), group_masks[root][root_idxs])
                      for root, norms in self.members.items() for bn, idxs, root_idxs in norms}

    def gate(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return output * self.gates[module].view(1, -1, 1, 1)

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


class RankImportance(tp.importance.Importance):
    """torch-pruning importance that reproduces a ranking chosen elsewhere (LMP's learned one)."""

    def __init__(self, ranks: dict[nn.Module, torch.Tensor]):
        self.ranks = ranks

    def __call__(self, group) -> torch.Tensor | None:
        return self.ranks.get(group[0].dep.target.module)


def learn_scores(scores: dict, hard: Callable[[], dict], forward, splits, params: list, config: DrawConfig) -> dict:
    """Straight-through training of the scores; returns the final hard keep-masks."""
    training = config.training
    optimizer = torch.optim.Adam(params, lr=training.lr)
    recipe = TrainConfig(epochs=training.epochs, seed=training.seed)
    batches_per_epoch = len(epoch_batches(len(splits.train), recipe, Distributed(), 0))
    with progress_bar() as bar:
        task = bar.add_task("lmp mask", total=training.epochs * batches_per_epoch, status=f"epoch 0/{training.epochs}")
        for epoch in range(training.epochs):
            for indices in epoch_batches(len(splits.train), recipe, Distributed(), epoch):
                images, labels = splits.train.batch(indices)
                loss = F.cross_entropy(forward(images, straight_through(scores, hard())), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(task, advance=1)
            bar.update(task, status=f"epoch {epoch + 1}/{training.epochs} loss {loss.item():.3f}")
    return hard()


@METHODS.register("lmp")
def learnable_mask(ticket: Ticket, config: DrawConfig) -> PruneState:
    training = config.training
    splits = training_data(ticket, training)
    new_head = splits.class_names != ticket.class_names
    start = replace_head(ticket, splits.class_names, training.seed) if new_head else ticket
    model = start.build_model()
    physical = PATTERNS.get(config.pattern).physical
    gates = ChannelGroupGates(model, start, config.sparsity, config.round_to) if physical else None
    head = model.get_submodule(get_arch(start.arch).classifier)
    for param in model.parameters():
        param.requires_grad_(False)
    for param in head.parameters():
        param.requires_grad_(new_head)
    network = Normalized(model, start.mean, start.std)
    torch.manual_seed(training.seed)
    if gates:
        scores, hard = gates.scores, gates.keep_masks

        def forward(images, masks):
            gates.set_masks(masks)
            return network(images)
    else:
        weights = prunable_weights(model, start.arch, config.include_first_last)
        scores = {name: nn.Parameter(w.detach().abs() / w.detach().abs().mean()) for name, w in weights.items()}
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        pattern = PATTERNS.get(config.pattern)

        def hard() -> dict:
            return select_masks({k: F.relu(v.detach()) for k, v in scores.items()}, pattern, config.sparsity,
                                config.scope)

        def forward(images, masks):
            masked = {**state, **{name: state[name] * mask for name, mask in masks.items()}}
            return functional_call(model, masked, (network.normalize(images),))
    params = list(scores.values()) + (list(head.parameters()) if new_head else [])
    model.train()  # BatchNorm normalizes with the statistics of the masked network
    final = learn_scores(scores, hard, forward, splits, params, config)
    if gates:
        gates.remove()
        history = prune_channels(model, start, config.sparsity, "layerwise", RankImportance(gates.ranks()),
                                 config.round_to)
    else:
        history = list(start.pruning_history)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in final:
                    param.mul_(final[name])
    reestimate_batchnorm(network, (images for images, _ in splits.train.batches(64)))
    return PruneState(model, history, {} if gates else final, start.class_names)
