"""Every registered ImageNet architecture end to end, random weights at 32x32: a 0.5 channel ticket (physically
smaller, reloaded weights_only) and a 0.5 unstructured one; a file named like each robust-models-transfer release
file, in the robustness library's layout, draws without --arch; and ONNX, ExecuTorch and ncnn exports within their
runtimes' parity.

Runtimes see operators, not widths or depth: the exports are of each architecture's shallow twin, a few of its
blocks that still hold every kind of block it has (torchvision's constructors with shorter stage settings; VGG and
MNASNet cut by hand), which exports in seconds where the full graph can take minutes. A test checks that
each twin has exactly its architecture's operators (module types with a conv's kernel, stride and grouping, and the
functions its forward calls: residual adds, concatenations, shuffles), so a twin cannot silently drop one. Drawing,
shrinking and reloading run on the real graphs (the wide ResNets' and resnet34's are resnet50's and resnet18's)."""

import dataclasses
import operator
from typing import Callable

import numpy as np
import pytest
import torch
from torch import fx, nn
from torchvision import models as tvm
from torchvision.models import efficientnet, mobilenetv3, vgg
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.regnet import BlockParams
from torchvision.models.resnet import BasicBlock, Bottleneck

from edgeticket.export import export, export_onnx
from edgeticket.export.onnx import open_session, run_onnx
from edgeticket.models import get_arch, get_model, list_models
from edgeticket.models.archs import ARCHS
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket

from .test_archs import random_ticket
from .test_checkpoints import RELEASED_AS, madry_layout

pytestmark = pytest.mark.slow  # a few seconds to a minute per architecture

SIZE = 32
ZOO = [name for name in list_models() if get_arch(name).input_size == 224]
PRUNABLE = [name for name in ZOO if not get_arch(name).channel_pruning_blocked]
# wide_resnet50_2/4 are resnet50's graph, resnet34 is resnet18's: one twin stands for them, and the draws on
# resnet50 and resnet18 for theirs (pruning sees the graph; a width changes only the work). Their release files
# still draw below: telling wide_resnet50_2 from _4 and resnet50 is by shapes.
SAME_GRAPH = {"wide_resnet50_2": "resnet50", "wide_resnet50_4": "resnet50", "resnet34": "resnet18"}
GRAPHS = [name for name in ZOO if name not in SAME_GRAPH]  # each a graph of its own


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
    "densenet161": lambda n: tvm.DenseNet(48, (1, 1, 1, 1), 96, num_classes=n),
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


def exported_graph(arch: str) -> nn.Module:
    """What the exports stand on for `arch`: its twin (or its own graph, where it has no twin)."""
    arch = SAME_GRAPH.get(arch, arch)
    return SHALLOW[arch](10) if arch in SHALLOW else get_model(arch, num_classes=10)


def operators(model: nn.Module) -> set:
    """What selects a runtime's kernels: each module's type (a conv's kernel, stride, grouping) and each function
    or method its forward calls."""
    graph = fx.symbolic_trace(model).graph
    calls = {node.target for node in graph.nodes if node.op in ("call_function", "call_method")}
    return calls | {(type(m), getattr(m, "kernel_size", None), getattr(m, "stride", None), getattr(m, "groups", 1) > 1)
                    for m in model.modules()}


def grouped(names: list[str], suffix: str = "") -> list:
    """One xdist group per architecture: its tests share one worker, so its random ticket is built once."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(name + suffix)) for name in names]


def shallow_twin(arch: str, monkeypatch) -> str:
    """The name of `arch`'s twin, registered for the test (a Ticket rebuilds its model by name); `arch` itself
    where it has none."""
    if arch not in SHALLOW:
        return arch
    twin = dataclasses.replace(get_arch(arch), name=f"{arch}-shallow", madry_name=None,
                               build=lambda num_classes, in_channels: SHALLOW[arch](num_classes))
    monkeypatch.setitem(ARCHS._entries, twin.name, twin)
    return twin.name


def twin_ticket(arch: str, monkeypatch) -> Ticket:
    """The 0.5 channel ticket of `arch`'s twin (a random one where channels cannot be pruned)."""
    ticket = random_ticket(shallow_twin(arch, monkeypatch), SIZE)
    return draw_ticket(ticket, DrawConfig("omp", "channel", 0.5))[0] if arch in PRUNABLE else ticket


def released(family: str):
    """A robust-models-transfer family and the architecture its files hold, in that architecture's xdist group."""
    arch = RELEASED_AS.get(family, family)
    return pytest.param(family, arch, id=family, marks=pytest.mark.xdist_group(arch))


@pytest.fixture(scope="module")
def source(request) -> Ticket:
    """An architecture's random ticket, shared by its tests (pytest runs the tests of one parameter together)."""
    return random_ticket(request.param, SIZE)


