"""Does physical channel removal pay off in latency? MACs vs ORT CPU 1-thread p50, per channel sparsity.

    python benchmarks/speedup.py [--archs resnet18 resnet50] [--sparsities 0 0.3 0.5 0.7] [--round-to 1 8]

Prints, per model, sparsity and channel rounding (`draw --round-to`), the MAC reduction (dense MACs /
ticket MACs), the latency speed-up (dense p50 / ticket p50), and their ratio: 1.0 means latency falls
exactly as fast as MACs do.
Weights are random (nothing is downloaded); latency does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from edgeticket.bench import BenchConfig, bench_onnx
from edgeticket.console import console
from edgeticket.export import export_onnx
from edgeticket.models import get_arch, get_model
from edgeticket.tables import human_count, rows_table
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.tickets.stats import measure


def dense_ticket(arch: str, size: int) -> Ticket:
    torch.manual_seed(0)
    spec = get_arch(arch)
    model = get_model(arch, num_classes=1000)
    return Ticket(arch, {"num_classes": 1000, "in_channels": 3}, model.state_dict(), (3, size, size),
                  spec.mean, spec.std, [str(i) for i in range(1000)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.3, 0.5, 0.7])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--round-to", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            source = dense_ticket(arch, args.size)
            dense_macs = dense_ms = None
            variants = [(s, r) for s in args.sparsities for r in (args.round_to if s else [1])]
            for sparsity, round_to in variants:
                ticket = draw_ticket(source, DrawConfig(pattern="channel", sparsity=sparsity,
                                                        round_to=round_to))[0] if sparsity else source
                path = Path(tmp) / f"{arch}-{sparsity}-{round_to}.onnx"
                export_onnx(ticket, path)
                macs = measure(ticket.build_model(), ticket).macs
                p50 = bench_onnx(path, BenchConfig(runs=args.runs, warmup=5, seconds=2.0)).latency.p50_ms
                dense_macs, dense_ms = dense_macs or macs, dense_ms or p50
                mac_reduction, speedup = dense_macs / macs, dense_ms / p50
                rows.append({"arch": arch, "sparsity": sparsity, "round_to": round_to, "macs": macs, "p50_ms": p50,
                             "mac_reduction": mac_reduction, "speedup": speedup, "ratio": speedup / mac_reduction})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    rows_table(f"channel tickets at {args.size}x{args.size}, onnxruntime CPU, 1 thread, batch 1",
               ["model", "sparsity", "round to", "MACs", "p50 ms", "MAC reduction", "speed-up", "speed-up / MAC reduction"],
               [[r["arch"], f"{r['sparsity']:.1f}", r["round_to"], human_count(r["macs"]), f"{r['p50_ms']:.1f}",
                 f"{r['mac_reduction']:.2f}x", f"{r['speedup']:.2f}x", f"{r['ratio']:.2f}"] for r in rows])
    console.print("ratio >= 0.8 at 0.5 means latency tracks MACs; measured in one run on a shared machine.")


if __name__ == "__main__":
    main()
