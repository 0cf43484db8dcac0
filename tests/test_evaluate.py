import json

import pytest

from edgeticket.cli import app
from edgeticket.evaluate import EvalConfig, evaluate
from edgeticket.export import export_onnx
from edgeticket.fileio import sha256_file
from edgeticket.gap import domain_gap
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.report import collect, pareto_front, write_report


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, digits_ticket):
    """The digits ticket and its ONNX export, in a runs folder."""
    folder = tmp_path_factory.mktemp("runs")
    digits_ticket.save(folder / "t.ticket")
    export_onnx(digits_ticket, folder / "t.onnx", sha256_file(folder / "t.ticket"))
    return folder


def test_torch_and_onnx_accuracy_agree(tuned):
    config = EvalConfig("digits", ood="gaussian-noise", attack="linf:8/255", attack_steps=3, adv_images=64)
    torch_result, onnx_result = evaluate(tuned / "t.ticket", config), evaluate(tuned / "t.onnx", config)
    assert abs(torch_result.metrics.accuracy - onnx_result.metrics.accuracy) <= 0.1
    assert torch_result.metrics.adv_accuracy is not None and onnx_result.metrics.adv_accuracy is None
    assert 0 <= torch_result.metrics.ood_roc_auc <= 1 and torch_result.metrics.adv_accuracy <= torch_result.metrics.accuracy
    assert "no gradients" in onnx_result.note
    assert json.loads((tuned / "t.ticket.eval.json").read_text())["metrics"]["accuracy"] == torch_result.metrics.accuracy


def test_report_joins_eval_and_bench(tuned, runner):
    assert runner.invoke(app, ["bench", str(tuned / "t.onnx"), "--runs", "5"]).exit_code == 0
    result = runner.invoke(app, ["report", str(tuned), "--json"])
    assert result.exit_code == 0, result.output
    rows = collect(tuned)
    assert len(rows) == 1 and rows[0]["source"] == "robust" and rows[0]["latency_ms"] > 0
    assert rows[0]["onnx_acc"] == pytest.approx(rows[0]["acc"], abs=0.1)
    report = write_report(tuned)
    assert report.markdown.exists() and all(p.exists() and p.stat().st_size > 1000 for p in report.plots)
    assert "96.3" in report.markdown.read_text()  # the paper's Table I beside ours


def test_pareto_front():
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 91.0)]
    assert sorted(pareto_front(points)) == [0, 1, 3]


def test_gap_names_what_it_measures(tuned):
    result = domain_gap(load_checkpoint(tuned / "t.ticket"), "fashion-mnist", "digits", limit=300)
    assert result.distance > 0 and result.baseline >= 0 and "not the Inception FID" in result.note
    assert ("robust" in result.recommendation) == (result.ratio >= 2.0)


def test_demo_quick_end_to_end(tmp_path, runner):
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache", str(tmp_path / "cache"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {(r["source"], r["sparsity"]) for r in rows} == {(k, s) for k in ("natural", "robust") for s in (0, 0.5, 0.8)}
    assert all(r["latency_ms"] and r["adv_acc"] is not None and r["roc_auc"] is not None for r in rows)
    assert all(abs(r["acc"] - r["onnx_acc"]) <= 0.1 for r in rows)
    assert (tmp_path / "demo" / "accuracy_vs_latency.png").exists()
