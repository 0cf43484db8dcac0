"""ExecuTorch: torch.export, lowered to the XNNPACK delegate, serialized as a .pte (batch 1, like the device).

A .pte holds no free-form metadata, so edgeticket's goes beside it as `<file>.pte.json`."""

from __future__ import annotations

from pathlib import Path

import torch

from ..bench.runner import open_executorch
from ..console import native_output_captured
from ..errors import EdgeticketError
from ..fileio import atomic_path, write_json
from ..ticket import Ticket
from .checks import ExportReport, check_fp32, metadata


def runtime_available() -> str | None:
    """None when ExecuTorch's Python runtime imports here, else why not."""
    try:
        with native_output_captured():  # importing it logs torch deprecation warnings
            import executorch.runtime  # noqa: F401
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    except Exception as error:  # an ImportError, or a binary built for another torch
        return f"executorch does not import ({type(error).__name__}); pip install 'edgeticket[edge]'"
    return None


def export_executorch(ticket: Ticket, path: str | Path, ticket_sha256: str | None = None) -> ExportReport:
    reason = runtime_available()
    if reason:
        raise EdgeticketError(f"cannot export to ExecuTorch: {reason}", hint="use --format onnx or ncnn")
    module = ticket.deployable()
    with native_output_captured():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        program = to_edge_transform_and_lower(torch.export.export(module, (ticket.example_input(),)),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()
    with atomic_path(path) as tmp:
        tmp.write_bytes(program.buffer)
        with native_output_captured():
            predict = open_executorch(str(tmp), "xnnpack", 1, "fp32")
        diff, limit = check_fp32("executorch", predict, ticket)
        write_json(metadata(ticket, ticket_sha256), f"{path}.json")
        size = tmp.stat().st_size
    return ExportReport(str(path), "executorch", "fp32", size, "max |executorch - torch|", diff, limit)
