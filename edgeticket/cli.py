"""The `edgeticket` command: each command parses, calls the library, and prints."""

from __future__ import annotations

import functools
import math
import os
import sys
from inspect import signature
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import __version__
from .config import (FINETUNE, MAX_BATCH, MAX_BENCH_RUNS, MAX_BENCH_SECONDS, MAX_BENCH_WARMUP, MAX_EPOCHS, MAX_IMAGE_SIZE,
                     MAX_IMAGES, MAX_SEED, MAX_STEPS, PRETRAIN)
from .console import console, emit_json, info, set_mode
from .errors import EdgeticketError, NeedsPickle

def _flags_take_no_value() -> None:
    """typer's rich help shows a `<bool>` type beside flags, as if `--json` took a value; flags have no type."""
    from typer.core import TyperOption
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is not None:
        TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else shown(self, ctx)


_flags_take_no_value()


class OneLineErrors(typer.core.TyperGroup):
    """A usage error (a bad option value, a missing argument, an unknown command) is one line, like every other
    error: `error: MESSAGE (see `edgeticket CMD --help`)` on stderr, or one JSON document under --json; exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from typer._click.exceptions import ClickException
        args = sys.argv[1:] if args is None else list(args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as error:
            code = error.exit_code
            if type(error).__name__ != "NoArgsIsHelpError":  # `edgeticket` alone: the help, already printed
                name = error.ctx.command_path if getattr(error, "ctx", None) else prog_name or "edgeticket"
                show_error(error.format_message(), f"see `{name} --help`", as_json="--json" in args)
        except typer.Abort:
            code = 1
            show_error("interrupted", None, as_json="--json" in args)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="Draw robust tickets from pretrained CNNs, make them small, ship them to edge runtimes.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of tables.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture of a foreign checkpoint (see `edgeticket "
                                                            "models`; timm:NAME for timm). Default: from a MadryLab "
                                                            "file name, else the parameters' names and shapes.")]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle", help="Allow a checkpoint that needs pickle (runs code from the file!).")]


def finite(low: float | None = None, high: float | None = None) -> Callable:
    """A float option's check: NaN and infinity are not numbers of seconds or fractions (typer's own range check
    called `nan` "not <= 600"). The API's configs check the same bounds."""
    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            raise typer.BadParameter(f"{value:g} is not in the range {low:g} to {high:g}")
        return value
    return check


def command(example: str) -> Callable:
    """Register a command whose errors become one red line with a hint, and whose --help ends with an example."""
    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            set_mode(kwargs.get("json_output", False), kwargs.get("quiet", False))
            from . import signals
            from .fileio import command_temp
            signals.install()  # `kill` cleans up like Ctrl-C; an output's rename is never cut short (signals.py)
            try:
                with command_temp():  # temp files in $TMPDIR/edgeticket-UID/PID, swept after a kill -9
                    return func(*args, **kwargs)
            except NeedsPickle as error:
                trusted = "trust_pickle" in signature(func).parameters
                fail(error.message, error.hint if trusted else
                     "edgeticket's own files never need pickle; read this one with a command that takes --trust-pickle "
                     "(draw, inspect, finetune, pretrain --from, gap) if you trust where it came from, or re-save it as "
                     "a state_dict")
            except EdgeticketError as error:
                fail(*(signals.interrupted() if signals.received() else (error.message, error.hint)))
            except KeyboardInterrupt:
                signals.finish()
                fail(*signals.interrupted())
            except Exception as error:  # an unexpected failure: still one line unless debugging
                if signals.received():  # a KeyboardInterrupt in an import or a library became another error
                    fail(*signals.interrupted())
                if os.environ.get("EDGETICKET_DEBUG") == "1":
                    raise
                fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                     "set EDGETICKET_DEBUG=1 for the traceback")
            finally:
                signals.finish()  # done: a signal now is absorbed, not a traceback or exit status 143
        return app.command(epilog=f"Example: {example}")(wrapper)
    return decorate


def fail(message: str, hint: str | None) -> None:
    """One line on stderr (under --json: one JSON document on stdout), exit status 1."""
    from .console import mode
    show_error(message, hint, mode.json)
    raise typer.Exit(1)


