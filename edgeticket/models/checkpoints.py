"""Checkpoint loading as a pipeline: read safely, detect the format, strip prefixes, fit the architecture.

Every read goes through `torch.load(..., weights_only=True)`; a file that needs pickle is refused unless
the caller passes `trust_pickle=True` (the CLI's `--trust-pickle`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import EdgeticketError
from ..fileio import read_torch, sha256_file
from ..registry import Registry
from ..ticket import Provenance, Ticket, check_source_kind
from .archs import ARCHS, get_arch, get_model, load_weights

STRIPPED_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class RawWeights:
    """What a reader extracts from a foreign file before it meets an architecture."""
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Reader:
    detect: Callable[[object], bool]
    read: Callable[[dict], RawWeights]


READERS: Registry[Reader] = Registry("checkpoint format")
DETECTION_ORDER = ("edgeticket", "robustbench", "madry", "wrapped", "state_dict")


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIPPED_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        stripped[key] = value
    return stripped


def _madry_read(obj: dict) -> RawWeights:
    state = obj["model"] if "model" in obj else obj["state_dict"]
    weights = {k[len("module.model."):]: v for k, v in state.items() if k.startswith("module.model.")}
    return RawWeights(weights, _as_tuple(state.get("module.normalizer.new_mean")),
                      _as_tuple(state.get("module.normalizer.new_std")))


def _as_tuple(values: torch.Tensor | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(x) for x in values.flatten())


def _madry_detect(obj: object) -> bool:
    state = obj.get("model", obj.get("state_dict")) if isinstance(obj, dict) else None
    return isinstance(state, dict) and any(str(k).startswith("module.model.") for k in state)


def _robustbench_state(obj: object) -> dict[str, torch.Tensor] | None:
    """RobustBench's ImageNet models are `Sequential(normalize=ImageNormalizer(mean, std), model=...)`: their
    state_dict is `normalize.mean/std` (buffers) beside `model.*`, bare or under 'state_dict'."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    state = _strip(state) if _is_tensor_dict(state) else None
    if state and "normalize.mean" in state and "normalize.std" in state and any(k.startswith("model.") for k in state):
        return state
    return None


