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
import stat
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
from ..runtimes import get_runtime
from .devices import SshTarget
from .transport import RUNNER, BoardUnreachable, last_json, runner_output, runtime_file, save_inputs, write_job

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

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts (and ssh-keygen -R) names it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @classmethod
    def of(cls, target: SshTarget, config: Path = Path("~/.ssh/config")) -> "Endpoint":
        """The profile's host, port, user and identity, each filled in from ~/.ssh/config where left out. A
        profile's identity must exist; ~/.ssh/config's IdentityFiles are tried where they do (as ssh does)."""
        config = config.expanduser()
        entry = paramiko.SSHConfig.from_path(str(config)).lookup(target.host) if config.is_file() else {}
        identities = [Path(target.identity).expanduser()] if target.identity else [
            path for path in (Path(p).expanduser() for p in entry.get("identityfile", [])) if path.is_file()]
        return cls(entry.get("hostname", target.host), target.port or int(entry.get("port", 22)),
                   target.user or entry.get("user") or getpass.getuser(), tuple(map(str, identities)))


def connect(target: SshTarget, end: Endpoint) -> paramiko.SSHClient:
    """A connection to `end` whose host key matched the profile's known_hosts and whose login was accepted, or
    one clear error."""
    known = Path(target.known_hosts).expanduser()
    keyscan = f"ssh-keyscan -p {end.port} {shlex.quote(end.host)} >> {shlex.quote(str(known))}"
    for identity in end.identities:
        if not Path(identity).is_file():
            raise BoardUnreachable(f"ssh identity {identity} does not exist",
                                   hint="set [ssh] identity to your private key, or leave it out for the agent "
                                        "and ~/.ssh/id_*")
    client = paramiko.SSHClient()
    if known.is_file():  # else every key is unknown, and refused
        client.load_host_keys(str(known))
    client.set_missing_host_key_policy(RefuseUnknownKey())
    try:
        client.connect(end.host, end.port, username=end.user, key_filename=list(end.identities) or None,
                       look_for_keys=not end.identities, timeout=CONNECT_SECONDS, banner_timeout=CONNECT_SECONDS,
                       auth_timeout=CONNECT_SECONDS)
        return client
    except UnknownHostKey as error:
        missing = "" if known.is_file() else ", which does not exist"
        refusal = BoardUnreachable(
            f"{end.label}'s host key ({fingerprint(error.key)}) is not in {known}{missing}: refused",
            hint=f"compare that fingerprint with the board's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub, run on "
                 f"the board); only if it matches: {keyscan}")
    except paramiko.BadHostKeyException as error:
        refusal = BoardUnreachable(
            f"{end.label}'s host key has CHANGED ({fingerprint(error.key)}, known_hosts has "
            f"{fingerprint(error.expected_key)}): refused",
            hint=f"if the board was reinstalled, check its new key, then: ssh-keygen -R "
                 f"{shlex.quote(end.known_hosts_name)} -f {shlex.quote(str(known))} && {keyscan}; otherwise "
                 "someone may be in between")
    except paramiko.PasswordRequiredException:
        refusal = BoardUnreachable(f"the ssh key for {end.label} is encrypted, and edgeticket asks no passphrase",
                                   hint="add it to your ssh agent (ssh-add KEY): the agent's keys are used")
    except paramiko.AuthenticationException:
        keys = ", ".join(end.identities) or "the agent's and ~/.ssh/id_* keys"
        refusal = BoardUnreachable(f"{end.label} refused the login as {end.user} with {keys}",
                                   hint="check [ssh] user and identity; your public key belongs in the board's "
                                        "~/.ssh/authorized_keys (ssh-copy-id)")
    except (OSError, paramiko.SSHException, EOFError) as error:
        if "no authentication methods" in str(error).lower():
            refusal = BoardUnreachable(f"no ssh key to log in to {end.label} with (no [ssh] identity, no agent, "
                                       "no ~/.ssh/id_*)", hint="set [ssh] identity to your private key, or ssh-add it")
        elif "private key" in str(error).lower():
            refusal = BoardUnreachable(f"cannot use the ssh key {', '.join(end.identities)}: {error}",
                                       hint="point [ssh] identity at the private key (not the .pub)")
        else:
            why = " ".join(str(error).replace("[Errno None] ", "").split()) or type(error).__name__
            refusal = BoardUnreachable(f"cannot reach {end.label}: {why}",
                                       hint=f"is the board on, and sshd listening on port {end.port}? try: ssh -p "
                                            f"{end.port} {shlex.quote(f'{end.user}@{end.host}')}")
    client.close()
    raise refusal


def on_board(path: str) -> str:
    """Remote commands and SFTP start in the home folder, so `~/x` is `x` (a quoted ~ would not expand)."""
    return "." if path == "~" else path[2:] if path.startswith("~/") else path