def show_error(message: str, hint: str | None, as_json: bool) -> None:
    from rich.text import Text

    from .console import error_console
    from .text import one_line
    if as_json:
        emit_json({"error": one_line(message), "hint": one_line(hint) if hint else hint})
    else:
        error_console.print(Text.assemble(("error: ", "bold red"), one_line(message),
                                          (f" ({one_line(hint)})" if hint else "", "dim")))


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        console.print(f"edgeticket {__version__}")
        raise typer.Exit()


@command("edgeticket models")
def models(json_output: Json = False, quiet: Quiet = False) -> None:
    """List the registered architectures (and how to use any timm model)."""
    from .models import get_arch, list_models
    rows = [[n, get_arch(n).input_size, get_arch(n).first_conv, get_arch(n).classifier, get_arch(n).madry_name,
             not get_arch(n).channel_pruning_blocked] for n in list_models()]
    if json_output:
        return emit_json([dict(zip(["name", "input_size", "first_conv", "classifier", "madry_name",
                                    "channel_pruning"], r)) for r in rows])
    from .tables import rows_table
    rows_table("architectures", ["name", "input", "first conv", "classifier", "robust-models-transfer files",
                                 "channel pruning"],
               [row[:4] + [f"{row[4]}_*_eps*.ckpt" if row[4] else ""] + ["yes" if row[-1] else "no: masks only"]
                for row in rows])
    info("and timm:NAME, a timm model (pip install 'edgeticket[timm]'), e.g. --arch timm:inception_v3.tf_adv_in1k")


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
                          "provenance": ticket.provenance.to_dict(), "layers": [vars(r) for r in layers]})
    from .tables import human_count, key_values, rows_table
    key_values(f"{path.name}: {ticket.arch}", {"input": ticket.input_size, "classes": ticket.num_classes,
               "params": human_count(size.params), "non-zero params": human_count(size.nonzero_params),
               "MACs": human_count(size.macs), **{k: v for k, v in ticket.provenance.to_dict().items() if k != "stages"}})
    rows_table("layers", ["layer", "kind", "in", "out", "weights", "sparsity"],
               [[r.name, r.kind, r.in_channels, r.out_channels, human_count(r.weights), f"{r.sparsity:.1%}"]
                for r in layers])
    drawn = [s for s in ticket.provenance.stages if s.stage == "draw"]
    if drawn and "latency" in drawn[-1].details:
        from .tables import latency_report
        latency_report(drawn[-1].details["latency"])


On = Annotated[str, typer.Option(help="imp, a-imp, lmp: train on the target (downstream) or the source task (upstream).")]
DrawData = Annotated[Optional[str], typer.Option(help="imp, a-imp, lmp: the dataset they train on while drawing "
                                                      "(upstream: default the source's).")]


