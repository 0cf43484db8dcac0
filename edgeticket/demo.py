"""The main job on an offline default: Fashion-MNIST (source) -> scikit-learn digits (target), a large
domain gap, where the paper expects robust tickets to transfer better.

Pretrain a natural and a PGD-L2 robust small ResNet (cached), draw tickets at several sparsities,
finetune each on a limited digits subset, evaluate the five Table I metrics (OOD = Fashion-MNIST test
images), export to ONNX, bench, and report. Every stage whose output exists is skipped, so a re-run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .attacks import AttackConfig
from .bench import BenchConfig, bench_onnx
from .bench.onnxruntime import record_bench
from .console import info
from .data import DataConfig, load_dataset
from .evaluate import EvalConfig, evaluate
from .export import export_onnx
from .fileio import sha256_file, write_json
from .report import Report, write_report
from .tickets import DrawConfig, Ticket, draw_ticket
from .train import TrainConfig, finetune, pretrain, save_result, state_file


def default_cache() -> Path:
    return Path(os.environ.get("EDGETICKET_CACHE", Path.home() / ".cache" / "edgeticket"))


@dataclass
class DemoConfig:
    quick: bool = False
    out: Path = Path("runs/demo")
    cache: Path = field(default_factory=default_cache)
    arch: str = "small_resnet"
    source: str = "fashion-mnist"
    target: str = "digits"
    robust: str = "l2:1.0"
    robust_steps: int = 3
    method: str = "omp"
    pattern: str = "channel"
    sparsities: tuple[float, ...] = (0.0, 0.5, 0.8)
    seed: int = 0

    @property
    def preset(self) -> dict:
        """Sizes: --quick is what the tests run (under 2 minutes); the default is under 10 minutes on 2 cores."""
        if self.quick:
            return {"source_images": 3000, "source_epochs": 1, "target_images": 300, "finetune_epochs": 8, "finetune_lr": 0.05,
                    "adv_images": 200, "attack_steps": 10, "bench_runs": 50, "bench_seconds": 0.2}
        return {"source_images": 20000, "source_epochs": 2, "target_images": 300, "finetune_epochs": 30, "finetune_lr": 0.05,
                "adv_images": 599, "attack_steps": 20, "bench_runs": 200, "bench_seconds": 2.0}


def source_ticket(config: DemoConfig, kind: str) -> Path:
    """Pretrain (or reuse from the cache) the natural or robust source model."""
    preset = config.preset
    attack = AttackConfig.parse(config.robust if kind == "robust" else "none", config.robust_steps)
    train = TrainConfig(epochs=preset["source_epochs"], lr=0.05, batch_size=128, attack=attack, seed=config.seed)
    key = hashlib.sha256(json.dumps([config.arch, config.source, preset["source_images"], asdict(train)],
                                    default=str).encode()).hexdigest()[:12]
    path = config.cache / f"{config.source}-{config.arch}-{kind}-{key}.ticket"
    if path.exists():
        info(f"[dim]reusing {kind} source {path}[/]")
        return path
    splits = load_dataset(DataConfig(config.source, subset=preset["source_images"], seed=config.seed))
    ticket, _ = pretrain(config.arch, splits, train, state_path=state_file(path))
    save_result(ticket, path)
    return path


def run_cell(config: DemoConfig, kind: str, source_path: Path, sparsity: float) -> None:
    """draw -> finetune -> eval (torch and ONNX) -> export -> bench for one (source, sparsity)."""
    preset = config.preset
    folder = config.out / kind
    stem = f"{config.method}-{config.pattern}-{sparsity:g}"
    drawn, tuned, onnx = folder / f"{stem}.ticket", folder / f"{stem}-{config.target}.ticket", folder / f"{stem}.onnx"
    if not drawn.exists():
        source = Ticket.load(source_path)
        source.provenance["source_sha256"] = sha256_file(source_path)
        draw_ticket(source, DrawConfig(config.method, config.pattern, sparsity))[0].save(drawn)
    if not tuned.exists():
        target = load_dataset(DataConfig(config.target, subset=preset["target_images"], seed=config.seed,
                                         image_size=Ticket.load(drawn).input_size[-1], channels=1))
        trained, _ = finetune(Ticket.load(drawn), target,
                              TrainConfig(epochs=preset["finetune_epochs"], lr=preset["finetune_lr"], seed=config.seed), state_file(tuned))
        save_result(trained, tuned)
    evaluation = EvalConfig(config.target, ood=config.source, attack="linf:8/255",
                            attack_steps=preset["attack_steps"], adv_images=preset["adv_images"])
    if not Path(f"{tuned}.eval.json").exists():
        evaluate(tuned, evaluation)
    if not onnx.exists():
        export_onnx(Ticket.load(tuned), onnx, sha256_file(tuned))
    if not Path(f"{onnx}.eval.json").exists():
        evaluate(onnx, evaluation)
    if not Path(f"{onnx}.bench.json").exists():
        record_bench(bench_onnx(onnx, BenchConfig(threads=1, runs=preset["bench_runs"], warmup=10,
                                                      min_seconds=preset["bench_seconds"])))


def run_demo(config: DemoConfig) -> Report:
    config.out.mkdir(parents=True, exist_ok=True)
    write_json({**asdict(config), "preset": config.preset}, config.out / "config.json")
    for kind in ("natural", "robust"):
        info(f"[bold]{kind} source[/] ({config.source}, {config.arch})")
        source = source_ticket(config, kind)
        for sparsity in config.sparsities:
            info(f"[bold]{kind}[/] {config.method} {config.pattern} ticket at sparsity {sparsity:g}")
            run_cell(config, kind, source, sparsity)
    return write_report(config.out)
