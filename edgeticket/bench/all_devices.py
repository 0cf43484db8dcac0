"""`bench TICKET --all-devices`: export to every format a profile needs, bench every profile runnable here,
and give each a status, the way a user compares deployment targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import DataConfig, ImageSplits, load_dataset
from ..errors import EdgeticketError
from ..export import SUFFIXES, ExportCheckFailed, export
from ..export.checks import FP16_TOLERANCE, FP32_TOLERANCE, allowed_difference, parity_inputs
from ..fileio import sha256_file
from ..models.checkpoints import load_checkpoint
from .devices import DeviceProfile, list_devices, unavailable_reason
from .run import BenchConfig, BenchResult, bench_artifact, record_bench


@dataclass
class DeviceRow:
    device: str
    stands_for: str
    status: str                 # ok | export failed | accuracy check failed | not available here
    reason: str = ""
    result: BenchResult | None = None


def tolerance(profile: DeviceProfile, reference: np.ndarray) -> float | None:
    if profile.int8:
        return None  # int8 is checked at export, by top-1 agreement
    return allowed_difference(FP16_TOLERANCE if profile.precision == "fp16" else FP32_TOLERANCE[profile.format],
                              reference)


def bench_all_devices(ticket_path: str | Path, data: str | None, out_dir: str | Path,
                      config: BenchConfig = BenchConfig(), data_root: str | None = None) -> list[DeviceRow]:
    ticket = load_checkpoint(ticket_path)
    sha = sha256_file(ticket_path)
    data = data or ticket.provenance.target
    if not data:
        raise EdgeticketError("accuracy needs the target dataset", hint="pass --data NAME")
    splits: ImageSplits = load_dataset(DataConfig(data, data_root, image_size=ticket.input_size[-1],
                                                  channels=ticket.input_size[0]))
    inputs = parity_inputs(ticket, 4, seed=7)
    with torch.no_grad():
        reference = (inputs.numpy(), ticket.deployable()(inputs).numpy())
    stem = Path(out_dir) / Path(ticket_path).stem
    artifacts: dict[tuple[str, bool], Path | Exception] = {}
    export_notes: dict[tuple[str, bool], str] = {}  # what an int8 export's own check found
    rows = []
    for profile in list_devices():
        reason = unavailable_reason(profile)
        if reason:
            rows.append(DeviceRow(profile.name, profile.stands_for, "not available here", reason))
            continue
        key = (profile.format, profile.int8)
        if key not in artifacts:
            path = Path(f"{stem}{'.int8' if profile.int8 else ''}{SUFFIXES[profile.format]}")
            try:
                report = export(ticket, path, profile.format, profile.int8, sha, splits if profile.int8 else None)
                artifacts[key] = path
                if profile.int8:
                    export_notes[key] = f"{report.check}: {report.value:.2%}"
            except EdgeticketError as error:
                artifacts[key] = error
        artifact = artifacts[key]
        if isinstance(artifact, Exception):
            status = "accuracy check failed" if isinstance(artifact, ExportCheckFailed) else "export failed"
            rows.append(DeviceRow(profile.name, profile.stands_for, status, artifact.message))
            continue
        try:
            result = bench_artifact(artifact, profile, config, splits.test, reference)
        except EdgeticketError as error:
            rows.append(DeviceRow(profile.name, profile.stands_for, "bench failed", error.message))
            continue
        record_bench(result)
        limit = tolerance(profile, reference[1])
        if limit is not None and not result.max_abs_diff <= limit:
            rows.append(DeviceRow(profile.name, profile.stands_for, "accuracy check failed",
                                  f"max |{profile.runtime} - torch| = {result.max_abs_diff:.2e} > {limit:.0e}", result))
            continue
        note = "; ".join(filter(None, [export_notes.get(key), result.note]))
        rows.append(DeviceRow(profile.name, profile.stands_for, "ok", note, result))
    return rows
