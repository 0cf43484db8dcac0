"""Fault injection: SIGKILL and SIGTERM at seeded random moments of six commands (export to onnx and to ncnn,
draw, finetune, sweep, bench), 24 runs: 6 commands x 2 signals x 2 moments.

Each run starts in a folder that already holds an old output at the output path and an unrelated ticket beside
it. After the signal:
- the exit status tells the truth: 0 only with the new, complete output and the command's success line; 1 with
  'interrupted after PATH was written' only once PATH is in place; any other status ('error: interrupted', or
  -9, -15 from the signal itself) with the old output untouched (kill -9 may also land after the rename: then
  the output is the new, complete one, never a torn one);
- every pre-existing file but the output is byte-identical.
Then the same command runs again, uninterrupted, and:
- exits 0 with the result of an uninterrupted reference run of the command (module-wide, one per command);
- leaves the same files as that reference run: no staging file or folder (.NAME.PID.edgeticket-*), no resume
  state, nothing in $TMPDIR (the killed run's work folder, $TMPDIR/edgeticket-UID/PID, is swept by this next
  command);
- and no process started by either run outlives it (the bench runner, pnnx).

The moments are fractions of the reference run's duration drawn by random.Random(SEED) (one in each half, per
command and signal), so a failure names its run and reproduces: the test id shows command, signal and fraction.

The commands are started by a fork server (SERVER below): a Python process that imported edgeticket (and torch,
scikit-learn) once, and forks a child per command that runs `edgeticket ARGS` as `python -m edgeticket` does
(its own TMPDIR, working folder, stdout and stderr; exit status and signals are the child's own). A fresh
interpreter spends ~4 s importing before any work: 54 of them did not fit this file's time, and every moment
would mostly have hit the imports. A signal during the imports (before edgeticket's handler: exit -15) is
test_faults.py's.
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.test_faults import leftovers

SEED = 20240611
SIGNALS = (signal.SIGKILL, signal.SIGTERM)

SERVER = r"""
import json, os, sys, tempfile
# what the commands import, paid once (only modules that start no thread but OpenBLAS's, which forks safely;
# onnxruntime's import starts a thread pool that a forked child joins at exit, forever)
import edgeticket.api, edgeticket.cli, edgeticket.metrics, edgeticket.tickets, matplotlib.pyplot, scipy.stats
import onnxscript.function_libs.torch_lib.ops, sklearn.datasets, torch.export, torch.onnx._internal.exporter._core
while True:
    request = json.loads(sys.stdin.readline() or "null")
    if request is None:
        sys.exit(0)
    if "wait" in request:
        print(os.waitstatus_to_exitcode(os.waitpid(request["wait"], 0)[1]), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        break
    print(pid, flush=True)
os.chdir(request["cwd"])
os.environ["TMPDIR"] = request["tmpdir"]
tempfile.tempdir = None
for fd, name in enumerate((os.devnull, request["log"] + ".stdout", request["log"] + ".stderr")):
    os.dup2(os.open(name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644), fd)
sys.argv = ["edgeticket", *request["args"]]
edgeticket.cli.run()
"""


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float


class Launcher:
    """The client of SERVER: run one edgeticket command at a time, optionally signalled `delay` s after its start."""

    def __init__(self):
        self.server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, cwd=Path(__file__).resolve().parents[1])

    def ask(self, request: dict) -> int:
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        reply = self.server.stdout.readline()
        assert reply, f"the fork server died (exit {self.server.poll()})"
        return int(reply)

    def run(self, args: list[str], folder: Path, signum: int | None = None, delay: float = 0.0) -> Finished:
        """`edgeticket ARGS` in `folder` with TMPDIR=folder/../tmp; its output in folder/../log.std*."""
        log = folder.parent / "log"
        pid = self.ask({"args": args, "cwd": str(folder), "tmpdir": str(folder.parent / "tmp"), "log": str(log)})
        began = time.perf_counter()  # forked: the first request also waits for the server's imports
        try:
            if signum is not None:
                time.sleep(max(0.0, began + delay - time.perf_counter()))
                os.kill(pid, signum)  # a child that has already exited is a zombie until waited for: no error
        finally:
            code = self.ask({"wait": pid})
        return Finished(code, Path(f"{log}.stdout").read_text(), Path(f"{log}.stderr").read_text(),
                        time.perf_counter() - began)

    def close(self):
        self.server.stdin.close()
        self.server.wait(timeout=30)


# --- the commands: arguments, output, success line, and the result to compare

@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    output: str  # relative to the run folder
    success: str  # in stdout when the command says it is done


def commands(ticket: Path) -> dict[str, Command]:
    """Tiny work: the small ResNet (1 channel, 28x28), 64 digits for an epoch, 3 timed runs."""
    listed = [
        Command("export-onnx", ("export", str(ticket), "-o", "x.onnx"), "x.onnx", "exported onnx fp32 -> x.onnx"),
        Command("export-ncnn", ("export", str(ticket), "-o", "x.ncnn"), "x.ncnn", "exported ncnn fp32 -> x.ncnn"),
        Command("draw", ("draw", str(ticket), "--method", "omp", "--sparsity", "0.5", "-o", "t.ticket"), "t.ticket",
                "omp channel ticket -> t.ticket"),
        Command("finetune", ("finetune", str(ticket), "--data", "digits", "--subset", "64", "--epochs", "1", "-o",
                             "t.ticket"), "t.ticket", "whole finetune -> t.ticket"),
        Command("sweep", ("sweep", "s.toml"), "out/report.json", "wrote "),
        Command("bench", ("bench", "x.onnx", "--device", "ort-cpu-1t", "--runs", "3", "--warmup", "0", "--seconds",
                          "0", "--images", "16"), "x.onnx.ort-cpu-1t.bench.json", "x.onnx on ort-cpu-1t"),
    ]
    return {command.name: command for command in listed}


NAMES = ("export-onnx", "export-ncnn", "draw", "finetune", "sweep", "bench")

SWEEP = """out = "{folder}/out"
cache = "{folder}/cache"
sources = {{}}
source_files = {{ natural = "{ticket}" }}
source_data = "digits"
methods = ["omp"]
sparsities = [0.5]
target_images = 64
finetune_epochs = 1
attack_steps = 1
adv_images = 1
deploy = false
"""


def prepare(command: Command, folder: Path, ticket: Path, onnx: Path | None) -> None:
    """The run folder before the command: its inputs, an old output at the output path, an unrelated ticket."""
    output = folder / command.output
    output.parent.mkdir(parents=True)
    if command.name == "sweep":
        (folder / "s.toml").write_text(SWEEP.format(folder=folder, ticket=ticket))
    if command.name == "bench":
        shutil.copy(onnx, folder / "x.onnx")
    if command.name == "export-ncnn":
        output.mkdir()
        (output / "model.ncnn.param").write_bytes(b"old param")
    else:
        output.write_bytes(b'{"old": "output"}\n')
    shutil.copy(ticket, output.parent / "other.ticket")


def result(command: Command, folder: Path) -> object:
    """What must be the same as the reference run's: the output's checked content, not its bytes (a ticket's zip
    and a bench's timings differ from run to run)."""
    from edgeticket.export import artifact_metadata
    from edgeticket.ticket import Ticket, tensor_digest
    output = folder / command.output
    if command.name.startswith("export"):  # edgeticket's metadata goes in only after the parity check passed
        return artifact_metadata(output), sorted(p.name for p in output.iterdir()) if output.is_dir() else None
    if command.name in ("draw", "finetune"):
        ticket = Ticket.load(output)
        digest = hashlib.sha256()
        tensor_digest(digest, (ticket.state_dict, ticket.masks))
        return digest.hexdigest(), ticket.provenance.to_dict(), ticket.class_names
    record = json.loads(output.read_text())
    if command.name == "sweep":  # each row also names its model by its path in this run's folder
        return [{k: v for k, v in row.items() if k != "model"} for row in record["rows"]], record["failed"]
    return record["model"], record["device"], record["ticket_sha256"], record["provenance"], record["latency"]["runs"]


def tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> sha256 of its bytes ('' for a folder)."""
    return {str(p.relative_to(folder)): "" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def under(path: str, output: str) -> bool:
    return path == output or path.startswith(output + "/")


def survivors(root: Path, timeout: float = 5.0) -> list[str]:
    """Processes (any of this user's, through /proc) whose command line or environment names `root`, after up to
    `timeout` s for them to end: what a run left running (a runner, a converter)."""
    deadline = time.time() + timeout
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and any(str(root).encode() in (entry / part).read_bytes()
                                                for part in ("cmdline", "environ")):
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes().decode().replace(chr(0), ' ')}")
            except OSError:  # gone, or not ours
                continue
        if not found or time.time() > deadline:
            return found
        time.sleep(0.1)


# --- fixtures: one fork server, shared inputs, one reference run per command

@pytest.fixture(scope="module")
def launcher():
    launcher = Launcher()
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """The input of export, draw, finetune and the sweep: the small ResNet (seeded) as a ticket."""
    from edgeticket.models import get_model
    from edgeticket.models.checkpoints import load_checkpoint
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    torch.save(get_model("small_resnet", num_classes=10, in_channels=1).state_dict(), folder / "small.pt")
    load_checkpoint(folder / "small.pt", "small_resnet").save(folder / "in.ticket")
    return folder / "in.ticket"


@dataclass
class Reference:
    seconds: float
    files: set[str]
    result: object
    folder: Path


@pytest.fixture(scope="module")
def reference(launcher, ticket, tmp_path_factory):
    """reference(name): the command's uninterrupted run, made once (bench's input is export-onnx's output)."""
    made: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in made:
            command = commands(ticket)[name]
            folder = tmp_path_factory.mktemp(f"reference-{name}") / "run"
            onnx = get("export-onnx").folder / "x.onnx" if name == "bench" else None
            prepare(command, folder, ticket, onnx)
            run = launcher.run(list(command.args), folder)
            assert run.code == 0 and command.success in run.stdout, run.stderr
            made[name] = Reference(run.seconds, set(tree(folder)), result(command, folder), folder)
        return made[name]
    return get


def runs() -> list:
    """The 24 runs: (command, signal, fraction of the reference's duration), one fraction in each half."""
    rng = random.Random(SEED)
    return [pytest.param(name, signum, round(rng.uniform(half / 2, (half + 1) / 2), 3),
                         id=f"{name}-{signum.name}-{half}")
            for name in NAMES for signum in SIGNALS for half in (0, 1)]


# --- the test

WRITTEN = re.compile(r"error: interrupted after (?:(?P<one>\S+) was|\d+ outputs were \(the last: (?P<last>\S+)\)) written")


def check_truthful(command: Command, signum: int, run, old: bool, new: bool, folder: Path, label: str) -> None:
    """The exit status, stdout and stderr against the output the killed run left (old, or new and complete)."""
    assert old or new, f"{label}: the output is neither the old one nor a complete new one"
    if command.success in run.stdout:  # the signal may still come after it: exit 1 (said on stderr), or -9
        assert new, f"{label}: success printed, and the output is not the new one"
    if run.code == 0:
        assert command.success in run.stdout and "error" not in run.stderr, \
            f"{label}: exit 0 without the success line"
        return
    if signum == signal.SIGKILL:
        assert run.code == -signal.SIGKILL, label
        return
    written = WRITTEN.search(run.stderr)
    if written:
        path = folder / (written["one"] or written["last"])  # relative paths are the command's, from its folder
        assert run.code == 1 and path.exists(), f"{label}: says {path} was written, and it is not there"
        if path == folder / command.output:
            assert new, f"{label}: says the output was written, and it is not the new one"
        return
    # stopped before any output was in place: by edgeticket's handler (exit 1; or -2 when the KeyboardInterrupt
    # came out of a library's import), or by the signal itself before the handler was installed (-15)
    assert (run.code in (1, -signal.SIGINT) and "error: interrupted (" in run.stderr) \
        or run.code == -signal.SIGTERM, label
    assert old, f"{label}: stopped before the output was written, and the old one is gone"


@pytest.mark.slow
@pytest.mark.parametrize("name, signum, fraction", runs())
def test_a_signal_leaves_the_old_output_or_the_new_one_and_a_rerun_finishes(
        launcher, reference, ticket, tmp_path, name, signum, fraction):
    if name == "export-ncnn":
        pytest.importorskip("pnnx")
    command, expected = commands(ticket)[name], reference(name)
    folder = tmp_path / "run"
    prepare(command, folder, ticket, reference("export-onnx").folder / "x.onnx" if name == "bench" else None)
    before = tree(folder)
    delay = fraction * expected.seconds
    killed = launcher.run(list(command.args), folder, signum, delay)
    label = (f"{name}: {signum.name} at {delay:.2f} s ({fraction} of the reference's {expected.seconds:.2f} s), "
             f"exit {killed.code}, stderr {killed.stderr.strip()[-300:]!r}")
    print(label)

    after = tree(folder)
    assert {p: d for p, d in after.items() if p in before and not under(p, command.output)} == \
        {p: d for p, d in before.items() if not under(p, command.output)}, f"{label}: a pre-existing file changed"
    old = {p: d for p, d in after.items() if under(p, command.output)} == \
        {p: d for p, d in before.items() if under(p, command.output)}
    new = not old and result(command, folder) == expected.result
    check_truthful(command, signum, killed, old, new, folder, label)

    again = launcher.run(list(command.args), folder)
    assert again.code == 0 and command.success in again.stdout, f"{label}; the re-run: {again.stderr[-500:]}"
    assert result(command, folder) == expected.result, f"{label}: the re-run's result differs from the reference's"
    final = tree(folder)
    assert {p: d for p, d in final.items() if p in before and not under(p, command.output)} == \
        {p: d for p, d in before.items() if not under(p, command.output)}, f"{label}: a pre-existing file changed"
    assert set(final) == expected.files, \
        f"{label}: left {sorted(set(final) - expected.files)}, lacks {sorted(expected.files - set(final))}"
    assert leftovers(tmp_path / "tmp") == [], f"{label}: left in $TMPDIR"
    assert survivors(tmp_path) == [], f"{label}: still running"
