import json
import signal

import pytest

from edgeticket.errors import EdgeticketError
from edgeticket.sweep import Cell, SweepConfig, cell_line, cells, code_record, sweep_recipe

TOML = """
out = "{out}"
cache = "{cache}"
sources = {{ natural = "none", robust = "l2:1.0" }}
source_images = 400
source_epochs = 1
methods = ["omp"]
sparsities = [0.5, 0.8]
deploy = false
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


@pytest.mark.parametrize("body, key", [
    ('methods = "omp"', "methods"),           # was iterated by character
    ("sparsities = 0.5", "sparsities"),       # was a TypeError
    ('seeds = "0"', "seeds"),                 # these three surfaced only as "no evaluated models"
    ("target_images = -5", "target_images"),
    ('targets = ["digitz"]', "targets"),      # ... after a pretrain that wrote to the cache
    ("seeds = [-1]", "seeds"),
    ("seeds = [true]", "seeds"),
    ("seeds = []", "seeds"),
    ("sparsities = [1.0]", "sparsities"),
    ('methods = ["omq"]', "methods"),
    ('patterns = ["chanel"]', "patterns"),
    ('arch = "resnet19"', "arch"),
    ('source_data = "fashion"', "source_data"),
    ('sources = { robust = "l3:1.0" }', "sources.robust"),
    ('sources = { "../up" = "none" }', "sources"),
    ("sources = { natural = 1 }", "sources"),
    ('source_files = { robust = "absent.pt" }', "source_files.robust"),
    ('attack = "linf"', "attack"),
    ('finetune_mode = "partial"', "finetune_mode"),
    ('on = "sideways"', "on"),
    ('deploy = "yes"', "deploy"),
    ("source_lr = nan", "source_lr"),
    ("finetune_lr = 0", "finetune_lr"),
    ("draw_rate = 1.5", "draw_rate"),
    ("bench_seconds = 9000", "bench_seconds"),
    ("out = 3", "out"),
])
def test_a_bad_key_is_refused_naming_the_file_and_the_key(tmp_path, body, key):
    folders = f'out = "{tmp_path / "out"}"\ncache = "{tmp_path / "cache"}"\n' if key != "out" else ""
    (tmp_path / "bad.toml").write_text(folders + body + "\n")
    with pytest.raises(EdgeticketError) as error:
        SweepConfig.from_toml(tmp_path / "bad.toml")
    assert f"bad.toml: key '{key}'" in error.value.message and error.value.hint


def test_an_empty_config_is_refused(tmp_path):
    (tmp_path / "empty.toml").write_text("# nothing yet\n")
    with pytest.raises(EdgeticketError, match="empty.toml sets no keys") as error:
        SweepConfig.from_toml(tmp_path / "empty.toml")
    assert "examples/sweep.toml" in error.value.hint


def test_an_unknown_key_suggests_the_nearest(tmp_path):
    (tmp_path / "bad.toml").write_text('sparsites = [0.5]\n')
    with pytest.raises(EdgeticketError, match="bad.toml: unknown key 'sparsites'") as error:
        SweepConfig.from_toml(tmp_path / "bad.toml")
    assert "sparsities" in error.value.hint


def test_a_bad_config_fails_before_any_work(tmp_path, runner):
    from edgeticket.cli import app
    from edgeticket.sweep import run_sweep
    (tmp_path / "s.toml").write_text(f'out = "{tmp_path / "out"}"\ncache = "{tmp_path / "cache"}"\n'
                                     'targets = ["digits", "nope"]\n')
    result = runner.invoke(app, ["sweep", str(tmp_path / "s.toml")])
    assert result.exit_code == 1 and "s.toml: key 'targets': unknown dataset 'nope'" in result.output
    with pytest.raises(EdgeticketError, match="key 'seeds'"):  # the Python API, too
        run_sweep(SweepConfig(out=tmp_path / "out", cache=tmp_path / "cache", seeds="0"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["sweep.toml", "paper_small.toml"])
def test_the_shipped_examples_and_the_demo_pass_the_checks(name):
    from pathlib import Path

    from edgeticket.demo import demo_config
    SweepConfig.from_toml(Path(__file__).resolve().parents[1] / "examples" / name)
    demo_config(quick=True).validate()
    demo_config(method="lmp", pattern="unstructured", noise=True).validate()


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
def test_killed_sweep_resumes_and_reports_every_cell(tmp_path, launcher):
    """Both runs are forked from the fork server (tests/forkserver.py): processes of their own, the imports done."""
    (tmp_path / "s.toml").write_text(TOML.format(out=tmp_path / "out", cache=tmp_path / "cache"))
    command = ["sweep", str(tmp_path / "s.toml")]
    log = tmp_path / "log.stderr"  # the killed run's; not a terminal: one line per finished cell
    finished_one = lambda: log.exists() and "[1/4]" in log.read_text()
    killed = launcher.run(command, tmp_path / "run", signal.SIGKILL, after=finished_one, poll=0.2)
    assert killed.code == -signal.SIGKILL and " acc " in killed.stderr and "3 left, about" in killed.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["recipe"] == sweep_recipe(SweepConfig.from_toml(tmp_path / "s.toml"))
    assert config["edgeticket"]["version"] and "commit" in config["edgeticket"]
    finished = {p: p.stat().st_mtime for p in (tmp_path / "out").rglob("result.json")}
    assert 1 <= len(finished) < 4, "killed before the sweep could finish"
    result = launcher.run(command + ["--json"], tmp_path / "run")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["rows"]) == 4 and report["failed"] == []
    assert {(r["source"], r["method"], r["sparsity"]) for r in report["rows"]} == \
        {(s, "omp", p) for s in ("natural", "robust") for p in (0.5, 0.8)}  # (exports and benches: the demo's test)
    assert all(p.stat().st_mtime == mtime for p, mtime in finished.items())  # finished cells were skipped
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4