def execute(client: paramiko.SSHClient, what: str, argv: list[str], timeout: float,
            stdin: bytes | None = b"") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `argv` on the board, each argument quoted for its (POSIX) shell.
    `stdin` is sent and closed; None holds it open until the command ends, and closing the channel on the way
    out (a timeout, Ctrl-C) is what stops the runner."""
    channel = None
    try:
        send, out, err = client.exec_command(shlex.join(argv), timeout=timeout)
        channel = out.channel
        if stdin is not None:
            send.write(stdin)
            channel.shutdown_write()
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        return channel.recv_exit_status(), stdout, stderr
    except socket.timeout:
        raise EdgeticketError(f"the {what} on the board gave no answer for {timeout:.0f} s",
                              hint="use fewer --runs, --seconds or --images, or check the board") from None
    except (paramiko.SSHException, OSError, EOFError) as error:
        raise BoardUnreachable(f"the connection to the board broke: {error}",
                               hint="is the board still on the network?") from None
    finally:
        if channel is not None:
            channel.close()


@dataclass
class Push:
    """The files one bench needs on the board, each in a folder of `workdir` named by its content (kept with
    --keep), and the bench's own folder for its job and logits (always removed)."""
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
    plugin = get_runtime(runtime)
    request = {"module": plugin.module, "distributions": list(plugin.distributions), "workdir": on_board(target.workdir),
               "files": files}
    status, stdout, stderr = execute(client, "probe", [on_board(target.python), "-I", "-", json.dumps(request)],
                                     PROBE_SECONDS, PROBE.read_bytes())
    where = f"for {target.python} on {label}"
    interpreter_hint = "install Python 3.8 or newer there, or set [ssh] python to its path (e.g. ~/venv/bin/python)"
    last_line = (stderr.strip().splitlines() or [""])[-1][:200]
    if status in (126, 127):
        raise EdgeticketError(f"no Python at '{target.python}' on {label}: {last_line}", hint=interpreter_hint)
    board = last_json(stdout)
    if status != 0 and "nknown option" in stderr and "-I" in stderr:  # Python 2 and 3.3 have no -I
        raise EdgeticketError(f"{target.python} on {label} is Python 2 or older than 3.4: the runner needs 3.8 or "
                              "newer", hint=interpreter_hint)
    if status != 0 or board is None:
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or f"exit status {status}"
        raise EdgeticketError(f"probing {label} with {target.python} failed: {tail[:400]}", hint=interpreter_hint)
    if board.get("error") == "too old":
        raise EdgeticketError(f"Python {board['python']} {where} is too old: the runner needs 3.8 or newer",
                              hint=interpreter_hint)
    missing = ([("numpy", "numpy")] if board["numpy"] is None else []) + (
        [(runtime, " ".join(plugin.board_packages))] if board["runtime_version"] is None else [])
    if missing:
        names = " and ".join(name for name, _ in missing)
        raise EdgeticketError(f"{names} {'is' if len(missing) == 1 else 'are'} not installed {where}",
                              hint=f"on the board: {target.python} -m pip install {' '.join(p for _, p in missing)}")
    if not board["workdir_writable"]:
        raise EdgeticketError(f"{target.workdir} on {label} is not writable",
                              hint="set [ssh] workdir to a folder you can write there (default ~/.cache/edgeticket)")
    return board


@contextmanager
def pushed(client: paramiko.SSHClient, push: Push, job_file: Path, board: dict, label: str,
           keep: bool) -> Iterator[tuple[paramiko.SFTPClient, list[Path]]]:
    """Copy what the board lacks, then the job (yield the SFTP session and what was sent). Afterwards the
    bench's folder goes, and unless `keep` what was sent and the folders made for it."""
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
        make_folders(sftp, push.workdir, made, label)
        check_private(sftp, push.workdir, board.get("uid"), label)
        with progress_bar() as bar:
            task = bar.add_task(f"push to {label}", total=len(send), status="")
            for local in send:
                remote = push.files[local]
                make_folders(sftp, posixpath.dirname(remote), made, label)
                bar.update(task, status=f"{posixpath.basename(remote)} ({local.stat().st_size / 2 ** 20:.1f} MB)")
                copied.append(remote)
                put(sftp, local, remote, label, push.workdir)
                bar.advance(task)
        make_folders(sftp, push.run_dir, made, label)
        put(sftp, job_file, posixpath.join(push.run_dir, job_file.name), label, push.workdir)
        yield sftp, send
    finally:
        for name in listing(sftp, push.run_dir):
            quietly(sftp.remove, posixpath.join(push.run_dir, name))
        quietly(sftp.rmdir, push.run_dir)
        if keep:
            info(f"kept on {label}: {push.workdir} (the next bench sends only what changed)")
        else:
            for path in reversed(copied):
                quietly(sftp.remove, path)
            for folder in reversed(made):
                quietly(sftp.rmdir, folder)
        sftp.close()


def put(sftp: paramiko.SFTPClient, local: Path, remote: str, label: str, workdir: str) -> None:
    try:
        sftp.put(str(local), remote)
    except OSError as error:
        raise EdgeticketError(f"copying {local.name} to {label}:{remote} failed: {error or type(error).__name__}",
                              hint=f"is {workdir} writable there, with free space (df -h)?") from None


