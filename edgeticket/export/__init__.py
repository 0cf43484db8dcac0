"""Export a ticket to any registered runtime's format (edgeticket/runtimes/): write it, check it against torch,
add edgeticket's metadata, and leave no file if the check fails."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from ..console import native_output_captured
from ..errors import EdgeticketError
from ..fileio import atomic_dir, atomic_path, size_on_disk, write_json
from ..signals import critical
from ..runtimes import Runtime, list_runtimes, runtime_for_format, runtime_for_path, runtime_for_suffix
from .checks import ExportCheckFailed, ExportReport, check_fp32, exported_provenance, metadata  # noqa: F401
from .onnx import read_metadata  # noqa: F401

META = "metadata.json"  # in a folder artifact; a file's goes beside it as <file>.json


class NoMetadata(EdgeticketError):
    """An artifact without edgeticket's metadata beside it (a model edgeticket did not export)."""


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The format an output path asks for (its suffix, as ultralytics does); a contradicting --format is refused,
    so `-o model.pte` never holds ONNX bytes."""
    runtime = runtime_for_suffix(Path(path).suffix)
    if fmt is not None:
        runtime_for_format(fmt)  # an unknown format lists the known ones
    if fmt is None and runtime is None:
        suffixes = [r.suffix for r in list_runtimes()]
        raise EdgeticketError(f"cannot tell the format of '{Path(path).name}' from its suffix",
                              hint=f"name it {', '.join(suffixes[:-1])} or {suffixes[-1]}, or pass --format")
    if fmt is not None and runtime is not None and fmt != runtime.format:
        raise EdgeticketError(f"'{Path(path).name}' names an {runtime.format} file, but --format is {fmt}",
                              hint=f"name the output *{runtime_for_format(fmt).suffix}, or drop --format")
    return fmt or runtime.format


def export(ticket, path: str | Path, fmt: str = "onnx", int8: bool = False, ticket_sha256: str | None = None,
           splits=None) -> ExportReport:
    """One entry point for every format; `splits` (calibration and held-out images) only for --int8."""
    runtime = runtime_for_format(fmt)
    if int8:
        int8_formats = [r.format for r in list_runtimes() if r.export_int8]
        if not runtime.export_int8:
            raise EdgeticketError(f"--int8 is for --format {' or '.join(int8_formats)}, not {fmt}",
                                  hint=f"drop --int8 or use --format {int8_formats[0]}")
        if splits is None:
            raise EdgeticketError("--int8 calibrates on training images and checks on test images",
                                  hint="pass --data NAME (the target the ticket was finetuned on)")
        return runtime.export_int8(ticket, path, splits, ticket_sha256)
    reason = runtime.unavailable_reason(runtime.check_provider)
    if reason:
        others = [r.format for r in list_runtimes() if r is not runtime and not r.unavailable_reason(r.check_provider)]
        raise EdgeticketError(f"cannot export to {fmt}: {reason}",
                              hint=f"use --format {' or '.join(others)}" if others else "see `edgeticket devices`")
    return export_checked(runtime, ticket, Path(path), ticket_sha256)


def export_checked(runtime: Runtime, ticket, path: Path, ticket_sha256: str | None) -> ExportReport:
    """The runtime writes the ticket, then runs it on seeded images against torch; metadata goes in (or beside)
    only after the check passes, and the file or folder appears only then: a file and the JSON beside it are
    renamed into place together (one critical section for SIGINT/SIGTERM, edgeticket/signals.py)."""
    with ExitStack() as outputs:
        staged = outputs.enter_context((atomic_dir if runtime.folder else atomic_path)(path))
        with native_output_captured():  # converters (pnnx, ExecuTorch) print to the file descriptors
            runtime.write(ticket.deployable(), ticket.example_input(), staged)
        with native_output_captured():
            predict = runtime.open_model(staged, runtime.check_provider, 1, "fp32", label=f"its export of {path.name}",
                                         hint="no file was written; try another --format")
        diff, limit = check_fp32(runtime.format, predict, ticket)
        entries = metadata(ticket, ticket_sha256)
        if runtime.embeds_metadata:
            runtime.embed_metadata(staged, entries)
        elif runtime.folder:
            write_json(entries, sidecar(staged))
        else:
            outputs.enter_context(atomic_path(sidecar(path))).write_text(json.dumps(entries, indent=2, default=str) + "\n")
        size = size_on_disk(staged)
        with critical():  # the renames: the JSON, then the artifact, as one
            outputs.close()
    return ExportReport(str(path), runtime.format, "fp32", size, f"max |{runtime.name} - torch|", diff, limit)


def sidecar(path: Path) -> Path:
    """Where a format that holds no metadata of its own keeps edgeticket's: in the folder, or beside the file."""
    return path / META if path.is_dir() else Path(f"{path}.json")


def export_onnx(ticket, path: str | Path, ticket_sha256: str | None = None) -> ExportReport:
    """The fp32 ONNX export that eval, the sweep and the benchmarks start from."""
    return export(ticket, path, "onnx", ticket_sha256=ticket_sha256)


def artifact_metadata(path: str | Path) -> dict[str, str]:
    """edgeticket's metadata of any exported artifact: inside it where its format holds metadata (.onnx),
    else the JSON beside it (<file>.json) or in it (<folder>/metadata.json)."""
    path = Path(path)
    runtime = runtime_for_path(path)
    embedded = runtime.read_metadata(path) if runtime else None
    if embedded is not None:
        return embedded
    file = sidecar(path)
    if not file.exists():
        raise NoMetadata(f"{path} has no edgeticket metadata ({file.name})", hint="export it with `edgeticket export`")
    return json.loads(file.read_text())
