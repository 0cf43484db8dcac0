"""The main job on an offline default: Fashion-MNIST (source) -> scikit-learn digits (target), a large
domain gap, where the paper expects robust tickets to transfer better.

A sweep preset: pretrain a natural and a PGD-L2 robust small ResNet (cached), draw tickets at 0, 0.5 and
0.8, finetune each on 300 digits, evaluate the five Table I metrics (OOD = Fashion-MNIST test images),
export to ONNX, bench, and report. Every finished stage is reused, so a re-run resumes.
"""

from __future__ import annotations

from pathlib import Path

from .sweep import SweepConfig

QUICK = {"source_images": 3000, "source_epochs": 1, "target_images": 300, "finetune_epochs": 8, "adv_images": 200,
         "attack_steps": 10, "bench_runs": 50, "bench_seconds": 0.2, "draw_epochs": 1}


def demo_config(quick: bool = False, out: Path = Path("runs/demo"), cache: Path | None = None,
                method: str = "omp", pattern: str = "channel", noise: bool = False) -> SweepConfig:
    """--quick is what the tests run (about a minute); the default takes about 5 minutes on 2 cores."""
    sources = {"natural": "none", "robust": "l2:1.0", **({"noise": "noise:0.25"} if noise else {})}
    config = SweepConfig(out=out, sources=sources, methods=[method], patterns=[pattern], **(QUICK if quick else {}))
    if cache:
        config.cache = cache
    return config
