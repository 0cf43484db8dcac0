"""The ticket file: one self-describing file that `torch.load(..., weights_only=True)` can read.

It holds everything needed to rebuild the model without pickling a module: the architecture name and
constructor arguments, torch-pruning's pruning history (so a channel-pruned model is rebuilt from the
architecture), the state_dict, masks for masked patterns, normalization, input size, class names and
provenance. A dense pretrained source model is a ticket too (no history, no masks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from .. import __version__
from ..errors import EdgeticketError
from ..fileio import save_torch
from ..models import get_model
from ..models.normalize import Normalized

FORMAT = "edgeticket"
FORMAT_VERSION = 1


@dataclass
class Ticket:
    arch: str
    arch_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    pruning_history: list = field(default_factory=list)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, *self.input_size)

    def build_model(self) -> nn.Module:
        """Rebuild the (possibly channel-pruned) module from the architecture and load the weights."""
        model = get_model(self.arch, **self.arch_kwargs)
        if self.pruning_history:
            with torch.enable_grad():  # torch-pruning traces through autograd, even inside no_grad callers
                graph = tp.DependencyGraph().build_dependency(model.eval(), self.example_input())
            graph.load_pruning_history(self.pruning_history)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def deployable(self) -> nn.Module:
        """The model as shipped: pixels in [0, 1] in, the checkpoint's normalization inside."""
        return Normalized(self.build_model(), self.mean, self.std).eval()

    def with_model(self, model: nn.Module, **changes) -> "Ticket":
        """A copy carrying `model`'s current weights (and any other changed fields)."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return dataclasses.replace(self, state_dict=state, **changes)

    def add_stage(self, stage: str, **record) -> None:
        """Append one processing stage (pretrain, draw, finetune ...) to the provenance."""
        self.provenance.setdefault("stages", []).append({"stage": stage, "edgeticket_version": __version__, **record})

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, payload: dict) -> "Ticket":
        if payload.get("format") != FORMAT:
            raise EdgeticketError("not an edgeticket file", hint="read foreign checkpoints with --arch")
        if payload.get("format_version", 0) > FORMAT_VERSION:
            raise EdgeticketError(f"ticket format {payload['format_version']} is newer than this edgeticket",
                                  hint="upgrade edgeticket")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in payload.items() if k in names}
        fields["input_size"] = tuple(fields["input_size"])
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return cls(**fields)

    def save(self, path: str | Path) -> None:
        save_torch(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "Ticket":
        from ..models.checkpoints import load_checkpoint
        return load_checkpoint(path)
