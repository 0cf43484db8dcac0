"""Rich tables for the CLI; the library returns dataclasses, this module only renders them."""

from __future__ import annotations

from rich.table import Table

from .console import console


def human_count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def human_bytes(value: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def key_values(title: str, rows: dict[str, object]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


def rows_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in (columns[0], "status", "layer", "kind") else "right")
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    console.print(table)


def before_after(title: str, before: dict[str, float], after: dict[str, float]) -> None:
    rows = [[name, human_count(before[name]), human_count(after[name]),
             f"{(1 - after[name] / before[name]) * 100:.1f}%" if before[name] else "-"] for name in before]
    rows_table(title, ["", "before", "after", "removed"], rows)
