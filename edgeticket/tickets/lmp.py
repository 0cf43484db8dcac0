"""LMP (paper II-B ③, eq. 2): learn a mask over frozen pretrained weights.

Every prunable weight gets a learnable score, initialised from |w| (divided by the layer's mean |w|, so
the optimizer's step is relative to the scores). The forward pass uses the top-k mask
of the scores (k set by the sparsity, chosen per pattern group exactly as OMP chooses), the backward pass
is straight-through (d mask / d score = 1). The pretrained weights never change; on downstream data a new
head is trained alongside the scores (a new task has no pretrained head).

For `channel`, the scores gate the output channels of every BatchNorm layer (initialised from the L1 norm
of the filter feeding it); at the end torch-pruning removes the lowest-scoring channels physically,
summing the learned scores over each group of coupled channels. Coupled channels (residual additions)
make the removed set differ from the gates that were learned, so on downstream data the new head is then
re-fitted on the frozen, pruned features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.func import functional_call

from ..models import get_arch
from .channel import prune_channels
from .draw import METHODS, DrawConfig, PruneState, training_data
from .masks import prunable_weights
from .patterns import PATTERNS, select_masks
from .ticket import Ticket


def straight_through(scores: dict[str, torch.Tensor], hard: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward: the 0/1 mask; backward: the gradient goes to the scores unchanged."""
    return {name: hard[name].float() + scores[name] - scores[name].detach() for name in scores}


def filter_norms(model: nn.Module) -> dict[nn.Module, torch.Tensor]:
    """Each BatchNorm paired with the conv feeding it (the last conv before it in module order)."""
    pairs, last_conv = {}, None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last_conv = module
        elif isinstance(module, nn.BatchNorm2d) and last_conv is not None and last_conv.out_channels == module.num_features:
            pairs[module] = last_conv.weight.detach().abs().flatten(1).sum(1)
    return pairs


class LearnedChannelImportance(tp.importance.GroupMagnitudeImportance):
    """torch-pruning importance from LMP's learned channel scores, summed over a group's BatchNorm layers."""

    def __init__(self, scores: dict[nn.Module, torch.Tensor]):
        super().__init__(p=1, group_reduction="sum", normalizer=None)
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group):
        found, roots = [], []
        for item in group:
            if item.dep.pruning_fn == tp.pruner.function.prune_batchnorm_out_channels and item.dep.layer in self.scores:
                found.append(self.scores[item.dep.layer][item.idxs])
                roots.append(item.root_idxs)
        return self._reduce(found, roots) if found else None


class ChannelGates:
    """Multiplies every gated BatchNorm's output by its current channel mask (forward hooks)."""

    def __init__(self, layers: list[nn.Module]):
        self.masks: dict[nn.Module, torch.Tensor] = {}
        self.hooks = [bn.register_forward_hook(self.gate) for bn in layers]

    def gate(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return output * self.masks[module].view(1, -1, 1, 1)

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def learn_scores(scores: dict, forward, splits, params: list, config: DrawConfig) -> dict:
    """Straight-through training of the scores; returns the final hard keep-masks."""
    from ..train import Distributed, TrainConfig, epoch_batches
    training = config.training
    pattern = PATTERNS.get("unstructured" if PATTERNS.get(config.pattern).physical else config.pattern)
    scope = "layerwise" if PATTERNS.get(config.pattern).physical else config.scope

    def hard() -> dict:
        return select_masks({k: F.relu(v.detach()) for k, v in scores.items()}, pattern, config.sparsity, scope)

    optimizer = torch.optim.Adam(params, lr=training.lr)
    recipe = TrainConfig(epochs=training.epochs, seed=training.seed)
    for epoch in range(training.epochs):
        for indices in epoch_batches(len(splits.train), recipe, Distributed(), epoch):
            images, labels = splits.train.batch(indices)
            loss = F.cross_entropy(forward(images, straight_through(scores, hard())), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return hard()


@METHODS.register("lmp")
def learnable_mask(ticket: Ticket, config: DrawConfig) -> PruneState:
    from ..train import replace_head
    training = config.training
    splits = training_data(ticket, training)
    new_head = splits.class_names != ticket.class_names
    start = replace_head(ticket, splits.class_names, training.seed) if new_head else ticket
    model = start.build_model().eval()  # BatchNorm statistics stay frozen too
    head = model.get_submodule(get_arch(start.arch).classifier)
    for param in model.parameters():
        param.requires_grad_(False)
    for param in head.parameters():
        param.requires_grad_(new_head)
    mean, std = torch.tensor(start.mean).view(1, -1, 1, 1), torch.tensor(start.std).view(1, -1, 1, 1)
    torch.manual_seed(training.seed)
    if PATTERNS.get(config.pattern).physical:
        norms = filter_norms(model)
        layers = {f"gate{i}": bn for i, bn in enumerate(norms)}
        scores = {key: nn.Parameter(norms[bn] / norms[bn].mean()) for key, bn in layers.items()}
        gates = ChannelGates(list(layers.values()))

        def forward(images, masks):
            gates.masks = {layers[key]: mask for key, mask in masks.items()}
            return model((images - mean) / std)
    else:
        weights = prunable_weights(model, start.arch, config.include_first_last)
        scores = {name: nn.Parameter(w.detach().abs() / w.detach().abs().mean()) for name, w in weights.items()}
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}

        def forward(images, masks):
            masked = {**state, **{name: state[name] * mask for name, mask in masks.items()}}
            return functional_call(model, masked, ((images - mean) / std,))
    params = list(scores.values()) + (list(head.parameters()) if new_head else [])
    final = learn_scores(scores, forward, splits, params, config)
    if PATTERNS.get(config.pattern).physical:
        gates.remove()
        learned = {bn: F.relu(scores[key].detach()) for key, bn in layers.items()}
        history = prune_channels(model, start, config.sparsity, config.scope, LearnedChannelImportance(learned))
        if new_head:  # coupled channels make the removed set differ from the gates: re-fit the head on what is left
            from ..train import TrainConfig, fit
            pruned = start.with_model(model, pruning_history=history)
            refit, _ = fit(pruned, splits.train, TrainConfig(epochs=training.epochs, lr=0.1, mode="linear",
                                                             seed=training.seed), description="lmp head")
            model = refit.build_model()
        return PruneState(model, history, {}, start.class_names)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in final:
                param.mul_(final[name])
    return PruneState(model, list(start.pruning_history), final, start.class_names)
