"""Domain gap in the model's own penultimate-layer features (the paper's Table II uses Inception FID)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .data import DataConfig, TensorImages, load_dataset
from .metrics import accuracy, at_chance, frechet_distance, map_batches, predict
from .models import get_arch
from .ticket import Ticket

LARGE_GAP = 2.0  # edgeticket's heuristic: a target this many times farther than the source's own test split


@torch.no_grad()
def penultimate_features(ticket: Ticket, data: TensorImages, limit: int = 2000, batch_size: int = 256,
                         description: str = "features") -> np.ndarray:
    """Inputs of the classifier layer, captured with a forward hook."""
    model = ticket.deployable()
    captured: list[torch.Tensor] = []
    classifier: nn.Module = model.model.get_submodule(get_arch(ticket.arch).classifier)
    handle = classifier.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].flatten(1)))
    try:
        map_batches(lambda images, _: model(images), data.head(limit), batch_size, description)
    finally:
        handle.remove()
    return torch.cat(captured).double().numpy()


@dataclass
class GapResult:
    source: str
    target: str
    distance: float            # Frechet distance, source test vs target test, in the model's features
    baseline: float            # source train vs source test: the distance "no domain shift" gives
    ratio: float
    recommendation: str
    head_accuracy: float | None = None    # percent, on the task whose classes the model's head has (source or target)
    note: str = "Frechet distance in the model's penultimate-layer features, not the Inception FID of Table II"

    def as_dict(self) -> dict:
        return asdict(self)


def domain_gap(ticket: Ticket, source: str, target: str, data_root: str | None = None, limit: int = 2000) -> GapResult:
    channels, size = ticket.input_size[0], ticket.input_size[-1]
    src = load_dataset(DataConfig(source, data_root, image_size=size, channels=channels))
    tgt = load_dataset(DataConfig(target, data_root, image_size=size, channels=channels))
    source_test = penultimate_features(ticket, src.test, limit, description=f"features {source} test")
    distance = frechet_distance(source_test, penultimate_features(ticket, tgt.test, limit,
                                                                  description=f"features {target} test"))
    baseline = frechet_distance(penultimate_features(ticket, src.train, limit, description=f"features {source} train"),
                                source_test)
    ratio = distance / max(baseline, 1e-12)
    head = next((s for s in (src, tgt) if list(s.class_names) == list(ticket.class_names)), None)
    head_accuracy = None
    if head is not None:
        test = head.test.head(limit)
        head_accuracy = 100 * accuracy(predict(ticket.deployable(), test, description=f"accuracy {head.name} test"),
                                       test.labels)
    if head is not None and at_chance(head_accuracy, ticket.num_classes, len(test)):
        advice = (f"no recommendation: the model is at chance on {head.name} ({head_accuracy:.1f}%), so its features "
                  "measure nothing; train or load a real model first")
    elif ratio >= LARGE_GAP:
        advice = (f"large gap ({ratio:.1f}x the source's own train/test distance): the paper's Table II finds robust "
                  "tickets win at high sparsity here; draw from a robust source")
    else:
        advice = (f"small gap ({ratio:.1f}x the source's own train/test distance): Table II finds natural and robust "
                  "tickets match or natural ones win; try both with `edgeticket sweep`/`report`")
    return GapResult(source, target, distance, baseline, ratio, advice, head_accuracy=head_accuracy)
