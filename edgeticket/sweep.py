"""The paper's grid: sources x methods x patterns x sparsities x targets x seeds.

Each cell runs in a folder named by its grid coordinates and a short hash of its whole recipe (open_lth),
draw -> finetune -> eval (torch and ONNX) -> export -> bench, and writes `result.json` last: a cell with a
result is skipped and a killed sweep resumes where it stopped, while a changed recipe makes new cells. A cell
that fails records its error and the sweep goes on. Sources are pretrained once per kind (natural / robust /
noise) and seed, and cached, or read from checkpoint files named in the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import operator
import re
import subprocess
import time
import tomllib
import typing
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .attacks import AttackConfig
from .bench import BenchConfig, bench_onnx, record_bench
from .config import (MAX_BATCH, MAX_BENCH_RUNS, MAX_BENCH_SECONDS, MAX_EPOCHS, MAX_IMAGES, MAX_SEED,
                     MAX_STEPS)
from .console import info, progress_bar, progress_console
from .data import DataConfig, load_dataset
from .data.datasets import DATASETS
from .errors import EdgeticketError
from .evaluate import EvalConfig, evaluate
from .export import export_onnx
from .fileio import cache_dir, read_text, sha256_file, write_json, write_text
from .report import Report, read_json, write_report
from .models import get_arch
from .models.checkpoints import load_checkpoint
from .tickets import DrawConfig, Ticket, draw_ticket
from .tickets.draw import METHODS, DrawTraining
from .tickets.patterns import PATTERNS
from .train import FINETUNE, PRETRAIN, TrainConfig, finetune, pretrain, save_result, state_file


def bounded(default: object = dataclasses.MISSING, *, factory=dataclasses.MISSING, least: float | None = None,
            above: float | None = None, most: float | None = None, below: float | None = None):
    """A field whose numbers (a list's items, too) must be >= `least`, > `above`, <= `most` and < `below`."""
    return field(default=default, default_factory=factory,
                 metadata={"bounds": {">=": least, ">": above, "<=": most, "<": below}})


@dataclass
class SweepConfig:
    """Every field may be set in a sweep's TOML; a key is checked against its field's type and bounds."""
    out: Path = Path("runs/sweep")
    cache: Path = field(default_factory=cache_dir)
    arch: str = "small_resnet"
    # sources: kind -> threat model used to pretrain it, or a checkpoint file in `source_files`
    source_data: str = "fashion-mnist"
    sources: dict[str, str] = field(default_factory=lambda: {"natural": "none", "robust": "l2:1.0"})
    source_files: dict[str, str] = field(default_factory=dict)
    source_images: int = bounded(20000, least=1, most=MAX_IMAGES)
    source_epochs: int = bounded(2, least=1, most=MAX_EPOCHS)
    source_lr: float = bounded(PRETRAIN.lr, above=0)
    source_batch_size: int = bounded(PRETRAIN.batch_size, least=1, most=MAX_BATCH)
    pgd_steps: int = bounded(3, least=1, most=MAX_STEPS)
    # the grid
    methods: list[str] = field(default_factory=lambda: ["omp"])
    patterns: list[str] = field(default_factory=lambda: ["channel"])
    sparsities: list[float] = bounded(factory=lambda: [0.0, 0.5, 0.8], least=0, below=1)
    targets: list[str] = field(default_factory=lambda: ["digits"])
    seeds: list[int] = bounded(factory=lambda: [0], least=0, most=MAX_SEED)   # each seed pretrains its own sources, too
    round_to: int = bounded(1, least=1)  # channel tickets keep a multiple of this many channels per layer
    # drawing methods that train (imp, a-imp, lmp)
    on: str = "downstream"
    draw_epochs: int = bounded(1, least=1, most=MAX_EPOCHS)
    draw_rate: float = bounded(0.2, above=0, below=1)
    draw_lr: float = bounded(0.01, above=0)
    # finetuning and evaluation on the target
    target_images: int = bounded(300, least=1, most=MAX_IMAGES)
    finetune_mode: str = "whole"
    finetune_epochs: int = bounded(30, least=1, most=MAX_EPOCHS)
    finetune_lr: float = bounded(FINETUNE.lr, above=0)
    attack: str = "linf:8/255"
    attack_steps: int = bounded(20, least=1, most=MAX_STEPS)
    adv_images: int = bounded(599, least=1, most=MAX_IMAGES)
    deploy: bool = True  # export each cell to ONNX, evaluate it in onnxruntime and bench it
    bench_runs: int = bounded(200, least=1, most=MAX_BENCH_RUNS)
    bench_seconds: float = bounded(2.0, least=0, most=MAX_BENCH_SECONDS)

    @classmethod
    def from_toml(cls, path: str | Path) -> "SweepConfig":
        """A config from its TOML, checked key by key (type, bounds, known names) before anything runs."""
        try:
            raw = tomllib.loads(read_text(Path(path)))
        except FileNotFoundError:
            raise EdgeticketError(f"no such sweep config: {path}", hint="see examples/sweep.toml") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise EdgeticketError(f"{path} is not valid TOML: {error}", hint="check the line it names") from None
        except OSError as error:
            raise EdgeticketError(f"cannot read sweep config {path}: {error.strerror}",
                                  hint="pass a TOML file") from None
        if not raw:
            raise EdgeticketError(f"{path} sets no keys: a sweep names its grid",
                                  hint="set at least sources, methods, sparsities and targets; see examples/sweep.toml")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise EdgeticketError(f"{path}: unknown key '{key}'",
                                      hint=f"did you mean '{close[0]}'?" if close else f"keys: {', '.join(names)}")
        check_types(raw, str(path))
        config = cls(**{key: Path(value) if key in ("out", "cache") else value for key, value in raw.items()})
        config.validate(str(path))
        return config

    def rounding(self, pattern: str) -> int:
        """`round_to` counts channels: it applies to the channel cells of a grid and leaves masked ones alone."""
        return self.round_to if PATTERNS.get(pattern).physical else 1

    def validate(self, where: str = "sweep config") -> None:
        """Every key's type and bounds, and every name (architecture, datasets, methods, patterns, threat models,
        source files) against what edgeticket knows, so a bad grid fails before any pretraining; errors name
        `where` (the TOML) and the key."""
        check_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, where)
        with key_named(where, "arch"):
            get_arch(self.arch)
        with key_named(where, "source_data"):
            DATASETS.get(self.source_data)
        for key, registry in (("targets", DATASETS), ("methods", METHODS), ("patterns", PATTERNS)):
            for name in getattr(self, key):
                with key_named(where, key):
                    registry.get(name)
        if not self.sources and not self.source_files:
            raise EdgeticketError(f"{where}: key 'sources' is empty and no source_files are given: nothing to prune",
                                  hint='e.g. sources = { natural = "none", robust = "l2:1.0" }')
        for key in ("sources", "source_files"):
            for kind in getattr(self, key):
                if not KIND.fullmatch(kind):
                    raise EdgeticketError(f"{where}: key '{key}': source name {kind!r} is not a plain name "
                                          "(letters, digits, '-', '_'): it names the cells' folders",
                                          hint="e.g. natural, robust, noise")
        for kind, threat in self.sources.items():
            with key_named(where, f"sources.{kind}"):
                AttackConfig.parse(threat, self.pgd_steps)
        for kind, file in self.source_files.items():
            if not Path(file).is_file():
                raise EdgeticketError(f"{where}: key 'source_files.{kind}': no such checkpoint file: {file}",
                                      hint="name an existing checkpoint (relative paths are from where you run)")
        with key_named(where, "attack"):
            EvalConfig("digits", attack=self.attack, attack_steps=self.attack_steps).attack_config()
        with key_named(where, "finetune_mode"):
            dataclasses.replace(FINETUNE, mode=self.finetune_mode).validate()
        if self.on not in ("downstream", "upstream"):
            raise EdgeticketError(f"{where}: key 'on': unknown value {self.on!r}", hint="choose downstream or upstream")
        with key_named(where, None):  # what is left: combinations of methods, patterns and draw settings
            for method, pattern, sparsity in itertools.product(self.methods, self.patterns, self.sparsities):
                DrawConfig(method, pattern, sparsity, round_to=self.rounding(pattern),
                           training=DrawTraining(on=self.on, rate=self.draw_rate)).validate()


KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
KINDS_OF = {bool: ("true or false", "booleans"), int: ("a whole number", "whole numbers"),
            float: ("a finite number", "finite numbers"), str: ("a string", "strings"),
            Path: ("a path (a string)", "paths")}


@contextmanager
def key_named(where: str, key: str | None):
    """An error inside names the file and the key (None: a combination of keys, named by the message)."""
    try:
        yield
    except EdgeticketError as error:
        raise EdgeticketError(f"{where}: {f'key {key!r}: ' if key else ''}{error.message}", hint=error.hint) from None


def _fits(value: object, kind: object) -> bool:
    """Whether a TOML value has a SweepConfig field's type (from its annotation)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if kind is Path:
        return isinstance(value, (str, Path)) and bool(str(value).strip())
    raise TypeError(f"SweepConfig has a field of type {kind} that check_types does not know")  # a new type: add it


def _describe(kind: object) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        return f"a list of {KINDS_OF[args[0]][1]}"
    if origin is dict:
        return f"a table of {KINDS_OF[args[1]][1]}"
    return KINDS_OF[kind][0]


def _toml(value: object) -> str:
    """A default as TOML, for hints."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    return repr(value)


def check_types(values: dict, where: str) -> None:
    """Each key's value against its SweepConfig field: the annotation's type, a list's items, a non-empty grid
    axis, and the field's bounds."""
    hints = typing.get_type_hints(SweepConfig)
    for spec in dataclasses.fields(SweepConfig):
        if spec.name not in values:
            continue
        key, value, kind = spec.name, values[spec.name], hints[spec.name]
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        example = f"the default is {key} = {_toml(default)}"
        if not _fits(value, kind):
            raise EdgeticketError(f"{where}: key '{key}' must be {_describe(kind)}, not {_toml(value)}", hint=example)
        if typing.get_origin(kind) is list and not value:
            raise EdgeticketError(f"{where}: key '{key}' is an empty list: the grid would have no cells", hint=example)
        bounds = {op: limit for op, limit in spec.metadata.get("bounds", {}).items() if limit is not None}
        allowed = " and ".join(f"{op} {limit:g}" for op, limit in bounds.items())
        for number in value if isinstance(value, list) else [value]:
            broken = [f"{op} {limit:g}" for op, limit in bounds.items() if not OPERATORS[op](number, limit)]
            if broken:
                raise EdgeticketError(f"{where}: key '{key}': {number!r} is not {' and '.join(broken)}",
                                      hint=f"{key} must be {allowed}; {example}")


OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


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
