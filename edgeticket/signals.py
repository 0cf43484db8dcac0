"""SIGINT and SIGTERM in a command: what `kill` and Ctrl-C do to an output.

The contract (tests/test_faults.py holds it):

- Before an output is committed, a signal stops the command like Ctrl-C (KeyboardInterrupt, so every `finally`
  removes its temp files and runner processes): `error: interrupted`, exit status 1, the old output untouched.
- The commit itself (fileio's os.replace of the temp file or folder over the output) is a critical section: a
  signal that arrives during it waits until the rename is done. A signal that a library swallowed earlier (a
  KeyboardInterrupt raised inside a C callback or a __del__ is printed and dropped) is remembered and still
  refuses the commit.
- After a commit, a signal still stops the command, and it says so: `error: interrupted after OUTPUT was
  written`, exit status 1; the output is the new, checked file.
- After the command has returned (its result printed), the first signal is absorbed: the work is done and the
  process is exiting (exit status 0). At exit both signals are ignored, so none can kill the interpreter while
  it shuts down (Python puts the default handlers back then: that was the exit status 143 after success).

Without `install()` (the library used from Python) nothing changes but the critical section's bookkeeping.
"""

from __future__ import annotations

import atexit
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    installed = False  # our handler is in place (a command is running, or has just returned)
    finished = False  # the command returned: absorb the next signal
    received: int | None = None  # the signal that came during this command, if one did
    depth = 0  # nested critical sections
    committed: list[Path] = []  # outputs this command renamed into place
    previous: dict = {}  # the handlers before install(), put back after an absorbed signal
    atexit_registered = False


_state = _State()


def install() -> None:
    """At a command's start: SIGINT and SIGTERM stop it as described above (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state.received, _state.depth, _state.committed, _state.finished = None, 0, [], False
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not handle:
            _state.previous[signum] = current
        signal.signal(signum, handle)
    _state.installed = True
    if not _state.atexit_registered:
        atexit.register(_ignore_at_exit)
        _state.atexit_registered = True


def handle(signum, frame) -> None:
    """The handler: remember the signal; raise KeyboardInterrupt unless a commit is under way (then it is raised
    when the commit is done) or the command has already returned (then it is absorbed, once)."""
    _state.received = signum
    if _state.finished:
        _restore()
        return
    if _state.depth:
        return
    raise KeyboardInterrupt


def finish() -> None:
    """The command has returned, or is reporting its end: a signal now no longer interrupts anything."""
    if _state.installed:
        _state.finished = True


def _restore() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in _state.previous.items():
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    _state.installed = False


def _ignore_at_exit() -> None:
    if _state.installed and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextmanager
def critical() -> Iterator[None]:
    """Commit outputs: SIGINT and SIGTERM wait until the block is done, then interrupt. A signal that came before
    (and was swallowed) stops it before it starts. Nested blocks commit as one (a file and its sidecar)."""
    outermost = _state.depth == 0
    _state.depth += 1
    try:
        if outermost and _state.received is not None and not _state.finished:
            raise KeyboardInterrupt
        yield
    finally:
        _state.depth -= 1
    if outermost and _state.received is not None and not _state.finished:
        raise KeyboardInterrupt


def received() -> bool:
    """Whether SIGINT or SIGTERM came while the command ran (an error that follows is most likely its doing)."""
    return _state.installed and _state.received is not None and not _state.finished


def committed(path: str | Path) -> None:
    """`path` was renamed into place (inside `critical`)."""
    _state.committed.append(Path(path))


def interrupted() -> tuple[str, str]:
    """The error line and hint for a command stopped by a signal: whether an output was already in place."""
    done = _state.committed
    if not done:
        return "interrupted", "outputs are written atomically: nothing half-written was left"
    what = f"{done[-1]} was" if len(done) == 1 else f"{len(done)} outputs were (the last: {done[-1]})"
    return (f"interrupted after {what} written",
            "the signal came after that file was complete: it is in place, and the command stopped there (a re-run "
            "resumes or redoes the rest)")
