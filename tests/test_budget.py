"""`draw --max-latency-ms T --device D` end to end on a small ResNet and ort-cpu-1t: the latency table is built
once for the module (in its own cache folder) and reused; no assertion depends on how fast this machine is."""

import json

import pytest
import torch
from typer.testing import CliRunner

import edgeticket as et
from edgeticket import api
from edgeticket.bench import get_device
from edgeticket.budget import calibrate, latency_model
from edgeticket.cli import app
from edgeticket.models.archs import get_model
from edgeticket.ticket import Ticket
from edgeticket.tickets.allocate import LatencyModel, LayerLatency, layer_channels, smallest_counts
from edgeticket.tickets.channel import kept_channels

ROUND_TO = 16  # a coarser grid than the default 8: fewer blocks to time

needs_table = pytest.mark.slow  # building the table times ~250 blocks and 7 networks


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A small ResNet source ticket and its folder, with the latency cache inside it."""
    folder = tmp_path_factory.mktemp("budget")
    torch.manual_seed(0)
    model = get_model("small_resnet", num_classes=10, in_channels=1)
    source = Ticket("small_resnet", {"num_classes": 10, "in_channels": 1}, model.state_dict(), (1, 28, 28), (0.5,),
                    (0.5,), [str(i) for i in range(10)], provenance={"source_kind": "robust"})
    source.save(folder / "source.ticket")
    return folder, source


@pytest.fixture(scope="module")
def budget_setup(source_file):
    """The source's latency table (built here, once, about 15 s) and what it measured."""
    folder, source = source_file
    patch = pytest.MonkeyPatch()
    patch.setenv("EDGETICKET_CACHE", str(folder / "cache"))
    latency, table = latency_model(source, get_device("ort-cpu-1t"), ROUND_TO)
    yield folder, source, latency, table
    patch.undo()


def toy_model() -> LatencyModel:
    """Two groups, three layers, each layer's milliseconds bilinear in its channels."""
    return LatencyModel([LayerLatency("stem", (3, 32), lambda i, o: 0.01 * o, None, "a"),
                         LayerLatency("body", (32, 64), lambda i, o: 0.001 * i * o, "a", "b"),
                         LayerLatency("head", (64, 10), lambda i, o: 0.002 * i, "b", None)], call_ms=0.05)


def test_calibration_fits_the_fixed_cost_and_scale_through_two_networks():
    """A network that costs 0.7 ms plus 1.6x its layers: measured dense and fastest, every other configuration
    is predicted exactly (a fit through the dense network alone, the old one, misses the narrowest by 64%)."""
    latency, layers, dense, fastest = toy_model(), toy_model(), {"a": 32, "b": 64}, {"a": 8, "b": 8}

    def true_ms(counts):
        return 0.7 + 1.6 * (layers.total(counts) - 0.05)
    calibrate(latency, dense, fastest, true_ms(dense), true_ms(fastest))
    assert (latency.call_ms, latency.scale) == (pytest.approx(0.7), pytest.approx(1.6))
    for counts in ({"a": 16, "b": 24}, {"a": 8, "b": 64}, {"a": 32, "b": 8}):
        assert latency.total(counts) == pytest.approx(true_ms(counts))


@pytest.mark.parametrize("fastest_ms", [3.0, 0.01])  # noise: fastest timed no faster / a line below zero
def test_calibration_falls_back_to_the_dense_network(fastest_ms):
    latency = toy_model()
    calibrate(latency, {"a": 32, "b": 64}, {"a": 8, "b": 8}, 2.5, fastest_ms)
    assert latency.call_ms == 0.05 and latency.scale > 0
    assert latency.total({"a": 32, "b": 64}) == pytest.approx(2.5)


def reachable(latency: LatencyModel, table) -> float:
    """A budget that needs pruning and that the network reaches: 40% of the way from its fastest (measured on
    this machine) to its dense latency. A fixed share of dense is not: on a small network at a small input the
    fixed cost is most of the fastest one's latency."""
    fastest = latency.total(smallest_counts(latency.group_sizes(), ROUND_TO))
    return fastest + 0.4 * (table.dense_ms - fastest)


@needs_table
def test_table_reports_its_error_on_random_configurations(budget_setup):
    _, _, latency, table = budget_setup
    assert table.measured_blocks == table.blocks and len(table.errors) == 5
    assert all(e["predicted_ms"] > 0 and e["measured_ms"] > 0 for e in table.errors)
    assert latency.total(latency.group_sizes()) == pytest.approx(table.dense_ms)  # calibrated on the dense net


