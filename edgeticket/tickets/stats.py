"""Sizes of a model as deployed: parameters (non-zero under masks), MACs as torch-pruning counts them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from torch import nn

from ..ticket import Ticket


@dataclass
class ModelSize:
    params: int           # every parameter the file stores
    nonzero_params: int   # parameters a sparse kernel would keep
    macs: int             # dense multiply-accumulates per image

    def as_dict(self) -> dict:
        return asdict(self)


def measure(model: nn.Module, ticket: Ticket) -> ModelSize:
    macs, params = tp.utils.count_ops_and_params(model, ticket.example_input())
    nonzero = int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return ModelSize(params=int(params), nonzero_params=nonzero, macs=int(macs))


@dataclass
class LayerRow:
    name: str
    kind: str
    in_channels: int
    out_channels: int
    weights: int
    sparsity: float


def layer_table(model: nn.Module) -> list[LayerRow]:
    """Per conv/linear layer: channel counts and the fraction of zero weights."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            rows.append((name, "conv", module.in_channels, module.out_channels, module.weight))
        elif isinstance(module, nn.Linear):
            rows.append((name, "linear", module.in_features, module.out_features, module.weight))
    return [LayerRow(name, kind, cin, cout, w.numel(), 1.0 - int(torch.count_nonzero(w)) / w.numel())
            for name, kind, cin, cout, w in rows]
