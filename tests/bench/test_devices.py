import json

import pytest

from edgeticket.bench import BenchConfig, get_device, list_devices, unavailable_reason
from edgeticket.bench.all_devices import bench_all_devices
from edgeticket.cli import app
from edgeticket.errors import EdgeticketError
from edgeticket.host import cpu_info
from edgeticket.metrics import accuracy, predict

SHIPPED = {"ort-cpu-1t", "ort-cpu-4t", "ort-int8-1t", "executorch-xnnpack-1t", "ncnn-cpu-1t", "ncnn-cpu-fp16-1t",
           "ncnn-vulkan", "ort-cuda", "ort-tensorrt"}
# top-1 % that may differ from torch on 100 images: fp32 none; int8 <= 3 images (export already checked >= 99%
# agreement on all 599); fp16 <= 2 (its logits are already held to the fp16 tolerance); + 0.01 for float32
# rounding of the percentages, far below one image (1 point)
ACCURACY_SLACK = {"ort-cpu-1t": 0.0, "executorch-xnnpack-1t": 0.0, "ncnn-cpu-1t": 0.0, "ort-int8-1t": 3.0,
                  "ncnn-cpu-fp16-1t": 2.0}


def test_every_shipped_profile_says_if_it_runs_here(runner):
    assert SHIPPED <= {p.name for p in list_devices()}
    result = runner.invoke(app, ["devices", "--json"])
    document = json.loads(result.stdout)
    assert document["host"] == cpu_info().as_dict() and document["host"]["model"]  # numbers trace to their machine
    rows = {r["name"]: r for r in document["devices"]}
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
    for name, slack in ACCURACY_SLACK.items():
        row = rows[name]
        assert row.status == "ok", (name, row.reason)
        assert abs(row.result.accuracy - torch_accuracy) <= slack + 0.01, (name, row.result.accuracy, torch_accuracy)
        assert row.result.test_images == 100 and row.result.latency.runs >= 5
        assert row.result.peak_memory_mb > 0 and row.result.runtime_version
        assert row.result.host == cpu_info().as_dict()
    assert json.loads((tmp_path / "t.onnx.ort-cpu-1t.bench.json").read_text())["host"] == cpu_info().as_dict()
    fp16 = rows["ncnn-cpu-fp16-1t"]
    assert fp16.result.timing_meaningful == cpu_info().fp16_arithmetic  # an fp32 fallback's timing is flagged
    assert "agreement with fp32" in rows["ort-int8-1t"].reason  # the export's own check, beside the latency
    for name in ("ort-cuda", "ort-tensorrt"):
        assert rows[name].status == ("ok" if unavailable_reason(get_device(name)) is None else "not available here")
    vulkan = rows["ncnn-vulkan"]
    if vulkan.status == "ok":  # lavapipe in CI: correct, but its timing is flagged
        assert abs(vulkan.result.accuracy - torch_accuracy) <= 0.01
        assert "software Vulkan" in vulkan.reason and not vulkan.result.timing_meaningful
    else:
        assert vulkan.status == "not available here"
    assert (tmp_path / "t.onnx.ort-cpu-1t.bench.json").exists() and (tmp_path / "t.ncnn").is_dir()
