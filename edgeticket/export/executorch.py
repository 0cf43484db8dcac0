"""ExecuTorch: torch.export, lowered to the XNNPACK delegate, serialized as a .pte (batch 1, like the device).

A .pte holds no free-form metadata, so edgeticket's goes beside it as `<file>.pte.json`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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


def load_method(path: str | Path, threads: int = 1):
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's worker threads
    return Runtime.get().load_program(str(path)).load_method("forward")


def run_method(method, images: np.ndarray) -> np.ndarray:
    return method.execute([torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))])[0].numpy()


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
            method = load_method(tmp)
        diff, limit = check_fp32("executorch", lambda images: run_method(method, images), ticket)
        write_json(metadata(ticket, ticket_sha256), f"{path}.json")
        size = tmp.stat().st_size
    return ExportReport(str(path), "executorch", "fp32", size, "max |executorch - torch|", diff, limit)
