"""One console for results (stdout) and one for progress (stderr), so `--json` output stays clean."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(highlight=False)
progress_console = Console(stderr=True, highlight=False)


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
        progress_console.print(message)


@contextmanager
def progress_bar(*fields: str) -> Iterator[Progress]:
    """A rich progress bar on stderr; hidden under --json/--quiet. `fields` are task fields shown after the bar."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields]
    with Progress(*columns, console=progress_console, disable=mode.json or mode.quiet, transient=False) as bar:
        yield bar
