import json
import random

import pytest
import torch

from edgeticket.cli import app


def run(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def test_draw_export_bench_inspect(runner, small_checkpoint, tmp_path):
    ticket, onnx = tmp_path / "t.ticket", tmp_path / "t.onnx"
    result = run(runner, "draw", small_checkpoint, "--arch", "small_resnet", "--sparsity", "0.5", "-o", ticket, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["achieved_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert run(runner, "export", ticket, "-o", onnx).exit_code == 0
    bench = run(runner, "bench", onnx, "--runs", "5", "--seconds", "0", "--json")
    assert bench.exit_code == 0 and json.loads(bench.stdout)["latency"]["runs"] == 5
    inspect = run(runner, "inspect", ticket, "--json")
    assert json.loads(inspect.stdout)["provenance"]["pattern"] == "channel"
    assert "Example:" in run(runner, "draw", "--help").stdout


def bad_inputs(tmp_path, good):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(random.Random(0).randbytes(4096))
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    return {"truncated": ([truncated, "--arch", "small_resnet"], "truncated"),
            "random bytes": ([noise, "--arch", "small_resnet"], "not a"),
            "pickle with a class": ([pickled, "--arch", "small_resnet"], "needs pickle"),
            "wrong arch": ([good, "--arch", "resnet18"], "does not fit"),
            "sparsity 1.0": ([good, "--arch", "small_resnet", "--sparsity", "1.0"], "outside [0, 1)"),
            "negative sparsity": ([good, "--arch", "small_resnet", "--sparsity=-0.2"], "outside [0, 1)")}


@pytest.mark.parametrize("case", ["truncated", "random bytes", "pickle with a class", "wrong arch", "sparsity 1.0",
                                  "negative sparsity"])
def test_bad_input_is_one_clear_line(runner, small_checkpoint, tmp_path, case):
    args, expected = bad_inputs(tmp_path, small_checkpoint)[case]
    out = tmp_path / "out.ticket"
    result = run(runner, "draw", *args, "-o", out)
    assert result.exit_code == 1
    assert expected in result.stderr and "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.ticket*"))


def test_draw_with_a_training_method(runner, small_checkpoint, tmp_path):
    ticket = tmp_path / "lmp.ticket"
    result = run(runner, "draw", small_checkpoint, "--arch", "small_resnet", "--method", "lmp", "--data", "digits",
                 "--subset", "64", "--epochs", "1", "--round-to", "8", "-o", ticket, "--json")
    assert result.exit_code == 0, result.output
    stage = json.loads(run(runner, "inspect", ticket, "--json").stdout)["provenance"]["stages"][-1]
    assert stage["method"] == "lmp" and stage["round_to"] == 8
    assert stage["training"]["data"] == "digits" and stage["training"]["subset"] == 64
    missing = run(runner, "draw", small_checkpoint, "--arch", "small_resnet", "--method", "imp", "-o", tmp_path / "x")
    assert missing.exit_code == 1 and "--data" in missing.stderr
