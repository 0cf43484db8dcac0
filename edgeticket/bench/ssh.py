"""Bench on the user's own board over ssh: the same torch-free runner, run there, with the host computing
accuracy from the logits it sends back.

One bench is one connection: `probe.py` on stdin (the board, its Python, numpy and runtime, free space, and
which files are already there by sha256), an SFTP push of what is not, the runner, an SFTP pull of its
logits, and the removal of what this bench pushed unless `keep`. Each file goes to a folder named by its
content, so a kept model or test set is not sent again.

paramiko, not the `ssh` binary: one connection serves the probe, the copies and the run; a changed host key,
an unknown one and a refused login are distinct exceptions, not messages scraped from ssh's stderr; it
reads OpenSSH's known_hosts (hashed entries too) and the Host, HostName, Port, User and IdentityFile lines
of ~/.ssh/config. Host keys are checked against the profile's known_hosts and never accepted blindly.
Remote commands are argument lists quoted for the board's shell with shlex."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import posixpath
import shlex
import socket
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import paramiko

from ..console import info, progress_bar
from ..errors import EdgeticketError
from ..fileio import sha256_file
from .devices import SshTarget
from .runner import RUNTIMES
from .transport import RUNNER, BoardUnreachable, runner_output

PROBE = Path(__file__).with_name("probe.py")
CONNECT_SECONDS = 15
PROBE_SECONDS = 120
SPARE_BYTES = 8 * 2 ** 20  # room the runner's logits and job need besides what is pushed


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey):
        super().__init__("host key not in known_hosts")
        self.key = key


class RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, keeping the key the board offered so the error can show its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(key)


def fingerprint(key: paramiko.PKey) -> str:
    """As OpenSSH prints it (`ssh-keygen -lf`): SHA256, base64 without padding."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


@dataclass(frozen=True)
class Endpoint:
    """Where the profile's host leads once ~/.ssh/config's Host entry (if any) is applied."""
    host: str
    port: int
    user: str
    identities: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @classmethod
    def of(cls, target: SshTarget, config: Path = Path("~/.ssh/config")) -> "Endpoint":
        config = config.expanduser()
        entry = paramiko.SSHConfig.from_path(str(config)).lookup(target.host) if config.is_file() else {}
        identities = [target.identity] if target.identity else entry.get("identityfile", [])
        return cls(entry.get("hostname", target.host), target.port or int(entry.get("port", 22)),
                   target.user or entry.get("user") or getpass.getuser(),
                   tuple(str(Path(path).expanduser()) for path in identities))


def connect(target: SshTarget, end: Endpoint) -> paramiko.SSHClient:
    """A connection to `end` whose host key matched the profile's known_hosts and whose login was accepted, or
    one clear error."""
    known = Path(target.known_hosts).expanduser()
    keyscan = f"ssh-keyscan -p {end.port} {end.host} >> {known}"
    check = "check the fingerprint it prints against the board's own (ssh-keygen -lf /etc/ssh/ssh_host_*.pub there)"
    if not known.is_file():
        raise BoardUnreachable(f"{known} does not exist, so {end.label}'s host key cannot be verified: refused",
                               hint=f"run {keyscan}, and {check}")
    for identity in end.identities:
        if not Path(identity).is_file():
            raise BoardUnreachable(f"ssh identity {identity} does not exist",
                                   hint="set [ssh] identity to your private key, or leave it out for the agent "
                                        "and ~/.ssh/id_*")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known))
    client.set_missing_host_key_policy(RefuseUnknownKey())
    try:
        client.connect(end.host, end.port, username=end.user, key_filename=list(end.identities) or None,
                       look_for_keys=not end.identities, timeout=CONNECT_SECONDS, banner_timeout=CONNECT_SECONDS,
                       auth_timeout=CONNECT_SECONDS)
    except UnknownHostKey as error:
        client.close()
        raise BoardUnreachable(f"{end.label}'s host key ({fingerprint(error.key)}) is not in {known}: refused",
                               hint=f"run {keyscan}, and {check}") from None
    except paramiko.BadHostKeyException as error:
        client.close()
        raise BoardUnreachable(
            f"{end.label}'s host key has CHANGED ({fingerprint(error.key)}, known_hosts has "
            f"{fingerprint(error.expected_key)}): refused",
            hint=f"if the board was reinstalled, check its new key, then: ssh-keygen -R '[{end.host}]:{end.port}' "
                 f"-f {known} && {keyscan}; otherwise someone may be in between") from None
    except paramiko.AuthenticationException as error:
        client.close()
        raise BoardUnreachable(f"{end.label} refused the login ({error})",
                               hint="check [ssh] user and identity; your public key belongs in the board's "
                                    "~/.ssh/authorized_keys (ssh-copy-id)") from None
    except (OSError, paramiko.SSHException, EOFError) as error:
        client.close()
        why = " ".join(str(error).split()) or type(error).__name__
        raise BoardUnreachable(f"cannot reach {end.label}: {why}",
                               hint=f"is the board on, and sshd listening on port {end.port}? "
                                    f"try: ssh -p {end.port} {end.user}@{end.host}") from None
    return client


