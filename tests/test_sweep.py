import json
import signal
import subprocess
import sys
import time

import pytest

from edgeticket.errors import EdgeticketError
from edgeticket.sweep import Cell, SweepConfig, cell_line, cells, code_record, sweep_recipe

TOML = """
out = "{out}"
cache = "{cache}"
sources = {{ natural = "none", robust = "l2:1.0" }}
source_images = 400
source_epochs = 1
methods = ["omp", "a-imp"]
sparsities = [0.8]
target_images = 100
finetune_epochs = 2
attack_steps = 2
adv_images = 32
bench_runs = 5
bench_seconds = 0.0
draw_rate = 0.5
"""


def test_config_names_unknown_keys(tmp_path):
    (tmp_path / "bad.toml").write_text('methodz = ["omp"]\n')
    with pytest.raises(EdgeticketError, match="methodz"):
        SweepConfig.from_toml(tmp_path / "bad.toml")


def test_cells_cover_the_grid():
    config = SweepConfig(methods=["omp", "lmp"], sparsities=[0.5, 0.8], seeds=[0, 1])
    grid = cells(config)
    assert len(grid) == 2 * 2 * 2 * 2 and len({c.name for c in grid}) == len(grid)


def test_sparsity_zero_runs_once_per_source_and_seed():
    config = SweepConfig(patterns=["channel", "unstructured"], sparsities=[0.0, 0.5], seeds=[0, 1])
    grid = cells(config)
    dense = [c for c in grid if c.sparsity == 0]
    assert len(grid) == 2 * 2 * (1 + 2) and len({c.name for c in grid}) == len(grid)
    assert len(dense) == 2 * 2 and {c.pattern for c in dense} == {"channel"}
    trained = cells(SweepConfig(methods=["lmp"], patterns=["channel", "unstructured"], sparsities=[0.0], seeds=[0]))
    assert len(trained) == 2 * 2  # LMP takes each pattern's own path even at 0: no sharing


def test_config_json_keeps_the_commits_a_sweep_was_resumed_across(tmp_path, monkeypatch):
    import edgeticket.sweep as sweep
    (tmp_path / "config.json").write_text(json.dumps({"edgeticket": {"version": "0.1.0", "commit": "old"}}))
    monkeypatch.setattr(sweep, "code_commit", lambda: "new")
    assert code_record(tmp_path / "config.json")["commits"] == ["old", "new"]
    assert code_record(tmp_path / "absent.json")["commits"] == ["new"]


def test_a_log_line_per_cell_says_what_is_left():
    cell = Cell("robust", "omp", "channel", 0.8, "digits", 1, "abcd1234")
    line = cell_line(cell, 90.4, {"status": "ok", "metrics": {"accuracy": 93.3222}}, 3, 10, 600.0)
    assert line == "[3/10] robust/omp-channel-0.8-digits-s1-abcd1234 90s acc 93.32%; 7 left, about 00:23:20 to go"
    assert "FAILED: boom" in cell_line(cell, 1.0, {"status": "failed", "error": "boom"}, 1, 2, 1.0)
    assert "about 30:00:00 to go" in cell_line(cell, 1.0, {"status": "failed", "error": "x"}, 1, 2, 108000.0)


@pytest.mark.slow
def test_killed_sweep_resumes_and_reports_every_cell(tmp_path):
    (tmp_path / "s.toml").write_text(TOML.format(out=tmp_path / "out", cache=tmp_path / "cache"))
    command = [sys.executable, "-m", "edgeticket", "sweep", str(tmp_path / "s.toml")]
    with open(tmp_path / "log", "w") as log:  # not a terminal: one line per finished cell
        process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.time() + 300
        while time.time() < deadline and "[1/4]" not in (tmp_path / "log").read_text():
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert " acc " in (tmp_path / "log").read_text() and "3 left, about" in (tmp_path / "log").read_text()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["recipe"] == sweep_recipe(SweepConfig.from_toml(tmp_path / "s.toml"))
    assert config["edgeticket"]["version"] and "commit" in config["edgeticket"]
    finished = {p: p.stat().st_mtime for p in (tmp_path / "out").rglob("result.json")}
    assert 1 <= len(finished) < 4, "killed before the sweep could finish"
    result = subprocess.run(command + ["--json"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert len(report["rows"]) == 4 and report["failed"] == []
    assert {(r["source"], r["method"], r["sparsity"]) for r in report["rows"]} == \
        {(s, m, 0.8) for s in ("natural", "robust") for m in ("omp", "a-imp")}
    assert all(p.stat().st_mtime == mtime for p, mtime in finished.items())  # finished cells were skipped
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4