@command("edgeticket draw runs/src-robust.pt --method omp --pattern channel --sparsity 0.5 -o runs/t50.ticket")
def draw(checkpoint: Path, output: Annotated[Path, typer.Option("-o", "--output", help="Ticket file to write.")],
         method: Annotated[str, typer.Option(help="omp | imp | a-imp | lmp")] = "omp",
         pattern: Annotated[str, typer.Option(help="channel (physically removed) | unstructured | row | kernel")] = "channel",
         sparsity: Annotated[Optional[float], typer.Option(
             callback=finite(), help="channel: fraction of channels removed per layer; others: fraction of weights "
                                     "removed. Default 0.5; with --max-latency-ms a floor, default none.")] = None,
         scope: Annotated[str, typer.Option(help="layerwise | global")] = "layerwise",
         include_first_last: Annotated[bool, typer.Option(help="Also mask the first conv and the classifier.")] = False,
         round_to: Annotated[Optional[int], typer.Option(min=1, help="channel: keep a multiple of N channels per "
                                                                    "layer (8, 16 suit SIMD); layers that would keep "
                                                                    "fewer stay whole. Default: --device's, else 1 "
                                                                    "(8 with --max-latency-ms).")] = None,
         device: Annotated[Optional[str], typer.Option(help="Device profile whose round_to the channels follow, and "
                                                            "where --max-latency-ms is measured (see `edgeticket "
                                                            "devices`).")] = None,
         max_latency_ms: Annotated[Optional[float], typer.Option(
             callback=finite(), help="channel omp, imp, a-imp: prune until the ticket runs in this many ms (p50) on "
                                     "--device: a cached latency table predicts, export and bench check.")] = None,
         on: On = "downstream", data: DrawData = None, data_root: DataRoot = None, subset: Subset = 1000,
         rate: Annotated[float, typer.Option(callback=finite(),
                                             help="imp, a-imp: fraction of what remains pruned per round.")] = 0.2,
         epochs: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS, help="imp, a-imp: epochs per round; lmp: "
                                                                         "epochs of mask learning.")] = 1,
         lr: Annotated[float, typer.Option(callback=finite(), help="imp, a-imp, lmp: learning rate while "
                                                                  "drawing.")] = 0.01,
         attack: Annotated[str, typer.Option(help="a-imp: PGD threat model (l2:EPS | linf:EPS).")] = "l2:1.0",
         steps: Steps = 3,
         rewind: Annotated[bool, typer.Option(help="imp, a-imp: reset survivors to pretrained values each round.")] = False,
         seed: Seed = 0, arch: Arch = None, trust_pickle: TrustPickle = False,
         source_kind: Annotated[Optional[str], typer.Option(help="robust | natural | noise, when the file does not say")] = None,
         json_output: Json = False, quiet: Quiet = False) -> None:
    """Draw a ticket (a sparse subnetwork) from a pretrained checkpoint."""
    from . import api
    from .fileio import check_output, sha256_file
    check_output(output, checkpoint)
    source = api.load(checkpoint, arch, trust_pickle, source_kind)
    source.provenance.source_sha256 = source.provenance.source_sha256 or sha256_file(checkpoint)
    ticket = api.draw(source, method=method, pattern=pattern, sparsity=sparsity, scope=scope,
                      include_first_last=include_first_last, round_to=round_to, device=device,
                      max_latency_ms=max_latency_ms, on=on, data=data, data_root=data_root,
                      subset=subset, rate=rate, epochs=epochs, lr=lr, attack=attack, steps=steps, rewind=rewind,
                      seed=seed, output=output)
    report = api.draw_report(ticket)
    if json_output:
        return emit_json({"output": str(output), **report})
    p = ticket.provenance
    goal = (f"budget {p.latency_budget_ms:g} ms on {p.latency_device}" if p.latency_budget_ms is not None
            else f"target sparsity {p.sparsity:.1%}")
    console.print(f"{method} {pattern} ticket -> {output}: {goal}; removed {p.achieved_sparsity:.1%} of "
                  f"{'channels' if pattern == 'channel' else 'weights'}, {p.params_removed:.1%} of parameters",
                  markup=False)
    from .tables import before_after
    before_after("size", {"params": p.params_before, "MACs": p.macs_before}, {"params": p.params_after,
                                                                               "MACs": p.macs_after})
    if "latency" in report:
        from .tables import latency_report
        latency_report(report["latency"])


@command("edgeticket export runs/t50-digits.ticket -o runs/t50.onnx --int8 --data digits")
def export(ticket_path: Annotated[Path, typer.Argument(metavar="TICKET")],
           output: Annotated[Path, typer.Option("-o", "--output", help="File or folder to write; its suffix (.onnx, "
                                                                        ".pte, .ncnn, a plugin's) names the format.")],
           format: Annotated[Optional[str], typer.Option("--format", help="A runtime's format (see `edgeticket "
                                                                          "devices`; default: from the output's suffix)")] = None,
           int8: Annotated[bool, typer.Option("--int8", help="Static QDQ int8 (onnx): calibrated on --data.")] = False,
           data: Annotated[Optional[str], typer.Option("--data", help="Calibration/check data for --int8.")] = None,
           data_root: Annotated[Optional[Path], typer.Option("--data-root")] = None,
           json_output: Json = False, quiet: Quiet = False) -> None:
    """Export a ticket for an edge runtime; the output is checked against torch or not written."""
    from dataclasses import asdict

    from . import api
    report = api.export(ticket_path, output, format=format, int8=int8, data=data, data_root=data_root)
    if json_output:
        return emit_json(asdict(report))
    from .tables import human_bytes
    value, limit = ((f"{report.value:.2%}", f">= {report.threshold:.0%}") if report.precision == "int8"
                    else (f"{report.value:.3g}", f"<= {report.threshold:.3g}"))
    console.print(f"exported {report.format} {report.precision} -> {output} ({human_bytes(report.size_bytes)}); "
                  f"check: {report.check} = {value} (needs {limit})", markup=False)


