"""Shallow twins of the ImageNet architectures: a few of each one's blocks that still hold every kind of block
it has (torchvision's constructors with shorter stage settings; VGG and MNASNet cut by hand). They export in
seconds where the full graph can take minutes, and torch-pruning couples their channels as it does the full
graph's (the same residual adds and concatenations). test_zoo.py checks each twin has exactly its architecture's
operators."""

import dataclasses
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import efficientnet, mobilenetv3, vgg
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.regnet import BlockParams
from torchvision.models.resnet import BasicBlock, Bottleneck

from edgeticket.models import get_arch
from edgeticket.models.archs import ARCHS


def _vgg16_bn(num_classes: int) -> nn.Module:
    """A conv per stage, all five max-pools kept (a 32x32 image still reaches the 7x7 average pool as 1x1), and a
    narrower classifier (VGG's own holds 120M weights: it is built on the meta device, then replaced)."""
    with torch.device("meta"):
        model = tvm.VGG(nn.Sequential())
    model.features = vgg.make_layers([64, "M", 128, "M", 256, "M", 512, "M", 512, "M"], batch_norm=True)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 256), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(256, 256), nn.ReLU(True), nn.Dropout(), nn.Linear(256, num_classes))
    return model


def _mnasnet1_0(num_classes: int) -> nn.Module:
    """The first two stacks (3x3 and 5x5), each a strided block and one residual block."""
    model = tvm.mnasnet1_0(num_classes=num_classes)
    model.layers = nn.Sequential(*model.layers[:8], model.layers[8][:2], model.layers[9][:2],
                                 nn.Conv2d(40, 1280, 1, bias=False), *model.layers[15:])
    return model


def _efficientnet_b0(num_classes: int) -> nn.Module:
    """The first three stages: unexpanded, then 3x3 and 5x5 stages of a strided and a residual block."""
    setting, _ = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)
    return efficientnet.EfficientNet(setting[:3], 0.2, num_classes=num_classes)


def _mobilenet_v3_small(num_classes: int) -> nn.Module:
    """The first five blocks: 3x3 and 5x5, strided and residual, with and without squeeze-excitation."""
    setting, last_channel = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small")
    return mobilenetv3.MobileNetV3(setting[:5], last_channel, num_classes=num_classes)


# a stage's first block (where stride and width change) and, where later ones differ (a residual add, a stride-1
# grouped conv), one of those; stages that only repeat earlier kinds of block go, where the constructor lets them
SHALLOW: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: tvm.ResNet(BasicBlock, [1, 1, 1, 1], num_classes=n),
    "resnet50": lambda n: tvm.ResNet(Bottleneck, [1, 1, 1, 1], num_classes=n),
    "resnext50_32x4d": lambda n: tvm.ResNet(Bottleneck, [1, 1, 1, 1], num_classes=n, groups=32, width_per_group=4),
    # two layers a block: the second layer's input is a concatenation, the block's output one of three
    "densenet161": lambda n: tvm.DenseNet(48, (2, 2, 2, 2), 96, num_classes=n),
    "vgg16_bn": _vgg16_bn,
    "mobilenet_v2": lambda n: tvm.MobileNetV2(n, inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2]]),
    "mnasnet1_0": _mnasnet1_0,
    "shufflenet_v2_x1_0": lambda n: tvm.ShuffleNetV2([2, 1, 1], [24, 116, 232, 464, 1024], num_classes=n),
    "regnet_y_400mf": lambda n: tvm.RegNet(BlockParams([1, 2], [48, 104], [8, 8], [1.0, 1.0], [2, 2], 0.25),
                                           num_classes=n),
    "convnext_tiny": lambda n: tvm.ConvNeXt([CNBlockConfig(96, 192, 1), CNBlockConfig(192, None, 1)], 0.1,
                                            num_classes=n),
    "mobilenet_v3_small": _mobilenet_v3_small,
    "efficientnet_b0": _efficientnet_b0,
}


def shallow_twin(arch: str, monkeypatch) -> str:
    """The name of `arch`'s twin, registered for the test (a Ticket rebuilds its model by name); `arch` itself
    where it has none."""
    if arch not in SHALLOW:
        return arch
    twin = dataclasses.replace(get_arch(arch), name=f"{arch}-shallow", madry_name=None,
                               build=lambda num_classes, in_channels: SHALLOW[arch](num_classes))
    monkeypatch.setitem(ARCHS._entries, twin.name, twin)
    return twin.name
