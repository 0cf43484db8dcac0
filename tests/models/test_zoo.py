"""Every registered ImageNet architecture end to end, random weights at 32x32: a 0.5 channel ticket (physically
smaller, reloaded weights_only, ONNX within parity) and a 0.5 unstructured one, then ExecuTorch and ncnn exports
within their runtimes' parity; and a file named like each robust-models-transfer release file, in the
robustness library's layout, draws without --arch."""

import numpy as np
import pytest
import torch

from edgeticket.export import export, export_onnx
from edgeticket.export.onnx import open_session, run_onnx
from edgeticket.models import get_arch, get_model, list_models
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket

from .test_archs import random_ticket
from .test_checkpoints import RELEASED_AS, madry_layout

pytestmark = pytest.mark.slow  # a few seconds to a minute per architecture

SIZE = 32
ZOO = [name for name in list_models() if get_arch(name).input_size == 224]
PRUNABLE = [name for name in ZOO if not get_arch(name).channel_pruning_blocked]
# the edge runtimes see operators, not widths: wide_resnet50_2/4 are resnet50's graph, resnet34 is resnet18's
# (a minute of ExecuTorch lowering saved; their channel tickets are tested above like every other)
SAME_GRAPH = {"wide_resnet50_2": "resnet50", "wide_resnet50_4": "resnet50", "resnet34": "resnet18"}


def grouped(names: list[str]) -> list:
    """One xdist group per architecture: its tests share one worker, so its channel ticket is drawn once."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in names]


@pytest.fixture(scope="module")
def channel_ticket():
    """The 0.5 channel ticket of an architecture, drawn once per module (the edge exports reuse it)."""
    drawn = {}

    def draw(arch: str) -> tuple[Ticket, object]:
        if arch not in drawn:
            drawn[arch] = draw_ticket(random_ticket(arch, SIZE), DrawConfig("omp", "channel", 0.5))
        return drawn[arch]
    return draw


@pytest.mark.parametrize("arch, same", SAME_GRAPH.items())
def test_edge_exports_skipped_only_where_the_modules_are_the_same(arch, same):
    def kinds(name: str) -> set[tuple]:
        """Each module's type, and for convs what selects an edge runtime's kernel: kernel, stride, grouping."""
        with torch.device("meta"):
            return {(type(m), getattr(m, "kernel_size", None), getattr(m, "stride", None), getattr(m, "groups", 1) > 1)
                    for m in get_model(name, num_classes=10).modules()}
    assert kinds(arch) == kinds(same)
    assert kinds(arch) != kinds("resnet50" if same == "resnet18" else "resnet18")  # the check tells blocks apart
    assert kinds("resnext50_32x4d") != kinds("resnet50")                            # and grouped convs


def test_the_zoo_is_the_issue_list():
    assert set(ZOO) >= {"resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4", "densenet161", "mnasnet1_0",
                        "mobilenet_v2", "resnext50_32x4d", "shufflenet_v2_x1_0", "vgg16_bn", "regnet_y_400mf",
                        "squeezenet1_1", "convnext_tiny", "mobilenet_v3_small", "efficientnet_b0"}


@pytest.mark.parametrize("arch", grouped(PRUNABLE))
def test_channel_ticket_shrinks_reloads_and_exports(arch, channel_ticket, tmp_path):
    ticket, report = channel_ticket(arch)
    assert report.after.macs < 0.45 * report.before.macs and report.after.params < 0.45 * report.before.params
    ticket.save(tmp_path / "t.ticket")
    reloaded = Ticket.load(tmp_path / "t.ticket")  # weights_only; rebuilds the pruned model from its history
    assert reloaded.state_dict.keys() == ticket.state_dict.keys()
    assert all(torch.equal(reloaded.state_dict[k], v) for k, v in ticket.state_dict.items())
    deployable = reloaded.deployable()  # one rebuild (densenet161's dependency graph takes seconds to trace)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = deployable(x).numpy()
    export_onnx(reloaded, tmp_path / "t.onnx")  # checks parity itself; checked again here on other images
    assert np.abs(run_onnx(open_session(tmp_path / "t.onnx"), x.numpy()) - expected).max() <= 1e-4 + 1e-5 * np.abs(expected).max()
    assert deployable.model.get_submodule(get_arch(arch).classifier).weight.shape[0] == 10


@pytest.mark.parametrize("arch", ZOO)
def test_unstructured_ticket_masks_half(arch):
    """Masked tickets' save and reload are tested in tests/tickets (the same code for every architecture)."""
    source = random_ticket(arch, SIZE)
    ticket, report = draw_ticket(source, DrawConfig("omp", "unstructured", 0.5))
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    assert report.after.nonzero_params < 0.6 * report.before.nonzero_params
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert not torch.allclose(ticket.deployable()(x), source.deployable()(x))


@pytest.mark.parametrize("fmt, suffix", [("executorch", ".pte"), ("ncnn", ".ncnn")])
@pytest.mark.parametrize("arch", grouped([name for name in ZOO if name not in SAME_GRAPH]))
def test_edge_formats_match_torch(arch, fmt, suffix, channel_ticket, tmp_path):
    pytest.importorskip("executorch" if fmt == "executorch" else "ncnn")
    ticket = channel_ticket(arch)[0] if arch in PRUNABLE else random_ticket(arch, SIZE)
    report = export(ticket, tmp_path / f"t{suffix}", fmt)  # raises past the runtime's fp32 tolerance
    assert report.value <= report.threshold


@pytest.mark.parametrize("family", ["resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4", "densenet",
                                    "mnasnet", "mobilenet", "resnext50_32x4d", "shufflenet", "vgg16_bn"])
def test_release_file_draws_without_arch(family, runner, tmp_path):
    """`draw` on a file named as robust-models-transfer names it, holding what the robustness library saves."""
    from edgeticket.cli import app
    arch = RELEASED_AS.get(family, family)
    torch.manual_seed(0)
    path = tmp_path / f"{family}_linf_eps4.0.ckpt" if family in ("resnet18", "resnet50") else tmp_path / f"{family}_l2_eps3.ckpt"
    torch.save(madry_layout(get_model(arch, num_classes=10).state_dict()), path)
    result = runner.invoke(app, ["draw", str(path), "--pattern", "unstructured", "--sparsity", "0.5",
                                 "-o", str(tmp_path / "t.ticket"), "--quiet"])
    assert result.exit_code == 0, result.output
    ticket = Ticket.load(tmp_path / "t.ticket")
    assert ticket.arch == arch and ticket.num_classes == 10
    assert ticket.provenance.source_kind == "robust"
    assert ticket.provenance.threat_model == ("linf:4/255" if "linf" in path.name else "l2:3")
