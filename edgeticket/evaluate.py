"""Evaluate a ticket (torch) or an exported model (onnxruntime) on a target: the paper's Table I row.

Results also go to a sidecar `<model>.eval.json`, which `edgeticket report` collects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .attacks import AttackConfig
from .data import DataConfig, ImageSplits, TensorImages, load_dataset
from .errors import EdgeticketError
from .fileio import sha256_file, write_json
from .models.checkpoints import load_checkpoint
from .metrics import TableRow, adversarial_accuracy, predict, table_row
from .tickets.stats import measure


@dataclass
class EvalConfig:
    data: str
    data_root: str | None = None
    ood: str | None = None                # another dataset, or gaussian-noise
    attack: str = "linf:8/255"            # none | linf:EPS | l2:EPS
    attack_steps: int = 20
    adv_images: int | None = 1000         # adversarial accuracy on the first N test images (PGD is costly)
    batch_size: int = 256

    def attack_config(self) -> AttackConfig:
        """The paper's conventions: Linf step 2/255; L2 step 2.5 * eps / steps."""
        config = AttackConfig.parse(self.attack, self.attack_steps)
        if config.kind == "linf":
            config.step_size = 2 / 255
        if config.kind == "noise":
            raise EdgeticketError("--attack takes none, linf:EPS or l2:EPS", hint="noise is a training objective")
        return config


@dataclass
class EvalResult:
    model: str
    runtime: str                 # torch | onnxruntime
    data: str
    test_images: int
    ood: str | None
    attack: str
    metrics: TableRow
    note: str
    ticket_sha256: str
    provenance: dict
    size: dict

    def as_dict(self) -> dict:
        return {**asdict(self), "metrics": self.metrics.as_dict()}


def load_splits(config: EvalConfig, channels: int, size: int, name: str | None = None) -> ImageSplits:
    return load_dataset(DataConfig(name or config.data, config.data_root, image_size=size, channels=channels))


def evaluate_ticket(path: str | Path, config: EvalConfig) -> EvalResult:
    ticket = load_checkpoint(path)
    channels, size = ticket.input_size[0], ticket.input_size[-1]
    splits = load_splits(config, channels, size)
    model = ticket.deployable()
    logits = predict(model, splits.test, config.batch_size)
    attack = config.attack_config()
    adv = None if attack.kind == "none" else adversarial_accuracy(model, splits.test.head(config.adv_images), attack)
    ood_logits = predict(model, load_splits(config, channels, size, config.ood).test) if config.ood else None
    note = f"Adv-Acc: PGD-{attack.steps} {attack.label} on {min(len(splits.test), config.adv_images or 10**9)} images" \
        if adv is not None else "no attack"
    return EvalResult(str(path), "torch", splits.name, len(splits.test), config.ood, attack.label,
                      table_row(logits, splits.test.labels, adv, ood_logits), note, sha256_file(path),
                      ticket.provenance.to_dict(), measure(ticket.build_model(), ticket).as_dict())


def evaluate_onnx(path: str | Path, config: EvalConfig) -> EvalResult:
    from .export.onnx import open_session, predict_onnx, read_metadata
    session = open_session(path, threads=2)
    channels, size = (int(d) for d in session.get_inputs()[0].shape[1:3])
    splits = load_splits(config, channels, size)
    logits = torch.from_numpy(predict_onnx(session, splits.test, config.batch_size))
    ood_logits = torch.from_numpy(predict_onnx(session, load_splits(config, channels, size, config.ood).test,
                                               config.batch_size)) if config.ood else None
    meta = read_metadata(path)
    return EvalResult(str(path), "onnxruntime", splits.name, len(splits.test), config.ood, "none",
                      table_row(logits, splits.test.labels, None, ood_logits),
                      "clean metrics only: onnxruntime has no gradients for the PGD attack",
                      meta.get("edgeticket.ticket_sha256", ""), json.loads(meta.get("edgeticket.provenance", "{}")),
                      {"file_size_bytes": Path(path).stat().st_size})


def evaluate(path: str | Path, config: EvalConfig, save: bool = True) -> EvalResult:
    result = (evaluate_onnx if str(path).endswith(".onnx") else evaluate_ticket)(path, config)
    if save:
        write_json(result.as_dict(), f"{path}.eval.json")
    return result
