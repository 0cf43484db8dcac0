"""What an architecture is to edgeticket: how to build it and where its ends are (no torchvision, no timm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    """How to build an architecture and where its ends are (the layers pruning keeps intact)."""
    name: str
    build: Callable[..., nn.Module]
    first_conv: str
    classifier: str
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    defaults: dict = field(default_factory=dict)
    # the name robust-models-transfer's files start with (`mobilenet` in mobilenet_l2_eps3.ckpt); None: not released
    madry_name: str | None = None
    # why torch-pruning cannot remove this architecture's channels (channel draws refuse); None: it can
    channel_pruning_blocked: str | None = None
