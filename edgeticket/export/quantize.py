"""ONNX INT8: static QDQ, per-channel weights, calibrated on seeded training images after onnxruntime's
quantization pre-processing; kept only if its top-1 agrees with fp32 on >= 99% of held-out test images.

The weight range follows the CPU the export runs on. On x86 without VNNI (AVX2, plain AVX-512) onnxruntime
multiplies u8 activations by s8 weights with VPMADDUBSW, whose int16 pair sums saturate; onnxruntime's docs
name 7-bit weights (reduce_range) as the fix. Measured on a 50% channel resnet18 finetuned on digits at
224x224 (AVX2): full-range weights agreed with fp32 on 95.5% of test images, 7-bit weights on 99.5% at the
same speed. With VNNI (and on ARM) products are summed in int32, so 7-bit weights would only cost precision:
full 8-bit there. The choice, its reason and the CPU's flags go into the model's metadata.

If all-int8 still misses the check, the first conv and the classifier are kept in fp32 (the usual mixed
precision, slower), named in the metadata, and the check runs again."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from rich.progress import Progress

from ..console import progress_bar
from ..data import ImageSplits, TensorImages, stratified_subset
from ..fileio import atomic_path
from ..host import CpuInfo, cpu_info
from ..ticket import Ticket
from .checks import INT8_MIN_AGREEMENT, ExportCheckFailed, ExportReport, metadata
from .onnx import INPUT_NAME, add_metadata, open_session, predict_onnx, write_onnx


class Calibration(CalibrationDataReader):
    """Calibration images, batch by batch, counted on `bar`: onnxruntime's calibration loop shows nothing else."""

    def __init__(self, images: TensorImages, bar: Progress, description: str, batch_size: int = 32):
        batches = torch.split(torch.arange(len(images)), batch_size)
        self.batches = iter(batches)
        self.images = images
        self.bar, self.task = bar, bar.add_task(description, total=len(batches), status="")

    def get_next(self) -> dict | None:
        indices = next(self.batches, None)
        if indices is None:
            return None
        self.bar.update(self.task, advance=1)
        return {INPUT_NAME: self.images.batch(indices)[0].numpy()}


def kept_in_fp32(path: Path) -> list[str]:
    """The first Conv and the classifier (Gemm/MatMul) nodes of the graph."""
    nodes = onnx.load(str(path)).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    return convs[:1] + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]


def weight_bits(cpu: CpuInfo) -> tuple[int, str]:
    """The int8 weight range for `cpu`, and why."""
    if cpu.x86 and not cpu.vnni:
        return 7, "x86 without VNNI: u8 x s8 products are summed in int16, which saturates with 8-bit weights"
    if cpu.x86:
        return 8, "x86 with VNNI: int8 products are summed in int32"
    return 8, f"{cpu.arch}: int8 products are summed in int32"


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def export_onnx_int8(ticket: Ticket, path: str | Path, splits: ImageSplits, ticket_sha256: str | None = None,
                     calibration_images: int = 256, seed: int = 0,
                     min_agreement: float = INT8_MIN_AGREEMENT) -> ExportReport:
    cpu = cpu_info()
    bits, why = weight_bits(cpu)
    chosen = stratified_subset(splits.train.labels, calibration_images, seed)
    calibration = TensorImages(splits.train.images[chosen], splits.train.labels[chosen])
    with tempfile.TemporaryDirectory() as work, atomic_path(path) as tmp:
        fp32, prepared = Path(work) / "fp32.onnx", Path(work) / "prepared.onnx"
        write_onnx(ticket, fp32, ticket_sha256)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        reference = predict_onnx(open_session(fp32, threads=2), splits.test)
        with progress_bar() as bar:
            for kept in ([], kept_in_fp32(prepared)):
                attempt = "int8 calibration, first conv and classifier fp32" if kept else "int8 calibration"
                quantize_static(str(prepared), str(tmp), Calibration(calibration, bar, attempt),
                                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=bits == 7,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=kept)
                agreement = top1_agreement(predict_onnx(open_session(tmp, threads=2), splits.test), reference)
                if agreement >= min_agreement:
                    break
            else:
                raise ExportCheckFailed(f"int8 top-1 agrees with fp32 on {agreement:.2%} of {len(splits.test)} "
                                        f"test images (< {min_agreement:.0%}), even with the first conv and "
                                        "classifier in fp32",
                                        hint="no file was written; calibrate on more images or ship fp32")
        add_metadata(tmp, {**metadata(ticket, ticket_sha256, precision="int8"),
                           "edgeticket.int8_agreement": f"{agreement:.6f}",
                           "edgeticket.int8_check_images": str(len(splits.test)),
                           "edgeticket.int8_fp32_nodes": ",".join(kept),
                           "edgeticket.int8_weight_bits": str(bits),
                           "edgeticket.int8_weight_bits_reason": why,
                           "edgeticket.export_cpu": cpu.describe()})
        size = tmp.stat().st_size
    layers = "all layers int8" if not kept else "first conv and classifier in fp32"
    return ExportReport(str(path), "onnx", "int8", size,
                        f"top-1 agreement with fp32 ({len(splits.test)} test images; {layers}; {bits}-bit weights)",
                        agreement, min_agreement)
