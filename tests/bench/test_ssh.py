"""Bench on a board over ssh, against a real OpenSSH server on 127.0.0.1 whose "board" is a virtualenv with
only onnxruntime and numpy: the remote bench must equal the local one, keys must be verified, and each way
it can fail must say so in one line."""

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeticket.bench import BenchConfig, TargetData, bench_artifact
from edgeticket.bench import ssh as ssh_module
from edgeticket.bench.all_devices import bench_all_devices
from edgeticket.bench.devices import SshTarget, get_device, read_profile
from edgeticket.bench.ssh import Endpoint, run_on_board
from edgeticket.bench.transport import BoardUnreachable, run_local
from edgeticket.cli import app
from edgeticket.data import DataConfig, load_dataset
from edgeticket.errors import EdgeticketError

from .loopback import SSHD, LoopbackSshd, board_venv, free_port, keygen, write_profile
from .processes import wait_until
from .test_runner import digits_onnx, foreign_onnx  # noqa: F401 (a fixture)

FAST = BenchConfig(runs=5, warmup=1, seconds=0)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """(port, folder with its keys and known_hosts, the client key)."""
    if not SSHD.exists():
        if os.environ.get("CI"):
            pytest.fail("openssh-server is not installed: scripts/setup.sh installs it")
        pytest.skip("openssh-server is not installed (scripts/setup.sh installs it)")
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd"))
    yield server.port, server.folder, server.client_key
    server.stop()


@pytest.fixture(scope="module")
def board_python(tmp_path_factory):
    return board_venv(tmp_path_factory.mktemp("board"), ["onnxruntime", "numpy"])


@pytest.fixture
def board(sshd, board_python, tmp_path):
    """A profile for the ssh board, and its workdir (not there yet)."""
    port, folder, _ = sshd
    workdir = tmp_path / "board-work" / "edgeticket"
    return write_profile(tmp_path / "board.toml", port, folder, board_python, workdir), workdir


def digits_target() -> TargetData:
    splits = load_dataset(DataConfig("digits", image_size=28, channels=1))
    return TargetData(splits.name, splits.test, len(splits.class_names))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- profiles (fast: no server)

def test_an_ssh_table_makes_a_profile_remote(tmp_path):
    profile = read_profile(write_profile(tmp_path / "pi.toml", 2222, tmp_path, "~/venv/bin/python", Path("/tmp/x")))
    assert profile.ssh.port == 2222 and profile.ssh.python == "~/venv/bin/python"
    assert profile.where == f"ssh {getpass.getuser()}@127.0.0.1:2222"
    assert get_device("ort-cpu-1t").ssh is None and get_device("ort-cpu-1t").where == "here"


@pytest.mark.parametrize("port, ssh, key", [(0, {}, "ssh.port"), (22, {"hots": "x"}, "ssh.hots"),
                                            (22, {"host": ""}, "ssh.host"),
                                            (22, {"host": "pi@pi5"}, "ssh.host"), (22, {"host": "-oProxyCommand=x"}, "ssh.host"), (22, {"user": 3}, "ssh.user")])
def test_a_bad_ssh_table_names_its_key(tmp_path, port, ssh, key):
    with pytest.raises(EdgeticketError, match=f"key '{key}'"):
        read_profile(write_profile(tmp_path / "pi.toml", port, tmp_path, "python3", Path("/tmp/x"), **ssh))


