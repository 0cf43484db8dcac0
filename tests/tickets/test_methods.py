import dataclasses

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from edgeticket import train
from edgeticket.tickets import imp, lmp
from edgeticket.data import DataConfig, load_dataset
from edgeticket.data.datasets import FASHION_CLASSES
from edgeticket.export import export_onnx
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.tickets.draw import DrawTraining
from edgeticket.tickets.imp import round_schedule
from edgeticket.masks import masked_sparsity
from edgeticket.train import TrainConfig, finetune

QUICK = DrawTraining(data="digits", subset=64, epochs=1, rate=0.3, lr=0.05)


@pytest.fixture
def source(small_checkpoint):
    ticket = load_checkpoint(small_checkpoint, "small_resnet")
    ticket.provenance.source_data = "fashion-mnist"
    return ticket


def test_round_schedule_compounds_then_stops_at_target():
    assert round_schedule(0.5, 0.3) == pytest.approx([0.3, 0.5])
    assert round_schedule(0.8, 0.2) == pytest.approx([0.2, 0.36, 0.488, 0.5904, 0.67232, 0.737856, 0.7902848, 0.8])


@pytest.mark.parametrize("method", ["imp", "a-imp", "lmp"])
@pytest.mark.parametrize("pattern", ["unstructured", "kernel", "channel"])
def test_every_method_reaches_its_sparsity(source, method, pattern):
    ticket, report = draw_ticket(source, DrawConfig(method, pattern, 0.5, training=QUICK))
    if pattern == "channel":
        model = ticket.build_model()
        assert model.conv1.out_channels == 8 and model.layer4[0].conv1.out_channels == 64  # exactly half, rounded
    else:
        assert abs(masked_sparsity(ticket.masks) - 0.5) <= 0.005
    assert ticket.class_names == [str(i) for i in range(10)]  # downstream: the head is the target's


def test_upstream_with_rewind_keeps_the_source_head(source):
    source.class_names = list(FASHION_CLASSES)  # as if pretrained on Fashion-MNIST by edgeticket
    training = DrawTraining(on="upstream", subset=64, epochs=1, rate=0.3, rewind=True)
    ticket, _ = draw_ticket(source, DrawConfig("imp", "unstructured", 0.5, training=training))
    assert ticket.class_names == FASHION_CLASSES and abs(masked_sparsity(ticket.masks) - 0.5) <= 0.005


def test_a_imp_trains_on_adversarial_inputs(source, monkeypatch):
    losses = []
    real = train.perturb

    def spy(model, images, labels, attack):
        adversarial = real(model, images, labels, attack)
        with torch.no_grad():
            losses.append((F.cross_entropy(model(adversarial), labels).item(), F.cross_entropy(model(images), labels).item()))
        return adversarial

    monkeypatch.setattr(train, "perturb", spy)
    draw_ticket(source, DrawConfig("a-imp", "unstructured", 0.5, training=QUICK))
    adversarial, clean = np.mean(losses, axis=0)
    assert len(losses) > 0 and adversarial > clean


@pytest.mark.parametrize("method, module, description", [("lmp", lmp, "lmp mask"), ("imp", imp, "imp rounds")])
def test_training_methods_count_their_work_on_a_progress_bar(source, progress_recorder, method, module, description):
    """LMP counts its mask-learning batches over every epoch; IMP its rounds (each round's training has its own)."""
    bars = progress_recorder(module)
    draw_ticket(source, DrawConfig(method, "unstructured", 0.5, training=dataclasses.replace(QUICK, epochs=2)))
    (task,) = [task for bar in bars for task in bar.tasks]
    assert task.description == description and task.completed == task.total == 2 and "status" in task.fields


def test_lmp_changes_only_the_mask(source):
    omp, _ = draw_ticket(source, DrawConfig("omp", "unstructured", 0.5))
    lmp, _ = draw_ticket(source, DrawConfig("lmp", "unstructured", 0.5, training=QUICK))
    pretrained = source.state_dict
    changed = 0
    for name, mask in lmp.masks.items():
        assert torch.equal(lmp.state_dict[name][mask], pretrained[name][mask])  # bit-identical survivors
        assert torch.all(lmp.state_dict[name][~mask] == 0)
        changed += int((mask != omp.masks[name]).sum())
    assert changed > 0  # the learned mask moved away from its |w| initialisation
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name in pretrained:
        if name not in lmp.masks and not name.startswith("fc.") and not name.endswith(statistics):
            assert torch.equal(lmp.state_dict[name], pretrained[name]), name  # BatchNorm's affine weights too
    assert not torch.equal(lmp.state_dict["bn1.running_var"], pretrained["bn1.running_var"])  # re-estimated


def test_masks_survive_save_load_finetune_export(source, tmp_path):
    ticket, _ = draw_ticket(source, DrawConfig("omp", "unstructured", 0.6))
    ticket.save(tmp_path / "t.ticket")
    digits = load_dataset(DataConfig("digits", subset=64, image_size=28, channels=1))
    tuned, _ = finetune(Ticket.load(tmp_path / "t.ticket"), digits, TrainConfig(epochs=1, lr=0.1))
    tuned.save(tmp_path / "tuned.ticket")
    export_onnx(Ticket.load(tmp_path / "tuned.ticket"), tmp_path / "m.onnx")
    pruned = sum(int((~mask).sum()) for mask in tuned.masks.values())
    zeros = sum(int((numpy_helper.to_array(init) == 0).sum()) for init in onnx.load(str(tmp_path / "m.onnx")).graph.initializer)
    assert pruned > 100_000 and zeros >= pruned  # random weights have no other exact zeros


@pytest.mark.parametrize("arch, size, round_to", [("small_resnet", 28, 1), ("small_resnet", 28, 8), ("mobilenet_v2", 64, 1)])
def test_channel_lmp_gates_compute_what_pruning_keeps(arch, size, round_to):
    """A gated-off channel group is exactly a removed one: residual and depthwise couplings included."""
    from edgeticket.models import get_model
    from edgeticket.tickets.channel import prune_channels
    from edgeticket.tickets.lmp import ChannelGroupGates, RankImportance
    torch.manual_seed(0)
    model = get_model(arch, num_classes=10, in_channels=3).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, so a zeroed BN output is not a zero BN input
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.bias.data.uniform_(-0.5, 0.5)
    ticket = Ticket(arch, {"num_classes": 10, "in_channels": 3}, model.state_dict(), (3, size, size), (0.5,) * 3,
                    (0.25,) * 3, [str(i) for i in range(10)])
    gates = ChannelGroupGates(model, ticket, 0.7, round_to)
    assert len(gates.scores) > 3
    with torch.no_grad():
        for score in gates.scores.values():
            score.normal_()  # a learned ranking, unlike the magnitude one
        gates.set_masks({root: mask.float() for root, mask in gates.keep_masks().items()})
        images = torch.rand(4, 3, size, size)
        gated = model(images)
    gates.remove()
    prune_channels(model, ticket, 0.7, importance=RankImportance(gates.ranks()), round_to=round_to)
    with torch.no_grad():
        assert torch.allclose(model(images), gated, atol=1e-4)
    assert sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)) < sum(
        m.out_channels for m in get_model(arch, num_classes=10).modules() if isinstance(m, torch.nn.Conv2d)) * 0.8


def test_channel_lmp_rejects_global_scope(source):
    from edgeticket.errors import EdgeticketError
    with pytest.raises(EdgeticketError, match="layerwise only"):
        draw_ticket(source, DrawConfig("lmp", "channel", 0.5, scope="global", training=QUICK))
