"""The ticket: one self-describing file that `torch.load(..., weights_only=True)` can read, and its provenance.

It holds everything needed to rebuild the model without pickling a module: the architecture name and
constructor arguments, torch-pruning's pruning history (so a channel-pruned model is rebuilt from the
architecture), the state_dict, masks for masked patterns, normalization, input size, class names and
provenance. A dense pretrained source model is a ticket too (no history, no masks).

This module sits at the package root and imports no layer above the architectures, so every layer (checkpoint
readers, methods, training, export, the API) can import it. Deriving a ticket (`with_model`) deep-copies the
provenance: a ticket never shares its history with the one it came from.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from . import __version__
from .errors import EdgeticketError
from .fileio import read_torch, save_torch
from .models.archs import get_model, load_weights
from .models.normalize import Normalized

FORMAT = "edgeticket"
FORMAT_VERSION = 1


@dataclass
class Stage:
    """One processing step (import, pretrain, draw, finetune) and the recipe it ran with."""
    stage: str
    details: dict = field(default_factory=dict)
    edgeticket_version: str = __version__

    def to_dict(self) -> dict:
        return {"stage": self.stage, "edgeticket_version": self.edgeticket_version, **self.details}

    @classmethod
    def from_dict(cls, record: dict) -> "Stage":
        details = {k: v for k, v in record.items() if k not in ("stage", "edgeticket_version")}
        return cls(record["stage"], details, record.get("edgeticket_version", "unknown"))


@dataclass
class Provenance:
    """Where a ticket came from: its source, how it was drawn, what it was finetuned on, and every stage."""
    source_kind: str = "unknown"         # robust | natural | noise | unknown
    threat_model: str | None = None      # the source's training threat model, e.g. l2:3
    source_data: str | None = None       # the dataset the source was pretrained on here
    source_file: str | None = None
    source_sha256: str | None = None
    source_format: str | None = None     # the checkpoint layout it was read from
    method: str | None = None            # omp | imp | a-imp | lmp
    pattern: str | None = None
    scope: str | None = None
    round_to: int | None = None
    sparsity: float | None = None        # target
    achieved_sparsity: float | None = None
    params_removed: float | None = None
    params_before: int | None = None
    params_after: int | None = None
    macs_before: int | None = None
    macs_after: int | None = None
    latency_budget_ms: float | None = None     # draw --max-latency-ms: the budget
    latency_device: str | None = None          # the device profile it was measured on
    predicted_latency_ms: float | None = None  # the latency table's prediction for the ticket
    measured_latency_ms: float | None = None   # its p50 there, exported and benched
    target: str | None = None            # the dataset it was finetuned on
    stages: list[Stage] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # keys this version does not know (kept, never dropped)

    def to_dict(self) -> dict:
        """The flat JSON form (files, ONNX metadata, eval sidecars); unset fields are left out."""
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("stages", "extra")}
        return {**self.extra, **{k: v for k, v in known.items() if v is not None},
                "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, record: dict | None) -> "Provenance":
        record = dict(record or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"stages", "extra"}
        return cls(**{k: v for k, v in record.items() if k in names},
                   stages=[Stage.from_dict(s) for s in record.get("stages", [])],
                   extra={k: v for k, v in record.items() if k not in names and k != "stages"})


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
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        if isinstance(self.provenance, dict):
            self.provenance = Provenance.from_dict(self.provenance)

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
        load_weights(model, self.state_dict)
        return model.eval()

    def deployable(self) -> nn.Module:
        """The model as shipped: pixels in [0, 1] in, the checkpoint's normalization inside."""
        return Normalized(self.build_model(), self.mean, self.std).eval()

    def with_model(self, model: nn.Module, **changes) -> "Ticket":
        """A new ticket carrying `model`'s current weights and any changed fields; everything else is a deep
        copy, so adding a stage to the new ticket never touches this one."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        kept = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in changes and f.name != "state_dict"}
        return Ticket(**kept, **changes, state_dict=state)

    def add_stage(self, stage: str, **details) -> None:
        """Append one processing stage (pretrain, draw, finetune ...) to the provenance."""
        self.provenance.stages.append(Stage(stage, details))

    def checksum(self) -> str:
        """sha256 over the tensors' names, shapes, dtypes and bytes: a flipped byte in the file changes it."""
        digest = hashlib.sha256()
        for group in (self.state_dict, self.masks):
            for name in sorted(group):
                tensor = group[name].detach().cpu().contiguous()
                digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def check_finite(self, origin: str) -> None:
        """Refuse NaN or Inf weights, naming the tensor: training from them only spreads them."""
        for name, tensor in self.state_dict.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise EdgeticketError(f"{origin}: weight '{name}' holds NaN or Inf values",
                                      hint="the file is corrupt or came from a diverged run; use another checkpoint")

    def to_dict(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **fields, "provenance": self.provenance.to_dict(),
                "checksum": self.checksum()}

    @classmethod
    def from_dict(cls, payload: dict) -> "Ticket":
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise EdgeticketError("not an edgeticket file", hint="read foreign checkpoints with --arch "
                                  "(edgeticket.load(path, arch=...) in Python)")
        if payload.get("format_version", 0) > FORMAT_VERSION:
            raise EdgeticketError(f"ticket format {payload['format_version']} is newer than this edgeticket",
                                  hint="upgrade edgeticket")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in payload.items() if k in names}
        fields["input_size"] = tuple(fields["input_size"])
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        fields["provenance"] = Provenance.from_dict(fields.get("provenance"))
        ticket = cls(**fields)
        if "checksum" in payload and payload["checksum"] != ticket.checksum():
            raise EdgeticketError("its weights do not match the checksum stored with them (the file is corrupt)",
                                  hint="copy or export the ticket again")
        return ticket

    def save(self, path: str | Path) -> None:
        save_torch(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "Ticket":
        """An edgeticket file (foreign checkpoints: `edgeticket.load(path, arch=...)`)."""
        return cls.from_file_payload(read_torch(path), Path(path).name)

    @classmethod
    def from_file_payload(cls, payload: object, name: str) -> "Ticket":
        """A ticket read from the file `name`: checksum, finite weights and a model that builds, or an error
        that names the file."""
        try:
            ticket = cls.from_dict(payload)
        except EdgeticketError as error:
            raise EdgeticketError(f"{name}: {error.message}", hint=error.hint) from None
        ticket.check_finite(name)
        ticket.build_model()  # fails early, with torch's message, if the file is inconsistent
        return ticket
