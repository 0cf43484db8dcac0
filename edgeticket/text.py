"""Strings from files and arguments, made harmless: no terminal escape codes, no forged lines or table cells.

Files are cleaned where they are read (ticket provenance and class names, exported models' metadata, eval and
bench records), so no later writer (report.md, plots, JSON, the terminal) can pass an escape code on; printing
cleans again. Plain Python, so every layer (and the torch-free bench runner) can import it."""

from __future__ import annotations

import re

# C0 and C1 control characters but tab and newline: ESC starts every terminal escape (OSC 8 links, clear, title)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]+")


def plain(value: object) -> str:
    """Text to print: no control characters, so no escape codes (line breaks stay, for multi-line output)."""
    return CONTROL_CHARACTERS.sub("", str(value))


def one_line(value: object) -> str:
    """A value from a file on one line: control characters removed, line breaks and tabs become one space, so it
    cannot forge a second error line or a table row."""
    return plain(LINE_BREAKS.sub(" ", str(value)))


def clean(value: object) -> object:
    """Every string in a JSON-like structure (keys included) made `one_line`; numbers and the rest unchanged."""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, dict):
        return {one_line(k) if isinstance(k, str) else k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean(v) for v in value)
    return value
