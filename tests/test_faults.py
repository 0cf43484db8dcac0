"""Faults around writing: killed commands (their temp folders are swept), signals (an output is replaced whole or
not at all, and the command says which), read-only folders and full disks (one line naming the output)."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edgeticket import fileio, signals
from edgeticket.fileio import command_temp, sweep_temp, temp_root, write_text
from edgeticket.models.checkpoints import load_checkpoint


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def edgeticket(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "edgeticket", *map(str, args)], capture_output=True, text=True,
                          env=env, **kwargs)


@pytest.fixture
def ticket_file(small_checkpoint, tmp_path):
    load_checkpoint(small_checkpoint, "small_resnet").save(tmp_path / "in.ticket")
    return tmp_path / "in.ticket"


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """tempfile's folder (so $TMPDIR/edgeticket-UID) inside tmp_path, and no work folder yet: an earlier test in
    this process (an export through the API) may have made one under the system's temp folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    fileio.release_process_temp()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    fileio.release_process_temp()


@pytest.fixture
def handlers():
    """Put SIGINT/SIGTERM back as they were after a test that installs edgeticket's handler."""
    saved = {signum: signal.getsignal(signum) for signum in signals.SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    signals._state.installed = signals._state.finished = False
    signals._state.received, signals._state.committed = None, []


def leftovers(folder: Path) -> list[str]:
    """Everything under `folder` but edgeticket's (empty) temp root."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if not (p.is_dir() and p.name.startswith("edgeticket-") and not any(p.iterdir())))


# --- temp folders: one root, a folder per process, swept when the process is gone

def test_dead_processes_work_folders_are_swept_and_live_ones_kept(own_tmp):
    root = temp_root()
    assert root == own_tmp / f"edgeticket-{os.getuid()}"
    root.mkdir(mode=0o700)
    dead = root / str(dead_pid())  # what pnnx left when its export was killed
    dead.mkdir()
    (dead / "tmpabc").mkdir()
    (dead / "tmpabc" / "model.pt").write_bytes(b"x" * 1000)
    live_process = subprocess.Popen(["sleep", "30"])
    try:
        live = root / str(live_process.pid)
        live.mkdir()
        (live / "model.pnnx.onnx").write_bytes(b"y")
        elsewhere = root / str(dead_pid())  # a live process in another pid namespace: its lock is held
        elsewhere.mkdir()
        lock = os.open(elsewhere / ".lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with command_temp() as mine:
                assert mine == root / str(os.getpid()) and tempfile.gettempdir() == str(mine)
                assert os.environ["TMPDIR"] == str(mine)
                with tempfile.TemporaryDirectory() as work:  # any library's temp files land in it
                    assert Path(work).parent == mine
                assert not dead.exists() and (live / "model.pnnx.onnx").exists() and elsewhere.exists()
            assert not mine.exists() and tempfile.gettempdir() == str(own_tmp)
        finally:
            os.close(lock)
        sweep_temp()  # its lock released: that process is gone
        assert not elsewhere.exists() and live.exists()
    finally:
        live_process.kill()
        live_process.wait()


def test_a_foreign_temp_root_is_refused(own_tmp):
    root = temp_root()
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)  # anyone could plant files or links in it
    from edgeticket.errors import EdgeticketError
    with pytest.raises(EdgeticketError, match="not a private folder"):
        with command_temp():
            pass


def test_the_bench_runner_works_in_the_process_folder(own_tmp, monkeypatch):
    """The runner's job folder was /tmp/tmpXXXXXXXX, left behind by kill -9 (pnnx's too: the ncnn test below)."""
    import numpy as np

    from edgeticket.bench import transport
    seen = {}

    def runner(command, **kwargs):
        seen["job"] = Path(command[-1])
        return subprocess.CompletedProcess(command, 0, '{"logits": {}}', "")
    monkeypatch.setattr(transport.subprocess, "run", runner)
    monkeypatch.setattr(transport, "runtime_file", lambda job: Path("ort.py"))
    transport.run_local({"model": "m.onnx", "runtime": "onnxruntime"}, {"test": np.zeros((1, 1, 2, 2), np.uint8)}, 5)
    assert seen["job"].parent.parent == temp_root() / str(os.getpid()) and not seen["job"].exists()
    fileio.release_process_temp()


@pytest.mark.slow
@pytest.mark.parametrize("output", ["x.ncnn", "x.onnx"])
def test_kill_9_of_an_export_leaves_nothing_after_the_next_command(ticket_file, tmp_path, output, launcher):
    """Both commands are forked from the fork server (tests/forkserver.py), with TMPDIR=tmp_path/tmp."""
    pytest.importorskip("pnnx") if output.endswith(".ncnn") else None
    folder, tmp = tmp_path / "run", tmp_path / "tmp"  # both made by the launcher
    target = folder / output
    staged = lambda: [p for p in folder.iterdir() if p.name.startswith(f".{output}.")]
    # ncnn: pnnx's files in the work folder; onnx writes none there that lasts, so its work folder (and lock) will do
    work = (lambda: [p for p in tmp.rglob("*") if p.is_file() and p.name != ".lock"]) if output.endswith(".ncnn") \
        else (lambda: list(tmp.rglob("*")))
    # ncnn: pnnx's intermediates (model.pt, model.pnnx.onnx) are the ones that were left
    begun = (lambda: any(p.name.startswith("model") for p in work())) if output.endswith(".ncnn") else work
    killed = launcher.run(["export", str(ticket_file), "-o", str(target)], folder, signal.SIGKILL,
                          after=lambda: staged() and begun(), poll=0.01)
    assert killed.code == -signal.SIGKILL, "the export ended before it was killed"
    assert staged() and work(), "kill -9 came after the export had cleaned up"
    assert launcher.run(["models"], folder).code == 0  # the next command sweeps the temp root
    assert leftovers(tmp) == []
    write_text("x", folder / "next.txt")  # the next write into the folder sweeps its staging
    assert not staged() and not target.exists()


# --- signals: an output is replaced whole or not at all, and the command says which

def test_a_signal_during_the_rename_waits_for_it_and_is_reported_after(tmp_path, monkeypatch, handlers):
    target = tmp_path / "out.txt"
    target.write_text("old")
    signals.install()
    real = signals.committed

    def arrives_in_the_rename(path):  # SIGTERM lands between os.replace and the end of the critical section
        real(path)
        signals.handle(signal.SIGTERM, None)
    monkeypatch.setattr(signals, "committed", arrives_in_the_rename)
    with pytest.raises(KeyboardInterrupt):
        write_text("new", target)
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    message, hint = signals.interrupted()
    assert message == f"interrupted after {target} was written" and "in place" in hint


def test_a_signal_a_library_swallowed_still_stops_the_rename(tmp_path, handlers):
    target = tmp_path / "out.txt"
    target.write_text("old")
    signals.install()
    try:  # a KeyboardInterrupt raised in a __del__ or a C callback is printed and dropped
        signals.handle(signal.SIGTERM, None)
    except KeyboardInterrupt:
        pass
    with pytest.raises(KeyboardInterrupt):
        write_text("new", target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert signals.interrupted()[0] == "interrupted"


def test_a_signal_after_the_command_returned_is_absorbed_once(handlers):
    signals.install()
    signals.finish()
    signals.handle(signal.SIGTERM, None)  # no KeyboardInterrupt: the work is done, the process is exiting
    assert signal.getsignal(signal.SIGTERM) is not signals.handle  # the next one acts as before


def test_an_output_folder_a_killed_writer_retired_comes_back(tmp_path):
    """kill -9 between atomic_dir's two renames (old folder out, new one in) left no x.ncnn, and the next write
    into the folder swept the retired old one away (found by tests/test_fault_injection.py's author)."""
    retired = tmp_path / f".x.ncnn.{dead_pid()}.{fileio.MARK}{fileio.RETIRED}"
    retired.mkdir()
    (retired / "model.ncnn.param").write_text("old")
    replaced = tmp_path / f".y.ncnn.{dead_pid()}.{fileio.MARK}{fileio.RETIRED}"  # the new y.ncnn was renamed in
    replaced.mkdir()
    (tmp_path / "y.ncnn").mkdir()
    write_text("x", tmp_path / "next.txt")
    assert (tmp_path / "x.ncnn" / "model.ncnn.param").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["next.txt", "x.ncnn", "y.ncnn"]


def test_a_file_written_inside_a_staging_folder_is_not_reported_as_an_output(tmp_path, handlers):
    """A SIGTERM during an ncnn export named the staging folder's metadata.json as 'written ... in place'."""
    from edgeticket.fileio import atomic_dir
    signals.install()
    with atomic_dir(tmp_path / "x.ncnn") as staging:
        write_text("{}", staging / "metadata.json")
        assert signals._state.committed == []
    assert signals._state.committed == [tmp_path / "x.ncnn"]


def test_a_pte_and_its_json_are_committed_together(tmp_path, monkeypatch):
    """A .pte's metadata goes beside it: a signal between the two renames must not pair a new JSON with the old
    model, so both are in one critical section."""
    from edgeticket.export import export_checked
    from edgeticket.runtimes import get_runtime
    order = []
    monkeypatch.setattr(signals, "committed", lambda path: order.append((Path(path).name, signals._state.depth)))
    executorch = get_runtime("executorch")
    monkeypatch.setattr(executorch.plugin, "write", lambda module, example, path: Path(path).write_bytes(b"pte"))
    monkeypatch.setattr(executorch.plugin, "open_model", lambda *args: None)
    import edgeticket.export as export
    monkeypatch.setattr(export, "check_fp32", lambda fmt, predict, ticket: (0.0, 1.0))
    monkeypatch.setattr(export, "metadata", lambda ticket, sha: {"k": "v"})

    class Ticket:
        deployable = example_input = staticmethod(lambda: None)
    export_checked(executorch, Ticket(), tmp_path / "m.pte", None)
    assert order == [("m.pte.json", 2), ("m.pte", 2)]  # both inside the outer critical section
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pte", "m.pte.json"]


@pytest.mark.slow
def test_sigterm_at_any_moment_of_an_export_replaces_the_output_whole_or_not_at_all(ticket_file, tmp_path, launcher):
    """For each moment: (exit != 0, 'interrupted', the old file untouched), or (exit 0, the new checked file), or
    (exit 1, 'interrupted after ... was written', the new checked file). Never exit 143 after the rename, and
    never success printed for a signal that came before it. The moment during the imports needs a fresh
    interpreter; the others are forked from the fork server (the imports done)."""
    from edgeticket.export import artifact_metadata
    folder = tmp_path / "run"
    folder.mkdir()  # the old output goes in before the first command
    target = folder / "x.onnx"
    old = b"old onnx"
    staged = lambda: [p for p in folder.iterdir() if p.name.startswith(".x.onnx.")]
    # (what to wait for, then how long): the imports (before the handler), the export under way, the rename
    moments = [("start", 1.0), ("staged", 0.0), ("staged", 0.3), ("renamed", 0.0), ("renamed", 0.002),
               ("renamed", 0.01), ("renamed", 0.05)]
    outcomes = []
    for event, delay in moments:
        target.write_bytes(old)
        inode = target.stat().st_ino
        args = ["export", str(ticket_file), "-o", str(target)]
        if event == "start":
            process = subprocess.Popen([sys.executable, "-m", "edgeticket", *args], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=120)
            code = process.returncode
        else:
            happened = {"staged": lambda: bool(staged()), "renamed": lambda: target.stat().st_ino != inode}[event]
            run = launcher.run(args, folder, signal.SIGTERM, delay, after=happened)
            code, stdout, stderr = run.code, run.stdout, run.stderr
        new = target.read_bytes() != old
        outcomes.append((event, delay, code, new))
        if new:
            assert artifact_metadata(target)["edgeticket.ticket_sha256"], "the new file is edgeticket's checked one"
        if code == 0:
            assert new and "exported onnx" in stdout and not stderr
        elif new:
            assert code == 1 and f"interrupted after {target} was written" in stderr, (event, stderr)
        else:
            # killed before the handler was installed (-15), or interrupted; an interrupt inside torch's import can
            # also end as Python's own KeyboardInterrupt exit (-2) after the error line
            assert code == -signal.SIGTERM or (code in (1, -signal.SIGINT) and "error: interrupted (" in stderr), \
                (event, stderr)
            assert "exported" not in stdout
        assert not staged(), f"temp files left at {event} + {delay}"
    by_moment = {(event, delay): (code, new) for event, delay, code, new in outcomes}
    assert by_moment[("staged", 0.0)] == (1, False), outcomes  # the export was under way: stopped, old file kept


# --- read-only folders and full disks, for real: a private mount namespace (root, or unprivileged user namespaces)

def in_private_mount(script: str, folder: Path, mount: str) -> subprocess.CompletedProcess:
    """`script` (sh) run with `folder` mounted as `mount` ('tmpfs:SIZE' or 'ro') in a mount namespace of its own."""
    setup = (f"mount -t tmpfs -o size={mount.split(':')[1]} tmpfs {folder}" if mount.startswith("tmpfs")
             else f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}")
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{setup} || exit 99; {script}"], capture_output=True,
                          text=True, timeout=300)