@command("edgeticket bench runs/t50.onnx --device ort-cpu-1t --data digits")
def bench(model: Annotated[Path, typer.Argument(help="An exported model, or a ticket with --all-devices.")],
          device: Annotated[Optional[str], typer.Option(help="Profile name or TOML (see `edgeticket devices`).")] = None,
          data: Annotated[Optional[str], typer.Option(help="Target test set for accuracy in the runtime (default: "
                                                            "the one the model was finetuned on).")] = None,
          all_devices: Annotated[bool, typer.Option("--all-devices", help="Export and bench TICKET on every profile.")] = False,
          out: Annotated[Optional[Path], typer.Option(help="Folder for --all-devices exports (default: beside TICKET).")] = None,
          threads: Annotated[Optional[int], typer.Option(min=1, help="Override the profile's threads.")] = None,
          runs: Annotated[int, typer.Option(min=1, max=MAX_BENCH_RUNS, help="Timed runs, at least.")] = 100,
          warmup: Annotated[int, typer.Option(min=0, max=MAX_BENCH_WARMUP, help="Untimed warm-up runs.")] = 10,
          seconds: Annotated[float, typer.Option(callback=finite(0, MAX_BENCH_SECONDS),
                                                 help=f"Time for at least this long (up to {MAX_BENCH_SECONDS:g} "
                                                      "s).")] = 1.0,
          images: Annotated[Optional[int], typer.Option(min=1, max=MAX_IMAGES,
                                                        help="Accuracy on the first N test images.")] = None,
          input_shape: Annotated[Optional[str], typer.Option(
              help="1,C,H,W for a model whose graph leaves a dimension open (a dynamic batch becomes 1).")] = None,
          keep: Annotated[bool, typer.Option("--keep", help="On a board over ssh (a profile with an ssh table), leave "
                                                             "the pushed files there; the next bench skips them.")] = False,
          json_output: Json = False, quiet: Quiet = False) -> None:
    """Latency, memory and accuracy in an edge runtime, here or on your board over ssh; saved as
    MODEL.DEVICE.bench.json for `report`."""
    from .tables import bench_rows, device_rows
    if all_devices:
        if device or input_shape:
            raise EdgeticketError("--all-devices benches a ticket on every profile at its own input size",
                                  hint="drop --device and --input-shape, or bench one exported model without "
                                       "--all-devices")
        from .bench import BenchConfig
        from .bench.all_devices import bench_all_devices
        config = BenchConfig(runs=runs, warmup=warmup, seconds=seconds, threads=threads, images=images, keep=keep)
        rows = bench_all_devices(model, data, out or model.parent, config)
        if json_output:
            return emit_json([{**vars(r), "result": r.result.as_dict() if r.result else None} for r in rows])
        from .host import cpu_info
        return device_rows(f"{model.name} on every device profile, here: {cpu_info().describe()}", rows)
    from . import api
    from .bench.run import check_record_writable, record_bench
    check_record_writable(model)
    result = api.bench(model, device=device, data=data, runs=runs, warmup=warmup, seconds=seconds, threads=threads,
                       images=images, input_shape=input_shape, keep=keep, save=False)
    record = record_bench(result)  # MODEL.DEVICE.bench.json, for `report`
    if json_output:
        return emit_json(record)
    bench_rows(f"{model.name} on {result.device}" + (f", accuracy on {result.data}" if result.data else "")
               + (f" ({result.where})" if result.transport != "local" else ""), [result])


