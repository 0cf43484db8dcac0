"""Exporters to edge formats; each checks its output against torch and leaves no file if the check fails."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EdgeticketError
from .checks import ExportCheckFailed, ExportReport  # noqa: F401
from .onnx import export_onnx, read_metadata  # noqa: F401

FORMATS = ("onnx", "executorch", "ncnn")
SUFFIXES = {"onnx": ".onnx", "executorch": ".pte", "ncnn": ".ncnn"}


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The format an output path asks for (its suffix, as ultralytics does); a contradicting --format is refused,
    so `-o model.pte` never holds ONNX bytes."""
    suffix = Path(path).suffix
    inferred = next((name for name, known in SUFFIXES.items() if known == suffix), None)
    if fmt is not None and fmt not in FORMATS:
        raise EdgeticketError(f"unknown --format '{fmt}'", hint=f"choose one of: {', '.join(FORMATS)}")
    if fmt is None and inferred is None:
        raise EdgeticketError(f"cannot tell the format of '{Path(path).name}' from its suffix",
                              hint="name it .onnx, .pte or .ncnn, or pass --format")
    if fmt is not None and inferred is not None and fmt != inferred:
        raise EdgeticketError(f"'{Path(path).name}' is a {inferred} name, but --format is {fmt}",
                              hint=f"name the output *{SUFFIXES[fmt]}, or drop --format")
    return fmt or inferred


def export(ticket, path: str | Path, fmt: str = "onnx", int8: bool = False, ticket_sha256: str | None = None,
           splits=None) -> ExportReport:
    """One entry point for every format; `splits` (calibration and held-out images) only for --int8."""
    if fmt not in FORMATS:
        raise EdgeticketError(f"unknown --format '{fmt}'", hint=f"choose one of: {', '.join(FORMATS)}")
    if int8:
        if fmt != "onnx":
            raise EdgeticketError(f"--int8 is for --format onnx, not {fmt}", hint="drop --int8 or use --format onnx")
        if splits is None:
            raise EdgeticketError("--int8 calibrates on training images and checks on test images",
                                  hint="pass --data NAME (the target the ticket was finetuned on)")
        from .quantize import export_onnx_int8
        return export_onnx_int8(ticket, path, splits, ticket_sha256)
    if fmt == "executorch":
        from .executorch import export_executorch
        return export_executorch(ticket, path, ticket_sha256)
    if fmt == "ncnn":
        from .ncnn import export_ncnn
        return export_ncnn(ticket, path, ticket_sha256)
    return export_onnx(ticket, path, ticket_sha256)


def artifact_metadata(path: str | Path) -> dict[str, str]:
    """edgeticket's metadata of any exported artifact (.onnx, .pte + .pte.json, .ncnn/ folder)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return read_metadata(path)
    sidecar = path / "metadata.json" if path.is_dir() else Path(f"{path}.json")
    if not sidecar.exists():
        raise EdgeticketError(f"{path} has no edgeticket metadata ({sidecar.name})",
                              hint="export it with `edgeticket export`")
    return json.loads(sidecar.read_text())

