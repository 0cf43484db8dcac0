"""Bad input and faults: nothing lost, nothing injected, every error names its cause (issue 15's first fixes)."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from edgeticket.errors import EdgeticketError
from edgeticket.fileio import atomic_path, check_output
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.ticket import Ticket


def edgeticket(*args):
    return subprocess.run([sys.executable, "-m", "edgeticket", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def ticket_file(small_checkpoint, tmp_path):
    load_checkpoint(small_checkpoint, "small_resnet").save(tmp_path / "in.ticket")
    return tmp_path / "in.ticket"


def test_special_files_and_wrong_kinds_are_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(EdgeticketError, match="not a regular file"):
        check_output(fifo)
    (tmp_path / "existing.onnx").write_bytes(b"keep")
    with pytest.raises(EdgeticketError, match="is a file"):
        check_output(tmp_path / "existing.onnx", folder=True)
    assert fifo.exists() and not fifo.is_file() and (tmp_path / "existing.onnx").read_bytes() == b"keep"


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".out.json.{dead.pid}.abc123.tmp"
    leftover.write_bytes(b"x" * 100)
    alive = tmp_path / f".out.json.{os.getpid()}.def456.tmp"  # a concurrent writer's: never touched
    alive.write_bytes(b"y")
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert not leftover.exists() and alive.exists() and (tmp_path / "out.json").read_text() == "{}"


def test_flipped_bytes_in_a_ticket_are_caught_by_its_checksum(ticket_file):
    payload = torch.load(ticket_file, weights_only=True)
    payload["state_dict"]["conv1.weight"][0, 0, 0, 0] += 1000.0  # what 64 flipped bytes did: a weight of 15417
    torch.save(payload, ticket_file)
    with pytest.raises(EdgeticketError, match="in.ticket: its contents do not match the checksum"):
        Ticket.load(ticket_file)


def test_nan_weights_are_refused_with_the_tensor_named(small_checkpoint, tmp_path):
    state = torch.load(small_checkpoint, weights_only=True)
    state["layer2.0.conv1.weight"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(EdgeticketError, match="layer2.0.conv1.weight' holds NaN"):
        load_checkpoint(tmp_path / "nan.pt", "small_resnet")


def test_a_diverging_run_stops_with_its_epoch_named(small_checkpoint):
    from edgeticket.data import DataConfig, load_dataset
    from edgeticket.train import TrainConfig, finetune
    digits = load_dataset(DataConfig("digits", subset=128, image_size=28, channels=1))
    with pytest.raises(EdgeticketError, match=r"loss became (nan|inf) in epoch \d"):
        finetune(load_checkpoint(small_checkpoint, "small_resnet"), digits, TrainConfig(epochs=3, lr=1e30))


@pytest.mark.parametrize("option", [["--seconds", "inf"], ["--runs", "10000000"]])
def test_bench_time_is_bounded(tmp_path, option):
    result = edgeticket("bench", tmp_path / "m.onnx", *option)
    assert result.returncode == 2 and "Invalid value" in result.stderr


@pytest.mark.slow
def test_sigterm_cleans_up_like_ctrl_c(ticket_file, tmp_path, launcher):
    """A process of its own, forked from the fork server (tests/forkserver.py)."""
    output = ticket_file.parent / "o.ticket"
    stopped = launcher.run(["finetune", str(ticket_file), "--epochs", "50", "--subset", "600", "-o", str(output),
                            "--quiet"], tmp_path / "run", signal.SIGTERM,
                           after=(ticket_file.parent / "o.ticket.resume").exists, poll=0.1)
    assert stopped.code == 1 and "interrupted" in stopped.stderr and not output.exists()
    assert not [p for p in ticket_file.parent.iterdir() if p.name.endswith(".tmp")]
