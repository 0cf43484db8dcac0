"""The phone architectures: squeeze-excitation (mobilenet_v3_small, efficientnet_b0) prunes by channel, checked
against the function it must keep; ShuffleNet's channel shuffle does not, and says so."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import edgeticket as et
from edgeticket.errors import EdgeticketError
from edgeticket.export import export_onnx
from edgeticket.export.onnx import open_session, run_onnx
from edgeticket.models import get_arch, get_model, residual_blocks
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.tickets.allocate import channel_groups

from .twins import shallow_twin

SE_ARCHS = ["mobilenet_v3_small", "efficientnet_b0"]


def random_ticket(arch: str, size: int = 64) -> Ticket:
    torch.manual_seed(0)
    model = get_model(arch, num_classes=10).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, as a trained model has
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.5, 0.5)
    spec = get_arch(arch)
    return Ticket(arch, {"num_classes": 10, "in_channels": 3}, model.state_dict(), (3, size, size), spec.mean,
                  spec.std, [str(i) for i in range(10)])


@pytest.mark.slow
@pytest.mark.parametrize("arch", SE_ARCHS)
def test_channel_draw_reloads_exports_and_shrinks(arch, tmp_path):
    ticket, report = draw_ticket(random_ticket(arch), DrawConfig("omp", "channel", 0.5))
    ticket.save(tmp_path / "t.ticket")
    reloaded = Ticket.load(tmp_path / "t.ticket")  # weights_only
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = reloaded.deployable()(x).numpy()
        assert np.array_equal(expected, ticket.deployable()(x).numpy())
    export_onnx(reloaded, tmp_path / "t.onnx")
    assert np.abs(run_onnx(open_session(tmp_path / "t.onnx"), x.numpy()) - expected).max() < 1e-4
    assert report.after.macs < 0.45 * report.before.macs
    model, dense = reloaded.build_model(), get_model(arch, num_classes=10)
    squeezes = [name for name, m in dense.named_modules() if name.endswith("fc1")]  # torchvision's SE convs
    assert squeezes and all(model.get_submodule(name).out_channels < dense.get_submodule(name).out_channels
                            for name in squeezes)  # the squeeze-excitation's own channels go too
    assert model.get_submodule(get_arch(arch).classifier).out_features == 10


def dead_channel_outputs(arch: str, wrong: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output with half of every group's channels made dead (their BatchNorm and bias zeroed, so
    they carry exactly 0), then after removing those channels (or, `wrong`, the other half) physically."""
    ticket = random_ticket(arch, 32)
    model = ticket.build_model()
    graph, groups = channel_groups(model, ticket)
    chosen = {}
    for group in groups:
        root = group.group[0].dep
        channels = torch.randperm(len(group.scores), generator=torch.Generator().manual_seed(len(chosen)))
        dead, alive = channels[: len(channels) // 2].tolist(), channels[len(channels) // 2:].tolist()
        chosen[root.target.module] = (root.handler, dead, alive[: len(dead)])
        with torch.no_grad():
            for dep, idxs in graph.get_pruning_group(root.target.module, root.handler, dead):
                layer = dep.target.module
                if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(layer, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    layer.weight[idxs] = 0
                    if layer.bias is not None:
                        layer.bias[idxs] = 0
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    for module, (handler, dead, alive) in chosen.items():
        graph.get_pruning_group(module, handler, alive if wrong else dead).prune()
    with torch.no_grad():
        return before, model(x)


# concatenations (densenet, squeezenet), hidden Linear layers (vgg). Not convnext_tiny: its LayerNorm normalizes
# across channels, so a zeroed channel still changes the others; not the grouped convs of resnext and regnet:
# the graph cannot remove arbitrary channels from a group (torch-pruning's pruner removes them group-consistently)
COUPLED = ["mnasnet1_0", "squeezenet1_1", "vgg16_bn", "densenet161"]
TWINNED = {"vgg16_bn", "densenet161"}  # their shallow twins (twins.py): the same couplings, seconds instead of 40


@pytest.mark.parametrize("arch", SE_ARCHS + ["mobilenet_v2"] + COUPLED)
def test_every_group_removes_exactly_its_dead_channels(arch, monkeypatch):
    """torch-pruning's coupling is right (SE scale, depthwise, residual and classifier inputs included) exactly when
    removing dead channels keeps the function; removing live ones instead must not, or the check proves nothing."""
    arch = shallow_twin(arch, monkeypatch) if arch in TWINNED else arch
    before, after = dead_channel_outputs(arch, wrong=False)
    scale = before.abs().max()  # random classifiers answer small logits
    assert (before - after).abs().max() <= 1e-3 * scale
    before, after = dead_channel_outputs(arch, wrong=True)
    assert (before - after).abs().max() >= 0.1 * scale


@pytest.mark.slow  # ShuffleNet's ONNX export takes 10 s
def test_shufflenet_refuses_channels_and_takes_masks(tmp_path, monkeypatch):
    source = random_ticket("shufflenet_v2_x1_0")
    with pytest.raises(EdgeticketError, match="shuffle") as error:
        draw_ticket(source, DrawConfig("omp", "channel", 0.5))
    assert "--pattern unstructured" in error.value.hint
    monkeypatch.setattr("edgeticket.budget.latency_model", lambda *a: pytest.fail("a table was built"))
    with pytest.raises(EdgeticketError, match="shuffle"):  # before any latency table is timed
        et.draw(source, max_latency_ms=1.0, device="ort-cpu-1t")
    ticket, report = draw_ticket(source, DrawConfig("omp", "unstructured", 0.5))
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    export_onnx(ticket, tmp_path / "t.onnx")  # the parity check against torch runs inside


@pytest.mark.parametrize("arch, blocks", [("mobilenet_v3_small", 11), ("efficientnet_b0", 16),
                                          ("shufflenet_v2_x1_0", 16)])
def test_last_k_finds_the_blocks(arch, blocks):
    assert len(residual_blocks(get_model(arch, num_classes=10))) == blocks


def test_models_command_says_which_prune_by_channel():
    from edgeticket.cli import app
    from typer.testing import CliRunner
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["shufflenet_v2_x1_0"]["channel_pruning"] is False
    assert rows["efficientnet_b0"]["channel_pruning"] is True
    assert rows["mobilenet_v3_small"]["classifier"] == "classifier.3"
    assert rows["mobilenet_v2"]["madry_name"] == "mobilenet" and rows["resnet34"]["madry_name"] is None
    assert rows["squeezenet1_1"]["classifier"] == "classifier.1"  # a 1x1 conv: its outputs are the classes


@pytest.mark.parametrize("arch", ["regnet_y_400mf", "resnext50_32x4d"])
def test_round_to_does_not_leave_grouped_convs_whole(arch):
    """torch-pruning 1.6 at round_to 8 leaves a grouped conv unpruned (it rounds the per-group count against the
    layer's): the draw keeps channels unrounded there, so the grouped convs shrink as at round_to 1."""
    source = random_ticket(arch, 32)
    rounded, report = draw_ticket(source, DrawConfig("omp", "channel", 0.5, round_to=8))
    assert report.after.macs < 0.4 * report.before.macs
    model, dense = rounded.build_model(), source.build_model()
    grouped = [name for name, m in dense.named_modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert grouped and all(model.get_submodule(name).out_channels < dense.get_submodule(name).out_channels
                           for name in grouped)
    assert rounded.provenance.round_to == 1


def test_budget_refuses_grouped_convs_before_timing(monkeypatch):
    monkeypatch.setattr("edgeticket.budget.latency_model", lambda *a: pytest.fail("a table was built"))
    with pytest.raises(EdgeticketError, match="grouped convs") as error:
        et.draw(random_ticket("regnet_y_400mf", 32), max_latency_ms=1.0, device="ort-cpu-1t")
    assert "--sparsity" in error.value.hint
