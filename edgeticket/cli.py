"""The `edgeticket` command: each command parses, calls the library, and prints."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import __version__
from .console import console, emit_json, set_mode
from .errors import EdgeticketError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="Draw robust tickets from pretrained CNNs, make them small, ship them to edge runtimes.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of tables.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture of a foreign checkpoint (see `edgeticket models`).")]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle", help="Allow a checkpoint that needs pickle (runs code from the file!).")]


def command(example: str) -> Callable:
    """Register a command whose errors become one red line with a hint, and whose --help ends with an example."""
    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            set_mode(kwargs.get("json_output", False), kwargs.get("quiet", False))
            try:
                return func(*args, **kwargs)
            except EdgeticketError as error:
                fail(error.message, error.hint)
            except KeyboardInterrupt:
                fail("interrupted", "outputs are written atomically: nothing half-written was left")
            except Exception as error:  # an unexpected failure: still one line unless debugging
                if os.environ.get("EDGETICKET_DEBUG") == "1":
                    raise
                fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                     "set EDGETICKET_DEBUG=1 for the traceback")
        return app.command(epilog=f"Example: {example}")(wrapper)
    return decorate


def fail(message: str, hint: str | None) -> None:
    from rich.console import Console
    stderr = Console(stderr=True, highlight=False)
    stderr.print(f"[bold red]error:[/] {message}" + (f" [dim]({hint})[/]" if hint else ""), soft_wrap=True)
    raise typer.Exit(1)


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        console.print(f"edgeticket {__version__}")
        raise typer.Exit()


@command("edgeticket models")
def models(json_output: Json = False, quiet: Quiet = False) -> None:
    """List the registered architectures."""
    from .models import get_arch, list_models
    rows = [[n, get_arch(n).input_size, get_arch(n).first_conv, get_arch(n).classifier] for n in list_models()]
    if json_output:
        return emit_json([dict(zip(["name", "input_size", "first_conv", "classifier"], r)) for r in rows])
    from .tables import rows_table
    rows_table("architectures", ["name", "input", "first conv", "classifier"], rows)


@command("edgeticket inspect runs/t50.ticket")
def inspect(path: Path, arch: Arch = None, trust_pickle: TrustPickle = False,
            json_output: Json = False, quiet: Quiet = False) -> None:
    """Show a ticket's (or checkpoint's) provenance, size, and per-layer channels and sparsity."""
    from .models.checkpoints import load_checkpoint
    from .tickets.stats import layer_table, measure
    ticket = load_checkpoint(path, arch, trust_pickle)
    model = ticket.build_model()
    size, layers = measure(model, ticket), layer_table(model)
    if json_output:
        return emit_json({"arch": ticket.arch, "input_size": ticket.input_size, "size": size.as_dict(),
                          "provenance": ticket.provenance, "layers": [vars(r) for r in layers]})
    from .tables import human_count, key_values, rows_table
    key_values(f"{path.name}: {ticket.arch}", {"input": ticket.input_size, "classes": ticket.num_classes,
               "params": human_count(size.params), "non-zero params": human_count(size.nonzero_params),
               "MACs": human_count(size.macs), **{k: v for k, v in ticket.provenance.items() if k != "stages"}})
    rows_table("layers", ["layer", "kind", "in", "out", "weights", "sparsity"],
               [[r.name, r.kind, r.in_channels, r.out_channels, human_count(r.weights), f"{r.sparsity:.1%}"]
                for r in layers])


@command("edgeticket draw runs/src-robust.pt --method omp --pattern channel --sparsity 0.5 -o runs/t50.ticket")
def draw(checkpoint: Path, output: Annotated[Path, typer.Option("-o", "--output", help="Ticket file to write.")],
         method: Annotated[str, typer.Option(help="omp | imp | a-imp | lmp")] = "omp",
         pattern: Annotated[str, typer.Option(help="channel (physically removed) | unstructured | row | kernel")] = "channel",
         sparsity: Annotated[float, typer.Option(help="channel: fraction of channels removed per layer; "
                                                      "others: fraction of weights removed")] = 0.5,
         scope: Annotated[str, typer.Option(help="layerwise | global")] = "layerwise",
         include_first_last: Annotated[bool, typer.Option(help="Also mask the first conv and the classifier.")] = False,
         arch: Arch = None, trust_pickle: TrustPickle = False, source_kind: Annotated[Optional[str], typer.Option(
             help="robust | natural | noise, when the file does not say")] = None,
         json_output: Json = False, quiet: Quiet = False) -> None:
    """Draw a ticket (a sparse subnetwork) from a pretrained checkpoint."""
    from .fileio import sha256_file
    from .models.checkpoints import load_checkpoint
    from .tickets import DrawConfig, draw_ticket
    config = DrawConfig(method, pattern, sparsity, scope, include_first_last)
    config.validate()
    source = load_checkpoint(checkpoint, arch, trust_pickle, source_kind)
    source.provenance.setdefault("source_sha256", sha256_file(checkpoint))
    ticket, report = draw_ticket(source, config)
    ticket.save(output)
    if json_output:
        return emit_json({"output": str(output), **report.as_dict()})
    from .tables import before_after
    console.print(f"[bold]{method}[/] {pattern} ticket -> {output}: target sparsity {sparsity:.1%}, "
                  f"achieved {report.achieved_sparsity:.1%} of {'channels' if pattern == 'channel' else 'weights'}, "
                  f"{report.params_removed:.1%} of parameters removed")
    before_after("size", {"params": report.before.params, "non-zero params": report.before.nonzero_params,
                          "MACs": report.before.macs},
                 {"params": report.after.params, "non-zero params": report.after.nonzero_params,
                  "MACs": report.after.macs})


@command("edgeticket export runs/t50.ticket -o runs/t50.onnx")
def export(ticket_path: Annotated[Path, typer.Argument(metavar="TICKET")],
           output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
           format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
           json_output: Json = False, quiet: Quiet = False) -> None:
    """Export a ticket for an edge runtime; the output is checked against torch or not written."""
    from .export import export_onnx
    from .fileio import sha256_file
    from .models.checkpoints import load_checkpoint
    if format != "onnx":
        raise EdgeticketError(f"unknown --format '{format}'", hint="choose onnx")
    ticket = load_checkpoint(ticket_path)
    report = export_onnx(ticket, output, sha256_file(ticket_path))
    if json_output:
        return emit_json(vars(report))
    from .tables import human_bytes
    console.print(f"exported {report.format} -> {output} ({human_bytes(report.size_bytes)}), "
                  f"parity max |diff| {report.max_abs_diff:.1e} <= {report.tolerance:.0e}")


@command("edgeticket bench runs/t50.onnx --threads 1 --runs 200")
def bench(model: Path, threads: Annotated[int, typer.Option(min=1, help="Intra-op threads.")] = 1,
          runs: Annotated[int, typer.Option(min=1, help="Timed runs.")] = 100,
          warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs.")] = 10,
          json_output: Json = False, quiet: Quiet = False) -> None:
    """Latency of an exported model in onnxruntime (CPU, batch 1)."""
    from .bench import BenchConfig, bench_onnx
    result = bench_onnx(model, BenchConfig(threads=threads, runs=runs, warmup=warmup))
    if json_output:
        return emit_json(result.as_dict())
    from .tables import human_bytes, rows_table
    lat = result.latency
    rows_table(f"{model.name}: {result.runtime} {result.runtime_version} ({result.provider}, {threads} thread(s))",
               ["format", "size", "first (ms)", "p50", "p90", "p99", "mean", "std", "runs"],
               [["onnx", human_bytes(result.file_size_bytes), f"{result.first_inference_ms:.2f}", f"{lat.p50_ms:.2f}",
                 f"{lat.p90_ms:.2f}", f"{lat.p99_ms:.2f}", f"{lat.mean_ms:.2f}", f"{lat.std_ms:.2f}", lat.runs]])


if __name__ == "__main__":
    sys.exit(app())
