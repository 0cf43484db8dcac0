import json

import pytest

from edgeticket.data import DataConfig, load_dataset
from edgeticket.export import ExportCheckFailed, artifact_metadata, checks, export
from edgeticket.export.quantize import export_onnx_int8
from edgeticket.metrics import accuracy, predict

pytestmark = pytest.mark.slow  # ExecuTorch and ncnn exports take seconds each

pytest.importorskip("executorch")
pytest.importorskip("ncnn")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", image_size=28, channels=1))


@pytest.mark.parametrize("fmt, suffix", [("executorch", ".pte"), ("ncnn", ".ncnn")])
def test_fp32_formats_match_torch_and_carry_metadata(digits_ticket, tmp_path, fmt, suffix):
    report = export(digits_ticket, tmp_path / f"m{suffix}", fmt, ticket_sha256="abc")
    assert report.value <= report.threshold and report.size_bytes > 10_000
    meta = artifact_metadata(tmp_path / f"m{suffix}")
    assert meta["edgeticket.ticket_sha256"] == "abc" and json.loads(meta["edgeticket.input_size"]) == [1, 28, 28]
    if fmt == "ncnn":
        assert sorted(p.name for p in (tmp_path / "m.ncnn").iterdir()) == ["metadata.json", "model.ncnn.bin",
                                                                          "model.ncnn.param"]


@pytest.mark.parametrize("fmt, suffix", [("executorch", ".pte"), ("ncnn", ".ncnn")])
def test_failed_check_leaves_nothing(digits_ticket, tmp_path, monkeypatch, fmt, suffix):
    monkeypatch.setitem(checks.FP32_TOLERANCE, fmt, (-1.0, 0.0))
    with pytest.raises(ExportCheckFailed, match="parity"):
        export(digits_ticket, tmp_path / f"m{suffix}", fmt)
    assert list(tmp_path.iterdir()) == []


def test_int8_agrees_with_fp32_and_keeps_accuracy(digits_ticket, digits, tmp_path):
    report = export(digits_ticket, tmp_path / "q.onnx", "onnx", int8=True, splits=digits)
    assert report.precision == "int8" and report.value >= 0.99
    assert "all layers int8" in report.check  # 7-bit weights: no int16 saturation on AVX2, so no fp32 fallback
    assert artifact_metadata(tmp_path / "q.onnx")["edgeticket.int8_fp32_nodes"] == ""
    from edgeticket.export.onnx import open_session, predict_onnx
    int8_accuracy = float((predict_onnx(open_session(tmp_path / "q.onnx"), digits.test).argmax(1)
                           == digits.test.labels.numpy()).mean())
    fp32_accuracy = accuracy(predict(digits_ticket.deployable(), digits.test), digits.test.labels)
    assert abs(int8_accuracy - fp32_accuracy) <= 0.01
    assert (tmp_path / "q.onnx").stat().st_size < 0.5 * export(digits_ticket, tmp_path / "f.onnx").size_bytes


def test_int8_below_agreement_writes_nothing(digits_ticket, digits, tmp_path):
    with pytest.raises(ExportCheckFailed, match="agrees with fp32"):
        export_onnx_int8(digits_ticket, tmp_path / "q.onnx", digits, min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_data_and_onnx(digits_ticket, tmp_path):
    from edgeticket.errors import EdgeticketError
    with pytest.raises(EdgeticketError, match="calibrates") as error:
        export(digits_ticket, tmp_path / "q.onnx", "onnx", int8=True)
    assert "--data" in error.value.hint
    with pytest.raises(EdgeticketError, match="--format onnx"):
        export(digits_ticket, tmp_path / "q.pte", "executorch", int8=True)
