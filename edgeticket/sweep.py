"""The paper's grid: sources x methods x patterns x sparsities x targets x seeds.

Each cell runs in a folder named by its grid coordinates and a short hash of its whole recipe (open_lth),
draw -> finetune -> eval (torch and ONNX) -> export -> bench, and writes `result.json` last: a cell with a
result is skipped and a killed sweep resumes where it stopped, while a changed recipe makes new cells. A cell
that fails records its error and the sweep goes on. Sources are pretrained once per kind (natural / robust /
noise) and seed, and cached, or read from checkpoint files named in the config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import subprocess
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .attacks import AttackConfig
from .bench import BenchConfig, bench_onnx, record_bench
from .console import info, progress_bar, progress_console
from .data import DataConfig, load_dataset
from .errors import EdgeticketError
from .evaluate import EvalConfig, evaluate
from .export import export_onnx
from .fileio import cache_dir, sha256_file, write_json, write_text
from .report import Report, read_json, write_report
from .models.checkpoints import load_checkpoint
from .tickets import DrawConfig, Ticket, draw_ticket
from .tickets.draw import DrawTraining
from .tickets.patterns import PATTERNS
from .train import FINETUNE, PRETRAIN, TrainConfig, finetune, pretrain, save_result, state_file


@dataclass
class SweepConfig:
    out: Path = Path("runs/sweep")
    cache: Path = field(default_factory=cache_dir)
    arch: str = "small_resnet"
    # sources: kind -> threat model used to pretrain it, or a checkpoint file in `source_files`
    source_data: str = "fashion-mnist"
    sources: dict[str, str] = field(default_factory=lambda: {"natural": "none", "robust": "l2:1.0"})
    source_files: dict[str, str] = field(default_factory=dict)
    source_images: int = 20000
    source_epochs: int = 2
    source_lr: float = PRETRAIN.lr
    source_batch_size: int = PRETRAIN.batch_size
    pgd_steps: int = 3
    # the grid
    methods: list[str] = field(default_factory=lambda: ["omp"])
    patterns: list[str] = field(default_factory=lambda: ["channel"])
    sparsities: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.8])
    targets: list[str] = field(default_factory=lambda: ["digits"])
    seeds: list[int] = field(default_factory=lambda: [0])   # each seed pretrains its own sources, too
    round_to: int = 1  # channel tickets keep a multiple of this many channels per layer
    # drawing methods that train (imp, a-imp, lmp)
    on: str = "downstream"
    draw_epochs: int = 1
    draw_rate: float = 0.2
    draw_lr: float = 0.01
    # finetuning and evaluation on the target
    target_images: int = 300
    finetune_mode: str = "whole"
    finetune_epochs: int = 30
    finetune_lr: float = FINETUNE.lr
    attack: str = "linf:8/255"
    attack_steps: int = 20
    adv_images: int = 599
    deploy: bool = True  # export each cell to ONNX, evaluate it in onnxruntime and bench it
    bench_runs: int = 200
    bench_seconds: float = 2.0

    @classmethod
    def from_toml(cls, path: str | Path) -> "SweepConfig":
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise EdgeticketError(f"no such sweep config: {path}", hint="see examples/sweep.toml") from None
        except tomllib.TOMLDecodeError as error:
            raise EdgeticketError(f"{path} is not valid TOML: {error}", hint="check the line it names") from None
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise EdgeticketError(f"unknown key(s) in {path}: {', '.join(unknown)}", hint=f"valid keys: {', '.join(sorted(names))}")
        for key in ("out", "cache"):
            if key in raw:
                raw[key] = Path(raw[key])
        return cls(**raw)

    def rounding(self, pattern: str) -> int:
        """`round_to` counts channels: it applies to the channel cells of a grid and leaves masked ones alone."""
        return self.round_to if PATTERNS.get(pattern).physical else 1

    def validate(self) -> None:
        for method, pattern, sparsity in itertools.product(self.methods, self.patterns, self.sparsities):
            DrawConfig(method, pattern, sparsity, round_to=self.rounding(pattern),
                       training=DrawTraining(on=self.on, rate=self.draw_rate)).validate()
        for threat in self.sources.values():
            AttackConfig.parse(threat, self.pgd_steps)


GRID = ("out", "cache", "sources", "source_files", "methods", "patterns", "sparsities", "targets", "seeds")


def short_hash(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Cell:
    source: str
    method: str
    pattern: str
    sparsity: float
    target: str
    seed: int
    recipe: str = ""  # short hash of everything that determines the cell's result

    @property
    def name(self) -> str:
        return f"{self.source}/{self.method}-{self.pattern}-{self.sparsity:g}-{self.target}-s{self.seed}-{self.recipe}"


def cell_recipe(config: SweepConfig, coordinates: tuple) -> dict:
    """The cell's coordinates, how its source is made (or which file it is), and every non-grid setting."""
    source = coordinates[0]
    fixed = {k: v for k, v in asdict(config).items() if k not in GRID}
    return {**fixed, "coordinates": coordinates, "round_to": config.rounding(coordinates[2]),
            "source": config.source_files.get(source) or config.sources[source]}