def on_board(path: str) -> str:
    """Remote commands and SFTP start in the home folder, so `~/x` is `x` (a quoted ~ would not expand)."""
    return "." if path == "~" else path[2:] if path.startswith("~/") else path


def execute(client: paramiko.SSHClient, argv: list[str], timeout: float, stdin: bytes | None = b"") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `argv` on the board, each argument quoted for its shell. `stdin` is
    sent and closed; None holds it open until the command ends (the runner stops when it closes)."""
    try:
        send, out, err = client.exec_command(shlex.join(argv), timeout=timeout)
        if stdin is not None:
            send.write(stdin)
            send.channel.shutdown_write()
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        return out.channel.recv_exit_status(), stdout, stderr
    except socket.timeout:
        raise EdgeticketError(f"{argv[0]} on the board gave no answer for {timeout:.0f} s",
                              hint="use fewer --runs, --seconds or --images, or check the board") from None
    except (paramiko.SSHException, OSError, EOFError) as error:
        raise BoardUnreachable(f"the connection to the board broke: {error}",
                               hint="is the board still on the network?") from None


@dataclass
class Push:
    """The files one bench needs on the board, each at a path named by its content, and the bench's own
    folder (its job and logits), removed whole afterwards."""
    workdir: str
    run_dir: str
    files: dict[Path, str] = field(default_factory=dict)  # local -> remote
    hashes: dict[Path, str] = field(default_factory=dict)

    def add(self, pairs: list[tuple[Path, str]]) -> dict[Path, str]:
        """Files that must sit together (an ncnn folder's two, say), under one folder named by their content."""
        hashes = {local: sha256_file(local) for local, _ in pairs}
        folder = posixpath.join(self.workdir, hashlib.sha256(
            "".join(f"{name}:{hashes[local]}\n" for local, name in pairs).encode()).hexdigest()[:16])
        placed = {local: posixpath.join(folder, name) for local, name in pairs}
        self.files.update(placed)
        self.hashes.update(hashes)
        return placed

    def missing(self, there: dict[str, str | None]) -> list[Path]:
        return [local for local, remote in self.files.items() if there.get(remote) != self.hashes[local]]


def probe(client: paramiko.SSHClient, target: SshTarget, label: str, runtime: str, files: list[str]) -> dict:
    """What the board is and has; one clear error for a missing or old Python, numpy or runtime."""
    _, module, distributions = RUNTIMES[runtime]
    request = {"module": module, "distributions": list(distributions), "workdir": on_board(target.workdir),
               "files": files}
    python = on_board(target.python)
    status, stdout, stderr = execute(client, [python, "-I", "-", json.dumps(request)], PROBE_SECONDS,
                                     PROBE.read_bytes())
    where = f"for {target.python} on {label}"
    interpreter_hint = f"install Python 3.8 or newer there, or set [ssh] python to its path (e.g. ~/venv/bin/python)"
    if status in (126, 127):
        raise EdgeticketError(f"no Python at '{target.python}' on {label}: {stderr.strip()[-200:]}",
                              hint=interpreter_hint)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if status != 0 or not lines:
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or f"exit status {status}"
        raise EdgeticketError(f"probing {label} with {target.python} failed: {tail[:400]}", hint=interpreter_hint)
    board = json.loads(lines[-1])
    if board.get("error") == "too old":
        raise EdgeticketError(f"Python {board['python']} {where} is too old: the runner needs 3.8 or newer",
                              hint=interpreter_hint)
    install = f"{target.python} -m pip install"
    if board["numpy"] is None:
        raise EdgeticketError(f"numpy is not installed {where}", hint=f"on the board: {install} numpy")
    if board["runtime_version"] is None:
        extra = " torch" if runtime == "executorch" else ""  # ExecuTorch's Python runtime imports torch
        raise EdgeticketError(f"{runtime} is not installed {where}",
                              hint=f"on the board: {install} {distributions[0]}{extra}")
    return board


@contextmanager
def pushed(client: paramiko.SSHClient, push: Push, board: dict, label: str,
           keep: bool) -> Iterator[tuple[paramiko.SFTPClient, list[Path]]]:
    """Copy what the board lacks (yield the SFTP session and what was sent); afterwards remove it, the bench's
    folder and the folders made for them, unless `keep`."""
    send = push.missing(board["sha256"])
    need = sum(local.stat().st_size for local in send) + SPARE_BYTES
    if board["free_bytes"] < need:
        raise EdgeticketError(f"{label} is out of disk: {board['free_bytes'] / 2 ** 20:.0f} MB free at "
                              f"{push.workdir}, the bench needs {need / 2 ** 20:.0f} MB",
                              hint="free space there, or set [ssh] workdir to a folder on a larger disk")
    sftp = client.open_sftp()
    made: list[str] = []
    copied: list[str] = []
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"push to {label}", total=len(send), status="")
            for local in send:
                remote = push.files[local]
                made += make_folders(sftp, posixpath.dirname(remote))
                bar.update(task, status=f"{posixpath.basename(remote)} ({local.stat().st_size / 2 ** 20:.1f} MB)")
                copied.append(remote)
                try:
                    sftp.put(str(local), remote)
                except OSError as error:
                    raise EdgeticketError(f"copying {local.name} to {label}:{remote} failed: {error}",
                                          hint=f"is {push.workdir} writable there, with free space?") from None
                bar.advance(task)
        yield sftp, send
    finally:
        if keep:
            info(f"kept on {label}: {push.workdir}")
        else:
            for name in listing(sftp, push.run_dir):
                quietly(sftp.remove, posixpath.join(push.run_dir, name))
            for path in reversed(copied):
                quietly(sftp.remove, path)
            for folder in reversed(made):
                quietly(sftp.rmdir, folder)
        sftp.close()


