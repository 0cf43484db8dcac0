"""The zoo at 224x224 on ort-cpu-1t: what a 0.5 channel ticket (`draw --sparsity 0.5 --round-to 8`) buys per
architecture, in one run.

    python benchmarks/zoo.py                      # every registered ImageNet architecture, about 25 min on 2 cores
    python benchmarks/zoo.py --archs resnet18 timm:resnet50 --show --markdown

Per architecture: params, MACs and p50 (the median of 3 interleaved benches) of the dense model and of the ticket, the MAC reduction (dense / ticket)
and the speed-up (dense p50 / ticket p50). The ticket is also timed without rounding (`--round-to 1`), so a model
that pruning makes slower shows whether channel counts off the SIMD width are why. Weights are random (nothing
is downloaded); latency does not depend on their values. Each finished architecture is kept in --out (a killed
run resumes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from speedup import dense_ticket

from edgeticket.bench import BenchConfig, bench_onnx
from edgeticket.console import console
from edgeticket.export import export_onnx
from edgeticket.fileio import write_json
from edgeticket.models import get_arch, get_model, list_models
from edgeticket.report import markdown_table
from edgeticket.tables import human_count, rows_table
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.tickets.channel import grouped_convs
from edgeticket.tickets.stats import measure

SIZE = 224


def measure_arch(arch: str, runs: int, rounds: int, tmp: Path) -> dict:
    """Exports the dense model and both tickets, then times them in turn, `rounds` times: each p50 is the median
    over rounds, so a neighbour's load on a shared machine weighs on the three alike."""
    source = dense_ticket(arch, SIZE)
    variants = {"dense": source}
    blocked = get_arch(arch).channel_pruning_blocked
    if not blocked:
        for round_to in (8, 1):
            variants[f"round_to_{round_to}"] = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.5,
                                                                              round_to=round_to))[0]
    row: dict = {"arch": arch, **({"blocked": blocked} if blocked else {})}
    for name, ticket in variants.items():
        export_onnx(ticket, tmp / f"{name}.onnx")  # checks the ONNX file against torch
        size = measure(ticket.build_model(), ticket)
        row[name] = {"params": size.params, "macs": size.macs, "p50s_ms": []}
    for _ in range(rounds):
        for name in variants:
            bench = bench_onnx(tmp / f"{name}.onnx", BenchConfig(runs=runs, warmup=3, seconds=1.0))
            row[name]["p50s_ms"].append(bench.latency.p50_ms)
    for name in variants:
        row[name]["p50_ms"] = statistics.median(row[name]["p50s_ms"])
    return row


def show(rows: list[dict], markdown: bool) -> None:
    header = ["model", "params", "MACs", "p50 ms", "0.5 params", "0.5 MACs", "0.5 p50 ms", "MAC reduction",
              "speed-up", "speed-up, round-to 1"]
    table = []
    for row in rows:
        dense = row["dense"]
        cells = [row["arch"], human_count(dense["params"]), human_count(dense["macs"]), f"{dense['p50_ms']:.1f}"]
        if "blocked" in row:
            table.append(cells + ["no channel pruning"] + [""] * 5)
            continue
        ticket, unrounded = row["round_to_8"], row["round_to_1"]
        rounded = not grouped_convs(get_model(row["arch"]))  # a draw keeps those unrounded (tickets/channel.py)
        table.append(cells + [human_count(ticket["params"]), human_count(ticket["macs"]), f"{ticket['p50_ms']:.1f}",
                              f"{dense['macs'] / ticket['macs']:.2f}x", f"{dense['p50_ms'] / ticket['p50_ms']:.2f}x",
                              f"{dense['p50_ms'] / unrounded['p50_ms']:.2f}x" if rounded else "(grouped convs: unrounded)"])
    if markdown:
        print(markdown_table(header, table))
        return
    rows_table(f"0.5 channel tickets (round-to 8) at {SIZE}x{SIZE}, onnxruntime CPU, 1 thread, batch 1", header, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=[a for a in list_models() if get_arch(a).input_size == SIZE])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per bench")
    parser.add_argument("--rounds", type=int, default=3, help="benches per model, interleaved; p50 is their median")
    parser.add_argument("--out", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--show", action="store_true", help="print the table from --out, measuring nothing")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in args.archs:
        done = args.out / f"{arch.replace(':', '_')}.json"
        if not done.exists() and not args.show:
            console.print(f"measuring {arch}")
            with tempfile.TemporaryDirectory() as tmp:
                write_json(measure_arch(arch, args.runs, args.rounds, Path(tmp)), done)
        if done.exists():
            rows.append(json.loads(done.read_text()))
    show(rows, args.markdown)


if __name__ == "__main__":
    main()
