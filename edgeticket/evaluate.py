"""Evaluate a ticket (torch) or an exported model (in its runtime) on a target: the paper's Table I row.

Results also go to a sidecar `<model>.eval.json`, which `edgeticket report` collects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .attacks import AttackConfig
from .data import DataConfig, ImageSplits, TensorImages, check_classes, load_dataset
from .data.datasets import DATASETS
from .errors import EdgeticketError
from .console import warn
from .fileio import check_output, sha256_file, size_on_disk, write_json
from .models.checkpoints import load_checkpoint
from .metrics import TableRow, adversarial_accuracy, map_batches, predict, table_row
from .export import exported_provenance
from .runtimes import Runtime, runtime_for_path
from .tickets.stats import measure


@dataclass
class EvalConfig:
    data: str
    data_root: str | None = None
    ood: str | None = None                # another dataset, or gaussian-noise
    attack: str = "linf:8/255"            # none | linf:EPS | l2:EPS
    attack_steps: int = 20
    adv_images: int | None = 1000         # adversarial accuracy on the first N test images (PGD is costly)
    ood_images: int | None = None         # OOD ROC-AUC on the first N OOD images (None: all)
    batch_size: int = 256

    def validate(self) -> None:
        """Before any work: a bad --attack or --ood used to be found after the test pass (or the PGD one)."""
        self.attack_config()
        if self.ood is not None:
            DATASETS.get(self.ood)
        if self.ood_images is not None and self.ood_images < 1:
            raise EdgeticketError(f"--ood-images {self.ood_images} is below 1", hint="leave it out for every OOD image")
        if self.ood_images is not None and not self.ood:
            raise EdgeticketError("--ood-images caps the OOD set, but no --ood was given", hint="add --ood NAME")

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
    runtime: str                 # torch, or the exported model's runtime (onnxruntime, ...)
    data: str
    test_images: int
    ood: str | None
    ood_images: int | None       # how many OOD images the ROC-AUC saw
    attack: str
    metrics: TableRow
    note: str
    ticket_sha256: str
    provenance: dict
    size: dict
    kept: list[str] = field(default_factory=list)  # metrics this run did not measure, kept from the earlier record

    def as_dict(self) -> dict:
        return {**asdict(self), "metrics": self.metrics.as_dict()}


def load_splits(config: EvalConfig, channels: int, size: int, name: str | None = None) -> ImageSplits:
    return load_dataset(DataConfig(name or config.data, config.data_root, image_size=size, channels=channels))


def check_target(model: str, class_names: list[str], splits: ImageSplits) -> None:
    """Another number of classes is refused; the same number under other names is only a warning (a model
    finetuned on renamed labels)."""
    check_classes(model, len(class_names), splits.name, len(splits.class_names))
    if list(class_names) != list(splits.class_names) and class_names != [str(i) for i in range(len(class_names))]:
        warn(f"{model}'s class names ({', '.join(class_names[:3])}, ...) are not {splits.name}'s "
             f"({', '.join(splits.class_names[:3])}, ...): the labels are compared by index")


def load_ood(config: EvalConfig, channels: int, size: int) -> TensorImages | None:
    """The OOD set's test images, the first `ood_images` of them; None without --ood."""
    return load_splits(config, channels, size, config.ood).test.head(config.ood_images) if config.ood else None


def image_count(images: TensorImages | None) -> int | None:
    return None if images is None else len(images)


def exported_logits(predict, data: TensorImages, batch_size: int, description: str) -> torch.Tensor:
    """An exported model's logits for a whole image set, in batches, counted on a progress bar."""
    return torch.from_numpy(np.concatenate(map_batches(lambda images, _: predict(images.numpy()), data, batch_size,
                                                       description)))