def cells(config: SweepConfig) -> list[Cell]:
    """The grid's cells, with OMP at sparsity 0 once per source, target and seed (see canonical_coordinates);
    the report shows that cell under each pattern."""
    kinds = list(config.sources) + [k for k in config.source_files if k not in config.sources]
    grid = itertools.product(kinds, config.methods, config.patterns, config.sparsities, config.targets, config.seeds)
    unique = dict.fromkeys(canonical_coordinates(config, values) for values in grid)
    return [Cell(*values, recipe=short_hash(cell_recipe(config, values))) for values in unique]


def canonical_coordinates(config: SweepConfig, coordinates: tuple) -> tuple:
    """OMP at sparsity 0 removes nothing under any pattern, so it is one cell, under the first pattern. The
    methods that train while drawing (imp, a-imp, lmp) take each pattern's own path even at 0, and keep theirs."""
    source, method, pattern, sparsity, *rest = coordinates
    shared = method == "omp" and sparsity == 0
    return (source, method, config.patterns[0] if shared else pattern, sparsity, *rest)


def sweep_recipe(config: SweepConfig) -> str:
    """A short hash of everything that decides the sweep's results (its folder and cache do not)."""
    return short_hash({k: v for k, v in asdict(config).items() if k not in ("out", "cache")})


