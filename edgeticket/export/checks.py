"""Every export checks itself against torch before its file is kept.

fp32 formats: max |runtime - torch| over seeded random images in [0, 1], within a per-format tolerance
(absolute, on logits). int8: top-1 agreement with the fp32 model on held-out test images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..errors import EdgeticketError
from ..tickets.ticket import Ticket

# per-format fp32 tolerance (max abs difference of logits); why each is what it is:
FP32_TOLERANCE = {
    "onnx": 1e-4,        # the same fp32 kernels up to summation order
    "executorch": 1e-3,  # XNNPACK picks its own conv algorithms (e.g. Winograd-free, different blocking)
    "ncnn": 1e-2,        # ncnn may store weights as fp16/bf16 where the CPU supports it, and fuses ops
}
INT8_MIN_AGREEMENT = 0.99


class ExportCheckFailed(EdgeticketError):
    """The exported model does not match torch closely enough; no file is kept."""


@dataclass
class ExportReport:
    path: str
    format: str
    precision: str
    size_bytes: int
    check: str          # what was compared
    value: float        # max abs diff (fp32) or top-1 agreement (int8)
    threshold: float


def parity_inputs(ticket: Ticket, count: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, *ticket.input_size, generator=torch.Generator().manual_seed(seed))


def check_fp32(fmt: str, run: Callable[[np.ndarray], np.ndarray], ticket: Ticket) -> float:
    """Max |runtime - torch| on seeded images, one at a time (edge runtimes run batch 1); raises past tolerance."""
    module = ticket.deployable()
    images = parity_inputs(ticket)
    with torch.no_grad():
        expected = module(images).numpy()
    got = np.concatenate([run(images[i:i + 1].numpy()) for i in range(len(images))])
    diff = float(np.abs(got - expected).max())
    if not diff <= FP32_TOLERANCE[fmt]:
        raise ExportCheckFailed(f"{fmt} parity check failed: max |runtime - torch| = {diff:.2e} > {FP32_TOLERANCE[fmt]:.0e}",
                                hint="no file was written; try another format or report this model")
    return diff


def metadata(ticket: Ticket, ticket_sha256: str | None, precision: str = "fp32") -> dict[str, str]:
    """What every artifact carries (ONNX metadata_props, or a metadata.json beside it)."""
    return {"edgeticket.version": __version__, "edgeticket.arch": ticket.arch, "edgeticket.precision": precision,
            "edgeticket.mean": json.dumps(list(ticket.mean)), "edgeticket.std": json.dumps(list(ticket.std)),
            "edgeticket.input_size": json.dumps(list(ticket.input_size)),
            "edgeticket.class_names": json.dumps(ticket.class_names),
            "edgeticket.ticket_sha256": ticket_sha256 or "",
            "edgeticket.provenance": json.dumps(ticket.provenance, default=str)}
