"""Fault injection: SIGKILL and SIGTERM at seeded random moments of six commands (export to onnx and to ncnn,
draw, finetune, sweep, bench), 24 runs: 6 commands x 2 signals x 2 moments.

Each run starts in a folder that already holds an old output at the output path and an unrelated ticket beside
it. After the signal:
- the exit status tells the truth: 0 only with the new, complete output and the command's success line; 1 with
  'interrupted after PATH was written' only when PATH is there; any other status ('error: interrupted', or -9,
  -15 from the signal itself) with the old output untouched (kill -9 may also land after the rename: then the
  output is the new, complete one, never a torn one);
- every pre-existing file but the output is byte-identical.
Then the same command runs again, uninterrupted, and:
- exits 0 with the result of an uninterrupted reference run of the command (one per command, for the module);
- leaves the files that reference run left: no staging file or folder (.NAME.PID.edgeticket-*), no resume state,
  nothing in $TMPDIR (the killed run's work folder, $TMPDIR/edgeticket-UID/PID, is swept by this next command);
- and no process that either run started outlives it (the bench runner, pnnx).

The moments are fractions of the reference run's duration, drawn by random.Random(SEED), one in each half per
command and signal: the test id names the command, the signal and the fraction, and the run reproduces.

The commands are started by tests/forkserver.py's fork server (imports paid once): 54 fresh interpreters would
have spent over 3.5 minutes importing, and a moment drawn from a run's duration would mostly have hit the imports.
"""

import hashlib
import json
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.forkserver import Finished
from tests.test_faults import leftovers

SEED = 20240611

# --- the commands: tiny work (the small ResNet, 1 channel, 28x28; 64 digits for one epoch; 3 timed runs)

@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]  # {ticket}: the input ticket
    output: str  # relative to the run folder, which is the command's working folder
    success: str  # in stdout when the command says it is done

    def argv(self, ticket: Path) -> list[str]:
        return [arg.format(ticket=ticket) for arg in self.args]


COMMANDS = {command.name: command for command in [
    Command("export-onnx", ("export", "{ticket}", "-o", "x.onnx"), "x.onnx", "exported onnx fp32 -> x.onnx"),
    Command("export-ncnn", ("export", "{ticket}", "-o", "x.ncnn"), "x.ncnn", "exported ncnn fp32 -> x.ncnn"),
    Command("draw", ("draw", "{ticket}", "--method", "omp", "--sparsity", "0.5", "-o", "t.ticket"), "t.ticket",
            "omp channel ticket -> t.ticket"),
    Command("finetune", ("finetune", "{ticket}", "--data", "digits", "--subset", "64", "--epochs", "1",
                         "-o", "t.ticket"), "t.ticket", "whole finetune -> t.ticket"),
    Command("sweep", ("sweep", "s.toml"), "out/report.json", "wrote "),
    Command("bench", ("bench", "x.onnx", "--device", "ort-cpu-1t", "--runs", "3", "--warmup", "0", "--seconds", "0",
                      "--images", "16"), "x.onnx.ort-cpu-1t.bench.json", "x.onnx on ort-cpu-1t"),
]}

# one cell: the input ticket as its source (no pretraining), omp, one epoch; no export or bench (tested above)
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
    """What must equal the reference run's: the output's checked content, not its bytes (a ticket's zip and a
    bench's timings differ from run to run)."""
    from edgeticket.export import artifact_metadata
    from edgeticket.ticket import Ticket, tensor_digest
    output = folder / command.output
    if command.name.startswith("export"):  # the metadata goes in after the parity check; onnx: weights' sha256
        return artifact_metadata(output), sorted(p.name for p in output.iterdir()) if output.is_dir() else None
    if command.name in ("draw", "finetune"):  # both deterministic: the same weights, bit for bit
        ticket = Ticket.load(output)
        digest = hashlib.sha256()
        tensor_digest(digest, (ticket.state_dict, ticket.masks))
        return digest.hexdigest(), ticket.provenance.to_dict(), ticket.class_names
    record = json.loads(output.read_text())
    if command.name == "sweep":  # a row also names its model by its path, in this run's folder
        return [{k: v for k, v in row.items() if k != "model"} for row in record["rows"]], record["failed"]
    return record["model"], record["device"], record["ticket_sha256"], record["provenance"], record["latency"]["runs"]


def is_result(command: Command, folder: Path, expected: object) -> bool:
    """Whether the output is complete and the reference run's (a missing or torn one is not)."""
    from edgeticket.errors import EdgeticketError
    try:
        return result(command, folder) == expected
    except (EdgeticketError, OSError, ValueError, KeyError):
        return False


def tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> sha256 of its bytes ('' for a folder)."""
    return {str(p.relative_to(folder)): "" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def split(files: dict[str, str], output: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the output's entries: the file, or the folder and what is in it; the others)."""
    ours = {path: digest for path, digest in files.items() if path == output or path.startswith(output + "/")}
    return ours, {path: digest for path, digest in files.items() if path not in ours}


def changed(kept: dict[str, str], files: dict[str, str]) -> list[str]:
    """The paths of `kept` that `files` lacks or holds with other bytes."""
    return [path for path, digest in kept.items() if files.get(path) != digest]