@command("edgeticket devices")
def devices(json_output: Json = False, quiet: Quiet = False) -> None:
    """Runtimes (built-in, and plugins from the `edgeticket.runtimes` entry points or $EDGETICKET_RUNTIMES) and
    device profiles (built-in, a runtime's, and yours from $EDGETICKET_DEVICES, ~/.config/edgeticket/devices/
    or ./devices/), and whether each can run on this machine (and why not)."""
    from dataclasses import asdict

    from rich.text import Text

    from .bench.devices import BrokenProfile, list_devices, timing_note, unavailable_reason
    from .host import cpu_info
    from .runtimes import list_runtimes
    runtimes = [r.as_dict() for r in list_runtimes()]
    rows = [(p, unavailable_reason(p)) for p in list_devices()]
    rows = [(p, reason, None if reason or getattr(p, "ssh", None) else timing_note(p)) for p, reason in rows]
    if json_output:
        return emit_json({"host": cpu_info().as_dict(), "runtimes": runtimes,
                          "devices": [{**asdict(p), "error": None, "available": reason is None,
                                       "reason": reason or note or ""} if not isinstance(p, BrokenProfile) else
                                      {"name": p.name, "path": p.path, "error": p.error.message, "available": False,
                                       "reason": reason} for p, reason, note in rows]})
    from .tables import rows_table
    here = lambda reason: Text("yes", "green") if not reason else Text.assemble(("no", "red"), f": {reason}")
    rows_table("runtimes", ["runtime", "format", "suffix", "providers", "precisions", "version", "here", "from"],
               [[r["name"], r["format"], r["suffix"], ", ".join(r["providers"]), ", ".join(r["precisions"]),
                 r["version"] or "-", here(r["reason"]), "built-in" if r["builtin"] else r["source"]]
                for r in runtimes])
    rows_table(f"device profiles on {cpu_info().describe()}",
               ["device", "runtime", "provider", "threads", "precision", "round to", "here", "stands for"],
               [[p.name + ("" if getattr(p, "builtin", False) else f" ({p.path})"),
                 *([p.runtime, p.provider, p.threads, p.precision, p.round_to] if not isinstance(p, BrokenProfile)
                   else ["-"] * 5),
                 Text(p.where, "cyan") if getattr(p, "ssh", None) else
                 Text.assemble(("yes", "green"), f" ({note})" if note else "") if reason is None
                 else Text.assemble(("no", "red"), f": {reason}"),
                 getattr(p, "stands_for", "")] for p, reason, note in rows])


