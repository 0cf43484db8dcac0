"""A fork server for tests that signal an edgeticket command: a Python process that imports edgeticket (torch,
scikit-learn, the ONNX exporter) once, then forks a child per command that runs `edgeticket ARGS` as
`python -m edgeticket` does, in its own folder, with its own TMPDIR, stdout and stderr; its exit status and its
signals are its own. A fresh interpreter spends ~4 s importing before any work, and a signal meant for the work
would mostly hit the imports. A signal during the imports (before edgeticket's handler, exit -15) needs a fresh
interpreter: test_faults.py starts one for that moment.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SERVER = r"""
import json, os, sys, tempfile
# what the commands import, paid once: only modules that start no thread but OpenBLAS's (which forks safely);
# onnxruntime's import starts a thread pool that a forked child waits for at exit, forever
import edgeticket.api, edgeticket.cli, edgeticket.metrics, edgeticket.tickets, matplotlib.pyplot, scipy.stats
import onnxscript.function_libs.torch_lib.ops, sklearn.datasets, torch.export, torch.onnx._internal.exporter._core
import gc
gc.freeze()  # a child's collections skip what was imported: no copy of the server's memory (~1 s a command)
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


HUNG = 300  # s: a command still running then fails its test instead of stalling the suite


def exited(pid: int, timeout: float) -> bool:
    """Whether the server's child `pid` ends (is a zombie, not yet waited for) within `timeout` s."""
    deadline = time.perf_counter() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z":
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Finished:
    code: int  # as subprocess reports it: -N for signal N
    stdout: str
    stderr: str
    seconds: float


class Launcher:
    """SERVER's client: runs one edgeticket command at a time, signalled if asked."""

    def __init__(self):
        self.server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, cwd=Path(__file__).resolve().parent.parent,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # beside the other worker

    def ask(self, request: dict) -> int:
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        reply = self.server.stdout.readline()
        assert reply, f"the fork server died (exit {self.server.poll()})"
        return int(reply)

    def run(self, args: list[str], folder: Path, signum: int | None = None, delay: float = 0.0,
            after: Callable[[], bool] | None = None, poll: float = 0.0005) -> Finished:
        """`edgeticket ARGS` in `folder` (made if missing), with TMPDIR=folder/../tmp and its output in
        folder/../log.std*; signalled `delay` s after its start, or after `after()` first holds (called every `poll`
        s while the command runs)."""
        log = folder.parent / "log"
        for needed in (folder, folder.parent / "tmp"):
            needed.mkdir(parents=True, exist_ok=True)
        pid = self.ask({"args": args, "cwd": str(folder), "tmpdir": str(folder.parent / "tmp"), "log": str(log)})
        began = time.perf_counter()  # after the fork: the first request also waits for the server's imports
        try:
            if signum is not None:
                moment = began
                if after is not None:
                    while not after() and not exited(pid, 0) and time.perf_counter() < began + HUNG:
                        time.sleep(poll)
                    moment = time.perf_counter()
                time.sleep(max(0.0, moment + delay - time.perf_counter()))
                os.kill(pid, signum)  # a child that has exited stays a zombie until it is waited for: no error
            hung = not exited(pid, HUNG)
            seconds = time.perf_counter() - began
            if hung:
                os.kill(pid, signal.SIGKILL)
        finally:
            code = self.ask({"wait": pid})
        assert not hung, f"edgeticket {' '.join(args)} still ran after {HUNG} s"
        return Finished(code, Path(f"{log}.stdout").read_text(), Path(f"{log}.stderr").read_text(), seconds)

    def close(self):
        self.server.stdin.close()
        self.server.wait(timeout=30)