def survivors(root: Path, timeout: float = 5.0) -> list[str]:
    """Processes whose command line or environment names `root` (through /proc), after up to `timeout` s for
    them to end: what a run left running (a runner, a converter)."""
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


# --- fixtures: the input ticket, one reference run per command (the fork server is conftest's `launcher`)

@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """The small ResNet (seeded) as a ticket: the input of export, draw, finetune and the sweep."""
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
    files: set[str]  # what the run folder holds after it
    result: object
    folder: Path


@pytest.fixture(scope="module")
def reference(launcher, ticket, tmp_path_factory):
    """reference(name): the command's uninterrupted run, made once (bench's input is export-onnx's output)."""
    made: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in made:
            command = COMMANDS[name]
            folder = tmp_path_factory.mktemp(f"reference-{name}") / "run"
            prepare(command, folder, ticket, get("export-onnx").folder / "x.onnx" if name == "bench" else None)
            run = launcher.run(command.argv(ticket), folder)
            assert run.code == 0 and command.success in run.stdout, run.stderr
            made[name] = Reference(run.seconds, set(tree(folder)), result(command, folder), folder)
        return made[name]
    return get


def runs() -> list:
    """The 24 runs: (command, signal, fraction of the reference run's duration), one fraction in each half."""
    rng = random.Random(SEED)
    drawn = [(name, signum, round(rng.uniform(half / 2, (half + 1) / 2), 3))
             for name in COMMANDS for signum in (signal.SIGKILL, signal.SIGTERM) for half in (0, 1)]
    return [pytest.param(*run, id=f"{run[0]}-{run[1].name}-{run[2]}") for run in drawn]


# --- the test

WRITTEN = re.compile(r"error: interrupted after (?:(?P<one>\S+) was|\d+ outputs were \(the last: (?P<last>\S+)\)) "
                     r"written")


def check_truthful(command: Command, signum: int, run: Finished, old: bool, new: bool, folder: Path,
                   label: str) -> None:
    """The exit status, stdout and stderr against what the killed run left at the output (old, or new and
    complete)."""
    assert old or new, f"{label}: the output is neither the old one nor a complete new one"
    if command.success in run.stdout:  # a signal may still come after it: exit 1 (said on stderr), or -9
        assert new, f"{label}: success printed, and the output is not the new one"
    if run.code == 0:
        assert command.success in run.stdout and "error" not in run.stderr, f"{label}: exit 0 without success"
        return
    if signum == signal.SIGKILL:
        assert run.code == -signal.SIGKILL, label
        return
    written = WRITTEN.search(run.stderr)
    if written:
        path = folder / (written["one"] or written["last"])  # a relative path is the command's, from its folder
        assert run.code == 1 and path.exists(), f"{label}: says {path} was written, and it is not there"
        if path == folder / command.output:
            assert new, f"{label}: says the output was written, and it is not the new one"
        return
    # stopped before any output was in place: by edgeticket's handler (exit 1; or -2 when the KeyboardInterrupt
    # came out of a library's import), or by the signal itself, before the handler was installed (-15)
    assert (run.code in (1, -signal.SIGINT) and "error: interrupted (" in run.stderr) \
        or run.code == -signal.SIGTERM, label
    assert old, f"{label}: stopped before any output was written, and the old one is gone"


@pytest.mark.slow
@pytest.mark.parametrize("name, signum, fraction", runs())
def test_a_signal_leaves_the_old_output_or_the_new_one_and_a_rerun_finishes(launcher, reference, ticket, tmp_path,
                                                                            name, signum, fraction):
    """One of the 24 runs: the module's docstring says what is checked, and why."""
    if name == "export-ncnn":
        pytest.importorskip("pnnx")
    command, expected = COMMANDS[name], reference(name)
    folder = tmp_path / "run"
    prepare(command, folder, ticket, reference("export-onnx").folder / "x.onnx" if name == "bench" else None)
    old_output, kept = split(tree(folder), command.output)
    delay = fraction * expected.seconds
    killed = launcher.run(command.argv(ticket), folder, signum, delay)
    label = (f"{name}: {signum.name} at {delay:.2f} s ({fraction} of the reference's {expected.seconds:.2f} s), "
             f"exit {killed.code}, stderr {killed.stderr.strip()[-300:]!r}")
    print(label)

    after = tree(folder)
    assert changed(kept, after) == [], f"{label}: pre-existing files changed"
    old = split(after, command.output)[0] == old_output
    new = not old and is_result(command, folder, expected.result)
    check_truthful(command, signum, killed, old, new, folder, label)

    again = launcher.run(command.argv(ticket), folder)
    assert again.code == 0 and command.success in again.stdout, f"{label}; the re-run: {again.stderr[-500:]}"
    assert result(command, folder) == expected.result, f"{label}: the re-run's result is not the reference's"
    final = tree(folder)
    assert changed(kept, final) == [], f"{label}: pre-existing files changed"
    assert set(final) == expected.files, \
        f"{label}: left {sorted(set(final) - expected.files)}, lacks {sorted(expected.files - set(final))}"
    assert leftovers(tmp_path / "tmp") == [], f"{label}: left in $TMPDIR"
    assert survivors(tmp_path) == [], f"{label}: still running"
