"""Every local device profile on resnet18 at 224x224: dense vs a 50% channel ticket, fp32 vs int8.

    python benchmarks/runtimes.py [--runs 30] [--seconds 2]

Prints p50 latency per profile, the speed-up from pruning (dense / ticket) and from INT8 (ort-cpu-1t /
ort-int8-1t). Weights are random (nothing is downloaded); latency does not depend on their values, and the
int8 agreement check is switched off here because random-weight logits are near ties (the real check runs
in `edgeticket export --int8` and `bench --all-devices`). Calibration: 128 Fashion-MNIST images at 224x224.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from edgeticket.bench import BenchConfig, bench_artifact, list_devices, unavailable_reason
from edgeticket.bench.devices import timing_note
from edgeticket.console import console
from edgeticket.data import DataConfig, ImageSplits, TensorImages, load_dataset
from edgeticket.export import export
from edgeticket.export.quantize import export_onnx_int8
from edgeticket.tables import rows_table
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.models import get_arch, get_model
from edgeticket.runtimes import get_runtime


def dense_ticket(size: int) -> Ticket:
    torch.manual_seed(0)
    spec = get_arch("resnet18")
    return Ticket("resnet18", {"num_classes": 10, "in_channels": 3}, get_model("resnet18", num_classes=10).state_dict(),
                  (3, size, size), spec.mean, spec.std, [str(i) for i in range(10)])


def calibration_splits(size: int) -> ImageSplits:
    small = load_dataset(DataConfig("fashion-mnist", subset=128))
    resize = lambda images: TensorImages(torch.nn.functional.interpolate(
        images.images.expand(-1, 3, -1, -1).float(), size=(size, size), mode="bilinear").round().byte(), images.labels)
    test = TensorImages(small.test.images[:64], small.test.labels[:64])
    return ImageSplits("fashion-mnist", resize(small.train), resize(test), small.class_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dense = dense_ticket(args.size)
    tickets = {"dense": dense, "50% channel": draw_ticket(dense, DrawConfig(pattern="channel", sparsity=0.5))[0]}
    splits = calibration_splits(args.size)
    config = BenchConfig(runs=args.runs, warmup=5, seconds=args.seconds)
    p50: dict[tuple[str, str], float] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for profile in list_devices():
            reason = unavailable_reason(profile)
            if reason:
                notes[profile.name] = f"not available here: {reason}"
                continue
            notes[profile.name] = timing_note(profile) or ""
            for label, ticket in tickets.items():
                path = Path(tmp) / f"{label.replace(' ', '_').replace('%', '')}{'.int8' if profile.int8 else ''}{get_runtime(profile.runtime).suffix}"
                if not path.exists():
                    if profile.int8:
                        export_onnx_int8(ticket, path, splits, min_agreement=0.0)
                    else:
                        export(ticket, path, profile.format)
                p50[profile.name, label] = bench_artifact(path, profile, config).latency.p50_ms
    rows = []
    for profile in list_devices():
        if (profile.name, "dense") not in p50:
            rows.append([profile.name, "-", "-", "-", "-", notes[profile.name]])
            continue
        dense_ms, ticket_ms = p50[profile.name, "dense"], p50[profile.name, "50% channel"]
        int8 = ""
        if profile.int8 and ("ort-cpu-1t", "dense") in p50:
            int8 = (f"{p50['ort-cpu-1t', 'dense'] / dense_ms:.2f}x / "
                    f"{p50['ort-cpu-1t', '50% channel'] / ticket_ms:.2f}x")
        rows.append([profile.name, f"{dense_ms:.1f}", f"{ticket_ms:.1f}", f"{dense_ms / ticket_ms:.2f}x", int8,
                     notes[profile.name]])
    if args.json:
        print(json.dumps({f"{k[0]}|{k[1]}": v for k, v in p50.items()}, indent=2))
        return
    rows_table(f"resnet18 at {args.size}x{args.size}, batch 1, p50 ms (measured in one run on this machine)",
               ["device", "dense", "50% channel", "speed-up from pruning", "speed-up from int8 (dense / 50%)", "note"],
               rows)
    console.print(f"{torch.get_num_threads()} cores here: a 4-thread profile cannot use 4 cores.")


if __name__ == "__main__":
    main()
