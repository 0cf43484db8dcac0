"""Channels to a latency budget (tickets/allocate.py), on synthetic cost tables and on a real residual network."""

import itertools

import pytest
import torch

from edgeticket.errors import EdgeticketError
from edgeticket.models.archs import get_model
from edgeticket.ticket import Ticket
from edgeticket.tickets.allocate import (LatencyBudget, LatencyModel, LayerLatency, allocate, channel_groups,
                                         layer_channels, prune_to_budget)


def chain_model(costs: dict[str, float], width: int = 64) -> LatencyModel:
    """Convs a -> b -> c -> d whose ms is cost x in x out / width^2: each group's channels feed two layers."""
    names = list(costs)
    layers = []
    for i, name in enumerate(names):
        cost = costs[name]
        layers.append(LayerLatency(name, (width if i else 3, width),
                                   lambda cin, cout, cost=cost: cost * cin * cout / width ** 2,
                                   names[i - 1] if i else None, name))
    return LatencyModel(layers)


def scores_for(names, width=64, seed=0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(width, generator=generator) + 0.5 for name in names}


def kept_importance(scores: dict[str, torch.Tensor], counts: dict[str, int]) -> float:
    return sum(float(torch.sort(s, descending=True).values[:counts[n]].sum()) for n, s in scores.items())


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.3, 0.12])
def test_allocation_fits_the_budget_and_leaves_no_step_that_still_fits(fraction):
    latency = chain_model({"a": 1.0, "b": 3.0, "c": 0.5, "d": 2.0})
    scores = scores_for("abcd")
    dense = latency.total({n: 64 for n in "abcd"})
    budget = fraction * dense
    counts = allocate(scores, latency, budget, round_to=8)
    assert latency.total(counts) <= budget
    assert all(count % 8 == 0 and 8 <= count <= 64 for count in counts.values())
    for name in counts:  # the give-back pass: no group could keep 8 more channels within the budget
        if counts[name] < 64:
            assert latency.total({**counts, name: counts[name] + 8}) > budget


def test_allocation_beats_uniform_when_one_layer_is_expensive():
    """One layer costs 20x the others per channel: the budget is best spent by pruning its group hard."""
    latency = chain_model({"cheap1": 1.0, "heavy": 20.0, "cheap2": 1.0})
    # `heavy` sets the output of its own layer only; the next layer's cost is cheap: the layer reads it
    scores = scores_for(["cheap1", "heavy", "cheap2"])
    sizes = {n: 64 for n in scores}
    budget = 0.5 * latency.total(sizes)
    counts = allocate(scores, latency, budget, round_to=8)
    uniform = max((c for c in range(8, 65, 8) if latency.total({n: c for n in scores}) <= budget),
                  default=None)
    assert uniform is not None
    uniform_counts = {n: uniform for n in scores}
    assert latency.total(counts) <= budget
    assert kept_importance(scores, counts) > kept_importance(scores, uniform_counts)
    assert counts["heavy"] < counts["cheap1"] and counts["heavy"] < counts["cheap2"]


def test_allocation_is_the_best_split_on_a_small_separable_case():
    """Two groups, separable costs: the greedy's choice keeps as much importance as the best of every split."""
    latency = LatencyModel([LayerLatency("x", (3, 32), lambda i, o: 2.0 * o, None, "x"),
                            LayerLatency("y", (3, 32), lambda i, o: 1.0 * o, None, "y")])
    scores = {"x": torch.linspace(0.1, 3.2, 32), "y": torch.linspace(0.1, 1.6, 32)}
    budget = 60.0
    counts = allocate(scores, latency, budget, round_to=4)
    best = max(kept_importance(scores, {"x": x, "y": y}) for x, y in itertools.product(range(4, 33, 4), repeat=2)
               if latency.total({"x": x, "y": y}) <= budget)
    assert kept_importance(scores, counts) == pytest.approx(best)


def test_a_budget_below_the_smallest_reachable_latency_names_it():
    latency = chain_model({"a": 1.0, "b": 1.0})
    fastest = latency.total({"a": 8, "b": 8})
    with pytest.raises(EdgeticketError, match=f"smallest latency the network reaches: {fastest:.4g} ms") as error:
        allocate(scores_for("ab"), latency, fastest * 0.9, round_to=8)
    at_least = float(error.value.hint.split("at least ")[1].split(" ms")[0])
    assert at_least >= fastest  # the hint's number works when asked for
    assert latency.total(allocate(scores_for("ab"), latency, at_least, round_to=8)) <= at_least


def test_a_budget_exactly_at_the_smallest_latency_is_reached():
    """Summing step by step drifted above the minimum and crashed at the floor (found in review)."""
    generator = torch.Generator().manual_seed(3)
    for trial in range(50):
        costs = {name: float(c) for name, c in zip("abcdef", torch.rand(6, generator=generator) * 3 + 0.1)}
        latency = chain_model(costs)
        latency.call_ms, latency.scale = 0.313, 1.0287  # as a measured table calibrates them
        fastest = latency.total({n: 8 for n in costs})
        counts = allocate(scores_for(costs, seed=trial), latency, fastest, round_to=8)
        assert latency.total(counts) <= fastest


