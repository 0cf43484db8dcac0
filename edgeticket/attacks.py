"""PGD under L2 and Linf, and Gaussian noise for random smoothing; all in [0, 1] pixel space, before
the model's normalization (the models here take pixels and normalize inside)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import EdgeticketError

KINDS = ("none", "l2", "linf", "noise")


def _number(text: str) -> float:
    """'8/255' or '0.5'."""
    try:
        if "/" in text:
            top, bottom = text.split("/")
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise EdgeticketError(f"'{text}' is not a number", hint="write eps as 0.5 or 8/255") from None


@dataclass
class AttackConfig:
    kind: str = "none"                # none | l2 | linf | noise
    eps: float = 0.0                  # radius (l2, linf) or sigma (noise)
    steps: int = 3
    step_size: float | None = None    # default 2.5 * eps / steps (Madry et al.)
    random_start: bool = True

    @classmethod
    def parse(cls, spec: str, steps: int = 3, step_size: float | None = None) -> "AttackConfig":
        """'none', 'l2:1.0', 'linf:8/255', 'noise:0.25'."""
        kind, _, value = spec.partition(":")
        if kind not in KINDS or (kind != "none" and not value):
            raise EdgeticketError(f"bad threat model '{spec}'", hint="use none, l2:EPS, linf:EPS (e.g. 8/255) or noise:SIGMA")
        eps = _number(value) if value else 0.0
        if eps < 0 or steps < 1:
            raise EdgeticketError(f"bad threat model '{spec}' with {steps} steps", hint="eps >= 0 and steps >= 1")
        return cls(kind, eps, steps, step_size)

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.eps:g}"

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def _project(delta: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    if config.kind == "linf":
        return delta.clamp(-config.eps, config.eps)
    return delta * (config.eps / _per_sample_norm(delta)).clamp(max=1.0)


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy, inside the eps-ball and the [0, 1] box."""
    was_training = model.training
    model.eval()  # the attack must not move BatchNorm statistics
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
    model.train(was_training)
    return (images + delta).detach()


def perturb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    """The training input under a threat model: PGD examples, Gaussian-noised images, or the images."""
    if config.kind in ("l2", "linf") and config.eps > 0:
        return pgd(model, images, labels, config)
    if config.kind == "noise" and config.eps > 0:
        return images + config.eps * torch.randn_like(images)  # random smoothing trains on unclipped noise
    return images
