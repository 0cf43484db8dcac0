"""Architecture registry: torchvision backbones plus a small ResNet for CPU demos and tests."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import mobilenetv3, shufflenetv2
from torchvision.models.efficientnet import MBConv
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import EdgeticketError
from ..registry import Registry
from .spec import ArchSpec

ARCHS: Registry[ArchSpec] = Registry("architecture")


def list_models() -> list[str]:
    return ARCHS.names()


def get_arch(name: str) -> ArchSpec:
    if name.startswith("timm:"):
        from .timm_models import timm_arch
        return timm_arch(name)
    return ARCHS.get(name)


def get_model(name: str, num_classes: int = 1000, in_channels: int = 3, **kwargs) -> nn.Module:
    spec = get_arch(name)
    return spec.build(num_classes=num_classes, in_channels=in_channels, **{**spec.defaults, **kwargs})


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """load_state_dict, given the model's own per-module versions: a dict saved by itself loses them, and
    MNASNet refuses weights without one. The weights are this code's layout (keys and shapes are checked)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state
             and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        found = (f"weight '{wrong[0][0]}' has shape {wrong[0][1]} where the model has {wrong[0][2]}" if wrong else
                 f"weight '{missing[0]}' is missing" if missing else f"weight '{unexpected[0]}' is not in the model")
        count = len(missing) + len(unexpected) + len(wrong)
        raise EdgeticketError(f"{found}" + (f" ({count - 1} more keys differ)" if count > 1 else ""),
                              hint="the weights are not this architecture's (or were drawn by another version)")
    state = OrderedDict(state)
    state._metadata = own._metadata
    model.load_state_dict(state)


def replace_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


BLOCKS = (BasicBlock, Bottleneck, InvertedResidual, mobilenetv3.InvertedResidual, MBConv, shufflenetv2.InvertedResidual)


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's residual blocks in forward order; `finetune --mode last-k:K` trains the last K."""
    return [m for m in model.modules() if isinstance(m, BLOCKS)]


def _adapt_stem(model: nn.Module, path: str, in_channels: int) -> nn.Module:
    old = model.get_submodule(path)
    if in_channels != old.in_channels:
        replace_submodule(model, path, nn.Conv2d(in_channels, old.out_channels, old.kernel_size,
                                                 old.stride, old.padding, bias=old.bias is not None))
    return model


def _torchvision(name: str, first_conv: str, classifier: str, madry_name: str | None = None,
                 channel_pruning_blocked: str | None = None, constructor: Callable[..., nn.Module] | None = None) -> None:
    constructor = constructor or getattr(tvm, name)

    def build(num_classes: int, in_channels: int) -> nn.Module:
        return _adapt_stem(constructor(weights=None, num_classes=num_classes), first_conv, in_channels)

    ARCHS.add(name, ArchSpec(name, build, first_conv, classifier, madry_name=madry_name,
                             channel_pruning_blocked=channel_pruning_blocked))


for _name in ("resnet18", "resnet50", "wide_resnet50_2", "resnext50_32x4d"):
    _torchvision(_name, "conv1", "fc", madry_name=_name)
_torchvision("resnet34", "conv1", "fc")


def _wide_resnet50_4(weights: None, num_classes: int) -> nn.Module:
    """The robustness library's wide_resnet50_4 (torchvision's ResNet, bottlenecks 4x as wide as resnet50's)."""
    return tvm.ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, width_per_group=64 * 4)


_torchvision("wide_resnet50_4", "conv1", "fc", madry_name="wide_resnet50_4", constructor=_wide_resnet50_4)
_torchvision("mobilenet_v2", "features.0.0", "classifier.1", madry_name="mobilenet")
_torchvision("densenet161", "features.conv0", "classifier", madry_name="densenet")
_torchvision("mnasnet1_0", "layers.0", "classifier.1", madry_name="mnasnet")
_torchvision("vgg16_bn", "features.0", "classifier.6", madry_name="vgg16_bn")
_torchvision("regnet_y_400mf", "stem.0", "fc")
_torchvision("squeezenet1_1", "features.0", "classifier.1")  # its classifier is a 1x1 conv
_torchvision("convnext_tiny", "features.0.0", "classifier.2")
# squeeze-excitation: torch-pruning couples the SE's scale with the channels it multiplies (tests pin it)
_torchvision("mobilenet_v3_small", "features.0.0", "classifier.3")
_torchvision("efficientnet_b0", "features.0.0", "classifier.1")
_torchvision("shufflenet_v2_x1_0", "conv1.0", "fc", madry_name="shufflenet", channel_pruning_blocked=(
    "torch-pruning 1.6 cannot trace ShuffleNet's channel split and shuffle (its index mapping fails on "
    "chunk -> cat -> view/transpose)"))


class SmallResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no max-pool) with torchvision's BasicBlock and torchvision's layer names."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16, blocks: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, channels = [], width
        for index, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(blocks):
                downsample = None
                if block == 0 and (stride != 1 or channels != out):
                    downsample = nn.Sequential(nn.Conv2d(channels, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                layers.append(BasicBlock(channels, out, stride if block == 0 else 1, downsample))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _small(width: int, blocks: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, width: int = width, blocks: int = blocks) -> nn.Module:
        return SmallResNet(num_classes, in_channels, width, blocks)
    return build


for _name, _width, _blocks in (("small_resnet", 16, 1), ("small_resnet_w32", 32, 1), ("small_resnet_w16_d2", 16, 2)):
    ARCHS.add(_name, ArchSpec(_name, _small(_width, _blocks), "conv1", "fc", input_size=28,
                              mean=(0.5,), std=(0.5,)))
