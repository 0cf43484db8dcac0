"""Does the budget pay? Tickets drawn to a latency budget (`draw --max-latency-ms`) against uniform `--sparsity`
tickets of the same measured latency, on onnxruntime CPU with 1 thread.

    python benchmarks/latency_budget.py --part latency                    # table 1, about 45 min on 2 cores
    python benchmarks/latency_budget.py --part accuracy --fractions 1/3 --source-seed 0   # table 2, about 35 min
    python benchmarks/latency_budget.py --part latency --show --markdown  # the README's table, from --out

Table 1, random weights (latency does not depend on their values), 224 px: per model and budget (1/2, 1/3, 1/5 of
the dense p50), the budget ticket's p50 / budget, then its speed-up and MAC reduction next to those of the
uniform tickets (--round-to 1 and 8) whose measured latency is nearest (a bisection on --sparsity). At equal
latency, the ticket that keeps more MACs spent the latency on convolutions that run fast on this device.

Table 2, the demo task upscaled so that latency matters: Fashion-MNIST sources (natural and PGD-L2 robust,
pretrained here at 64 px) -> scikit-learn digits at 64 px. Per seed, source and budget: the budget ticket and
the uniform ticket of equal measured latency (within 5%; both timed in alternation) are finetuned alike, and
their digits test accuracies are compared, paired by seed, with a 95% Student-t interval.

Accuracies are percentages (cells kept by runs before 2026-11-26 hold fractions: give those a new --out).
Every finished step is kept under --out (a killed run resumes; a changed option that its file names do not
carry, such as --source-images, needs a new --out); each part ends by printing its table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import edgeticket as et
from edgeticket.bench import BenchConfig, bench_artifact
from edgeticket.console import console, info
from edgeticket.errors import EdgeticketError
from edgeticket.export import export_onnx
from edgeticket.fileio import write_json
from edgeticket.models import get_arch
from edgeticket.report import markdown_table, t_interval, verdict
from edgeticket.tables import rows_table
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.tickets.stats import measure
from speedup import dense_ticket  # a random-weight ticket, as speedup.py times them

PROFILE = "ort-cpu-1t"
FRACTIONS = {"1/2": 1 / 2, "1/3": 1 / 3, "1/5": 1 / 5}
EQUAL = 0.05  # "equal latency": within 5%
SOURCES = {"natural": "none", "robust": "l2:1.0"}


def p50s(tickets: list[Ticket], rounds: int = 3, runs: int = 50) -> list[float]:
    """Each ticket's ORT p50, benched in alternation (a, b, c, a, b, c, ...), median over rounds: a machine
    that slows down for a while slows all of them alike."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, ticket in enumerate(tickets):
            paths.append(Path(folder) / f"{index}.onnx")
            export_onnx(ticket, paths[-1])
        times = [[bench_artifact(path, PROFILE, BenchConfig(runs=runs, warmup=5, seconds=0.5)).latency.p50_ms
                  for path in paths] for _ in range(rounds)]
    return [statistics.median(column) for column in zip(*times)]


def uniform_near(source: Ticket, target_ms: float, round_to: int, steps: int = 9) -> tuple[Ticket, float, float]:
    """The uniform --sparsity ticket whose measured latency is nearest `target_ms`: bisection on the sparsity."""
    low, high, best = 0.0, 0.95, None
    for _ in range(steps):
        sparsity = (low + high) / 2
        ticket = draw_ticket(source, DrawConfig("omp", "channel", sparsity, round_to=round_to))[0]
        ms = p50s([ticket], rounds=1)[0]
        if best is None or abs(ms - target_ms) < abs(best[2] - target_ms):
            best = (ticket, sparsity, ms)
        if abs(ms - target_ms) <= EQUAL / 2 * target_ms:
            break
        low, high = (sparsity, high) if ms > target_ms else (low, sparsity)
    return best


def budget_ticket(source: Ticket, budget_ms: float) -> Ticket:
    return et.draw(source, max_latency_ms=budget_ms, device=PROFILE, round_to=8)


def macs(ticket: Ticket) -> int:
    return ticket.provenance.macs_after or ticket.provenance.macs_before


# -- table 1: latency and MACs at equal latency ------------------------------------------------------------------

