"""Run one bad-input case in-process and check the six promises (README, "Safety"):

1. a non-zero exit; 2. one line of error, no traceback; 3. nothing under the case's folder created or changed
(sha256 before and after: inputs, outputs, their folders); 4. no temp file beside the output or under the temp root;
5. no control character in stdout, stderr or any file written; 6. no marker file from a pickle payload.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what may not reach a terminal or a file (tab, newline may)
PLACEHOLDER = re.compile(r"\{(\w+)(?::([^}]*))?\}")


@dataclass
class Case:
    """`edgeticket ARGS` must be refused. ARGS is a shell-like line whose {kind:name} placeholders become files made
    in the case's folder (see Harness.KINDS); `message` is a fragment the error line must contain (what was wrong)."""
    family: str
    args: str
    message: str
    files: dict[str, str] = field(default_factory=dict)  # name -> text, written into the case folder first
    env: dict[str, str] = field(default_factory=dict)
    make: str = ""  # placeholders for files the command finds without being told (a record beside the model)

    @property
    def id(self) -> str:
        return f"{self.family}: {self.args}"


@dataclass
class Fixtures:
    folder: Path  # in.ticket, model.onnx, foreign.onnx, hostile.pt, state.pt, profile.toml
    marker: Path  # the hostile pickle's payload creates this file


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with its kind and, for files, sha256 and mode; FIFOs are never opened."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        kind = ("dir" if stat.S_ISDIR(info.st_mode) else "fifo" if stat.S_ISFIFO(info.st_mode)
                else "link" if stat.S_ISLNK(info.st_mode) else "file")
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "file" else ""
        seen[str(path.relative_to(folder))] = f"{kind} {oct(info.st_mode)} {digest}"
    return seen


class FifoWatch:
    """A command that opens a FIFO for reading blocks forever: this thread notices (a writer can open it), records
    it, and closes its end so the reader sees end-of-file instead of hanging the test run."""

    def __init__(self, fifos: list[Path]):
        self.fifos, self.opened, self.done = fifos, [], threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        while not self.done.wait(0.05):
            for fifo in self.fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    self.opened.append(fifo.name)
                except OSError:  # no reader: fine
                    pass

    def __enter__(self):
        if self.fifos:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()


