import pytest
import torch

from edgeticket.errors import EdgeticketError
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.masks import masked_sparsity


@pytest.fixture
def source(small_checkpoint):
    return load_checkpoint(small_checkpoint, "small_resnet")


def test_channel_ticket_reloads_identically_and_shrinks(source, tmp_path):
    ticket, report = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.5))
    ticket.save(tmp_path / "t.ticket")
    reloaded = Ticket.load(tmp_path / "t.ticket")
    x = torch.rand(3, *source.input_size)
    with torch.no_grad():
        assert torch.equal(reloaded.build_model()(x), ticket.build_model()(x))
    assert report.after.macs < 0.35 * report.before.macs  # ~ (1 - 0.5)^2 of the dense MACs
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.02)
    assert reloaded.build_model().conv1.out_channels == 8  # physically gone, not masked
    assert reloaded.build_model().fc.out_features == 10    # classifier outputs kept


@pytest.mark.parametrize("pattern", ["unstructured", "row", "kernel"])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_masked_patterns_hit_their_sparsity(source, pattern, scope, sparsity):
    ticket, report = draw_ticket(source, DrawConfig(pattern=pattern, sparsity=sparsity, scope=scope))
    assert abs(masked_sparsity(ticket.masks) - sparsity) <= 0.005
    assert report.achieved_sparsity == pytest.approx(masked_sparsity(ticket.masks))
    model = ticket.build_model()
    for name, param in model.named_parameters():
        if name in ticket.masks:
            assert torch.all(param[~ticket.masks[name]] == 0)
    assert "conv1.weight" not in ticket.masks and "fc.weight" not in ticket.masks


def test_kernel_pattern_removes_whole_kernels(source):
    ticket, _ = draw_ticket(source, DrawConfig(pattern="kernel", sparsity=0.5))
    mask = ticket.masks["layer2.0.conv1.weight"]
    per_kernel = mask.flatten(2).sum(-1)
    assert set(per_kernel.unique().tolist()) <= {0, 9}


def test_row_pattern_removes_whole_rows(source):
    ticket, _ = draw_ticket(source, DrawConfig(pattern="row", sparsity=0.5))
    per_row = ticket.masks["layer2.0.conv1.weight"].sum(-1)
    assert set(per_row.unique().tolist()) <= {0, 3}


def test_magnitude_keeps_the_largest(source):
    ticket, _ = draw_ticket(source, DrawConfig(pattern="unstructured", sparsity=0.5))
    weight = source.state_dict["layer1.0.conv1.weight"].abs()
    mask = ticket.masks["layer1.0.conv1.weight"]
    assert weight[mask].min() >= weight[~mask].max()


def test_first_last_masked_when_asked(source):
    ticket, _ = draw_ticket(source, DrawConfig(pattern="unstructured", sparsity=0.5, include_first_last=True))
    assert "conv1.weight" in ticket.masks and "fc.weight" in ticket.masks


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_range_is_refused(source, sparsity):
    with pytest.raises(EdgeticketError, match="outside"):
        draw_ticket(source, DrawConfig(sparsity=sparsity))


def test_provenance_records_the_draw(source):
    ticket, report = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.3))
    assert ticket.provenance.method == "omp" and ticket.provenance.macs_after == report.after.macs
    assert ticket.provenance.stages[-1].stage == "draw"


def test_round_to_keeps_multiples_and_never_empties_a_layer(source):
    dense = {name: m.out_channels for name, m in source.build_model().named_modules() if isinstance(m, torch.nn.Conv2d)}
    ticket, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.7, round_to=8))
    pruned = {name: m.out_channels for name, m in ticket.build_model().named_modules() if isinstance(m, torch.nn.Conv2d)}
    for name, channels in pruned.items():
        kept = int(dense[name] * 0.3) // 8 * 8
        assert channels == (kept or dense[name]), name  # 16 channels keep 4 -> 0: torch-pruning leaves the layer whole
    assert ticket.provenance.round_to == 8 and any(pruned[n] < dense[n] for n in pruned)


def test_round_to_needs_the_channel_pattern(source):
    with pytest.raises(EdgeticketError, match="--pattern channel"):
        draw_ticket(source, DrawConfig(pattern="unstructured", round_to=8))


# --- differential tests: OMP against torch.nn.utils.prune, channel choice against torch-pruning's importance ---

@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_omp_unstructured_layerwise_equals_torch_l1_unstructured(source, sparsity):
    from torch.nn.utils import prune
    ticket, _ = draw_ticket(source, DrawConfig(pattern="unstructured", sparsity=sparsity, scope="layerwise"))
    reference = source.build_model()
    modules = dict(reference.named_modules())
    for name in ticket.masks:
        module = modules[name.removesuffix(".weight")]
        prune.l1_unstructured(module, "weight", amount=sparsity)
        assert torch.equal(ticket.masks[name], module.weight_mask.bool()), name


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_omp_unstructured_global_equals_torch_global_unstructured(source, sparsity):
    from torch.nn.utils import prune
    ticket, _ = draw_ticket(source, DrawConfig(pattern="unstructured", sparsity=sparsity, scope="global"))
    reference = source.build_model()
    modules = dict(reference.named_modules())
    targets = [(modules[name.removesuffix(".weight")], "weight") for name in ticket.masks]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    for name in ticket.masks:
        assert torch.equal(ticket.masks[name], modules[name.removesuffix(".weight")].weight_mask.bool()), name


def kept_channels(pruned_bn: torch.Tensor, original_bn: torch.Tensor) -> list[int]:
    """Which original channels a physically pruned layer kept, found by their (distinct) BatchNorm scales."""
    return sorted(int((original_bn == value).nonzero()[0]) for value in pruned_bn)


@pytest.mark.parametrize("layer", ["layer1.0.conv1", "layer3.0.conv1", "conv1"])  # the last: a residual-coupled group
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_channel_choice_equals_torch_pruning_magnitude_importance(source, layer, ratio):
    import torch_pruning as tp
    generator = torch.Generator().manual_seed(0)
    for key in source.state_dict:  # distinct BatchNorm scales: they enter the importance and name the channels
        if key.endswith("bn1.weight") or key == "bn1.weight":
            source.state_dict[key] = 1 + 0.1 * torch.randn(source.state_dict[key].shape, generator=generator)
    ticket, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=ratio))
    reference = source.build_model()
    conv = reference.get_submodule(layer)
    graph = tp.DependencyGraph().build_dependency(reference, example_inputs=source.example_input())
    group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
    scores = tp.importance.MagnitudeImportance(p=1)(group)
    expected = sorted(scores.argsort(descending=True)[:int(conv.out_channels * (1 - ratio))].tolist())
    norm = layer.replace("conv1", "bn1")
    assert kept_channels(ticket.build_model().get_submodule(norm).weight.detach(),
                         reference.get_submodule(norm).weight.detach()) == expected


@pytest.mark.parametrize("count", [0, 1, 37, 500, 999, 1000])
def test_lowest_is_a_stable_argsorts_first_count(count):
    """Layerwise masks pick in linear time what a stable argsort picks, ties included (weights of 3 values)."""
    from edgeticket.tickets.patterns import lowest
    values = torch.randint(0, 3, (1000,), generator=torch.Generator().manual_seed(count)).float()
    expected = torch.zeros(1000, dtype=torch.bool)
    expected[torch.argsort(values, stable=True)[:count]] = True
    assert torch.equal(lowest(values, count), expected)