def test_the_readmes_board_profile_reads(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("# ~/.config/edgeticket/devices/pi5.toml")
    (tmp_path / "pi5.toml").write_text(readme[start:readme.index("```", start)])
    pi5 = read_profile(tmp_path / "pi5.toml")
    assert pi5.ssh == SshTarget("pi5.local", 22, "pi", "~/.ssh/id_ed25519", "~/.ssh/known_hosts", "python3",
                                "~/.cache/edgeticket")


def test_ssh_config_fills_in_what_the_profile_leaves_out(tmp_path):
    """A profile may name a Host of ~/.ssh/config: its HostName, Port, User and IdentityFile apply, and the
    profile's own keys win."""
    config = tmp_path / "config"
    (tmp_path / "pi_key").write_text("")
    config.write_text(f"Host pi5\n  HostName 10.0.0.5\n  Port 2200\n  User pi\n  IdentityFile {tmp_path}/missing\n"
                      f"  IdentityFile {tmp_path}/pi_key\n")
    end = Endpoint.of(SshTarget("pi5"), config)
    assert (end.host, end.port, end.user) == ("10.0.0.5", 2200, "pi")
    assert end.identities == (str(tmp_path / "pi_key"),)  # a missing IdentityFile is skipped, as ssh does
    assert Endpoint.of(SshTarget("pi5", port=22, user="me", identity="/k"), config) == Endpoint("10.0.0.5", 22, "me", ("/k",))
    assert Endpoint.of(SshTarget("other"), config) == Endpoint("other", 22, getpass.getuser(), ())


def test_an_unreachable_board_is_one_line_with_what_to_check(tmp_path, runner):
    (tmp_path / "known_hosts").write_text("")
    profile = write_profile(tmp_path / "pi.toml", free_port(), tmp_path, "python3", tmp_path / "w", identity=None)
    model = foreign_onnx(tmp_path / "m.onnx")
    with pytest.raises(BoardUnreachable, match="cannot reach .*127.0.0.1"):
        bench_artifact(model, read_profile(profile), FAST)
    result = runner.invoke(app, ["bench", str(model), "--device", str(profile)])
    assert result.exit_code == 1 and "cannot reach" in result.output and "Traceback" not in result.output


def test_devices_lists_a_remote_profile_with_its_ssh_table(tmp_path, runner, monkeypatch):
    write_profile(tmp_path / "pi.toml", 2222, tmp_path, "python3", Path("/tmp/x"))
    monkeypatch.setenv("EDGETICKET_DEVICES", str(tmp_path))
    listed = json.loads(runner.invoke(app, ["devices", "--json"]).output)
    pi = next(d for d in listed["devices"] if d["name"] == "pi")
    assert pi["ssh"]["port"] == 2222 and pi["available"]
    assert "ssh" in runner.invoke(app, ["devices"], terminal_width=200).output


# --- against a real sshd (slow)

@pytest.mark.slow
def test_a_remote_bench_equals_the_local_one(board, digits_onnx, runner):
    """Same images, same runtime version: the logits the board sends back are the local runner's, and so are
    accuracy, ECE and NLL computed from them."""
    profile, workdir = board
    target = digits_target()
    local = bench_artifact(digits_onnx, "ort-cpu-1t", FAST, target)
    remote = bench_artifact(digits_onnx, read_profile(profile), FAST, target)
    assert remote.transport == "ssh" and local.transport == "local"
    assert remote.accuracy == local.accuracy and remote.test_images == local.test_images == len(target.test)
    assert remote.ece == pytest.approx(local.ece, abs=1e-9) and remote.nll == pytest.approx(local.nll, abs=1e-9)
    assert remote.runtime_version == local.runtime_version
    assert remote.board["probe"]["machine"] and remote.board["probe"]["cpus"] >= 1
    assert not remote.modules["torch"]
    job = {"model": str(digits_onnx), "runtime": "onnxruntime", "provider": "cpu", "threads": 1, "precision": "fp32",
           "input_shape": [1, 1, 28, 28], "runs": 1, "warmup": 0, "min_seconds": 0}
    images = {"test": target.test.images[:50].numpy()}
    _, here = run_local(job, images, 60)
    _, there, _ = run_on_board(read_profile(profile).ssh, job, images, 60)
    np.testing.assert_allclose(there["test"], here["test"], rtol=0, atol=1e-5)
    # the CLI records it beside the model, with transport and probe, and leaves nothing on the board
    out = runner.invoke(app, ["bench", str(digits_onnx), "--device", str(profile), "--runs", "3", "--seconds", "0",
                              "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(Path(f"{digits_onnx}.board.bench.json").read_text())
    assert record["transport"] == "ssh" and record["accuracy"] == local.accuracy
    assert record["board"]["probe"]["python"] and "sha256" not in record["board"]["probe"]
    assert not workdir.exists()  # it made the folder, and removed it with what it pushed


@pytest.mark.slow
def test_keep_leaves_the_files_and_the_next_bench_does_not_send_them_again(board, digits_onnx):
    profile, workdir = board
    profile = read_profile(profile)
    first = bench_artifact(digits_onnx, profile, BenchConfig(runs=2, warmup=0, seconds=0, keep=True), digits_target())
    assert len(first.board["pushed"]) == 4 and first.board["already_there"] == []  # runner, runtime, model, images
    kept = files_under(workdir)
    assert sorted(Path(p).name for p in kept) == ["onnxruntime.py", "runner.py", "t.onnx", "test.npy"]  # not the job, nor its logits
    again = bench_artifact(digits_onnx, profile, BenchConfig(runs=2, warmup=0, seconds=0), digits_target())
    assert again.board["pushed"] == [] and sorted(again.board["already_there"]) == sorted(first.board["pushed"])
    assert again.accuracy == first.accuracy
    assert files_under(workdir) == kept  # without --keep it removes what it pushed (its job), not what was there


@pytest.mark.slow
def test_a_changed_host_key_is_refused_and_nothing_is_pushed(sshd, board_python, digits_onnx, tmp_path):
    port, folder, _ = sshd
    impostor = keygen(tmp_path / "other")
    line = f"[127.0.0.1]:{port} " + " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    (tmp_path / "known_hosts").write_text(line + "\n")
    profile = write_profile(tmp_path / "b.toml", port, folder, board_python, tmp_path / "work",
                            known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(BoardUnreachable, match="CHANGED") as error:
        bench_artifact(digits_onnx, read_profile(profile), FAST)
    assert "ssh-keygen -R" in error.value.hint and not (tmp_path / "work").exists()
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(BoardUnreachable, match=r"is not in .*refused") as error:
        bench_artifact(digits_onnx, read_profile(profile), FAST)
    assert f"ssh-keyscan -p {port} 127.0.0.1" in error.value.hint and "SHA256:" in error.value.message
    offered = error.value.message.split("SHA256:")[1].split(")")[0]
    own = subprocess.run(["ssh-keygen", "-lf", str(folder / "host_key.pub")], capture_output=True, text=True).stdout
    assert f"SHA256:{offered} " in own  # the fingerprint to compare is the board's real one
    (tmp_path / "known_hosts").unlink()
    with pytest.raises(BoardUnreachable, match="which does not exist: refused"):
        bench_artifact(digits_onnx, read_profile(profile), FAST)
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_a_key_the_board_does_not_know_is_an_auth_failure(sshd, board_python, digits_onnx, tmp_path):
    port, folder, _ = sshd
    profile = write_profile(tmp_path / "b.toml", port, folder, board_python, tmp_path / "work",
                            identity=str(keygen(tmp_path / "stranger")))
    with pytest.raises(BoardUnreachable, match="refused the login as") as error:
        bench_artifact(digits_onnx, read_profile(profile), FAST)
    assert "authorized_keys" in error.value.hint
    public = write_profile(tmp_path / "p.toml", port, folder, board_python, tmp_path / "work",
                           identity=str(folder / "client_key.pub"))
    with pytest.raises(BoardUnreachable, match="cannot use the ssh key") as error:
        bench_artifact(digits_onnx, read_profile(public), FAST)
    assert "not the .pub" in error.value.hint


@pytest.mark.slow
def test_a_board_without_the_runtime_names_the_package_to_install(sshd, digits_onnx, tmp_path):
    port, folder, _ = sshd
    numpy_only = board_venv(tmp_path / "bare", ["numpy"])
    profile = write_profile(tmp_path / "b.toml", port, folder, numpy_only, tmp_path / "work")
    with pytest.raises(EdgeticketError, match="onnxruntime is not installed") as error:
        bench_artifact(digits_onnx, read_profile(profile), FAST)
    assert error.value.hint == f"on the board: {numpy_only} -m pip install onnxruntime"
    assert not (tmp_path / "work").exists()
    bare = board_venv(tmp_path / "empty", [])
    with pytest.raises(EdgeticketError, match="numpy and onnxruntime are not installed") as error:
        bench_artifact(digits_onnx, read_profile(write_profile(tmp_path / "e.toml", port, folder, bare, tmp_path / "w")),
                       FAST)
    assert error.value.hint.endswith("-m pip install numpy onnxruntime")  # both at once, not one per try


@pytest.mark.slow
def test_a_missing_or_old_python_a_crashing_runner_and_a_full_disk_each_say_so(sshd, board_python, digits_onnx, tmp_path,
                                                                        monkeypatch):
    port, folder, _ = sshd
    work = tmp_path / "work"
    missing = write_profile(tmp_path / "m.toml", port, folder, "/nonexistent/python3", work)
    with pytest.raises(EdgeticketError, match="no Python at '/nonexistent/python3'"):
        bench_artifact(digits_onnx, read_profile(missing), FAST)
    old = tmp_path / "old-python"  # says it is 3.7, as an old board's python3 would
    old.write_text(f"#!/bin/sh\nexec {board_python} -I -c 'import sys; sys.version_info = (3, 7, 3); "
                   'exec(sys.stdin.read())\' "$3"\n')
    old.chmod(0o755)
    with pytest.raises(EdgeticketError, match="too old: the runner needs 3.8 or newer"):
        bench_artifact(digits_onnx, read_profile(write_profile(tmp_path / "o.toml", port, folder, old, work)), FAST)
    crashing = tmp_path / "crashing-python"  # probes like Python, then dies as a segfaulting runtime would
    crashing.write_text(f'#!/bin/sh\n[ "$2" = "-" ] && exec {board_python} "$@"\n'
                        'echo "Fatal Python error: Segmentation fault" >&2\nexit 139\n')
    crashing.chmod(0o755)
    profile = read_profile(write_profile(tmp_path / "c.toml", port, folder, crashing, work))
    with pytest.raises(EdgeticketError, match="Segmentation fault"):
        bench_artifact(digits_onnx, profile, FAST)
    assert not work.exists()  # cleaned up after a failure too
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # a workdir others can write: a file there could be swapped before it runs
    with pytest.raises(EdgeticketError, match="writable by other users"):
        bench_artifact(digits_onnx, profile, FAST)
    work.chmod(0o700)
    monkeypatch.setattr(ssh_module, "SPARE_BYTES", 2 ** 62)  # more than any disk has free
    with pytest.raises(EdgeticketError, match="out of disk"):
        bench_artifact(digits_onnx, profile, FAST)


@pytest.mark.slow
def test_all_devices_has_a_row_for_each_board_reachable_or_not(sshd, board, digits_ticket, tmp_path, monkeypatch):
    profile, _ = board
    (tmp_path / "known_hosts").write_text("")
    down = write_profile(tmp_path / "down.toml", free_port(), sshd[1], "python3", tmp_path / "w",
                         known_hosts=str(tmp_path / "known_hosts"))
    monkeypatch.setattr("edgeticket.bench.all_devices.list_devices", lambda: [read_profile(profile), read_profile(down)])
    ticket = tmp_path / "t.ticket"
    digits_ticket.save(ticket)
    rows = {row.device: row for row in bench_all_devices(ticket, "digits", tmp_path, FAST)}
    assert rows["board"].status == "ok" and rows["board"].result.transport == "ssh"
    assert rows["board"].reason.startswith(f"ssh {getpass.getuser()}@127.0.0.1:{sshd[0]}")
    assert rows["down"].status == "unreachable" and "cannot reach" in rows["down"].reason


def board_runners(workdir: Path) -> list[int]:
    """Processes running runner.py from `workdir` (the loopback board is this machine)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        arguments = command.split(b"\0")
        if any(a.startswith(str(workdir).encode()) and a.endswith(b"/runner.py") for a in arguments):
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_the_boards_runner_stops_when_the_bench_is_killed(board, digits_onnx):
    """kill -9 of the host's bench closes the connection; the runner on the board must not run on."""
    profile, workdir = board
    code = ("from edgeticket.bench.run import BenchConfig, bench_model\n"
            f"bench_model({str(digits_onnx)!r}, {str(profile)!r}, config=BenchConfig(runs=1, warmup=0, seconds=600))")
    bench = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert wait_until(lambda: board_runners(workdir), 120, 0.2), "the runner never started on the board"
    finally:
        bench.kill()
        bench.wait()
    assert wait_until(lambda: not board_runners(workdir), 15)


def test_a_latency_table_is_measured_on_the_board(board, monkeypatch, tmp_path):
    """The table's blocks and networks go to the board in one push, are timed there by its runner, and leave
    nothing behind; the table file is the board's, not this machine's."""
    import torch

    from edgeticket.bench.latency import ConvBlock, LatencyTable, measure
    profile, workdir = board
    profile = read_profile(profile)
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    blocks = [ConvBlock(8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 8, 8),
              ConvBlock(8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 8, 8, 8)]
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()).eval()
    block_ms, network_ms = measure(profile, blocks, [(network, torch.zeros(1, 1, 8, 8))])
    assert len(block_ms) == 2 and len(network_ms) == 1 and all(ms > 0 for ms in block_ms + network_ms)
    assert files_under(workdir) == []
    table = LatencyTable.for_device(profile, "small_resnet", (1, 28, 28))
    assert table.key.machine.startswith("ssh ") and table.key.device == profile.name


@pytest.mark.slow
def test_a_budget_draw_measures_and_checks_on_the_board(board, monkeypatch, tmp_path):
    """`draw --max-latency-ms T --device BOARD`: the table is built there and the ticket benched there."""
    import torch

    import edgeticket as et
    from edgeticket.models.archs import get_model
    from edgeticket.ticket import Ticket
    profile, workdir = board
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    source = Ticket("small_resnet", {"num_classes": 10, "in_channels": 1},
                    get_model("small_resnet", num_classes=10, in_channels=1).state_dict(), (1, 28, 28), (0.5,),
                    (0.5,), [str(i) for i in range(10)])
    ticket = et.draw(source, max_latency_ms=1000.0, device=str(profile), round_to=32)
    latency = ticket.provenance.stages[-1].details["latency"]
    assert ticket.provenance.latency_device == "board" and latency["table"]["measured_blocks"] > 0
    assert "board" in Path(latency["table"]["file"]).name and files_under(workdir) == []
