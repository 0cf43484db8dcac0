"""BatchNorm running statistics re-estimated after training.

Why: running statistics are a momentum average (0.1) over the optimizer steps. A short finetune (300 images,
5 epochs: 25 steps) ends with statistics that still describe the starting weights, and the model that scored
80-95% in train mode scores 10% in eval mode. A cumulative average over the training inputs, with the final
weights, is what eval mode should use (torch.optim.swa_utils.update_bn does the same for all BatchNorms; here
only those of the modules that trained, so frozen parts stay bit-identical)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorms(modules: Iterable[nn.Module]) -> list[_BatchNorm]:
    return [m for module in modules for m in module.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(network: nn.Module, batches: Iterable[torch.Tensor],
                         within: list[nn.Module] | None = None) -> None:
    """Cumulative-average statistics over `batches` for the BatchNorms inside `within` (every one when None);
    every module keeps its mode, and BatchNorms outside `within` keep their statistics."""
    norms = batchnorms([network] if within is None else within)
    if not norms:
        return
    modes = [(m, m.training) for m in network.modules()]
    momenta = [bn.momentum for bn in norms]
    network.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for images in batches:
            network(images)
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        for module, training in modes:
            module.training = training
