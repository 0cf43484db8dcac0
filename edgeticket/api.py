"""The Python API, for notebooks and scripts: `import edgeticket as et`.

Each function mirrors its CLI command: the same keyword names (`--round-to` is `round_to=`) and the same
defaults, and the CLI calls these functions, so a notebook and a shell get the same result. Tickets go in and
come out as `Ticket` objects; pass `output=` to also write the file (atomically, as the CLI does). Datasets are
loaded at the ticket's own input size and channels, so 8x8 digits meet a 28x28 ticket resized, as in the CLI.

    import edgeticket as et
    source = et.pretrain("small_resnet", "fashion-mnist", subset=2000, epochs=1)
    ticket = et.draw(source, sparsity=0.5)                 # OMP, channel: physically smaller
    tuned = et.finetune(ticket, "digits", subset=300, epochs=10)
    print(et.evaluate(tuned, "digits").metrics)
    et.export(tuned, "t50.onnx")
    print(et.bench("t50.onnx", data="digits").latency)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from .config import FINETUNE, PRETRAIN, AttackConfig, TrainConfig
from .errors import EdgeticketError
from .ticket import Ticket

__all__ = ["Ticket", "load", "pretrain", "draw", "finetune", "evaluate", "export", "bench", "sweep"]

PathLike = str | Path


def load(path: PathLike, arch: str | None = None, trust_pickle: bool = False,
         source_kind: str | None = None) -> Ticket:
    """Any checkpoint as a Ticket: an edgeticket file, a torchvision or timm-style state_dict, a MadryLab
    `robustness` checkpoint or a RobustBench one. Without `arch`, a foreign file's architecture comes from its
    MadryLab name (mobilenet_l2_eps3.ckpt) or its parameters' names and shapes; `arch="timm:NAME"` for timm.
    Pickled files are refused unless `trust_pickle=True` (loading them can run code from the file)."""
    from .models.checkpoints import load_checkpoint
    return load_checkpoint(path, arch, trust_pickle, source_kind)


def _ticket(value: Ticket | PathLike, trust_pickle: bool = False) -> Ticket:
    return value if isinstance(value, Ticket) else load(value, trust_pickle=trust_pickle)


def _splits(name: str, ticket: Ticket | None, data_root: PathLike | None = None, subset: int | None = None,
            seed: int = 0, image_size: int | None = None):
    """A dataset at the ticket's input size and channels (or at `image_size` for a model not built yet)."""
    from .data import DataConfig, load_dataset
    return load_dataset(DataConfig(name, str(data_root) if data_root else None, subset, seed,
                                   ticket.input_size[-1] if ticket else image_size,
                                   ticket.input_size[0] if ticket else None))


def _train_config(defaults: TrainConfig, mode: str, epochs: int, lr: float, batch_size: int, adv: str, steps: int,
                  seed: int, device: str) -> TrainConfig:
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, mode=mode, attack=AttackConfig.parse(adv, steps),
                         seed=seed, device=device, momentum=defaults.momentum, weight_decay=defaults.weight_decay)
    config.validate()
    return config


def _state_file(output: PathLike | None, restart: bool) -> Path | None:
    """Where a run writing `output` resumes from; `restart` deletes what a killed run left there."""
    from .train import state_file
    if not output:
        return None
    if restart:
        state_file(output).unlink(missing_ok=True)
    return state_file(output)


def _finish(ticket: Ticket, splits, output: PathLike | None) -> Ticket:
    """Record the trained ticket's test accuracy (a percentage, as eval and bench give it) in its last stage, and
    write it when asked."""
    from . import train
    from .metrics import accuracy, predict
    ticket.provenance.stages[-1].details.update(
        test_accuracy=100 * accuracy(predict(ticket.deployable(), splits.test), splits.test.labels),
        test_images=len(splits.test))
    if output:
        train.save_result(ticket, output)
    return ticket


def pretrain(arch: str = "small_resnet", data: str = "fashion-mnist", *, adv: str = "none", steps: int = 3,
             epochs: int = PRETRAIN.epochs, lr: float = PRETRAIN.lr, batch_size: int = PRETRAIN.batch_size,
             subset: int | None = None, image_size: int | None = None, start: Ticket | PathLike | None = None,
             data_root: PathLike | None = None, seed: int = 0, device: str = "auto",
             output: PathLike | None = None, on_epoch: Callable | None = None, restart: bool = False,
             trust_pickle: bool = False) -> Ticket:
    """Train a source model: natural (`adv="none"`), adversarial (`"l2:1.0"`, `"linf:8/255"`, PGD with `steps`)
    or Gaussian-noise (`"noise:0.25"`, random smoothing). `start` continues from a checkpoint instead of
    random weights. With `output`, the file is written and a killed run resumes from `output.resume` (unless
    `restart`).
    The test accuracy goes to the last stage of `ticket.provenance`; `on_epoch` sees each EpochRecord."""
    from . import train
    from .models import get_arch
    if output:
        _check_ticket_output(output, start)
    config = _train_config(PRETRAIN, "whole", epochs, lr, batch_size, adv, steps, seed, device)
    if image_size is not None and image_size < 1:
        raise EdgeticketError(f"--image-size {image_size} is not a size in pixels",
                              hint=f"leave it out for the architecture's ({get_arch(arch).input_size})")
    begin = start if isinstance(start, Ticket) or start is None else load(start, arch, trust_pickle)
    splits = _splits(data, begin, data_root, subset, seed, image_size or get_arch(arch).input_size)
    ticket, _ = train.pretrain(arch, splits, config, begin, _state_file(output, restart), on_epoch)
    return _finish(ticket, splits, output)


