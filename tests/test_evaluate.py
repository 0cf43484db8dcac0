import json

import numpy as np
import pytest

from edgeticket import metrics
from edgeticket.cli import app
from edgeticket.data import DataConfig, load_dataset
from edgeticket.errors import EdgeticketError
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
    assert torch_result.metrics.accuracy > 80  # a real model: agreement tests downstream mean something
    assert torch_result.metrics.adv_accuracy is not None and onnx_result.metrics.adv_accuracy is None
    assert 0 <= torch_result.metrics.ood_roc_auc <= 1 and torch_result.metrics.adv_accuracy <= torch_result.metrics.accuracy
    assert "no gradients" in onnx_result.note
    assert json.loads((tuned / "t.ticket.eval.json").read_text())["metrics"]["accuracy"] == torch_result.metrics.accuracy


@pytest.mark.parametrize("model, passes", [("t.ticket", ["OOD", "PGD-1", "test"]), ("t.onnx", ["OOD", "test"])])
def test_eval_counts_every_batch_on_a_progress_bar(tuned, progress_recorder, model, passes):
    bars = progress_recorder(metrics)
    config = EvalConfig("digits", ood="gaussian-noise", attack="linf:8/255", attack_steps=1, adv_images=40,
                        ood_images=100, batch_size=32)
    evaluate(tuned / model, config, save=False)
    tasks = {task.description: task for bar in bars for task in bar.tasks}
    assert sorted(description.split()[0] for description in tasks) == passes
    assert tasks["OOD gaussian-noise"].total == 4  # 100 images in batches of 32
    assert all(task.completed == task.total > 1 and "status" in task.fields for task in tasks.values())


def test_ood_images_caps_the_ood_set(tuned):
    """The ROC-AUC on the first N OOD images is the one computed by hand from the first N OOD logits."""
    config = EvalConfig("digits", ood="gaussian-noise", attack="none", ood_images=50)
    result = evaluate(tuned / "t.ticket", config, save=False)
    model = load_checkpoint(tuned / "t.ticket").deployable()
    digits, noise = (load_dataset(DataConfig(name, image_size=28, channels=1)).test
                     for name in ("digits", "gaussian-noise"))
    expected = metrics.ood_roc_auc(metrics.max_softmax(metrics.predict(model, digits)),
                                   metrics.max_softmax(metrics.predict(model, noise)[:50]))
    assert result.as_dict()["ood_images"] == 50 and len(noise) > 50
    assert result.metrics.ood_roc_auc == pytest.approx(expected)


def test_ood_images_needs_an_ood_set_and_at_least_one_image(tuned, runner):
    result = runner.invoke(app, ["eval", str(tuned / "t.ticket"), "--ood-images", "5"])
    assert result.exit_code == 1 and "no --ood was given" in result.output
    refused = runner.invoke(app, ["eval", str(tuned / "t.ticket"), "--ood", "gaussian-noise", "--ood-images", "0"])
    assert refused.exit_code == 2  # typer's usage error: min=1
    with pytest.raises(EdgeticketError, match="below 1"):
        evaluate(tuned / "t.ticket", EvalConfig("digits", ood="gaussian-noise", ood_images=0), save=False)


def test_report_joins_eval_and_bench(tuned, runner):
    for model in ("t.ticket", "t.onnx"):  # its own evals: it must not need another test to have run first
        evaluate(tuned / model, EvalConfig("digits", ood="gaussian-noise", attack="none"))
    assert runner.invoke(app, ["bench", str(tuned / "t.onnx"), "--runs", "5"]).exit_code == 0
    result = runner.invoke(app, ["report", str(tuned), "--json"])
    assert result.exit_code == 0, result.output
    rows = collect(tuned)
    assert len(rows) == 1 and rows[0]["source"] == "robust" and rows[0]["latency_ms"]["ort-cpu-1t"] > 0
    assert rows[0]["onnx_acc"] == pytest.approx(rows[0]["acc"], abs=0.1) and rows[0]["file"] == "t.ticket"
    report = write_report(tuned)
    assert report.markdown.exists() and all(p.exists() and p.stat().st_size > 1000 for p in report.plots)
    assert "96.3" in report.markdown.read_text()  # the paper's Table I beside ours
    assert "96.3" not in write_report(tuned, paper=False).markdown.read_text()