@needs_table
def test_cli_draws_to_a_budget_and_the_ticket_reloads_and_exports(budget_setup, monkeypatch):
    folder, source, latency, table = budget_setup
    measured = []
    real = __import__("edgeticket.bench.latency", fromlist=["measure"]).measure
    monkeypatch.setattr("edgeticket.budget.measure", lambda *a, **k: measured.append(a) or real(*a, **k))
    budget = round(reachable(latency, table), 4)
    out = folder / "budget.ticket"
    result = run("draw", folder / "source.ticket", "--max-latency-ms", budget, "--device", "ort-cpu-1t",
                 "--round-to", ROUND_TO, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert measured == []  # the table came from the cache: nothing was timed again
    report = json.loads(result.stdout)["latency"]
    assert report["table"]["measured_blocks"] == 0 and report["device"] == "ort-cpu-1t"
    rounds = report["rounds"]
    assert 1 <= len(rounds) <= 3 and rounds[0]["budget_ms"] == pytest.approx(budget)
    for before, after in zip(rounds, rounds[1:]):  # each redraw: the prediction scaled by how far it missed
        assert not 0.9 * budget <= before["measured_ms"] <= budget
        assert after["budget_ms"] == pytest.approx(before["predicted_ms"] * budget / before["measured_ms"])
    assert all(r["predicted_ms"] <= r["budget_ms"] + 1e-9 for r in rounds)
    ticket = Ticket.load(out)  # weights_only
    p, kept = ticket.provenance, rounds[report["kept_round"]]
    assert (p.latency_budget_ms, p.latency_device) == (pytest.approx(budget), "ort-cpu-1t")
    assert p.predicted_latency_ms == pytest.approx(kept["predicted_ms"])
    assert p.measured_latency_ms == pytest.approx(kept["measured_ms"])
    model = ticket.build_model()
    assert latency.of_layers(layer_channels(model)) == pytest.approx(p.predicted_latency_ms)
    channels = layer_channels(model)
    for group, (kept, of) in report["kept_channels"].items():
        assert channels[group][1] == kept and of == layer_channels(source.build_model())[group][1]
        assert kept % ROUND_TO == 0 or kept == of
    assert p.achieved_sparsity > 0
    export = api.export(out, folder / "budget.onnx")  # (et.export is shadowed once edgeticket.export is imported)
    assert export.value <= export.threshold  # parity with torch
    shown = run("inspect", out)
    assert shown.exit_code == 0 and "channels kept per group" in shown.stdout and "latency_budget_ms" in shown.stdout


@needs_table
def test_the_api_takes_the_same_keywords_and_sparsity_is_a_floor(budget_setup):
    folder, source, latency, table = budget_setup
    generous = 10 * table.dense_ms
    ticket = et.draw(source, max_latency_ms=generous, device="ort-cpu-1t", round_to=ROUND_TO, sparsity=0.5)
    channels, dense = layer_channels(ticket.build_model()), layer_channels(source.build_model())
    for group in latency.group_sizes():
        assert channels[group][1] == kept_channels(dense[group][1], 0.5, ROUND_TO)  # the floor, and no further
    alone = et.draw(source, max_latency_ms=generous, device="ort-cpu-1t", round_to=ROUND_TO)
    assert layer_channels(alone.build_model()) == dense  # no default sparsity with a budget alone
    assert alone.provenance.sparsity == 0.0


@needs_table
def test_a_budget_below_the_smallest_reachable_latency_is_a_one_line_error(budget_setup):
    folder, _, latency, _ = budget_setup
    result = run("draw", folder / "source.ticket", "--max-latency-ms", "0.000001", "--device", "ort-cpu-1t",
                 "--round-to", ROUND_TO, "-o", folder / "never.ticket")
    assert result.exit_code != 0 and not (folder / "never.ticket").exists()
    assert "below the smallest latency small_resnet on ort-cpu-1t reaches" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--max-latency-ms", "1"], "needs the device"),
    (["--max-latency-ms", "1", "--device", "ort-cpu-1t", "--method", "lmp"], "not --method lmp"),
    (["--max-latency-ms", "1", "--device", "ort-cpu-1t", "--pattern", "kernel"], "--pattern kernel"),
    (["--max-latency-ms", "-3", "--device", "ort-cpu-1t"], "not a positive number"),
    (["--max-latency-ms", "1", "--device", "no-such-device"], "no-such-device"),
    (["--max-latency-ms", "1", "--device", "ort-int8-1t"], "runs int8"),
])
def test_bad_budget_options_are_refused_before_anything_is_measured(source_file, monkeypatch, args, message):
    folder = source_file[0]
    monkeypatch.setattr("edgeticket.budget.latency_model", lambda *a: pytest.fail("measured before refusing"))
    result = run("draw", folder / "source.ticket", *args, "-o", folder / "bad.ticket")
    assert result.exit_code != 0 and message in result.output, result.output


@pytest.mark.slow
def test_imp_reaches_the_budget_over_its_rounds(budget_setup):
    folder, source, latency, table = budget_setup
    budget = reachable(latency, table)
    ticket = et.draw(source, method="imp", max_latency_ms=budget, device="ort-cpu-1t", round_to=ROUND_TO,
                     data="digits", subset=100, rate=0.2)
    draw = ticket.provenance.stages[-1]
    assert draw.details["method"] == "imp" and draw.details["max_latency_ms"] == pytest.approx(budget)
    assert latency.of_layers(layer_channels(ticket.build_model())) <= draw.details["latency"]["rounds"][-1]["budget_ms"]
    assert ticket.class_names == [str(i) for i in range(10)]