def make_folders(sftp: paramiko.SFTPClient, folder: str) -> list[str]:
    """mkdir -p over SFTP; the folders it made, parents first."""
    made, path = [], "/" if folder.startswith("/") else ""
    for part in [p for p in folder.split("/") if p]:
        path = posixpath.join(path, part)
        try:
            sftp.stat(path)
        except OSError:
            sftp.mkdir(path)
            made.append(path)
    return made


def listing(sftp: paramiko.SFTPClient, folder: str) -> list[str]:
    try:
        return sftp.listdir(folder)
    except OSError:
        return []


def quietly(action, path: str) -> None:
    """Clean-up that must not hide the error that ended the bench."""
    try:
        action(path)
    except OSError:
        pass


def run_on_board(target: SshTarget, job: dict, inputs: dict[str, np.ndarray], timeout: float,
                 keep: bool = False) -> tuple[dict, dict[str, np.ndarray], dict]:
    """runner.py on `job` on the board: (its JSON, the logits, what the board is and what was pushed)."""
    model = Path(job["model"])
    workdir = on_board(target.workdir)
    end = Endpoint.of(target)
    label = end.label
    with tempfile.TemporaryDirectory() as work, connect(target, end) as client:
        staged = Path(work)
        push = Push(workdir, posixpath.join(workdir, f"run-{uuid.uuid4().hex[:12]}"))
        runner = push.add([(RUNNER, "runner.py")])[RUNNER]
        models = push.add([(f, f"{model.name}/{f.name}") for f in sorted(model.iterdir())] if model.is_dir()
                          else [(model, model.name)])
        remote_model = posixpath.dirname(next(iter(models.values()))) if model.is_dir() else models[model]
        remote_inputs = {}
        for name, array in inputs.items():
            np.save(staged / f"{name}.npy", array)
            remote_inputs[name] = push.add([(staged / f"{name}.npy", f"{name}.npy")])[staged / f"{name}.npy"]
        run_dir = push.run_dir
        job_file = staged / "job.json"
        job_file.write_text(json.dumps({**job, "stop_when_stdin_closes": True,
                                        "model": posixpath.relpath(remote_model, run_dir),
                                        "inputs": {name: posixpath.relpath(path, run_dir)
                                                   for name, path in remote_inputs.items()}}))
        push.files[job_file], push.hashes[job_file] = posixpath.join(run_dir, "job.json"), ""  # always sent
        board = probe(client, target, label, job["runtime"], sorted(set(push.files.values())))
        with pushed(client, push, board, label, keep) as (sftp, sent):
            status, stdout, stderr = execute(client, [on_board(target.python), "-I", runner, push.files[job_file]],
                                             timeout, stdin=None)
            out = runner_output(status, stdout, stderr, job, where=f" on {label}")
            logits = {}
            for name, file in out["logits"].items():
                sftp.get(posixpath.join(run_dir, file), str(staged / file))
                logits[name] = np.load(staged / file)
        record = {"host": label, "workdir": target.workdir, "kept": keep,
                  "pushed": sorted(posixpath.relpath(push.files[p], workdir) for p in sent if p != job_file),
                  "already_there": sorted(posixpath.relpath(push.files[p], workdir)
                                          for p in push.files if p not in sent),
                  "probe": {key: value for key, value in board.items() if key != "sha256"}}
        return out, logits, record
