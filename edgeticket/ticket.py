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
import json
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
from .text import clean

FORMAT = "edgeticket"
FORMAT_VERSION = 1
SOURCE_KINDS = ("robust", "natural", "noise", "unknown")  # `report` groups tickets by these


def check_source_kind(kind: object) -> str:
    if kind not in SOURCE_KINDS:
        raise EdgeticketError(f"source kind '{kind}' is not one of {', '.join(SOURCE_KINDS)}",
                              hint="report compares robust, natural and noise sources; say which this one is")
    return kind


def tensor_digest(digest, groups: tuple[dict[str, torch.Tensor], ...]) -> None:
    """Feed names, shapes, dtypes and bytes of every tensor to `digest`."""
    for group in groups:
        for name in sorted(group):
            tensor = group[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def checked_class_names(names: object, num_classes: int) -> list[str]:
    """One name (a string, cleaned) per output of the classifier, or an error."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise EdgeticketError(f"its class names are a {type(names).__name__}, not a list of strings",
                              hint="the file was not written by edgeticket; draw it again from its checkpoint")
    if len(names) != num_classes:
        raise EdgeticketError(f"it names {len(names)} classes for a {num_classes}-class classifier",
                              hint="the file was not written by edgeticket; draw it again from its checkpoint")
    return clean(list(names))


CHECKSUM_KEYS = ("checksum", "checksum_covers")


def payload_checksum(payload: dict) -> str:
    """sha256 over everything a ticket file holds: its tensors, and the rest (architecture, provenance, class
    names, pruning history) as canonical JSON. One flipped byte anywhere changes it."""
    digest = hashlib.sha256()
    tensor_digest(digest, (payload.get("state_dict") or {}, payload.get("masks") or {}))
    rest = {k: v for k, v in payload.items() if k not in ("state_dict", "masks", *CHECKSUM_KEYS)}
    digest.update(json.dumps(rest, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def stored_checksum_matches(payload: dict) -> bool:
    """Files from before the payload checksum (no `checksum_covers`) covered the tensors only."""
    if "checksum" not in payload:
        return True
    if payload.get("checksum_covers") == "payload":
        return payload["checksum"] == payload_checksum(payload)
    if "checksum_covers" in payload:
        return False
    digest = hashlib.sha256()
    tensor_digest(digest, (payload.get("state_dict") or {}, payload.get("masks") or {}))
    return payload["checksum"] == digest.hexdigest()


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
        """From a file or an exported model's metadata: strings cleaned of escape codes and line breaks, and a
        source kind `report` knows."""
        if record is not None and not isinstance(record, dict):
            raise EdgeticketError(f"its provenance is a {type(record).__name__}, not a record",
                                  hint="the file was not written by edgeticket; draw it again from its checkpoint")
        record = clean(dict(record or {}))
        check_source_kind(record.get("source_kind", "unknown"))
        if not isinstance(record.get("stages", []), list) or not all(isinstance(s, dict) and "stage" in s
                                                                     for s in record.get("stages", [])):
            raise EdgeticketError("its provenance stages are not a list of records",
                                  hint="the file was not written by edgeticket; draw it again from its checkpoint")
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

    def check_finite(self, origin: str) -> None:
        """Refuse NaN or Inf weights, naming the tensor: training from them only spreads them."""
        for name, tensor in self.state_dict.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise EdgeticketError(f"{origin}: weight '{name}' holds NaN or Inf values",
                                      hint="the file is corrupt or came from a diverged run; use another checkpoint")

    def to_dict(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields,
                   "provenance": self.provenance.to_dict()}
        return {**payload, "checksum": payload_checksum(payload), "checksum_covers": "payload"}

    @classmethod
    def from_dict(cls, payload: dict) -> "Ticket":
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise EdgeticketError("not an edgeticket file", hint="read foreign checkpoints with --arch "
                                  "(edgeticket.load(path, arch=...) in Python)")
        if payload.get("format_version", 0) > FORMAT_VERSION:
            raise EdgeticketError(f"ticket format {payload['format_version']} is newer than this edgeticket",
                                  hint="upgrade edgeticket")
        if not stored_checksum_matches(payload):
            raise EdgeticketError("its contents do not match the checksum stored with them (the file is corrupt)",
                                  hint="copy or export the ticket again")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in payload.items() if k in names}
        fields["input_size"] = tuple(fields["input_size"])
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        fields["provenance"] = Provenance.from_dict(fields.get("provenance"))
        fields["class_names"] = checked_class_names(fields.get("class_names"),
                                                    int(fields.get("arch_kwargs", {}).get("num_classes", 0)))
        return cls(**fields)

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
        try:
            ticket.build_model()  # fails early if the file is inconsistent
        except EdgeticketError as error:
            raise EdgeticketError(f"{name}: {error.message}", hint=error.hint) from None
        return ticket
