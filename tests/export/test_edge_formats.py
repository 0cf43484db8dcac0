import json

import numpy as np
import pytest
import torch

from edgeticket.data import DataConfig, load_dataset
from edgeticket.export import ExportCheckFailed, artifact_metadata, checks, export
from edgeticket.runtimes import get_runtime, ncnn as ncnn_runtime
from edgeticket.runtimes.ncnn import NcnnModel

pytestmark = pytest.mark.slow  # ExecuTorch and ncnn exports take seconds each

pytest.importorskip("executorch")
pytest.importorskip("ncnn")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", image_size=28, channels=1))


@pytest.fixture(scope="module")
def ncnn_folder(digits_ticket, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ncnn") / "m.ncnn"
    export(digits_ticket, folder, "ncnn")
    return folder


def reduced_precision_switches(model: NcnnModel) -> dict[str, bool]:
    opt = model.net.opt
    return {name: getattr(opt, name) for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                                                  "use_bf16_storage", "use_bf16_packed")}


def test_ncnn_runs_the_precision_its_profile_names(ncnn_folder):
    """ncnn's defaults turn fp16 storage and arithmetic on wherever the CPU has them; fp32 turns them off."""
    assert not any(reduced_precision_switches(NcnnModel(ncnn_folder, precision="fp32")).values())
    assert not any(reduced_precision_switches(NcnnModel(ncnn_folder)).values())  # the export check's default
    fp16 = reduced_precision_switches(NcnnModel(ncnn_folder, precision="fp16"))
    assert fp16["use_fp16_storage"] and fp16["use_fp16_arithmetic"] and not fp16["use_bf16_storage"]


@pytest.mark.parametrize("precision, tolerance", [("fp32", ncnn_runtime.TOLERANCE),
                                                   ("fp16", checks.FP16_TOLERANCE)])
def test_ncnn_logits_and_accuracy_on_every_test_image(digits_ticket, digits, ncnn_folder, precision, tolerance):
    """fp32 ncnn gives torch's logits within the fp32 tolerance and exactly torch's accuracy on all 599 test digits;
    fp16 (computed in fp16 only where the CPU has fp16 arithmetic) stays within the fp16 tolerance."""
    images = digits.test.batch(np.arange(len(digits.test)))[0]
    with torch.no_grad():
        expected = digits_ticket.deployable()(images).numpy()
    got = NcnnModel(ncnn_folder, precision=precision)(images.numpy())
    assert np.abs(got - expected).max() <= checks.allowed_difference(tolerance, expected)
    labels = digits.test.labels.numpy()
    if precision == "fp32":
        assert (got.argmax(1) == labels).mean() == (expected.argmax(1) == labels).mean()


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
    monkeypatch.setattr(get_runtime(fmt).plugin, "TOLERANCE", (-1.0, 0.0))
    with pytest.raises(ExportCheckFailed, match="parity"):
        export(digits_ticket, tmp_path / f"m{suffix}", fmt)
    assert list(tmp_path.iterdir()) == []