def _robustbench_read(obj: dict) -> RawWeights:
    state = _robustbench_state(obj)
    return RawWeights({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")},
                      _as_tuple(state["normalize.mean"]), _as_tuple(state["normalize.std"]))


def _wrapped_detect(obj: object) -> bool:
    return isinstance(obj, dict) and any(_is_tensor_dict(obj.get(k)) for k in ("state_dict", "model"))


def _wrapped_read(obj: dict) -> RawWeights:
    return RawWeights(_strip(obj["state_dict"] if _is_tensor_dict(obj.get("state_dict")) else obj["model"]))


READERS.add("edgeticket", Reader(lambda o: isinstance(o, dict) and o.get("format") == "edgeticket", None))
READERS.add("madry", Reader(_madry_detect, _madry_read))
READERS.add("robustbench", Reader(lambda o: _robustbench_state(o) is not None, _robustbench_read))
READERS.add("wrapped", Reader(_wrapped_detect, _wrapped_read))
READERS.add("state_dict", Reader(_is_tensor_dict, lambda o: RawWeights(_strip(o))))


def detect_format(obj: object) -> str:
    for name in DETECTION_ORDER:
        if READERS.get(name).detect(obj):
            return name
    raise EdgeticketError("unrecognised checkpoint layout",
                          hint=f"edgeticket reads: {', '.join(DETECTION_ORDER)} (a dict of tensors, or one under "
                               "'state_dict'/'model')")


# robust-models-transfer's file names: {architecture}_{l2|linf}_eps{epsilon}.ckpt (resnet50_linf_eps4.0.ckpt)
MADRY_NAME = re.compile(r"(.+?)_(l2|linf)_eps(\d+(?:\.\d+)?)")


def source_kind_from_name(name: str) -> tuple[str, str | None]:
    """MadryLab file names carry the threat model: resnet50_l2_eps3.ckpt is robust, *_eps0 is natural."""
    match = MADRY_NAME.match(Path(name).name)
    if not match:
        return "unknown", None
    norm, eps = match.group(2), float(match.group(3))
    if eps == 0:
        return "natural", None
    return "robust", f"{norm}:{eps:g}" + ("/255" if norm == "linf" else "")


def arch_from_file_name(name: str) -> str | None:
    """robust-models-transfer's files name their architecture before the threat model (mobilenet_l2_eps3.ckpt is
    a mobilenet_v2); None where the name says nothing."""
    match = MADRY_NAME.match(Path(name).name)
    released = {spec.madry_name: spec.name for spec in ARCHS.entries() if spec.madry_name}
    return released.get(match.group(1)) if match else None


def _parameter_shapes(arch: str, kwargs: dict) -> dict[str, torch.Tensor]:
    try:
        with torch.device("meta"):
            return get_model(arch, **kwargs).state_dict()
    except NotImplementedError:  # RegNet computes its widths with tensors while it builds: not on meta
        return get_model(arch, **kwargs).state_dict()


def guess_archs(state: dict[str, torch.Tensor]) -> list[str]:
    """Registered architectures whose parameters have the file's names and shapes, once the class count and input
    channels are read from the file (built on the meta device: no memory, little time)."""
    matches = []
    for name in ARCHS.names():
        expected = _parameter_shapes(name, _infer_kwargs(name, state))
        if set(expected) == set(state) and all(expected[k].shape == state[k].shape for k in expected):
            matches.append(name)
    return matches


def resolve_arch(file_name: str, state: dict[str, torch.Tensor]) -> tuple[str, str]:
    """The architecture of a file given without --arch, and what chose it: the registered architectures its keys and
    shapes fit, the MadryLab name deciding between them (a name the parameters contradict is not believed)."""
    guesses, named = guess_archs(state), arch_from_file_name(file_name)
    if named in guesses:
        return named, "file name"
    if len(guesses) == 1:
        return guesses[0], "parameter names and shapes"
    if guesses:
        raise EdgeticketError(f"{file_name} fits several architectures: {', '.join(guesses)}",
                              hint=f"pass --arch {guesses[0]} (or another of them)")
    if named:
        raise EdgeticketError(f"{file_name} fits no registered architecture (its name says {named})",
                              hint=f"pass --arch {named} to see which parameters differ")
    raise EdgeticketError(f"{file_name} fits no registered architecture",
                          hint="pass --arch NAME (see `edgeticket models`), or --arch timm:NAME for a timm model")


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    """Load strictly; on mismatch, name the first offending keys and the architecture expected."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", shapes))
                 if items]
        guesses = [g for g in guess_archs(state) if g != arch]
        hint = f"this file looks like --arch {guesses[0]}" if guesses else "check --arch and that the file is complete"
        raise EdgeticketError(f"checkpoint does not fit architecture '{arch}': {'; '.join(parts)}", hint=hint)
    load_weights(model, state)


def _infer_kwargs(arch: str, state: dict[str, torch.Tensor]) -> dict:
    spec = get_arch(arch)
    kwargs = {"num_classes": 1000, "in_channels": 3}
    if f"{spec.classifier}.weight" in state:
        kwargs["num_classes"] = int(state[f"{spec.classifier}.weight"].shape[0])
    if f"{spec.first_conv}.weight" in state:
        kwargs["in_channels"] = int(state[f"{spec.first_conv}.weight"].shape[1])
    return kwargs


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return tuple(values) * channels if len(values) == 1 else tuple(values)


def load_checkpoint(path: str | Path, arch: str | None = None, trust_pickle: bool = False,
                    source_kind: str | None = None) -> Ticket:
    """Any supported checkpoint, as a Ticket (foreign files become dense, unpruned tickets)."""
    path = Path(path)
    if source_kind is not None:
        check_source_kind(source_kind)
    obj = read_torch(path, trust_pickle)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    fmt = detect_format(obj)
    if fmt == "edgeticket":
        ticket = Ticket.from_file_payload(obj, path.name)
        if arch and arch != ticket.arch:
            raise EdgeticketError(f"{path.name} holds a {ticket.arch}, not a {arch}",
                                  hint=f"drop --arch or pass --arch {ticket.arch}")
        return ticket
    raw = READERS.get(fmt).read(obj)
    arch, chosen_by = (arch, "--arch") if arch else resolve_arch(path.name, raw.state_dict)
    spec = get_arch(arch)
    kwargs = _infer_kwargs(arch, raw.state_dict)
    model = get_model(arch, **kwargs)
    fit_state_dict(model, raw.state_dict, arch)
    kind, threat = source_kind_from_name(path.name)
    channels = kwargs["in_channels"]
    ticket = Ticket(arch=arch, arch_kwargs=kwargs, state_dict=model.state_dict(),
                    input_size=(channels, spec.input_size, spec.input_size),
                    mean=_per_channel(raw.mean or spec.mean, channels), std=_per_channel(raw.std or spec.std, channels),
                    class_names=[str(i) for i in range(kwargs["num_classes"])],
                    provenance=Provenance(source_kind=source_kind or kind, threat_model=threat, source_file=path.name,
                                          source_sha256=sha256_file(path), source_format=fmt))
    ticket.check_finite(path.name)
    ticket.add_stage("import", format=fmt, file=path.name, arch_from=chosen_by)
    return ticket
