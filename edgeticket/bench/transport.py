"""How the host gets `runner.py` run: here, in an isolated interpreter, or on a board over ssh (ssh.py, which
imports paramiko, so only a remote bench loads it). Both read the runner's answer the same way."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import EdgeticketError
from ..fileio import work_dir
from ..runtimes import get_runtime

RUNNER = Path(__file__).with_name("runner.py")


class BoardUnreachable(EdgeticketError):
    """ssh could not get in: the board is down or refuses, its host key is unknown or changed, or it refuses
    the login. `--all-devices` shows it as the profile's row."""


def save_inputs(folder: Path, inputs: dict[str, np.ndarray]) -> dict[str, Path]:
    """Each input batch as `folder`/NAME.npy, for the runner; NAME -> its path."""
    paths = {name: folder / f"{name}.npy" for name in inputs}
    for name, array in inputs.items():
        np.save(paths[name], array)
    return paths


def write_job(folder: Path, job: dict, model: str, inputs: dict[str, str], runtime_file: str) -> Path:
    """`folder`/job.json: `job` with its model, inputs (NAME -> FILE.npy) and runtime file as the runner will find
    them from there."""
    path = folder / "job.json"
    path.write_text(json.dumps({**job, "model": model, "inputs": inputs, "runtime_file": runtime_file}))
    return path


def runtime_file(job: dict) -> Path:
    """The file of the job's runtime (edgeticket/runtimes/NAME.py, or a plugin's), which the runner loads."""
    return get_runtime(job["runtime"]).source


def last_json(stdout: str) -> dict | None:
    """The JSON document a runner or probe printed last (a runtime may print its own lines before it)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def runner_output(returncode: int, stdout: str, stderr: str, job: dict, where: str = "") -> dict:
    """The runner's JSON document, or its error on one line: the runtime's own message, or its stderr's tail
    when it died before it could say."""
    out = last_json(stdout)
    if returncode != 0 or out is None or "error" in out:
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or f"no output (exit status {returncode})"
        why = (out or {}).get("error") or tail
        raise EdgeticketError(f"{job['runtime']} failed on {Path(job['model']).name}{where}: {why[:400]}",
                              hint="check the model's input shape and the profile's provider")
    return out


def die_with_parent() -> None:
    """In the runner, before it starts: Linux sends it SIGKILL when the bench process dies, even by kill -9,
    so no runner outlives its bench. (An exception in the parent, SIGTERM and Ctrl-C included, already
    kills it through subprocess.run.)"""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_local(job: dict, inputs: dict[str, np.ndarray], timeout: float) -> tuple[dict, dict[str, np.ndarray]]:
    """Run runner.py on `job` (its model a local path) in an isolated interpreter; (its JSON, the logits)."""
    with work_dir() as folder:  # in $TMPDIR/edgeticket-UID/PID: swept by the next command if this one is killed
        job_file = write_job(folder, job, str(Path(job["model"]).resolve()),
                             {name: path.name for name, path in save_inputs(folder, inputs).items()},
                             str(runtime_file(job)))
        try:
            process = subprocess.run([sys.executable, "-I", str(RUNNER), str(job_file)],
                                     capture_output=True, text=True, timeout=timeout, preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise EdgeticketError(f"{job['runtime']} on {Path(job['model']).name} took over {timeout:.0f} s",
                                  hint="use fewer --runs, --seconds or --images") from None
        out = runner_output(process.returncode, process.stdout, process.stderr, job)
        return out, {name: np.load(folder / file) for name, file in out.get("logits", {}).items()}