def fake_eval(folder, name, source, seed, accuracy, runtime="torch", sha=None, classes_ok=True,
              pattern="channel", sparsity=0.5):
    """An eval sidecar as `evaluate` writes it, for testing the report's arithmetic on chosen numbers."""
    provenance = {"source_kind": source, "method": "omp", "pattern": pattern, "sparsity": sparsity,
                  "stages": [{"stage": "finetune", "seed": seed}]}
    record = {"model": str(folder / name), "runtime": runtime, "data": "digits", "test_images": 599, "ood": None,
              "attack": "none", "note": "", "ticket_sha256": sha or f"{source}{seed}", "provenance": provenance,
              "size": {"params": 100, "nonzero_params": 100, "macs": 1000},
              "metrics": {"accuracy": accuracy, "ece": 0.05, "nll": 0.2, "adv_accuracy": None, "ood_roc_auc": None,
                          "at_chance": not classes_ok}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.eval.json").write_text(json.dumps(record))


def test_report_pairs_seeds_and_matches_scipy_paired_t_interval(tmp_path):
    from scipy import stats
    natural, robust = [90.0, 92.5, 91.0, 89.0], [93.0, 92.0, 95.5, 90.0]
    for seed, (n, r) in enumerate(zip(natural, robust)):
        fake_eval(tmp_path / f"s{seed}", "natural.ticket", "natural", seed, n)
        fake_eval(tmp_path / f"s{seed}", "robust.ticket", "robust", seed, r)
    report = write_report(tmp_path, paper=False)
    (difference,) = report.differences
    reference = stats.ttest_rel(robust, natural).confidence_interval(0.95)
    assert difference["seeds"] == 4 and difference["mean"] == pytest.approx(np.mean(robust) - np.mean(natural))
    assert (difference["low"], difference["high"]) == pytest.approx((reference.low, reference.high))
    assert difference["verdict"] == "interval spans 0"  # [-0.9, +4.9]: not a claim
    robust_summary = next(g for g in report.summary if g["source"] == "robust")
    assert robust_summary["acc"] == pytest.approx((np.mean(robust), np.std(robust, ddof=1)))
    text = report.markdown.read_text()
    assert "95% interval" in text and "s0/natural.ticket" in text and "The paper" not in text


def test_sweep_results_show_the_dense_cell_under_each_pattern_with_recipe_and_commit(tmp_path, runner):
    """A sweep runs sparsity 0 once; the report pairs it under both patterns, and --results writes the citable
    summary: its numbers are the report's, its sentences follow the intervals."""
    (tmp_path / "config.json").write_text(json.dumps({
        "patterns": ["channel", "unstructured"], "recipe": "abcd1234", "out": "x", "cache": "y", "seeds": [0, 1, 2],
        "edgeticket": {"version": "0.1.0", "commit": "f00d"}}))
    natural, robust = {0: [97.0, 97.5, 96.5], 0.9: [80.0, 82.0, 81.0]}, {0: [96.0, 97.0, 97.0], 0.9: [88.0, 90.0, 89.5]}
    for seed in range(3):
        for sparsity, pattern in ((0, "channel"), (0.9, "unstructured")):
            for source, values in (("natural", natural), ("robust", robust)):
                fake_eval(tmp_path / f"{source}-{sparsity}-s{seed}", "tuned.ticket", source, seed,
                          values[sparsity][seed], pattern=pattern, sparsity=sparsity)
    result = runner.invoke(app, ["report", str(tmp_path), "--no-paper", "--results", str(tmp_path / "doc" / "r.md")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "doc" / "r.json").read_text())
    differences = {(d["pattern"], d["sparsity"]): d for d in saved["differences"]}
    assert set(differences) == {("channel", 0), ("unstructured", 0), ("unstructured", 0.9)}
    assert differences["channel", 0] == {**differences["unstructured", 0], "pattern": "channel"}
    assert differences["unstructured", 0.9]["low"] > 0 and differences["channel", 0]["low"] < 0
    text = (tmp_path / "doc" / "r.md").read_text()
    assert "`abcd1234`" in text and "`f00d`" in text and "tuned.ticket" not in text
    assert "unstructured 0.9: robust - natural = +8.17 points" in text and "excludes zero, robust tickets" in text
    assert "channel 0: robust - natural = -0.33 points" in text and "spans zero" in text
    assert saved["sweep"]["recipe"] == "abcd1234" and "cache" not in saved["sweep"] and "out" not in saved["sweep"]
    assert sorted((r["source"], r["seed"], r["acc"]) for r in saved["seeds"] if r["sparsity"] == 0.9) == \
        sorted(("natural", s, natural[0.9][s]) for s in range(3)) + sorted(("robust", s, robust[0.9][s]) for s in range(3))
    assert (tmp_path / "report.md").read_text().count("natural-0-s0/tuned.ticket") == 1  # each model listed once
    assert runner.invoke(app, ["report", str(tmp_path), "--results", str(tmp_path / "r.txt")]).exit_code == 1


def test_a_pattern_with_its_own_dense_rows_keeps_them(tmp_path):
    """Only a missing dense point is filled from the first pattern: a folder that has both is not counted twice."""
    (tmp_path / "config.json").write_text(json.dumps({"patterns": ["channel", "unstructured"]}))
    for pattern in ("channel", "unstructured"):
        fake_eval(tmp_path / pattern, "tuned.ticket", "natural", 0, 97.0, pattern=pattern, sparsity=0)
    rows = collect(tmp_path)
    assert sorted(r["pattern"] for r in rows) == ["channel", "unstructured"] and not any(r.get("shared") for r in rows)


def test_report_shows_onnx_only_evals_and_flags_chance(tmp_path):
    fake_eval(tmp_path, "dead.ticket", "robust", 0, 10.0, classes_ok=False)
    fake_eval(tmp_path, "foreign.onnx", "natural", 0, 88.0, runtime="onnxruntime", sha="other")
    rows = collect(tmp_path)
    assert {r["file"] for r in rows} == {"dead.ticket", "foreign.onnx"}
    text = write_report(tmp_path).markdown.read_text()
    assert "10.00 (chance)" in text and "foreign.onnx" in text


def test_report_names_a_corrupt_sidecar(tmp_path):
    (tmp_path / "x.ticket.eval.json").write_text("{not json")
    with pytest.raises(EdgeticketError, match="x.ticket.eval.json"):
        collect(tmp_path)


def test_pareto_front():
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 91.0)]
    assert sorted(pareto_front(points)) == [0, 1, 3]