def code_commit() -> str | None:
    """The git commit this edgeticket runs from, "+dirty" when its code has uncommitted changes; None outside
    a git checkout (an installed wheel), where the version is what identifies the code."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=True)
        changes = subprocess.run([*git, "status", "--porcelain", "--", "edgeticket"],
                                 capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")


def code_record(previous_config: Path) -> dict:
    """edgeticket's version and commit for config.json, with the commits of the runs before it: a sweep resumed
    on newer code has cells from each, and says so."""
    commit = code_commit()
    earlier = read_json(previous_config).get("edgeticket", {}) if previous_config.exists() else {}
    commits = [c for c in earlier.get("commits", [earlier.get("commit")]) if c and c != commit] + [commit]
    return {"version": __version__, "commit": commit, "commits": [c for c in commits if c]}


def source_recipe(config: SweepConfig, kind: str, seed: int) -> TrainConfig:
    return dataclasses.replace(PRETRAIN, epochs=config.source_epochs, lr=config.source_lr,
                               batch_size=config.source_batch_size, seed=seed,
                               attack=AttackConfig.parse(config.sources[kind], config.pgd_steps))


def source_ticket(config: SweepConfig, kind: str, seed: int) -> Path:
    """A source checkpoint: the file the config names, or one pretrained here for this seed (cached by recipe)."""
    if kind in config.source_files:
        return Path(config.source_files[kind])
    train = source_recipe(config, kind, seed)
    key = short_hash([config.arch, config.source_data, config.source_images, asdict(train)])
    path = config.cache / f"{config.source_data}-{config.arch}-{kind}-s{seed}-{key}.ticket"
    if path.exists():
        info(f"reusing {kind} source {path}")
        return path
    splits = load_dataset(DataConfig(config.source_data, subset=config.source_images, seed=seed))
    ticket, _ = pretrain(config.arch, splits, train, state_path=state_file(path))
    save_result(ticket, path)
    return path


def run_cell(config: SweepConfig, cell: Cell, source_path: Path) -> dict:
    """draw -> finetune -> eval (torch, ONNX) -> export -> bench; every finished artifact is reused."""
    folder = config.out / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    drawn, tuned, onnx = folder / "drawn.ticket", folder / "tuned.ticket", folder / "model.onnx"
    downstream_lmp = cell.method == "lmp" and config.on == "downstream"  # its mask learning is the finetune
    if not drawn.exists():
        source = load_checkpoint(source_path, config.arch)
        source.provenance.source_sha256 = sha256_file(source_path)
        source.provenance.source_kind = cell.source  # the config names the kind, whatever the file said
        training = DrawTraining(on=config.on, data=cell.target if config.on == "downstream" else None,
                                subset=config.target_images if config.on == "downstream" else config.target_images * 4,
                                rate=config.draw_rate, lr=config.draw_lr,
                                epochs=config.finetune_epochs if downstream_lmp else config.draw_epochs,
                                attack=config.sources.get("robust", "l2:1.0"), steps=config.pgd_steps, seed=cell.seed)
        draw_ticket(source, DrawConfig(cell.method, cell.pattern, cell.sparsity, round_to=config.rounding(cell.pattern),
                                       training=training))[0].save(drawn)
    if downstream_lmp:
        tuned = drawn  # LMP learns the mask (and head) on the target with the weights frozen: nothing to finetune
    elif not tuned.exists():
        ticket = Ticket.load(drawn)
        target = load_dataset(DataConfig(cell.target, subset=config.target_images, seed=cell.seed,
                                         image_size=ticket.input_size[-1], channels=ticket.input_size[0]))
        recipe = dataclasses.replace(FINETUNE, epochs=config.finetune_epochs, lr=config.finetune_lr,
                                     mode=config.finetune_mode, seed=cell.seed)
        save_result(finetune(ticket, target, recipe, state_file(tuned))[0], tuned)
    evaluation = EvalConfig(cell.target, ood=config.source_data, attack=config.attack,
                            attack_steps=config.attack_steps, adv_images=config.adv_images)
    if not Path(f"{tuned}.eval.json").exists():
        evaluate(tuned, evaluation)
    if not config.deploy:
        return json.loads(Path(f"{tuned}.eval.json").read_text())["metrics"]
    if not onnx.exists():
        export_onnx(Ticket.load(tuned), onnx, sha256_file(tuned))
    if not Path(f"{onnx}.eval.json").exists():
        evaluate(onnx, evaluation)
    if not Path(f"{onnx}.ort-cpu-1t.bench.json").exists():
        record_bench(bench_onnx(onnx, BenchConfig(runs=config.bench_runs, warmup=10, seconds=config.bench_seconds)))
    return json.loads(Path(f"{tuned}.eval.json").read_text())["metrics"]


def run_sweep(config: SweepConfig) -> Report:
    config.validate()
    config.out.mkdir(parents=True, exist_ok=True)
    write_json({**asdict(config), "recipe": sweep_recipe(config), "edgeticket": code_record(config.out / "config.json")},
               config.out / "config.json")
    grid = cells(config)
    # seed by seed, so a sweep cut short has whole replications: every source and pattern of its first seeds
    pending = sorted((c for c in grid if not _finished(config, c)), key=lambda c: c.seed)
    sources: dict[tuple[str, int], Path] = {}
    done = failed = 0
    spent = 0.0
    with progress_bar() as bar:
        task = bar.add_task("sweep", total=len(grid), completed=len(grid) - len(pending),
                            status=f"{len(grid) - len(pending)} done before, {len(pending)} left")
        for cell in pending:
            bar.update(task, status=f"running {cell.name} ({done} done, {failed} failed, "
                                    f"{len(pending) - done - failed} left)")
            began = time.perf_counter()
            try:
                if (cell.source, cell.seed) not in sources:
                    sources[cell.source, cell.seed] = source_ticket(config, cell.source, cell.seed)
                metrics = run_cell(config, cell, sources[cell.source, cell.seed])
                result = {"status": "ok", "metrics": metrics}
                done += 1
            except EdgeticketError as error:
                result, failed = {"status": "failed", "error": f"{error.message} ({error.hint})"}, failed + 1
            except Exception as error:  # one broken cell must not stop the grid
                result, failed = {"status": "failed", "error": f"{type(error).__name__}: {error}"}, failed + 1
            seconds = time.perf_counter() - began
            write_json({**asdict(cell), "cell": cell.name, "seconds": seconds, **result},
                       config.out / cell.name / "result.json")
            bar.update(task, advance=1)
            spent += seconds
            if not progress_console.is_terminal:  # a redirected sweep shows no bar: one line per cell instead
                info(cell_line(cell, seconds, result, done + failed, len(pending), spent))
    results = [json.loads((config.out / c.name / "result.json").read_text()) for c in grid
               if (config.out / c.name / "result.json").exists()]
    write_text("".join(json.dumps(r) + "\n" for r in results), config.out / "results.jsonl")
    return write_report(config.out)


def cell_line(cell: Cell, seconds: float, result: dict, finished: int, pending: int, spent: float) -> str:
    """One line per finished cell for logs: what ran, how long, its accuracy, and what is left."""
    outcome = (f"acc {result['metrics']['accuracy']:.2f}%" if result["status"] == "ok"
               else f"FAILED: {result['error']}")
    left = pending - finished
    minutes, seconds_left = divmod(round(spent / finished * left), 60)
    eta = f"{minutes // 60:02d}:{minutes % 60:02d}:{seconds_left:02d}"
    return f"[{finished}/{pending}] {cell.name} {seconds:.0f}s {outcome}; {left} left, about {eta} to go"


def _finished(config: SweepConfig, cell: Cell) -> bool:
    path = config.out / cell.name / "result.json"
    return path.exists() and json.loads(path.read_text()).get("status") == "ok"