class Harness:
    def __init__(self, fixtures: Fixtures, folder: Path, temp_root: Path):
        self.fixtures, self.folder, self.temp_root = fixtures, folder, temp_root
        self.fifos: list[Path] = []
        self.readonly: list[Path] = []

    # --- the files a placeholder makes: {kind} or {kind:name}

    def copy(self, fixture: str, name: str | None) -> Path:
        path = self.folder / (name or fixture)
        if not path.exists():
            shutil.copy(self.fixtures.folder / fixture, path)
        return path

    def make(self, kind: str, name: str | None) -> Path:
        fixtures = {"ticket": "in.ticket", "onnx": "model.onnx", "foreign": "foreign.onnx", "hostile": "hostile.pt",
                    "state": "state.pt", "profile": "profile.toml"}
        if kind in fixtures:
            return self.copy(fixtures[kind], name)
        if kind == "case":
            return self.folder
        path = self.folder / name
        if kind == "missing":
            return path
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "random":
            path.write_bytes(random.Random(name).randbytes(4096))
        elif kind == "fifo":
            os.mkfifo(path)
            self.fifos.append(path)
        elif kind == "readonly":  # read-only while the command runs (a read-only mount for root: see run)
            path.mkdir(exist_ok=True)
            self.readonly.append(path)
        elif kind in ("truncated", "flipped"):  # name: a fixture's file, e.g. {truncated:in.ticket}
            data = (self.fixtures.folder / name).read_bytes()
            path = self.folder / f"{kind}-{name}"
            if kind == "truncated":
                data = data[:len(data) // 2]
            else:  # a byte in the middle of the file's largest stretch of tensor data
                middle = len(data) * 3 // 4
                data = data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1:]
            path.write_bytes(data)
        else:
            raise KeyError(f"unknown placeholder kind {kind!r}")
        return path

    def fill(self, text: str) -> str:
        return PLACEHOLDER.sub(lambda m: str(self.make(m[1], m[2])), text)

    def expand(self, args: str) -> list[str]:
        return [self.fill(token) for token in shlex.split(args)]

    # --- the run and the six checks

    def refuse(self, case: Case) -> None:
        for name, text in case.files.items():
            (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_text(self.fill(text))
        self.expand(case.make)
        args = self.expand(case.args)
        env = {name: self.fill(value) for name, value in case.env.items()}
        before = snapshot(self.folder)
        started = time.monotonic()
        with FifoWatch(self.fifos) as fifos:
            result = self.run(args, env)
        where = f"{case.id}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
        assert result.exit_code not in (0, None), f"accepted: {where}"  # 1
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"raised {result.exception!r}: {where}"  # 2: no traceback
        if "--json" in args:  # one JSON document on stdout, nothing on stderr
            document = json.loads(result.stdout)
            assert set(document) == {"error", "hint"} and result.stderr == "", f"not one document: {where}"
            error = document["error"]
        else:
            error = result.stderr.strip()
            assert error.startswith("error: ") and "\n" not in error and result.stdout == "", f"not one line: {where}"
        assert "Traceback" not in result.output, f"traceback: {where}"
        assert case.message.lower() in error.lower(), f"does not say {case.message!r}: {where}"
        assert snapshot(self.folder) == before, f"changed the files: {where}"  # 3, 4 (beside the output)
        left = sorted(str(p) for p in self.temp_root.rglob("*")) if self.temp_root.exists() else []
        assert left == [], f"left temp files {left}: {where}"  # 4
        assert not CONTROL.search(result.stdout + result.stderr), f"control character: {where}"  # 5
        assert not self.fixtures.marker.exists(), f"pickle ran code: {where}"  # 6
        assert not fifos.opened, f"opened the FIFO {fifos.opened} for reading: {where}"
        assert time.monotonic() - started < 30, f"took {time.monotonic() - started:.0f} s: {where}"

    def accept(self, args: list[str], env: dict[str, str] | None = None, figures: list | None = None):
        """Run a command that takes hostile strings from its inputs and succeeds: no control character reaches
        stdout, stderr, any file it wrote (JSON decoded), or the text of the plots (`figures`, collected by the
        test); no traceback, no temp file, no pickle marker. Returns the result for the test's own checks."""
        before = snapshot(self.folder)
        result = self.run(args, env or {})
        where = f"{args}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
        assert result.exit_code == 0 and result.exception is None, f"failed: {where}"
        assert not CONTROL.search(result.stdout + result.stderr), f"control character on the terminal: {where}"
        after = snapshot(self.folder)
        for name in sorted(set(after) - set(before) | {n for n in before if after.get(n) != before[n]}):
            if after.get(name, "").startswith("file"):
                for text in written_text(self.folder / name):
                    assert not CONTROL.search(text), f"control character in {name}: {text!r}"
        for text in figures or []:
            assert not CONTROL.search(text), f"control character in a plot: {text!r}"
        left = sorted(str(p) for p in self.temp_root.rglob("*")) if self.temp_root.exists() else []
        assert left == [] and not self.fixtures.marker.exists(), f"left {left}: {where}"
        return result

    def run(self, args: list[str], env: dict[str, str]):
        """In-process through CliRunner; with a read-only folder, as root (whom permissions do not stop) in a
        subprocess that sees the folder as a read-only mount."""
        from edgeticket.cli import app
        if self.readonly and os.geteuid() == 0:
            return read_only_run(self.readonly, args, {**env, "TMPDIR": str(self.temp_root.parent)})
        for folder in self.readonly:
            folder.chmod(0o555)
        try:
            return CliRunner().invoke(app, args, env=env)
        finally:
            for folder in self.readonly:
                folder.chmod(0o755)


@dataclass
class Finished:
    """A subprocess's outcome, read as CliRunner's Result is."""
    exit_code: int
    stdout: str
    stderr: str
    exception: None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def read_only_run(folders: list[Path], args: list[str], env: dict[str, str]) -> Finished:
    if not shutil.which("unshare"):
        pytest.skip("no unshare: cannot make a folder read-only for root")
    mounts = " && ".join(f"mount --bind {shlex.quote(str(f))} {shlex.quote(str(f))} && "
                         f"mount -o remount,bind,ro {shlex.quote(str(f))}" for f in folders)
    command = f"{mounts} || exit 99; exec {shlex.quote(sys.executable)} -m edgeticket {shlex.join(args)}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    if done.returncode == 99:
        pytest.skip("cannot mount in a private mount namespace here (needs root or user namespaces)")
    return Finished(done.returncode, done.stdout, done.stderr)


def strings(value) -> list[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def written_text(path: Path) -> list[str]:
    """What a reader of `path` sees: a JSON's decoded strings (escapes like \\u001b decoded), a text file's lines,
    an ONNX model's metadata values; nothing for other binary files."""
    import json
    if path.suffix in (".json", ".jsonl"):
        return [s for line in path.read_text().splitlines() if line.strip() for s in strings(json.loads(line))] \
            if path.suffix == ".jsonl" else strings(json.loads(path.read_text()))
    if path.suffix in (".md", ".txt", ".csv", ".toml"):
        return [path.read_text()]
    if path.suffix == ".onnx":
        import onnx
        return [p.value for p in onnx.load(str(path), load_external_data=False).metadata_props]
    return []
