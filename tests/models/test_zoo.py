"""Every registered ImageNet architecture end to end, random weights at 32x32: a 0.5 channel ticket (physically
smaller, reloaded weights_only) and a 0.5 unstructured one; a file named like each robust-models-transfer release
file, in the robustness library's layout, draws without --arch; and ONNX, ExecuTorch and ncnn exports within their
runtimes' parity.

Runtimes see operators, not widths or depth: the exports are of each architecture's shallow twin (twins.py), a
few of its blocks that still hold every kind of block it has, which exports in seconds where the full graph can
take minutes. A test checks that each twin has exactly its architecture's operators (module types with a conv's kernel, stride and grouping, and the
functions its forward calls: residual adds, concatenations, shuffles), so a twin cannot silently drop one. Drawing,
shrinking and reloading run on the real graphs (the wide ResNets' and resnet34's are resnet50's and resnet18's)."""

import operator

import numpy as np
import pytest
import torch
from torch import fx, nn
from torchvision import models as tvm

from edgeticket.export import export, export_onnx
from edgeticket.export.onnx import open_session, run_onnx
from edgeticket.models import get_arch, get_model, list_models
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket

from .test_archs import random_ticket
from .test_checkpoints import RELEASED_AS, madry_layout
from .twins import SHALLOW, shallow_twin

pytestmark = pytest.mark.slow  # a few seconds to a minute per architecture

SIZE = 32
ZOO = [name for name in list_models() if get_arch(name).input_size == 224]
PRUNABLE = [name for name in ZOO if not get_arch(name).channel_pruning_blocked]
# wide_resnet50_2/4 are resnet50's graph, resnet34 is resnet18's: one twin stands for them, and the draws on
# resnet50 and resnet18 for theirs (pruning sees the graph; a width changes only the work). Their release files
# still draw below: telling wide_resnet50_2 from _4 and resnet50 is by shapes.
SAME_GRAPH = {"wide_resnet50_2": "resnet50", "wide_resnet50_4": "resnet50", "resnet34": "resnet18"}
GRAPHS = [name for name in ZOO if name not in SAME_GRAPH]  # each a graph of its own


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
def test_release_file_is_read_without_arch(family, source, runner, tmp_path):
    """A file named as robust-models-transfer names it, holding what the robustness library saves, read as every
    command reads a checkpoint: the architecture from its name and checked against its keys and shapes (the wide
    ResNets differ from resnet50 only in shapes), the threat model from its name. `draw` takes resnet18's (the
    command is the same for every family; drawing each graph is tested above)."""
    path = tmp_path / f"{family}_linf_eps4.0.ckpt" if family in ("resnet18", "resnet50") else tmp_path / f"{family}_l2_eps3.ckpt"
    torch.save(madry_layout(source.state_dict), path)
    if family == "resnet18":  # through the command
        from edgeticket.cli import app
        result = runner.invoke(app, ["draw", str(path), "--pattern", "unstructured", "--sparsity", "0.5",
                                     "-o", str(tmp_path / "t.ticket"), "--quiet"])
        assert result.exit_code == 0, result.output
        ticket = Ticket.load(tmp_path / "t.ticket")
    else:
        ticket = load_checkpoint(path)
        assert all(torch.equal(ticket.state_dict[k], v) for k, v in source.state_dict.items())  # each in its place
    assert ticket.arch == source.arch and ticket.num_classes == 10
    assert ticket.provenance.source_kind == "robust"
    assert ticket.provenance.threat_model == ("linf:4/255" if "linf" in path.name else "l2:3")
