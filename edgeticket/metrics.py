"""The paper's Table I metrics (accuracy, ECE, NLL, adversarial accuracy, OOD ROC-AUC) and a Frechet
distance between feature sets (Table II's domain gap, measured in the model's own features)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from sklearn.metrics import roc_auc_score
from torch import nn
from torchmetrics.functional.classification import multiclass_calibration_error

from .attacks import AttackConfig, pgd
from .console import progress_bar
from .data import TensorImages

ECE_BINS = 15
T = TypeVar("T")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())  # exact k/n: float32 made 177/200 88.4999


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - confidence|, weighted by the bin's share (Guo et al.);
    torchmetrics' implementation, L1 norm."""
    return float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=bins, norm="l1"))


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(logits, labels))


def ood_roc_auc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """ROC-AUC of telling in-distribution (positive) from OOD inputs by a score (max softmax probability)."""
    labels = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (rows are samples)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # ReLU features with dead units make the product singular: handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
        if not np.isfinite(root).all():  # singular product: regularize, as the FID reference code does
            offset = np.eye(len(cov_a)) * 1e-6
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def map_batches(step: Callable[[torch.Tensor, torch.Tensor], T], data: TensorImages, batch_size: int,
                description: str) -> list[T]:
    """`step(images, labels)` on each batch of `data`, in order, counted on a progress bar: on a CPU one pass
    over a test or OOD set, or a PGD attack, takes minutes."""
    results = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=math.ceil(len(data) / batch_size), status="")
        for images, labels in data.batches(batch_size):
            results.append(step(images, labels))
            bar.update(task, advance=1)
    return results


@torch.no_grad()
def predict(model: nn.Module, data: TensorImages, batch_size: int = 256, description: str = "predict") -> torch.Tensor:
    model.eval()
    return torch.cat(map_batches(lambda images, _: model(images), data, batch_size, description))


def adversarial_accuracy(model: nn.Module, data: TensorImages, attack: AttackConfig, batch_size: int = 256) -> float:
    def correct(images: torch.Tensor, labels: torch.Tensor) -> int:
        adversarial = pgd(model, images, labels, attack)
        with torch.no_grad():
            return int((model(adversarial).argmax(1) == labels).sum())
    return sum(map_batches(correct, data, batch_size, f"PGD-{attack.steps} {attack.label}")) / len(data)


def max_softmax(logits: torch.Tensor) -> np.ndarray:
    return logits.softmax(1).max(1).values.numpy()


def at_chance(accuracy_percent: float, classes: int, images: int) -> bool:
    """Within three binomial standard deviations of guessing (or below): such a model has learned nothing, and
    its other metrics (Adv-Acc above all) describe a constant, not a classifier."""
    guess = 1.0 / classes
    return accuracy_percent <= 100 * (guess + 3 * math.sqrt(guess * (1 - guess) / max(images, 1)))


@dataclass
class TableRow:
    """One row of the paper's Table I."""
    accuracy: float                  # percent
    ece: float
    nll: float
    adv_accuracy: float | None       # percent; None when the runtime has no gradients
    ood_roc_auc: float | None
    at_chance: bool = False          # accuracy no better than guessing: every other number is meaningless

    def as_dict(self) -> dict:
        return asdict(self)


def table_row(logits: torch.Tensor, labels: torch.Tensor, adv_accuracy: float | None = None,
              ood_logits: torch.Tensor | None = None) -> TableRow:
    auc = ood_roc_auc(max_softmax(logits), max_softmax(ood_logits)) if ood_logits is not None else None
    acc = 100 * accuracy(logits, labels)
    return TableRow(acc, expected_calibration_error(logits.softmax(1), labels),
                    negative_log_likelihood(logits, labels), None if adv_accuracy is None else 100 * adv_accuracy, auc,
                    at_chance(acc, logits.shape[1], len(labels)))
