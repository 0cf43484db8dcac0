"""ONNX INT8: the contract (>= 99% top-1 agreement with fp32, the check and any fp32 layers in the metadata) on any
CPU, and the weight range chosen from the CPU the export runs on (7-bit on x86 without VNNI, 8-bit elsewhere)."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeticket.data import DataConfig, load_dataset
from edgeticket.errors import EdgeticketError
from edgeticket.export import ExportCheckFailed, artifact_metadata, export
from edgeticket.export import quantize
from edgeticket.export.onnx import open_session, predict_onnx
from edgeticket.host import CpuInfo, cpu_info
from edgeticket.metrics import accuracy, predict

pytestmark = pytest.mark.slow  # each export calibrates and checks on all 599 test digits

AVX2 = CpuInfo("an AVX2 Xeon", "x86_64", ("avx2", "f16c", "fma"))
VNNI = CpuInfo("an AVX-512 EPYC", "x86_64", ("avx2", "avx512f", "avx512_vnni"))
ARM = CpuInfo("unknown CPU", "aarch64", ("asimd", "asimddp"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", image_size=28, channels=1))


def fp32_compute_nodes(path) -> list[str]:
    """Conv/Gemm/MatMul nodes whose weight does not come out of a DequantizeLinear: the layers left in fp32."""
    graph = onnx.load(str(path)).graph
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    return [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
            and produced_by.get(n.input[1]) != "DequantizeLinear"]


def largest_int8_weight(path) -> int:
    """max |q| over the int8 weight tensors (activations are uint8)."""
    tensors = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    return max(int(np.abs(t.astype(np.int32)).max()) for t in tensors if t.dtype == np.int8 and t.ndim >= 2)


def test_int8_contract_on_this_cpu(digits_ticket, digits, tmp_path):
    """Whatever path this CPU takes: >= 99% agreement, the check and the weight range recorded, every fp32 layer named."""
    report = export(digits_ticket, tmp_path / "q.onnx", "onnx", int8=True, splits=digits)
    meta = artifact_metadata(tmp_path / "q.onnx")
    assert report.precision == "int8" and report.value >= 0.99 and report.threshold == 0.99
    assert float(meta["edgeticket.int8_agreement"]) == pytest.approx(report.value, abs=1e-6)
    assert meta["edgeticket.int8_check_images"] == str(len(digits.test)) == "599"
    assert meta["edgeticket.int8_weight_bits"] == str(quantize.weight_bits(cpu_info())[0])
    assert meta["edgeticket.export_cpu"] == cpu_info().describe() and meta["edgeticket.int8_weight_bits_reason"]
    assert sorted(filter(None, meta["edgeticket.int8_fp32_nodes"].split(","))) == sorted(fp32_compute_nodes(tmp_path / "q.onnx"))
    int8_accuracy = float((predict_onnx(open_session(tmp_path / "q.onnx"), digits.test).argmax(1)
                           == digits.test.labels.numpy()).mean())
    fp32_accuracy = accuracy(predict(digits_ticket.deployable(), digits.test), digits.test.labels)
    assert abs(int8_accuracy - fp32_accuracy) <= 0.01
    assert (tmp_path / "q.onnx").stat().st_size < 0.5 * export(digits_ticket, tmp_path / "f.onnx").size_bytes


@pytest.mark.parametrize("cpu, bits", [(AVX2, 7), (VNNI, 8), (ARM, 8)])
def test_the_weight_range_follows_the_cpu(digits_ticket, digits, tmp_path, monkeypatch, cpu, bits):
    """7-bit weights lie in [-64, 64]; full-range per-channel symmetric weights reach 127 in every layer's top channel."""
    monkeypatch.setattr(quantize, "cpu_info", lambda: cpu)
    quantize.export_onnx_int8(digits_ticket, tmp_path / "q.onnx", digits, min_agreement=0.0)
    meta = artifact_metadata(tmp_path / "q.onnx")
    assert meta["edgeticket.int8_weight_bits"] == str(bits) and cpu.model in meta["edgeticket.export_cpu"]
    assert largest_int8_weight(tmp_path / "q.onnx") == (127 if bits == 8 else 64)


def test_an_fp32_fallback_is_named_in_the_metadata(digits_ticket, digits, tmp_path, monkeypatch):
    """When all-int8 misses the check, the first conv and the classifier stay fp32, and the metadata says which."""
    agreements = iter([0.5])  # the all-int8 attempt misses; the mixed one is measured
    real = quantize.top1_agreement
    monkeypatch.setattr(quantize, "top1_agreement", lambda a, b: next(agreements, None) or real(a, b))
    report = quantize.export_onnx_int8(digits_ticket, tmp_path / "q.onnx", digits)
    named = artifact_metadata(tmp_path / "q.onnx")["edgeticket.int8_fp32_nodes"].split(",")
    assert len(named) == 2 and sorted(named) == sorted(fp32_compute_nodes(tmp_path / "q.onnx"))
    assert "first conv and classifier in fp32" in report.check and report.value >= 0.99


def test_int8_below_agreement_writes_nothing(digits_ticket, digits, tmp_path):
    with pytest.raises(ExportCheckFailed, match="agrees with fp32"):
        quantize.export_onnx_int8(digits_ticket, tmp_path / "q.onnx", digits, min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_data_and_onnx(digits_ticket, tmp_path):
    with pytest.raises(EdgeticketError, match="calibrates") as error:
        export(digits_ticket, tmp_path / "q.onnx", "onnx", int8=True)
    assert "--data" in error.value.hint
    with pytest.raises(EdgeticketError, match="--format onnx"):
        export(digits_ticket, tmp_path / "q.pte", "executorch", int8=True)