def make_folders(sftp: paramiko.SFTPClient, folder: str, made: list[str], label: str) -> None:
    """mkdir -p over SFTP, private to the user (0700); each folder made is added to `made` as it is made, so
    a failure half-way still leaves clean-up the full list."""
    path = "/" if folder.startswith("/") else ""
    for part in [p for p in folder.split("/") if p]:
        path = posixpath.join(path, part)
        try:
            sftp.stat(path)
            continue
        except OSError:
            pass
        try:
            sftp.mkdir(path, mode=0o700)
        except OSError as error:
            raise EdgeticketError(f"cannot make {path} on {label}: {error or type(error).__name__}",
                                  hint="set [ssh] workdir to a folder you can write there") from None
        made.append(path)


def check_private(sftp: paramiko.SFTPClient, folder: str, uid: int | None, label: str) -> None:
    """Files that are already there are run without being sent again, so the folder they are in must be the
    user's alone: not a link, not someone else's, writable by no one else."""
    status = sftp.lstat(folder)
    problem = ("a symbolic link" if stat.S_ISLNK(status.st_mode) else
               "owned by another user" if uid is not None and status.st_uid != uid else
               "writable by other users" if status.st_mode & 0o022 else None)
    if problem:
        raise EdgeticketError(f"{label}:{folder} is {problem}: a file in it could be swapped before it runs",
                              hint="set [ssh] workdir to a folder of your own (the default is ~/.cache/edgeticket)")


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
    with tempfile.TemporaryDirectory() as work, connect(target, end) as client:
        staged = Path(work)
        push = Push(workdir, posixpath.join(workdir, f"run-{uuid.uuid4().hex[:12]}"))
        runner = push.add([(RUNNER, "runner.py")])[RUNNER]
        source = runtime_file(job)  # the runtime's file, which the runner loads by its path
        runtime = push.add([(source, source.name)])[source]
        files = sorted(p for p in model.rglob("*") if p.is_file()) if model.is_dir() else [model]
        names = [posixpath.join(model.name, *f.relative_to(model).parts) if model.is_dir() else model.name
                 for f in files]
        placed = push.add(list(zip(files, names)))
        base = placed[files[0]][:-len(names[0])]  # the content-named folder the model's files went to

        def remote(local: Path) -> str:
            """Where a path under the model (a file, or a folder of a folder runtime's) is on the board."""
            return posixpath.join(base, model.name, *local.relative_to(model).parts) if model.is_dir() else placed[local]

        remote_model = remote(model)
        remote_inputs = {name: push.add([(path, path.name)])[path]
                         for name, path in save_inputs(staged, inputs).items()}
        timings = [{**entry, "model": posixpath.relpath(remote(Path(entry["model"])), push.run_dir)}
                   for entry in job.get("timings", [])]  # a latency table's models: all under `model`
        job_file = write_job(staged, {**job, "stop_when_stdin_closes": True, **({"timings": timings} if timings else {})},
                             posixpath.relpath(remote_model, push.run_dir),
                             {name: posixpath.relpath(path, push.run_dir) for name, path in remote_inputs.items()},
                             posixpath.relpath(runtime, push.run_dir))
        board = probe(client, target, end.label, job["runtime"], sorted(push.files.values()))
        with pushed(client, push, job_file, board, end.label, keep) as (sftp, sent):
            status, stdout, stderr = execute(client, "runner", [on_board(target.python), "-I", runner,
                                                      posixpath.join(push.run_dir, job_file.name)], timeout, stdin=None)
            out = runner_output(status, stdout, stderr, job, where=f" on {end.label}")
            logits = {name: fetch(sftp, push.run_dir, file, staged, end.label)
                      for name, file in out.get("logits", {}).items()}
        record = {"host": end.label, "workdir": target.workdir, "kept": keep,
                  "pushed": sorted(posixpath.relpath(push.files[p], workdir) for p in sent),
                  "already_there": sorted(posixpath.relpath(push.files[p], workdir)
                                          for p in push.files if p not in sent),
                  "probe": {key: value for key, value in board.items() if key != "sha256"}}
        return out, logits, record


def fetch(sftp: paramiko.SFTPClient, run_dir: str, name: str, staged: Path, label: str) -> np.ndarray:
    """One logits file the runner wrote, by the plain name it gave (never a path out of the staging folder)."""
    if posixpath.basename(name) != name or name.startswith("."):
        raise EdgeticketError(f"the runner on {label} named a logits file {name!r}", hint="is the board's runner edgeticket's?")
    try:
        sftp.get(posixpath.join(run_dir, name), str(staged / name))
    except OSError as error:
        raise EdgeticketError(f"fetching {name} from {label} failed: {error or type(error).__name__}",
                              hint="is the board's disk full?") from None
    return np.load(staged / name, allow_pickle=False)
