"""Rich tables for the CLI; the library returns dataclasses, this module only renders them."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

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
        text = column in (columns[0], "status", "layer", "kind", "note", "stands for", "file", "here", "error", "format",
                          "suffix", "providers", "precisions", "version", "from")
        table.add_column(column, justify="left" if text else "right", overflow="fold")  # wrapped, never cut
    for row in rows:
        table.add_row(*[cell if isinstance(cell, Text) else str(cell) for cell in row])
    console.print(table)


def before_after(title: str, before: dict[str, float], after: dict[str, float]) -> None:
    rows = [[name, human_count(before[name]), human_count(after[name]),
             f"{(1 - after[name] / before[name]) * 100:.1f}%" if before[name] else "-"] for name in before]
    rows_table(title, ["", "before", "after", "removed"], rows)


# peak MB: the runner's process at its peak (Python, numpy, inputs, runtime); runtime MB: the runtime's own share
BENCH_HEADER = ["device", "status", "size", "Acc %", "first ms", "p50 ms", "p90 ms", "p99 ms", "mean ms", "min ms",
                "peak MB", "runtime MB", "note"]


def _bench_cells(result) -> list[str]:
    lat = result.latency
    return [human_bytes(result.file_size_bytes), "-" if result.accuracy is None else f"{result.accuracy:.2f}",
            f"{result.first_inference_ms:.2f}", f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}", f"{lat.p99_ms:.3f}",
            f"{lat.mean_ms:.3f}", f"{lat.min_ms:.3f}", f"{result.peak_memory_mb:.0f}",
            "-" if result.runtime_memory_mb is None else f"{result.runtime_memory_mb:.1f}"]


def bench_rows(title: str, results: list) -> None:
    rows_table(title, BENCH_HEADER, [[r.device, "ok", *_bench_cells(r), r.note] for r in results])


def device_rows(title: str, rows: list) -> None:
    """The `yolo benchmark` style table: one row per device profile, with a status."""
    colour = {"ok": "green", "not available here": "yellow", "unreachable": "yellow"}
    rows_table(title, BENCH_HEADER,
               [[r.device, Text(r.status, style=colour.get(r.status, "red")),
                 *(_bench_cells(r.result) if r.result else ["-"] * 10), r.reason] for r in rows])


def latency_report(latency: dict) -> None:
    """A budgeted draw (its provenance's `latency` record): each round's budget, prediction and measurement, the
    latency table behind them, and the channels each group kept."""
    table = latency["table"]
    kept = latency.get("kept_round", -1) % len(latency["rounds"])  # older tickets: the last draw was kept
    rows_table(f"latency on {latency['device']} (budget {latency['max_latency_ms']:g} ms, "
               f"{'met' if latency['met'] else 'NOT met'})", ["draw", "budget ms", "predicted ms", "measured ms"],
               [[f"{i + 1}{' (kept)' if i == kept else ''}",
                 f"{r['budget_ms']:.3g}", f"{r['predicted_ms']:.3g}", f"{r['measured_ms']:.3g}"]
                for i, r in enumerate(latency["rounds"])])
    source = (f"measured {table['measured_blocks']} blocks in {table['build_seconds']:.0f} s" if table["measured_blocks"]
              else f"from the cache (built in {table['first_build_seconds']:.0f} s)")
    console.print(f"latency table: {table['blocks']} blocks, {source}; dense {table['dense_ms']:.3g} ms; error on "
                  f"{len(table['errors'])} random configurations {table['mean_error']:.1%} (mean |predicted/measured - 1|)"
                  f"; {table['file']}", markup=False, soft_wrap=True)
    rows_table("channels kept per group (named by its root layer, as torch-pruning names it)", ["group", "kept", "of", "removed"],
               [[name, kept, total, f"{1 - kept / total:.0%}"] for name, (kept, total) in latency["kept_channels"].items()])
