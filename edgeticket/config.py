"""The configuration types every layer shares; plain dataclasses, no torch, so any module (and the CLI's
option defaults) can import them without cycles or start-up cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import EdgeticketError

KINDS = ("none", "l2", "linf", "noise")
# a bench's bounds (BenchConfig checks them; the CLI and sweep TOMLs refuse beyond them before any work)
MAX_BENCH_RUNS, MAX_BENCH_WARMUP, MAX_BENCH_SECONDS = 100_000, 10_000, 600.0
# bounds of counts: far past any real run, inside int64 and numpy's seeds (2**64 epochs overflowed in torch, and a
# negative seed was fine for torch but not for numpy); the configs check them, the CLI refuses beyond them on parsing
MAX_EPOCHS, MAX_STEPS, MAX_BATCH, MAX_IMAGES, MAX_IMAGE_SIZE, MAX_SEED = 100_000, 10_000, 65_536, 10**9, 4096, 2**32 - 1


def _number(text: str) -> float:
    """'8/255' or '0.5'."""
    try:
        if "/" in text:
            top, bottom = text.split("/")
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise EdgeticketError(f"'{text}' is not a number", hint="write eps as 0.5 or 8/255") from None


@dataclass
class AttackConfig:
    kind: str = "none"                # none | l2 | linf | noise
    eps: float = 0.0                  # radius (l2, linf) or sigma (noise)
    steps: int = 3
    step_size: float | None = None    # default 2.5 * eps / steps (Madry et al.)
    random_start: bool = True

    @classmethod
    def parse(cls, spec: str, steps: int = 3, step_size: float | None = None) -> "AttackConfig":
        """'none', 'l2:1.0', 'linf:8/255', 'noise:0.25'."""
        kind, _, value = spec.partition(":")
        if kind not in KINDS or (kind != "none" and not value):
            raise EdgeticketError(f"bad threat model '{spec}'", hint="use none, l2:EPS, linf:EPS (e.g. 8/255) or noise:SIGMA")
        eps = _number(value) if value else 0.0
        if not math.isfinite(eps) or eps < 0 or not 1 <= steps <= MAX_STEPS:
            raise EdgeticketError(f"bad threat model '{spec}' with {steps} steps",
                                  hint=f"eps >= 0 and 1 <= steps <= {MAX_STEPS}")
        if kind != "none" and eps == 0:  # it would train naturally while provenance says robust or noise
            raise EdgeticketError(f"'{spec}' has a radius of 0: it is no attack and no noise",
                                  hint="use none for natural training, or a radius above 0 (l2:1.0, noise:0.25)")
        return cls(kind, eps, steps, step_size)

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.eps:g}"

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64                        # global batch, split across DDP processes
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_drops: tuple[float, ...] = (1 / 3, 2 / 3)  # lr x0.1 at these fractions of the epochs (the paper's 50/100 of 150)
    mode: str = "whole"                         # whole | linear | last-k:K
    attack: AttackConfig = field(default_factory=AttackConfig)
    seed: int = 0
    device: str = "auto"                        # auto | cpu | cuda | cuda:N
    batchnorm_images: int = 2048                # BatchNorm statistics re-estimated on this many training inputs

    def validate(self) -> None:
        if not (1 <= self.epochs <= MAX_EPOCHS and 1 <= self.batch_size <= MAX_BATCH
                and math.isfinite(self.lr) and self.lr > 0):
            raise EdgeticketError(f"epochs, batch size and lr must be positive and finite (got {self.epochs}, "
                                  f"{self.batch_size}, {self.lr})",
                                  hint=f"e.g. --epochs 30 --lr 0.05 (at most {MAX_EPOCHS} epochs, batches of {MAX_BATCH})")
        if not 0 <= self.seed <= MAX_SEED:
            raise EdgeticketError(f"seed {self.seed} is outside 0 to {MAX_SEED}", hint="e.g. --seed 0")
        if self.batchnorm_images < 0:
            raise EdgeticketError("batchnorm_images must be >= 0", hint="0 keeps the running averages")
        if not (self.mode in ("whole", "linear") or self.mode.startswith("last-k:")):
            raise EdgeticketError(f"unknown --mode '{self.mode}'", hint="choose whole, linear or last-k:K (e.g. last-k:3)")
        if self.mode.startswith("last-k:") and not self.mode[7:].isdigit():
            raise EdgeticketError(f"bad --mode '{self.mode}'", hint="K is a whole number of residual blocks: last-k:3")

    def milestones(self) -> list[int]:
        return sorted({max(1, round(f * self.epochs)) for f in self.lr_drops if round(f * self.epochs) < self.epochs})


# The defaults of `edgeticket pretrain` and `edgeticket finetune`; sweeps and the demo start from the same ones.
PRETRAIN = TrainConfig(epochs=10, lr=0.05, batch_size=128)
FINETUNE = TrainConfig(epochs=30, lr=0.05, batch_size=64)