def test_groups_narrower_than_or_not_a_multiple_of_round_to_stay_whole_without_a_floor():
    latency = LatencyModel([LayerLatency("x", (3, 100), lambda i, o: 0.01 * o, None, "x"),
                            LayerLatency("y", (100, 6), lambda i, o: 0.01 * i * o, "x", "y")])
    scores = {"x": torch.rand(100) + 0.5, "y": torch.rand(6) + 0.5}
    assert allocate(scores, latency, 1e9, round_to=8) == {"x": 100, "y": 6}
    tight = allocate(scores, latency, latency.total({"x": 48, "y": 6}), round_to=8)
    assert tight["y"] == 6 and tight["x"] % 8 == 0


def test_caps_are_a_floor_on_what_is_removed():
    latency = chain_model({"a": 1.0, "b": 1.0})
    counts = allocate(scores_for("ab"), latency, 1e9, round_to=8, caps={"a": 32, "b": 64})
    assert counts == {"a": 32, "b": 64}  # a generous budget removes nothing beyond the floor


def resnet_ticket() -> Ticket:
    torch.manual_seed(0)
    model = get_model("small_resnet", num_classes=10, in_channels=1)
    return Ticket("small_resnet", {"num_classes": 10, "in_channels": 1}, model.state_dict(), (1, 28, 28), (0.5,),
                  (0.5,), [str(i) for i in range(10)])


def flops_model(ticket: Ticket) -> LatencyModel:
    """A stand-in device: each conv costs in x out x its output pixels."""
    from edgeticket.bench.latency import conv_blocks
    from edgeticket.tickets.allocate import layer_groups
    model = ticket.build_model()
    blocks = conv_blocks(model, ticket.example_input())
    wiring = layer_groups(channel_groups(model, ticket)[1])
    layers = []
    for name, block in blocks.items():
        pixels = block.height * block.width / block.stride[0] / block.stride[1]
        layers.append(LayerLatency(name, (block.in_channels, block.out_channels),
                                   lambda i, o, p=pixels: i * o * p * 1e-6, *wiring.get(name, (None, None))))
    return LatencyModel(layers)


def test_residual_groups_are_pruned_together_and_the_ticket_rebuilds(tmp_path):
    """The residual stream of layer1 (the stem conv and both blocks' second convs) keeps one channel count,
    and the pruning history replays into the same model from a weights_only file. (torch-pruning 1.6's
    Group.prune(idxs) records the whole group in the history: the rebuilt model then had no channels.)"""
    ticket = resnet_ticket()
    model = ticket.build_model()
    latency = flops_model(ticket)
    _, groups = channel_groups(model, ticket)
    stream = next(g for g in groups if "conv1" in g.out_layers)
    assert {"conv1", "layer1.0.conv2"} <= set(stream.out_layers) and "layer2.0.conv1" in stream.in_layers
    dense = latency.of_layers(layer_channels(model))
    history = prune_to_budget(model, ticket, LatencyBudget(0.4 * dense, latency), round_to=4)
    channels = layer_channels(model)
    assert latency.of_layers(channels) <= 0.4 * dense
    assert channels["conv1"][1] == channels["layer1.0.conv2"][1] == channels["layer2.0.conv1"][0]
    assert channels["layer2.0.downsample.0"][1] == channels["layer2.0.conv2"][1] == channels["layer3.0.conv1"][0]
    assert all(out % 4 == 0 for _, out in channels.values())
    pruned = ticket.with_model(model, pruning_history=history)
    pruned.save(tmp_path / "t.ticket")
    loaded = Ticket.load(tmp_path / "t.ticket")
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded.build_model()(images), model.eval()(images), atol=1e-5)


def test_kept_channels_are_the_most_important_of_their_group():
    """Against torch-pruning's own importance: in every group the budget cut, each channel it removed (read from
    torch-pruning's history) scores no higher than every channel it kept."""
    ticket = resnet_ticket()
    model = ticket.build_model()
    _, before = channel_groups(model, ticket)
    latency = flops_model(ticket)
    history = prune_to_budget(model, ticket, LatencyBudget(0.5 * latency.of_layers(layer_channels(model)), latency), 4)
    removed = {root: idxs for root, _, idxs in history}
    assert len(removed) >= 3
    for group in before:
        if group.name in removed:
            gone = list(removed[group.name])
            kept = sorted(set(range(len(group.scores))) - set(gone))
            assert kept and max(group.scores[gone]) <= min(group.scores[kept])


def test_a_depthwise_conv_is_priced_by_the_group_it_belongs_to():
    """mobilenet_v2's depthwise convs take their input and output channels from one group: both ends of the
    layer must follow that group's count (they were priced at full width, found in review)."""
    from edgeticket.tickets.allocate import layer_groups
    torch.manual_seed(0)
    model = get_model("mobilenet_v2", num_classes=10, in_channels=3)
    ticket = Ticket("mobilenet_v2", {"num_classes": 10, "in_channels": 3}, model.state_dict(), (3, 32, 32),
                    (0.5,) * 3, (0.5,) * 3, [str(i) for i in range(10)])
    wiring = layer_groups(channel_groups(ticket.build_model(), ticket)[1])
    depthwise = "features.2.conv.1.0"
    assert model.get_submodule(depthwise).groups == model.get_submodule(depthwise).in_channels > 1
    in_group, out_group = wiring[depthwise]
    assert in_group == out_group is not None
    assert wiring["features.2.conv.0.0"][1] == out_group  # the expansion conv that feeds it