def latency_rows(arch: str, size: int, fractions: list[str]) -> list[dict]:
    source = dense_ticket(arch, size)
    dense_ms = p50s([source])[0]
    dense_macs = measure(source.build_model(), source).macs
    rows = []
    for fraction in fractions:
        budget_ms = FRACTIONS[fraction] * dense_ms
        info(f"{arch}@{size}: budget {fraction} of dense = {budget_ms:.3g} ms")
        try:
            budget = budget_ticket(source, budget_ms)
        except EdgeticketError as error:  # below what the narrowest network reaches: the table says so
            if "below the smallest latency" not in error.message:
                raise
            rows.append({"arch": arch, "size": size, "fraction": fraction, "budget_ms": budget_ms,
                         "unreachable": error.message})
            continue
        uniform = {r: uniform_near(source, budget.provenance.measured_latency_ms, r) for r in (1, 8)}
        tickets = {"budget": budget, "uniform_r1": uniform[1][0], "uniform_r8": uniform[8][0]}
        row = {"arch": arch, "size": size, "fraction": fraction, "dense_ms": dense_ms, "dense_macs": dense_macs,
               "budget_ms": budget_ms, "draws": len(budget.provenance.stages[-1].details["latency"]["rounds"]),
               "draw_measured_ms": budget.provenance.measured_latency_ms,
               "uniform_sparsity": {"uniform_r1": uniform[1][1], "uniform_r8": uniform[8][1]}}
        for name, ms in zip(tickets, p50s(list(tickets.values()))):
            row[name] = {"p50_ms": ms, "macs": macs(tickets[name]), "speedup": dense_ms / ms,
                         "mac_reduction": dense_macs / macs(tickets[name])}
        rows.append(row)
    return rows


def show(title: str, header: list[str], lines: list[list[str]], markdown: bool) -> None:
    if markdown:
        print(markdown_table(header, lines))
    else:
        rows_table(title, header, lines)


def unsupported(arch: str, size: int) -> dict:
    return {"arch": arch, "size": size, "fraction": "-", "unsupported": get_arch(arch).channel_pruning_blocked}


def print_latency(rows: list[dict], markdown: bool = False) -> None:
    def side(cell: dict) -> list[str]:
        return [f"{cell['p50_ms']:.2f}", f"{cell['speedup']:.2f}x", f"{cell['mac_reduction']:.2f}x"]

    def line(r: dict) -> list[str]:
        head = [f"{r['arch']}@{r['size']}", r["fraction"], "" if "unsupported" in r else f"{r['budget_ms']:.2f}"]
        if "unreachable" in r or "unsupported" in r:
            return head + ["unreachable" if "unreachable" in r else "no channel pruning"] + [""] * 12
        return head + [f"{r['draw_measured_ms'] / r['budget_ms']:.2f}", f"{r['budget']['p50_ms'] / r['budget_ms']:.2f}",
                       *side(r["budget"]), f"{r['uniform_sparsity']['uniform_r1']:.2f}", *side(r["uniform_r1"]),
                       f"{r['uniform_sparsity']['uniform_r8']:.2f}", *side(r["uniform_r8"])]

    show(f"budget ticket vs the uniform --sparsity ticket of nearest latency, {PROFILE}, random weights",
         ["model", "budget", "ms", "draw: p50 / budget", "again: p50 / budget", "budget p50", "speed-up", "MAC red.",
          "r1 sparsity", "r1 p50", "speed-up", "MAC red.", "r8 sparsity", "r8 p50", "speed-up", "MAC red."],
         [line(r) for r in rows], markdown)
    if not markdown:
        console.print("draw: the p50 the budgeted draw measured; again: re-timed in alternation with the uniform "
                      "tickets (median of 3). MAC red.: dense MACs / ticket MACs; at equal latency, the smaller "
                      "reduction keeps more of the network.")


# -- table 2: accuracy at equal latency ----------------------------------------------------------------------------

def source_path(out: Path, kind: str, seed: int, args) -> Path:
    path = out / "sources" / f"fashion-mnist-{args.arch}-{args.size}px-{kind}-s{seed}.ticket"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        et.pretrain(args.arch, "fashion-mnist", adv=SOURCES[kind], subset=args.source_images,
                    epochs=args.source_epochs, image_size=args.size, seed=seed, output=path)
    return path


def accuracy_cell(source: Ticket, fraction: str, seed: int, args) -> dict:
    """Budget ticket and the uniform ticket of equal latency, both finetuned on digits with the same recipe."""
    dense_ms = p50s([source])[0]
    budget = budget_ticket(source, FRACTIONS[fraction] * dense_ms)
    target = budget.provenance.measured_latency_ms
    for _ in range(2):  # a second search, aimed at the budget ticket as timed beside the uniform one, if they differ
        candidates = [uniform_near(source, target, r) for r in (8, 1)]
        uniform, sparsity, _ = min(candidates, key=lambda c: abs(c[2] - target))
        budget_ms, uniform_ms = p50s([budget, uniform])
        if abs(budget_ms / uniform_ms - 1) <= EQUAL:
            break
        target = budget_ms
    tuned = {name: et.finetune(ticket, "digits", epochs=args.finetune_epochs, subset=args.target_images, seed=seed)
             for name, ticket in (("budget", budget), ("uniform", uniform))}
    return {"fraction": fraction, "seed": seed, "dense_ms": dense_ms, "budget_ms": FRACTIONS[fraction] * dense_ms,
            "budget_p50_ms": budget_ms, "uniform_p50_ms": uniform_ms, "uniform_sparsity": sparsity,
            "uniform_round_to": uniform.provenance.round_to, "budget_macs": macs(budget), "uniform_macs": macs(uniform),
            **{f"{name}_acc": t.provenance.stages[-1].details["test_accuracy"] for name, t in tuned.items()}}


