import json
import signal
import subprocess
import sys
import time

import pytest

from edgeticket.errors import EdgeticketError
from edgeticket.sweep import SweepConfig, cells

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


@pytest.mark.slow
def test_killed_sweep_resumes_and_reports_every_cell(tmp_path):
    (tmp_path / "s.toml").write_text(TOML.format(out=tmp_path / "out", cache=tmp_path / "cache"))
    command = [sys.executable, "-m", "edgeticket", "sweep", str(tmp_path / "s.toml")]
    process = subprocess.Popen(command + ["--quiet"])
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "out").rglob("result.json")):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime for p in (tmp_path / "out").rglob("result.json")}
    assert 1 <= len(finished) < 4, "killed before the sweep could finish"
    result = subprocess.run(command + ["--json"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert len(report["rows"]) == 4 and report["failed"] == []
    assert {(r["source"], r["method"], r["sparsity"]) for r in report["rows"]} == \
        {(s, m, 0.8) for s in ("natural", "robust") for m in ("omp", "a-imp")}
    assert all(p.stat().st_mtime == mtime for p, mtime in finished.items())  # finished cells were skipped
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4