def draw(source: Ticket | PathLike, *, method: str = "omp", pattern: str = "channel", sparsity: float | None = None,
         scope: str = "layerwise", include_first_last: bool = False, round_to: int | None = None,
         device: str | None = None, max_latency_ms: float | None = None, on: str = "downstream",
         data: str | None = None, data_root: PathLike | None = None, subset: int | None = 1000, rate: float = 0.2,
         epochs: int = 1, lr: float = 0.01, attack: str = "l2:1.0", steps: int = 3, rewind: bool = False,
         seed: int = 0, output: PathLike | None = None) -> Ticket:
    """Draw a ticket from `source` (a Ticket or a checkpoint path); `source` itself is never changed.

    method: omp (one-shot magnitude) | imp | a-imp (iterative, adversarial) | lmp (learned mask).
    pattern: channel (removed physically by torch-pruning) | unstructured | row | kernel (masked).
    sparsity: channel: fraction of channels removed per layer; masked: fraction of weights removed (default
    0.5; with `max_latency_ms`, a floor, default none).
    round_to: channel: keep a multiple of this many channels per layer (8, 16 suit SIMD); default: the
    `device` profile's round_to, else 1 (8 with `max_latency_ms`).
    max_latency_ms, device: prune channels (omp, imp, a-imp) until the ticket's latency on the `device` profile
    fits: a latency table (cached) predicts it, export and bench check it; the ticket's provenance holds the
    budget, the predicted and the measured latency.
    on, data, subset, rate, epochs, lr, attack, steps, rewind, seed: for the methods that train while
    drawing (imp, a-imp, lmp); see `edgeticket draw --help`. The draw's report is in `ticket.provenance`."""
    from .fileio import check_output, sha256_file
    from .tickets import DrawConfig, DrawTraining, draw_ticket
    profile = None
    if max_latency_ms is not None:
        from .budget import ROUND_TO, check_budget_device
        profile = check_budget_device(device)
        round_to = round_to or (profile.round_to if profile.round_to > 1 else ROUND_TO)
    elif device:
        from .bench import get_device
        profile = get_device(device)  # checked even when round_to is given: a misspelled name is an error
        round_to = profile.round_to if round_to is None else round_to
    round_to = 1 if round_to is None else round_to
    if sparsity is None:
        sparsity = 0.0 if max_latency_ms is not None else DrawConfig.sparsity
    training = DrawTraining(on=on, data=data, data_root=str(data_root) if data_root else None, subset=subset,
                            rate=rate, epochs=epochs, lr=lr, attack=attack, steps=steps, rewind=rewind, seed=seed)
    config = DrawConfig(method=method, pattern=pattern, sparsity=sparsity, scope=scope,
                        include_first_last=include_first_last, round_to=round_to, training=training,
                        max_latency_ms=max_latency_ms)
    config.validate()
    if output:
        _check_ticket_output(output, source)
    ticket = _ticket(source)
    if not isinstance(source, Ticket) and not ticket.provenance.source_sha256:
        ticket.provenance.source_sha256 = sha256_file(source)
    if max_latency_ms is not None:
        from .budget import draw_to_budget
        drawn, _ = draw_to_budget(ticket, config, profile)
    else:
        drawn, _ = draw_ticket(ticket, config)
    if output:
        drawn.save(output)
    return drawn


def draw_report(ticket: Ticket) -> dict:
    """What a draw achieved, from the ticket's provenance (the CLI prints it)."""
    p = ticket.provenance
    report = {"target_sparsity": p.sparsity, "achieved_sparsity": p.achieved_sparsity,
              "params_removed": p.params_removed, "before": {"params": p.params_before, "macs": p.macs_before},
              "after": {"params": p.params_after, "macs": p.macs_after}}
    latency = p.stages[-1].details.get("latency") if p.stages else None
    return {**report, "latency": latency} if latency else report


