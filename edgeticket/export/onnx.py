"""ONNX export: pixels in [0, 1] in, logits out; normalization inside the graph; checked against torch."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .. import __version__
from ..errors import EdgeticketError
from ..fileio import atomic_path
from ..tickets.ticket import Ticket

INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_FP32_TOLERANCE = 1e-4


def ticket_metadata(ticket: Ticket, ticket_sha256: str | None) -> dict[str, str]:
    return {"edgeticket.version": __version__, "edgeticket.arch": ticket.arch,
            "edgeticket.mean": json.dumps(list(ticket.mean)), "edgeticket.std": json.dumps(list(ticket.std)),
            "edgeticket.input_size": json.dumps(list(ticket.input_size)),
            "edgeticket.class_names": json.dumps(ticket.class_names),
            "edgeticket.ticket_sha256": ticket_sha256 or "",
            "edgeticket.provenance": json.dumps(ticket.provenance, default=str)}


def read_metadata(path: str | Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def parity_inputs(ticket: Ticket, count: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, *ticket.input_size, generator=torch.Generator().manual_seed(seed))


def run_onnx(path: str | Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]


@dataclass
class ExportReport:
    path: str
    format: str
    size_bytes: int
    max_abs_diff: float
    tolerance: float


def export_onnx(ticket: Ticket, path: str | Path, ticket_sha256: str | None = None, opset: int = 18) -> ExportReport:
    """Export, add metadata, run onnx.checker, compare onnxruntime to torch; no file unless all pass."""
    module = ticket.deployable()
    example = parity_inputs(ticket, 2)
    with atomic_path(path) as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(module, (example,), str(tmp), dynamo=True, verbose=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
        graph = onnx.load(str(tmp))
        for key, value in ticket_metadata(ticket, ticket_sha256).items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
        images = parity_inputs(ticket, 4, seed=1)
        with torch.no_grad():
            expected = module(images).numpy()
        diff = float(np.abs(run_onnx(tmp, images.numpy()) - expected).max())
        if not diff <= ONNX_FP32_TOLERANCE:
            raise EdgeticketError(f"ONNX parity check failed: max |onnxruntime - torch| = {diff:.2e} "
                                  f"> {ONNX_FP32_TOLERANCE:.0e}", hint="no file was written; report this model")
        size = tmp.stat().st_size
    return ExportReport(str(path), "onnx", size, diff, ONNX_FP32_TOLERANCE)