def new_folder(path):
    path.mkdir()
    return path


@pytest.fixture
def mountable(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    probe = tmp_path / "probe"
    probe.mkdir()
    if in_private_mount("true", probe, "tmpfs:64k").returncode != 0:
        pytest.skip("cannot mount in a private mount namespace here (needs root or user namespaces)")


@pytest.mark.slow
def test_a_read_only_output_folder_is_refused_before_the_work(ticket_file, tmp_path, mountable):
    folder, cli = new_folder(tmp_path / "ro"), f"{sys.executable} -m edgeticket"
    result = in_private_mount(f"{cli} export {ticket_file} -o {folder}/x.onnx; echo rc=$?; "
                              f"{cli} pretrain --arch small_resnet --data digits --epochs 1 -o {folder}/sub/p.ticket; "
                              f"echo rc=$?", folder, "ro")
    lines = result.stderr.strip().splitlines()
    assert result.stdout.split() == ["rc=1", "rc=1"], result.stderr
    assert lines[0].startswith(f"error: cannot write {folder}/x.onnx: {folder} is on a read-only file system")
    assert lines[1].startswith(f"error: cannot write {folder}/sub/p.ticket: {folder} is on a read-only file system")
    assert "Errno" not in result.stderr and ".tmp" not in result.stderr


@pytest.mark.slow
def test_a_full_disk_is_named_and_leaves_nothing(ticket_file, tmp_path, mountable):
    folder, cli = new_folder(tmp_path / "small"), f"{sys.executable} -m edgeticket"
    result = in_private_mount(f"{cli} draw {ticket_file} --sparsity 0.5 -o {folder}/t.ticket; echo rc=$?; "
                              f"{cli} export {ticket_file} -o {folder}/x.onnx; echo rc=$?; ls -A {folder}",
                              folder, "tmpfs:256k")
    lines = result.stderr.strip().splitlines()
    assert result.stdout.split() == ["rc=1", "rc=1"], result.stderr  # and `ls -A` found nothing
    for line, name in zip(lines, ["t.ticket", "x.onnx"]):
        assert line.startswith(f"error: no space left on tmpfs ({folder}) writing {folder}/{name}"), line