def finetune(ticket: Ticket | PathLike, data: str = "digits", *, mode: str = "whole", adv: str = "none",
             steps: int = 3, epochs: int = FINETUNE.epochs, lr: float = FINETUNE.lr,
             batch_size: int = FINETUNE.batch_size, subset: int | None = None, data_root: PathLike | None = None,
             seed: int = 0, device: str = "auto", output: PathLike | None = None,
             on_epoch: Callable | None = None, restart: bool = False, trust_pickle: bool = False) -> Ticket:
    """Transfer a ticket to `data` with a new head: `mode` whole | linear | last-k:K. Removed channels stay
    removed and masked weights stay zero. The data follows the ticket's input size and channels. With `output`,
    a killed run resumes from `output.resume` (unless `restart`). The test
    accuracy goes to the last stage of `ticket.provenance`; `on_epoch` sees each EpochRecord."""
    from . import train
    if output:
        _check_ticket_output(output, ticket)
    start = _ticket(ticket, trust_pickle)
    config = _train_config(FINETUNE, mode, epochs, lr, batch_size, adv, steps, seed, device)
    splits = _splits(data, start, data_root, subset, seed)
    trained, _ = train.finetune(start, splits, config, _state_file(output, restart), on_epoch)
    return _finish(trained, splits, output)


def evaluate(model: Ticket | PathLike, data: str = "digits", *, ood: str | None = None, attack: str = "linf:8/255",
             attack_steps: int = 20, adv_images: int = 1000, ood_images: int | None = None,
             data_root: PathLike | None = None):
    """The paper's Table I row: accuracy (%), ECE, NLL, adversarial accuracy (PGD, torch only) and OOD ROC-AUC
    (on the first `ood_images` OOD images; all when None), for a Ticket, a ticket file or an exported .onnx.
    A file also gets its `FILE.eval.json` for `report`."""
    from .evaluate import EvalConfig, evaluate as run
    config = EvalConfig(data, str(data_root) if data_root else None, ood, attack, attack_steps, adv_images, ood_images)
    if isinstance(model, Ticket):
        with tempfile.TemporaryDirectory() as folder:
            model.save(Path(folder) / "model.ticket")
            return run(Path(folder) / "model.ticket", config, save=False)
    return run(model, config)


def _check_ticket_output(output: PathLike, source: Ticket | PathLike | None) -> None:
    """A ticket's path: not its input, writable, and not named like an export (`eval t.onnx` would read a ticket
    as ONNX)."""
    from .fileio import check_output
    from .runtimes import runtime_for_suffix
    exported = runtime_for_suffix(Path(output).suffix)
    if exported:
        raise EdgeticketError(f"{output} is named like an {exported.format} export, but a ticket goes there",
                              hint="name it .ticket; `edgeticket export` writes the exported model")
    check_output(output, None if isinstance(source, Ticket) else source)


def export(ticket: Ticket | PathLike, output: PathLike, *, format: str | None = None, int8: bool = False,
           data: str | None = None, data_root: PathLike | None = None):
    """Write `output` for an edge runtime (any registered runtime's format: .onnx, .pte, an .ncnn folder, a
    plugin's; the format follows the suffix unless `format` says), after checking it against torch; no file is written if the check fails.
    `int8=True` (onnx) calibrates on `data` (default: the ticket's finetune target)."""
    from .data.datasets import DATASETS
    from .export import export as run, format_for
    from .fileio import check_output, sha256_file
    from .runtimes import runtime_for_format
    fmt = format_for(output, format)
    if data is not None:
        DATASETS.get(data)  # before the work, with or without int8
    source = None if isinstance(ticket, Ticket) else ticket
    check_output(output, source, folder=runtime_for_format(fmt).folder)
    loaded = _ticket(ticket)
    name = data or (loaded.provenance.target if int8 else None)
    splits = _splits(name, loaded, data_root) if int8 and name else None
    sha = None if isinstance(ticket, Ticket) else sha256_file(ticket)
    return run(loaded, output, fmt, int8, sha, splits)


def bench(model: PathLike, *, device: str | None = None, data: str | None = None, runs: int = 100, warmup: int = 10,
          seconds: float = 1.0, threads: int | None = None, images: int | None = None,
          input_shape: str | tuple[int, ...] | None = None, data_root: PathLike | None = None, keep: bool = False,
          save: bool = True):
    """Latency (first, p50/p90/p99), memory and accuracy, ECE and NLL of an exported model in its runtime,
    measured by a torch-free runner in its own process, on a device profile (default: the one that runs the
    file's format; a profile with an [ssh] table runs on that board, and `keep` leaves the pushed files
    there). `data` defaults to the target the model was finetuned on; a foreign ONNX is benched from its graph
    (`input_shape` "1,3,224,224" where it leaves a dimension open)."""
    from .bench import BenchConfig
    from .bench.run import bench_model, check_record_writable, parse_shape, record_bench
    if save:
        check_record_writable(model)
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    config = BenchConfig(runs=runs, warmup=warmup, seconds=seconds, threads=threads, images=images,
                         input_shape=tuple(shape) if shape else None, keep=keep)
    result = bench_model(model, device, data, config, str(data_root) if data_root else None)
    if save:
        record_bench(result)
    return result


def sweep(config: PathLike | object):
    """Run a grid (a TOML path or a `SweepConfig`): sources x methods x patterns x sparsities x targets x seeds.
    Re-running resumes; returns the report (rows, mean ± std over seeds, paired differences)."""
    from .sweep import SweepConfig, run_sweep
    return run_sweep(config if isinstance(config, SweepConfig) else SweepConfig.from_toml(config))
