"""The model as deployed: pixels in [0, 1] in, normalization inside."""

from __future__ import annotations

import torch
from torch import nn


class Normalized(nn.Module):
    """Puts the checkpoint's mean/std inside the model, so attacks, apps and exports all work on pixels."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(images))
