"""One console for results (stdout) and one for progress (stderr), so `--json` output stays clean."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from .text import plain


class TextConsole(Console):
    """Prints every string as text: no rich markup (a `[/]` in a file name is not a tag, and cannot crash the
    output) and no control characters. Styling is explicit, with `style=` or `rich.text.Text`."""

    def __init__(self, **kwargs):
        super().__init__(markup=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs):
        return super().render_str(plain(text), **kwargs)


# piped or logged output gets wide tables (bench has 12 columns) instead of rich's 80-column default
console = TextConsole(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
progress_console = TextConsole(stderr=True)
error_console = TextConsole(stderr=True, soft_wrap=True)


@dataclass
class OutputMode:
    json: bool = False
    quiet: bool = False


mode = OutputMode()


def set_mode(json_output: bool = False, quiet: bool = False) -> None:
    mode.json = json_output
    mode.quiet = quiet


def emit_json(payload: object, indent: int | None = 2) -> None:
    """One JSON document on stdout (indent=None gives one line of a JSON-lines stream)."""
    print(json.dumps(payload, indent=indent, default=str), flush=True)


def info(message: str) -> None:
    """Human chatter: goes to stderr, silent under --json or --quiet."""
    if not (mode.json or mode.quiet):
        progress_console.print(message, soft_wrap=True)  # a log line stays one line


def warn(message: str) -> None:
    """Something the user should know although the command goes on: stderr, also under --json (stdout stays one
    JSON document); silent only under --quiet."""
    if not mode.quiet:
        progress_console.print(f"warning: {message}", style="yellow", soft_wrap=True)


_active: list[Progress] = []


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress bar on stderr; hidden under --json/--quiet. Every task carries a `status` text field.
    Inside another bar (a sweep around training runs) it adds its tasks to that one and removes them on exit,
    since rich shows one live display at a time."""
    if _active:
        outer = _active[-1]
        before = set(outer.task_ids)
        try:
            yield outer
        finally:
            for task in set(outer.task_ids) - before:
                outer.remove_task(task)
        return
    columns = [TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}", markup=False)]
    with Progress(*columns, console=progress_console, disable=mode.json or mode.quiet) as bar:
        _active.append(bar)
        try:
            yield bar
        finally:
            _active.pop()


@contextmanager
def native_output_captured() -> Iterator[None]:
    """Route file descriptors 1 and 2, Python warnings and log records to a temp file for the duration.

    Converters and runtimes with native code (pnnx, ExecuTorch's cpuinfo) print their chatter straight to
    the file descriptors, which Python's redirect_stdout cannot catch; on stdout it would corrupt `--json`.
    EDGETICKET_DEBUG=1 lets it through."""
    if os.environ.get("EDGETICKET_DEBUG"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            logging.disable(logging.NOTSET)
