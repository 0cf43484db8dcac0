"""`bench TICKET --all-devices`: export to every format a profile needs, bench every profile runnable here,
and give each a status, the way a user compares deployment targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..console import progress_bar
from ..data import DataConfig, ImageSplits, check_classes, load_dataset
from ..errors import EdgeticketError
from ..export import ExportCheckFailed, export
from ..export.checks import FP16_TOLERANCE, allowed_difference, parity_inputs
from ..fileio import check_output, sha256_file
from ..models.checkpoints import load_checkpoint
from ..runtimes import get_runtime, runtime_for_path
from ..ticket import Ticket
from .devices import BrokenProfile, DeviceProfile, announce_shadowing, list_devices, unavailable_reason
from .run import BenchConfig, BenchResult, TargetData, bench_artifact, check_threads, record_bench
from .transport import BoardUnreachable


@dataclass
class DeviceRow:
    device: str
    stands_for: str
    status: str  # ok | not available here | unreachable | needs --data | export failed | accuracy check failed | bench failed | broken profile
    reason: str = ""
    result: BenchResult | None = None


def tolerance(profile: DeviceProfile, reference: np.ndarray) -> float | None:
    if profile.int8:
        return None  # int8 is checked at export, by top-1 agreement
    return allowed_difference(FP16_TOLERANCE if profile.precision == "fp16" else get_runtime(profile.runtime).tolerance,
                              reference)


@dataclass
class DeviceBench:
    """What every profile's row shares: the ticket, its target data, torch's reference logits, and the exports
    (one per format and precision, made on first use)."""
    ticket: Ticket
    sha: str
    splits: ImageSplits | None
    reference: tuple[np.ndarray, np.ndarray]
    stem: Path
    config: BenchConfig
    artifacts: dict[tuple[str, bool], Path | EdgeticketError] = field(default_factory=dict)
    export_notes: dict[tuple[str, bool], str] = field(default_factory=dict)  # what an int8 export's check found

    @property
    def target(self) -> TargetData | None:
        s = self.splits
        return TargetData(s.name, s.test, len(s.class_names)) if s else None

    def artifact(self, profile: DeviceProfile) -> Path | EdgeticketError:
        key = (profile.format, profile.int8)
        if key not in self.artifacts:
            path = Path(f"{self.stem}{'.int8' if profile.int8 else ''}{get_runtime(profile.runtime).suffix}")
            try:
                report = export(self.ticket, path, profile.format, profile.int8, self.sha,
                                self.splits if profile.int8 else None)
                self.artifacts[key] = path
                if profile.int8:
                    self.export_notes[key] = f"{report.check}: {report.value:.2%}"
            except EdgeticketError as error:
                self.artifacts[key] = error
        return self.artifacts[key]

    def row(self, profile: DeviceProfile | BrokenProfile) -> DeviceRow:
        if isinstance(profile, BrokenProfile):
            return DeviceRow(profile.name, "", "broken profile", profile.error.message)
        announce_shadowing(profile)
        reason = unavailable_reason(profile)
        if reason:
            return DeviceRow(profile.name, profile.stands_for, "not available here", reason)
        if profile.int8 and self.splits is None:
            return DeviceRow(profile.name, profile.stands_for, "needs --data",
                             "int8 calibrates on the target's training images: pass --data NAME")
        artifact = self.artifact(profile)
        if isinstance(artifact, EdgeticketError):
            status = "accuracy check failed" if isinstance(artifact, ExportCheckFailed) else "export failed"
            return DeviceRow(profile.name, profile.stands_for, status, artifact.message)
        try:
            result = bench_artifact(artifact, profile, self.config, self.target, self.reference)
        except BoardUnreachable as error:
            return DeviceRow(profile.name, profile.stands_for, "unreachable", f"{error.message} ({error.hint})")
        except EdgeticketError as error:
            return DeviceRow(profile.name, profile.stands_for, "bench failed", error.message)
        record_bench(result)
        limit = tolerance(profile, self.reference[1])
        if limit is not None and not result.max_abs_diff <= limit:
            return DeviceRow(profile.name, profile.stands_for, "accuracy check failed",
                             f"max |{profile.runtime} - torch| = {result.max_abs_diff:.2e} > {limit:.0e}", result)
        note = "; ".join(filter(None, [result.where if result.transport == "ssh" else None,
                                       f"{result.threads} threads (--threads), not the profile's "
                                       f"{result.profile_threads}: saved as {result.device}"
                                       if result.threads_overridden else None,
                                       self.export_notes.get((profile.format, profile.int8)), result.note,
                                       None if self.splits else "no target data: latency only (pass --data NAME)"]))
        return DeviceRow(profile.name, profile.stands_for, "ok", note, result)


def bench_all_devices(ticket_path: str | Path, data: str | None, out_dir: str | Path,
                      config: BenchConfig = BenchConfig(), data_root: str | None = None) -> list[DeviceRow]:
    """Every profile's row. `data` (default: the ticket's finetune target) gives accuracy and calibrates int8;
    without it every latency row is still measured, and the int8 row says what it needs. A --threads override
    is checked against this machine's CPUs before anything is exported (most profiles run here)."""
    check_threads(config.threads)
    check_output(out_dir, folder=True)  # a file there: every export would fail, each row saying so, and exit 0
    if Path(ticket_path).suffix != ".ticket" and runtime_for_path(ticket_path):
        raise EdgeticketError(f"{Path(ticket_path).name} is already exported; --all-devices exports a ticket to "
                              "every format", hint="pass the .ticket, or bench this file with --device NAME")
    ticket = load_checkpoint(ticket_path)
    data = data or ticket.provenance.target
    splits = None
    if data:
        splits = load_dataset(DataConfig(data, data_root, image_size=ticket.input_size[-1],
                                         channels=ticket.input_size[0]))
        check_classes(Path(ticket_path).name, len(ticket.class_names), splits.name, len(splits.class_names))
    inputs = parity_inputs(ticket, 4, seed=7)
    with torch.no_grad():
        reference = (inputs.numpy(), ticket.deployable()(inputs).numpy())
    bench = DeviceBench(ticket, sha256_file(ticket_path), splits, reference, Path(out_dir) / Path(ticket_path).stem,
                        config)
    profiles, rows = list_devices(), []
    with progress_bar() as bar:
        task = bar.add_task("devices", total=len(profiles), status="")
        for profile in profiles:
            bar.update(task, status=profile.name)
            rows.append(bench.row(profile))
            bar.advance(task)
    return rows
