"""Which weights a masked ticket may prune, and keeping pruned weights exactly zero."""

from __future__ import annotations

import torch
from torch import nn

from .models import get_arch


def prunable_weights(model: nn.Module, arch: str, include_first_last: bool = False) -> dict[str, nn.Parameter]:
    """Conv and linear weights by state_dict name; the first conv and the classifier stay dense by default."""
    spec = get_arch(arch)
    kept_dense = set() if include_first_last else {f"{spec.first_conv}.weight", f"{spec.classifier}.weight"}
    return {f"{name}.weight": module.weight for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and f"{name}.weight" not in kept_dense}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def masked_sparsity(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total if total else 0.0
