"""PGD under L2 and Linf, and Gaussian noise for random smoothing; all in [0, 1] pixel space, before
the model's normalization (the models here take pixels and normalize inside)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import AttackConfig

def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def _project(delta: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    if config.kind == "linf":
        return delta.clamp(-config.eps, config.eps)
    return delta * (config.eps / _per_sample_norm(delta)).clamp(max=1.0)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the block, then each back in its own mode.

    Restoring only `model.training` is not enough: a wrapper in eval mode around a training network would
    come back with the whole network in eval mode, and BatchNorm would never update its statistics."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy, inside the eps-ball and the [0, 1] box.
    The attack runs in eval mode (it must not move BatchNorm statistics) and leaves every mode as it was."""
    with eval_mode(model), torch.enable_grad():  # callers may hold no_grad; the attack needs input gradients
        return _pgd_steps(model, images, labels, config)


def _pgd_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    delta = torch.zeros_like(images)
    if config.random_start:
        delta = torch.empty_like(images).uniform_(-config.eps, config.eps) if config.kind == "linf" else \
            _project(torch.randn_like(images), config) * torch.rand(len(images), 1, 1, 1, device=images.device)
    delta = ((images + delta).clamp(0, 1) - images).detach()
    for _ in range(config.steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(images + delta), labels)
        grad, = torch.autograd.grad(loss, delta)
        step = grad.sign() if config.kind == "linf" else grad / _per_sample_norm(grad)
        delta = _project(delta.detach() + config.step * step, config)
        delta = ((images + delta).clamp(0, 1) - images).detach()
    return (images + delta).detach()


def perturb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    """The training input under a threat model: PGD examples, Gaussian-noised images, or the images."""
    if config.kind in ("l2", "linf") and config.eps > 0:
        return pgd(model, images, labels, config)
    if config.kind == "noise" and config.eps > 0:
        return images + config.eps * torch.randn_like(images)  # random smoothing trains on unclipped noise
    return images
