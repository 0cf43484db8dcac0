"""Every export checks itself against torch before its file is kept.

fp32 formats: max |runtime - torch| over seeded random images in [0, 1] must stay within
atol + rtol * max |torch logits| (per format, like numpy.allclose). int8: top-1 agreement with the fp32
model on held-out test images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..errors import EdgeticketError
from ..ticket import Provenance, Ticket

# each runtime's fp32 tolerance (atol, rtol) on logits is its TOLERANCE, with why (edgeticket/runtimes/);
# a runtime asked for fp16 (ncnn's fp16 storage and arithmetic, a TensorRT fp16 engine): ncnn's fp16 path on
# lavapipe measured 9.8e-3 at logits of +-6.8 (digits ticket) and 1.7e-3 of the largest logit (resnet18 at 224)
FP16_TOLERANCE = (1e-3, 1e-2)
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


def allowed_difference(tolerance: tuple[float, float], reference: np.ndarray) -> float:
    atol, rtol = tolerance
    return atol + rtol * float(np.abs(reference).max())


def check_fp32(fmt: str, run: Callable[[np.ndarray], np.ndarray], ticket: Ticket) -> tuple[float, float]:
    """(max |runtime - torch|, allowed) on seeded images, one at a time (edge runtimes run batch 1);
    raises past the tolerance of the format's runtime."""
    from ..runtimes import runtime_for_format
    runtime = runtime_for_format(fmt)
    module = ticket.deployable()
    images = parity_inputs(ticket)
    with torch.no_grad():
        expected = module(images).numpy()
    got = np.concatenate([run(images[i:i + 1].numpy()) for i in range(len(images))])
    diff, limit = float(np.abs(got - expected).max()), allowed_difference(runtime.tolerance, expected)
    if not diff <= limit:
        hint = ("no file was written; try another format or report this model" if runtime.builtin else
                f"no file was written; the plugin {runtime.source} may not support this model: try another format")
        raise ExportCheckFailed(f"{fmt} parity check failed: max |runtime - torch| = {diff:.2e} > {limit:.1e}",
                                hint=hint)
    return diff, limit


def exported_provenance(path: Path, meta: dict[str, str]) -> dict:
    """The ticket's provenance that `metadata` wrote into an export, checked and cleaned as a ticket's is (a
    foreign model's is empty)."""
    if "edgeticket.provenance" not in meta:
        return {}
    try:
        return Provenance.from_dict(json.loads(meta["edgeticket.provenance"])).to_dict()
    except (json.JSONDecodeError, EdgeticketError) as error:
        reason = error.message if isinstance(error, EdgeticketError) else "it is not JSON"
        raise EdgeticketError(f"{path.name}: the provenance in its metadata is unreadable ({reason})",
                              hint="export it again from its ticket") from None


def metadata(ticket: Ticket, ticket_sha256: str | None, precision: str = "fp32") -> dict[str, str]:
    """What every artifact carries (ONNX metadata_props, or a metadata.json beside it)."""
    return {"edgeticket.version": __version__, "edgeticket.arch": ticket.arch, "edgeticket.precision": precision,
            "edgeticket.mean": json.dumps(list(ticket.mean)), "edgeticket.std": json.dumps(list(ticket.std)),
            "edgeticket.input_size": json.dumps(list(ticket.input_size)),
            "edgeticket.class_names": json.dumps(ticket.class_names),
            "edgeticket.ticket_sha256": ticket_sha256 or "",
            "edgeticket.provenance": json.dumps(ticket.provenance.to_dict(), default=str)}