def test_gap_names_what_it_measures(tuned):
    result = domain_gap(load_checkpoint(tuned / "t.ticket"), "fashion-mnist", "digits", limit=300)
    assert result.distance > 0 and result.baseline >= 0 and "not the Inception FID" in result.note
    assert ("robust" in result.recommendation) == (result.ratio >= 2.0)
    assert result.head_accuracy > 80  # the digits head, measured on digits


def test_gap_gives_no_advice_from_a_dead_model(tuned):
    ticket = load_checkpoint(tuned / "t.ticket")
    ticket.state_dict["fc.weight"].zero_()  # predicts one class for every image
    result = domain_gap(ticket, "fashion-mnist", "digits", limit=300)
    assert result.head_accuracy < 15 and result.recommendation.startswith("no recommendation")


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, runner):
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache", str(tmp_path / "cache"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {(r["source"], r["sparsity"]) for r in rows} == {(k, s) for k in ("natural", "robust") for s in (0, 0.5, 0.8)}
    assert all(r["latency_ms"] and r["adv_acc"] is not None and r["roc_auc"] is not None for r in rows)
    assert all(abs(r["acc"] - r["onnx_acc"]) <= 0.1 for r in rows)
    assert (tmp_path / "demo" / "accuracy_vs_latency.png").exists()