@pytest.mark.parametrize("record, kept", [({"kept_round": 0}, "1 (kept)"), ({}, "2 (kept)")])
def test_inspect_marks_the_kept_draw_also_for_tickets_drawn_before_it_was_recorded(record, kept):
    from edgeticket.console import console
    from edgeticket.tables import latency_report
    table = {"measured_blocks": 0, "first_build_seconds": 1.0, "blocks": 3, "dense_ms": 2.0, "errors": [],
             "mean_error": 0.0, "file": "t.json"}
    rounds = [{"budget_ms": 1.0, "predicted_ms": 1.0, "measured_ms": 0.8},
              {"budget_ms": 1.2, "predicted_ms": 1.2, "measured_ms": 1.1}]
    with console.capture() as captured:
        latency_report({"device": "ort-cpu-1t", "max_latency_ms": 1.0, "met": True, "rounds": rounds, "table": table,
                        "kept_channels": {}, **record})
    assert kept in captured.get() and captured.get().count("(kept)") == 1


def test_a_ticket_that_leaves_latency_unspent_is_drawn_wider_and_the_widest_fit_kept(source_file, monkeypatch):
    """A stand-in device on which every ticket runs 25% faster than predicted: the first draw measures 0.75 T,
    so it is drawn again with the budget scaled up by the miss, and that wider ticket, still within T, is the
    one written. The old loop stopped at the first draw under T."""
    from edgeticket import budget as budget_module
    from edgeticket.budget import TableReport, draw_to_budget
    from edgeticket.tickets import DrawConfig
    from tests.tickets.test_allocate import flops_model
    _, source = source_file
    latency = flops_model(source)
    dense = latency.total(latency.group_sizes())
    monkeypatch.setattr(budget_module, "latency_model",
                        lambda *a: (latency, TableReport("stand-in", "", 0, 0, 0.0, 0.0, dense)))
    monkeypatch.setattr(budget_module, "measured_ms",
                        lambda ticket, profile: 0.75 * latency.of_layers(layer_channels(ticket.build_model())))
    config = DrawConfig(sparsity=0.0, round_to=8, max_latency_ms=0.4 * dense)
    ticket, report = draw_to_budget(source, config, get_device("ort-cpu-1t"))
    first, *later = report.rounds
    assert first.measured_ms < 0.9 * config.max_latency_ms and later
    assert later[0].budget_ms == pytest.approx(first.predicted_ms * config.max_latency_ms / first.measured_ms)
    kept = report.rounds[report.kept_round]
    assert report.met and kept.measured_ms == max(r.measured_ms for r in report.rounds
                                                  if r.measured_ms <= config.max_latency_ms)
    assert kept.measured_ms > first.measured_ms
    assert ticket.provenance.measured_latency_ms == kept.measured_ms
    assert 0.75 * latency.of_layers(layer_channels(ticket.build_model())) == pytest.approx(kept.measured_ms)


def test_each_redraw_cuts_the_prediction_by_the_miss_and_stops_at_three_or_the_floor(source_file, monkeypatch):
    """The check loop on a stand-in device whose tickets always measure 30% over the budget: three draws, each
    budget the last prediction x T / measured, never below the reachable minimum; the ticket is written and
    says it missed. No real timing: the latency model and the measurement are both stand-ins."""
    from edgeticket import budget as budget_module
    from edgeticket.budget import TableReport, draw_to_budget
    from edgeticket.tickets import DrawConfig
    from tests.tickets.test_allocate import flops_model
    _, source = source_file
    latency = flops_model(source)
    dense = latency.total(latency.group_sizes())
    monkeypatch.setattr(budget_module, "latency_model",
                        lambda *a: (latency, TableReport("stand-in", "", 0, 0, 0.0, 0.0, dense)))
    config = DrawConfig(sparsity=0.0, round_to=8, max_latency_ms=0.5 * dense)
    monkeypatch.setattr(budget_module, "measured_ms", lambda ticket, profile: 1.3 * config.max_latency_ms)
    ticket, report = draw_to_budget(source, config, get_device("ort-cpu-1t"))
    rounds = report.rounds
    assert len(rounds) == 3 and not report.met
    for before, after in zip(rounds, rounds[1:]):
        assert after.budget_ms == pytest.approx(before.predicted_ms * config.max_latency_ms / before.measured_ms)
    assert ticket.provenance.measured_latency_ms == rounds[-1].measured_ms
    fastest = latency.total({g: 8 for g in latency.group_sizes()})
    config = DrawConfig(sparsity=0.0, round_to=8, max_latency_ms=1.05 * fastest)
    _, report = draw_to_budget(source, config, get_device("ort-cpu-1t"))
    assert all(r.budget_ms >= fastest for r in report.rounds) and report.rounds[-1].budget_ms == pytest.approx(fastest)


def test_a_redraw_by_sparsity_drops_the_budget_it_came_from(source_file):
    _, source = source_file
    source.provenance.latency_budget_ms, source.provenance.measured_latency_ms = 5.0, 4.9
    ticket = et.draw(source, sparsity=0.25)
    assert ticket.provenance.latency_budget_ms is None and ticket.provenance.measured_latency_ms is None