def evaluate_ticket(path: str | Path, config: EvalConfig) -> EvalResult:
    ticket = load_checkpoint(path)
    channels, size = ticket.input_size[0], ticket.input_size[-1]
    splits = load_splits(config, channels, size)
    check_target(Path(path).name, ticket.class_names, splits)
    model = ticket.deployable()
    logits = predict(model, splits.test, config.batch_size, f"test {splits.name}")
    attack = config.attack_config()
    adv = None if attack.kind == "none" else adversarial_accuracy(model, splits.test.head(config.adv_images), attack,
                                                                  config.batch_size)
    ood = load_ood(config, channels, size)
    ood_logits = predict(model, ood, config.batch_size, f"OOD {config.ood}") if ood is not None else None
    note = f"Adv-Acc: PGD-{attack.steps} {attack.label} on {min(len(splits.test), config.adv_images or 10**9)} images" \
        if adv is not None else "no attack"
    return EvalResult(str(path), "torch", splits.name, len(splits.test), config.ood, image_count(ood), attack.label,
                      table_row(logits, splits.test.labels, adv, ood_logits), note, sha256_file(path),
                      ticket.provenance.to_dict(), measure(ticket.build_model(), ticket).as_dict())


def evaluate_exported(path: Path, runtime: Runtime, config: EvalConfig) -> EvalResult:
    """Clean accuracy, ECE, NLL and OOD ROC-AUC in the runtime the model was exported for, on this machine."""
    from .export import artifact_metadata
    meta = artifact_metadata(path)
    if "edgeticket.input_size" not in meta:
        raise EdgeticketError(f"{Path(path).name} was not exported by edgeticket: eval reads its metadata",
                              hint="bench it instead: `edgeticket bench MODEL --data NAME` measures its accuracy")
    channels, size, _ = json.loads(meta["edgeticket.input_size"])
    reason = runtime.unavailable_reason(runtime.check_provider)
    if reason:
        raise EdgeticketError(f"cannot evaluate {path.name} here: {reason}", hint="evaluate its .ticket instead")
    model = runtime.open_model(path, runtime.check_provider, 2, meta.get("edgeticket.precision", "fp32"))
    splits = load_splits(config, channels, size)
    check_target(path.name, json.loads(meta.get("edgeticket.class_names", "[]")), splits)
    logits = exported_logits(model, splits.test, config.batch_size, f"test {splits.name}")
    ood = load_ood(config, channels, size)
    ood_logits = exported_logits(model, ood, config.batch_size, f"OOD {config.ood}") if ood is not None else None
    return EvalResult(str(path), runtime.name, splits.name, len(splits.test), config.ood, image_count(ood), "none",
                      table_row(logits, splits.test.labels, None, ood_logits),
                      f"clean metrics only: {runtime.name} has no gradients for the PGD attack",
                      meta.get("edgeticket.ticket_sha256", ""), exported_provenance(path, meta),
                      {"file_size_bytes": size_on_disk(path)})


def keep_earlier(result: EvalResult, sidecar: Path) -> EvalResult:
    """Metrics this run left out (`--attack none`, no `--ood`) are kept from the earlier record of the same model
    on the same data, so a quick re-run never erases a measured Adv-Acc; `kept` names them."""
    try:
        earlier = json.loads(sidecar.read_text())
        same = all(earlier[k] == getattr(result, k) for k in ("ticket_sha256", "runtime", "data", "test_images"))
        metrics = earlier["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return result
    if not same:
        return result
    if result.metrics.adv_accuracy is None and metrics.get("adv_accuracy") is not None:
        result.metrics.adv_accuracy, result.attack = metrics["adv_accuracy"], earlier.get("attack", "?")
        result.kept.append(f"Adv-Acc ({result.attack})")
    if result.metrics.ood_roc_auc is None and metrics.get("ood_roc_auc") is not None:
        result.metrics.ood_roc_auc, result.ood = metrics["ood_roc_auc"], earlier.get("ood")
        result.ood_images = earlier.get("ood_images")
        result.kept.append(f"ROC-AUC ({result.ood})")
    if result.kept:
        result.note += f"; kept from the earlier {sidecar.name}: {', '.join(result.kept)}"
    return result


def evaluate(path: str | Path, config: EvalConfig, save: bool = True) -> EvalResult:
    """The Table I row; with `save`, also MODEL.eval.json for `report` (checked writable before any work)."""
    config.validate()
    sidecar = Path(f"{path}.eval.json")
    if save:
        check_output(sidecar, path)
    runtime = runtime_for_path(path)
    result = evaluate_exported(Path(path), runtime, config) if runtime else evaluate_ticket(path, config)
    if save:
        write_json(keep_earlier(result, sidecar).as_dict(), sidecar)
    return result
