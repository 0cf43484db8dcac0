import json

import pytest

from edgeticket.bench import BenchConfig, get_device, list_devices, unavailable_reason
from edgeticket.bench.all_devices import bench_all_devices
from edgeticket.cli import app
from edgeticket.errors import EdgeticketError
from edgeticket.metrics import accuracy, predict

SHIPPED = {"ort-cpu-1t", "ort-cpu-4t", "ort-int8-1t", "executorch-xnnpack-1t", "ncnn-cpu-1t", "ncnn-vulkan",
           "ort-cuda", "ort-tensorrt"}


def test_every_shipped_profile_says_if_it_runs_here(runner):
    assert SHIPPED <= {p.name for p in list_devices()}
    result = runner.invoke(app, ["devices", "--json"])
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["ort-cpu-1t"]["available"]
    for name in SHIPPED:
        assert rows[name]["available"] or rows[name]["reason"]  # never silent about why not
    if not rows["ort-cuda"]["available"]:
        assert "onnxruntime-gpu" in rows["ort-cuda"]["reason"]


def test_bad_profiles_are_refused(tmp_path):
    (tmp_path / "x.toml").write_text('runtime = "tflite"\nprovider = "cpu"\nthreads = 1\nprecision = "fp32"\nstands_for = "?"\n')
    with pytest.raises(EdgeticketError, match="tflite"):
        get_device(str(tmp_path / "x.toml"))
    with pytest.raises(EdgeticketError, match="ort-cpu-2t") as error:
        get_device("ort-cpu-2t")
    assert "ort-cpu-1t" in error.value.hint


@pytest.mark.slow
def test_all_devices_table(digits_ticket, tmp_path):
    pytest.importorskip("executorch")
    digits_ticket.provenance.target = "digits"
    digits_ticket.save(tmp_path / "t.ticket")
    rows = {r.device: r for r in bench_all_devices(tmp_path / "t.ticket", None, tmp_path,
                                                    BenchConfig(runs=5, warmup=1, seconds=0, images=100))}
    assert SHIPPED <= set(rows)
    from edgeticket.data import DataConfig, load_dataset
    test = load_dataset(DataConfig("digits", image_size=28, channels=1)).test
    test = type(test)(test.images[:100], test.labels[:100])
    torch_accuracy = 100 * accuracy(predict(digits_ticket.deployable(), test), test.labels)
    for name in ("ort-cpu-1t", "ort-int8-1t", "executorch-xnnpack-1t", "ncnn-cpu-1t"):
        row = rows[name]
        assert row.status == "ok", (name, row.reason)
        # int8: <= 3 of these 100 images may flip (export already checked >= 99% agreement on all 599)
        assert abs(row.result.accuracy - torch_accuracy) <= (3.0 if name == "ort-int8-1t" else 0.2)
        assert row.result.test_images == 100 and row.result.latency.runs >= 5
        assert row.result.peak_memory_mb > 0 and row.result.runtime_version
    assert "agreement with fp32" in rows["ort-int8-1t"].reason  # the export's own check, beside the latency
    for name in ("ort-cuda", "ort-tensorrt"):
        assert rows[name].status == ("ok" if unavailable_reason(get_device(name)) is None else "not available here")
    vulkan = rows["ncnn-vulkan"]
    if vulkan.status == "ok":  # lavapipe in CI: correct, but its timing is flagged
        assert abs(vulkan.result.accuracy - torch_accuracy) <= 0.2
        assert "software Vulkan" in vulkan.reason and not vulkan.result.timing_meaningful
    else:
        assert vulkan.status == "not available here"
    assert (tmp_path / "t.onnx.ort-cpu-1t.bench.json").exists() and (tmp_path / "t.ncnn").is_dir()