def print_accuracy(cells: list[dict], markdown: bool = False) -> None:
    rows = []
    for kind in SOURCES:
        for fraction in FRACTIONS:
            timed = [c for c in cells if c["kind"] == kind and c["fraction"] == fraction]
            if not timed:
                continue
            group = [c for c in timed if abs(c["budget_p50_ms"] / c["uniform_p50_ms"] - 1) <= EQUAL]
            if not group:
                rows.append([kind, fraction, f"0 of {len(timed)}"] + [""] * 7)
                continue
            mean, _, low, high = t_interval([c["budget_acc"] - c["uniform_acc"] for c in group])
            gap = max(abs(c["budget_p50_ms"] / c["uniform_p50_ms"] - 1) for c in group)
            rows.append([kind, fraction, f"{len(group)} of {len(timed)}", f"{statistics.mean(c['budget_ms'] for c in group):.2f}",
                         f"{gap:.1%}", ", ".join(sorted({str(c["uniform_round_to"]) for c in group})),
                         f"{statistics.mean(c['budget_acc'] for c in group):.1f}",
                         f"{statistics.mean(c['uniform_acc'] for c in group):.1f}",
                         f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]", verdict(len(group), low, high, "budget", "uniform")])
    show("digits accuracy at equal latency: budget ticket vs uniform --sparsity ticket (paired by seed)",
         ["source", "budget", "seeds within 5%", "budget ms", "max latency gap", "uniform round-to", "budget acc %",
          "uniform acc %", "difference, points [95% CI]", "verdict"], rows, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["latency", "accuracy"], required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/latency_budget"))
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenet_v2", "mobilenet_v3_small",
                                                      "efficientnet_b0", "shufflenet_v2_x1_0"])
    parser.add_argument("--arch", default="small_resnet", help="table 2's architecture")
    parser.add_argument("--size", type=int, default=None, help="input size (table 1: 224, table 2: 64)")
    parser.add_argument("--fractions", nargs="+", default=None, choices=list(FRACTIONS),
                        help="budgets as fractions of dense (table 1: all, table 2: 1/2 1/3)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--source-seed", type=int, default=None,
                        help="pretrain the sources once, with this seed (default: each seed its own sources)")
    parser.add_argument("--source-images", type=int, default=5000)
    parser.add_argument("--source-epochs", type=int, default=2)
    parser.add_argument("--target-images", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown (the README's)")
    parser.add_argument("--show", action="store_true", help="print what --out holds, computing nothing")
    args = parser.parse_args()
    folder = args.out / args.part
    folder.mkdir(parents=True, exist_ok=True)
    if args.show:
        found = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
        if args.part == "latency":
            blocked = [unsupported(arch, args.size or 224) for arch in args.archs if get_arch(arch).channel_pruning_blocked]
            return print_latency([row for rows in found for row in rows] + blocked, args.markdown)
        return print_accuracy(found, args.markdown)
    if args.part == "latency":
        size = args.size or 224
        rows = []
        for arch in args.archs:
            path = folder / f"{arch}-{size}.json"
            if get_arch(arch).channel_pruning_blocked:
                info(f"{arch}: skipped, {get_arch(arch).channel_pruning_blocked}")
                rows.append(unsupported(arch, size))
                continue
            if not path.exists():
                write_json(latency_rows(arch, size, args.fractions or list(FRACTIONS)), path)
            rows += json.loads(path.read_text())
        return print(json.dumps(rows, indent=2)) if args.json else print_latency(rows, args.markdown)
    args.size = args.size or 64
    cells = []
    for seed in args.seeds:
        for kind in SOURCES:
            source_seed = seed if args.source_seed is None else args.source_seed
            source = et.load(source_path(args.out, kind, source_seed, args))
            for fraction in args.fractions or ["1/2", "1/3"]:
                name = f"{args.arch}-{args.size}px-{kind}-s{seed}-src{source_seed}-{fraction.replace('/', 'of')}.json"
                path = folder / name
                if not path.exists():
                    write_json({"kind": kind, "source_seed": source_seed, **accuracy_cell(source, fraction, seed, args)},
                               path)
                cells.append(json.loads(path.read_text()))
    return print(json.dumps(cells, indent=2)) if args.json else print_accuracy(cells, args.markdown)


if __name__ == "__main__":
    main()