Data = Annotated[str, typer.Option("--data", help="Dataset (see `edgeticket datasets`).")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Where local dataset files are ($EDGETICKET_DATA).")]
Subset = Annotated[Optional[int], typer.Option(min=1, max=MAX_IMAGES, help="Train on N stratified, seeded images.")]
Mode = Annotated[str, typer.Option(help="whole | linear | last-k:K")]
Adv = Annotated[str, typer.Option(help="none | l2:EPS | linf:EPS (8/255) | noise:SIGMA")]
Steps = Annotated[int, typer.Option(min=1, max=MAX_STEPS, help="PGD steps.")]
Epochs = Annotated[int, typer.Option(min=1, max=MAX_EPOCHS)]
Lr = Annotated[float, typer.Option(callback=finite(), help="Initial learning rate (x0.1 at 1/3 and 2/3 of the epochs).")]
Batch = Annotated[int, typer.Option(min=1, max=MAX_BATCH, help="Global batch size.")]
Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed for data order, subset and head.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
Output = Annotated[Path, typer.Option("-o", "--output", help="Ticket file to write.")]
Restart = Annotated[bool, typer.Option("--restart", help="Start over instead of resuming from OUTPUT.resume (what a "
                                                         "killed run left).")]


def trained_summary(what: str, output: Path, ticket, epochs: list, json_output: bool) -> None:
    from dataclasses import asdict
    stage = ticket.provenance.stages[-1].details
    if json_output:
        return emit_json({"output": str(output), "test_accuracy": stage["test_accuracy"],
                          "epochs": [asdict(e) for e in epochs], "provenance": ticket.provenance.to_dict()})
    console.print(f"{what} -> {output}: {ticket.provenance.target or ticket.provenance.source_data} test accuracy "
                  f"{stage['test_accuracy']:.2f}% on {stage['test_images']} images", markup=False)


@command("edgeticket pretrain --arch small_resnet --data fashion-mnist --adv l2:1.0 -o runs/src-robust.ticket")
def pretrain(output: Output, arch: Annotated[str, typer.Option(help="Architecture (see `edgeticket models`).")] = "small_resnet",
             data: Data = "fashion-mnist", data_root: DataRoot = None, subset: Subset = None,
             adv: Adv = "none", steps: Steps = 3, epochs: Epochs = PRETRAIN.epochs, lr: Lr = PRETRAIN.lr,
             batch_size: Batch = PRETRAIN.batch_size,
             image_size: Annotated[Optional[int], typer.Option(max=MAX_IMAGE_SIZE,
                                                               help="Input size (default: the architecture's).")] = None,
             start: Annotated[Optional[Path], typer.Option("--from", help="Continue from this checkpoint.")] = None,
             seed: Seed = 0, device: Device = "auto", restart: Restart = False, trust_pickle: TrustPickle = False,
             json_output: Json = False, quiet: Quiet = False) -> None:
    """Train a source model: natural, adversarial (PGD L2/Linf) or Gaussian-noise (random smoothing)."""
    from . import api
    epochs_seen: list = []
    ticket = api.pretrain(arch, data, adv=adv, steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, subset=subset,
                          image_size=image_size, start=start, data_root=data_root, seed=seed, device=device,
                          output=output, on_epoch=epochs_seen.append, restart=restart, trust_pickle=trust_pickle)
    trained_summary(f"{ticket.provenance.source_kind} {arch}", output, ticket, epochs_seen, json_output)


@command("edgeticket finetune runs/t50.ticket --data digits --mode whole -o runs/t50-digits.ticket")
def finetune(ticket_path: Annotated[Path, typer.Argument(metavar="TICKET")], output: Output, data: Data = "digits",
             data_root: DataRoot = None, subset: Subset = None, mode: Mode = "whole", adv: Adv = "none",
             steps: Steps = 3, epochs: Epochs = FINETUNE.epochs, lr: Lr = FINETUNE.lr,
             batch_size: Batch = FINETUNE.batch_size, seed: Seed = 0, device: Device = "auto",
             restart: Restart = False, trust_pickle: TrustPickle = False, json_output: Json = False,
             quiet: Quiet = False) -> None:
    """Finetune a ticket on a target task with a new head; masks and removed channels stay removed."""
    from . import api
    epochs_seen: list = []
    trained = api.finetune(ticket_path, data, mode=mode, adv=adv, steps=steps, epochs=epochs, lr=lr,
                           batch_size=batch_size, subset=subset, data_root=data_root, seed=seed, device=device,
                           output=output, on_epoch=epochs_seen.append, restart=restart, trust_pickle=trust_pickle)
    trained_summary(f"{mode} finetune", output, trained, epochs_seen, json_output)


def show_report(report, json_output: bool) -> None:
    if json_output:
        return emit_json({"rows": report.rows, "summary": report.summary, "differences": report.differences,
                          "failed": report.failed, "markdown": str(report.markdown),
                          "plots": [str(p) for p in report.plots]})
    from .tables import rows_table
    for title, (header, lines) in report.sections():
        rows_table(title, header, lines)
    console.print(f"wrote {report.markdown}, {report.json}, " + ", ".join(str(p) for p in report.plots), markup=False)


Paper = Annotated[bool, typer.Option("--paper/--no-paper", help="Show the paper's Table I beside the results.")]


@command("edgeticket eval runs/t50-digits.ticket --data digits --ood fashion-mnist --attack linf:8/255")
def eval(model: Annotated[Path, typer.Argument(help="A ticket, or an exported .onnx")], data: Data = "digits",
         data_root: DataRoot = None,
         ood: Annotated[Optional[str], typer.Option(help="OOD set for ROC-AUC: a dataset, or gaussian-noise.")] = None,
         attack: Annotated[str, typer.Option(help="none | linf:EPS | l2:EPS")] = "linf:8/255",
         attack_steps: Annotated[int, typer.Option(min=1, max=MAX_STEPS)] = 20,
         adv_images: Annotated[int, typer.Option(min=1, max=MAX_IMAGES, help="Test images attacked.")] = 1000,
         ood_images: Annotated[Optional[int], typer.Option(min=1, max=MAX_IMAGES,
                                                           help="Only the first N OOD images (default: all).")] = None,
         save: Annotated[bool, typer.Option("--save/--no-save", help="Write MODEL.eval.json for `report` (metrics a "
                                                                     "run leaves out are kept from the earlier one).")] = True,
         json_output: Json = False, quiet: Quiet = False) -> None:
    """The paper's Table I row (Acc, ECE, NLL, Adv-Acc, OOD ROC-AUC) for a ticket or an ONNX model."""
    from .evaluate import EvalConfig, evaluate
    result = evaluate(model, EvalConfig(data, str(data_root) if data_root else None, ood, attack, attack_steps,
                                        adv_images, ood_images), save=save)
    if json_output:
        return emit_json(result.as_dict())
    from .report import _fmt
    from .tables import rows_table
    m = result.metrics
    rows_table(f"{model.name} on {result.data} ({result.test_images} test images, {result.runtime})",
               ["Acc %", "ECE", "NLL", "Adv-Acc %", "ROC-AUC"],
               [[_fmt(m.accuracy), _fmt(m.ece, 4), _fmt(m.nll, 4), _fmt(m.adv_accuracy), _fmt(m.ood_roc_auc)]])
    if m.at_chance:
        console.print(f"warning: accuracy {m.accuracy:.2f}% is no better than guessing: the other metrics describe "
                      "a constant, not a classifier", style="bold yellow", markup=False)
    ood_set = f"{result.ood} ({result.ood_images} images)" if result.ood else "none"
    console.print(f"{result.note}; OOD: {ood_set}" + (f"; saved {model}.eval.json" if save else ""), style="dim",
                  markup=False)


@command("edgeticket gap --source fashion-mnist --target digits --model runs/src-robust.ticket")
def gap(model: Annotated[Path, typer.Option("--model", help="Checkpoint whose features measure the gap.")],
        source: Annotated[str, typer.Option(help="Source dataset.")] = "fashion-mnist",
        target: Annotated[str, typer.Option(help="Target dataset.")] = "digits",
        data_root: DataRoot = None, arch: Arch = None, trust_pickle: TrustPickle = False, json_output: Json = False,
        quiet: Quiet = False) -> None:
    """Domain gap between source and target in the model's features, and what it suggests (paper, Table II)."""
    from .gap import domain_gap
    from .models.checkpoints import load_checkpoint
    result = domain_gap(load_checkpoint(model, arch, trust_pickle), source, target, str(data_root) if data_root else None)
    if json_output:
        return emit_json(result.as_dict())
    console.print(f"Frechet distance {source} -> {target}: {result.distance:.3f} "
                  f"(source train -> test: {result.baseline:.3f}; ratio {result.ratio:.1f})\n{result.recommendation}\n"
                  f"{result.note}")


@command("edgeticket report runs/")
def report(runs_dir: Path, paper: Paper = True,
           all_cells: Annotated[bool, typer.Option("--all", help="In a sweep folder, also cells of earlier configs.")] = False,
           results: Annotated[Optional[Path], typer.Option(
               help="Also write the citable summary (recipe, commit, mean ± std, paired intervals) to FILE.md and "
                    "FILE.json.", metavar="FILE.md")] = None,
           json_output: Json = False, quiet: Quiet = False) -> None:
    """Robust vs natural tickets from a runs folder (mean ± std and paired intervals over seeds), next to the
    paper's Table I; writes report.md/.json and plots."""
    from .report import results_path, write_report, write_results
    results = results_path(results) if results else None
    result = write_report(runs_dir, paper, all_cells)
    show_report(result, json_output)
    for path in write_results(result, results) if results else ():
        info(f"wrote {path}")


@command("edgeticket demo --quick")
def demo(quick: Annotated[bool, typer.Option(help="Small sizes: under 2 minutes.")] = False,
         out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
         cache: Annotated[Optional[Path], typer.Option(help="Where pretrained sources are kept ($EDGETICKET_CACHE).")] = None,
         method: Annotated[str, typer.Option(help="omp | imp | a-imp | lmp")] = "omp",
         pattern: Annotated[str, typer.Option(help="channel | unstructured | row | kernel")] = "channel",
         noise: Annotated[bool, typer.Option(help="Add a random-smoothing (Gaussian noise) source.")] = False,
         json_output: Json = False, quiet: Quiet = False) -> None:
    """Everything end to end, offline: Fashion-MNIST -> digits, natural vs robust tickets, next to the paper."""
    from .demo import demo_config
    from .sweep import run_sweep
    show_report(run_sweep(demo_config(quick, out, cache, method, pattern, noise)), json_output)


@command("edgeticket sweep examples/sweep.toml")
def sweep(config_path: Annotated[Path, typer.Argument(metavar="CONFIG.toml")],
          json_output: Json = False, quiet: Quiet = False) -> None:
    """Run a grid of sources x methods x patterns x sparsities x targets x seeds; re-running resumes."""
    from .sweep import SweepConfig, run_sweep
    show_report(run_sweep(SweepConfig.from_toml(config_path)), json_output)


@command("edgeticket datasets")
def datasets(json_output: Json = False, quiet: Quiet = False) -> None:
    """List the registered datasets (all read from local files; nothing is downloaded)."""
    from .data import list_datasets
    if json_output:
        return emit_json(list_datasets())
    console.print("\n".join(list_datasets()))


def run() -> None:
    """The `edgeticket` program (its errors, usage errors included, are one line: OneLineErrors)."""
    app(prog_name="edgeticket")


if __name__ == "__main__":
    run()