@pytest.mark.parametrize("arch", [name for name in ZOO if SAME_GRAPH.get(name, name) in SHALLOW])
def test_exports_stand_on_the_same_operators(arch):
    with torch.device("cpu" if arch.startswith("regnet") else "meta"):  # RegNet computes its widths in tensors
        assert operators(exported_graph(arch)) == operators(get_model(arch, num_classes=10))


def test_operators_tell_blocks_grouping_and_residuals_apart():
    with torch.device("meta"):
        assert operators(get_model("resnet18")) != operators(get_model("resnet50"))
        assert operators(get_model("resnext50_32x4d")) != operators(get_model("resnet50"))
        no_residual = tvm.MobileNetV2(10, inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 1, 2]])
        assert operators(exported_graph("mobilenet_v2")) - operators(no_residual) == {operator.add}


def test_the_zoo_is_the_issue_list():
    assert set(ZOO) >= {"resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4", "densenet161", "mnasnet1_0",
                        "mobilenet_v2", "resnext50_32x4d", "shufflenet_v2_x1_0", "vgg16_bn", "regnet_y_400mf",
                        "squeezenet1_1", "convnext_tiny", "mobilenet_v3_small", "efficientnet_b0"}


@pytest.mark.parametrize("source", grouped([name for name in GRAPHS if name in PRUNABLE]), indirect=True)
def test_channel_ticket_shrinks_and_reloads(source, tmp_path):
    ticket, report = draw_ticket(source, DrawConfig("omp", "channel", 0.5))
    assert report.after.macs < 0.45 * report.before.macs and report.after.params < 0.45 * report.before.params
    ticket.save(tmp_path / "t.ticket")
    reloaded = Ticket.load(tmp_path / "t.ticket")  # weights_only; rebuilds the pruned model from its history and
    assert reloaded.state_dict.keys() == ticket.state_dict.keys()  # loads these weights into it, shapes checked
    assert all(torch.equal(reloaded.state_dict[k], v) for k, v in ticket.state_dict.items())
    assert reloaded.state_dict[f"{get_arch(source.arch).classifier}.weight"].shape[0] == 10


@pytest.mark.parametrize("source", grouped(GRAPHS), indirect=True)
def test_unstructured_ticket_masks_half(source):
    """Masked tickets' save and reload are tested in tests/tickets (the same code for every architecture)."""
    ticket, report = draw_ticket(source, DrawConfig("omp", "unstructured", 0.5))
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    assert report.after.nonzero_params < 0.6 * report.before.nonzero_params
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert not torch.allclose(ticket.deployable()(x), source.deployable()(x))


@pytest.mark.parametrize("arch", grouped([name for name in GRAPHS if name in PRUNABLE], "-shallow"))
def test_reloaded_channel_ticket_matches_onnx(arch, tmp_path, monkeypatch):
    twin_ticket(arch, monkeypatch).save(tmp_path / "t.ticket")
    reloaded = Ticket.load(tmp_path / "t.ticket")
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = reloaded.deployable()(x).numpy()
    export_onnx(reloaded, tmp_path / "t.onnx")  # checks parity itself; checked again here on other images
    assert np.abs(run_onnx(open_session(tmp_path / "t.onnx"), x.numpy()) - expected).max() <= 1e-4 + 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("fmt, suffix", [("executorch", ".pte"), ("ncnn", ".ncnn")])
@pytest.mark.parametrize("arch", grouped(GRAPHS, "-shallow"))
def test_edge_formats_match_torch(arch, fmt, suffix, tmp_path, monkeypatch):
    pytest.importorskip("executorch" if fmt == "executorch" else "ncnn")
    report = export(twin_ticket(arch, monkeypatch), tmp_path / f"t{suffix}", fmt)  # raises past its tolerance
    assert report.value <= report.threshold


@pytest.mark.parametrize("family, source", [released(family) for family in (
    "resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4", "densenet", "mnasnet", "mobilenet", "resnext50_32x4d",
    "shufflenet", "vgg16_bn")], indirect=["source"], scope="module")  # module: run with the architecture's other tests
def test_release_file_draws_without_arch(family, source, runner, tmp_path):
    """`draw` on a file named as robust-models-transfer names it, holding what the robustness library saves."""
    from edgeticket.cli import app
    path = tmp_path / f"{family}_linf_eps4.0.ckpt" if family in ("resnet18", "resnet50") else tmp_path / f"{family}_l2_eps3.ckpt"
    torch.save(madry_layout(source.state_dict), path)
    result = runner.invoke(app, ["draw", str(path), "--pattern", "unstructured", "--sparsity", "0.5",
                                 "-o", str(tmp_path / "t.ticket"), "--quiet"])
    assert result.exit_code == 0, result.output
    ticket = Ticket.load(tmp_path / "t.ticket")
    assert ticket.arch == source.arch and ticket.num_classes == 10
    assert ticket.provenance.source_kind == "robust"
    assert ticket.provenance.threat_model == ("linf:4/255" if "linf" in path.name else "l2:3")
