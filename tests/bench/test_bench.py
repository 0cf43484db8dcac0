import pytest

from edgeticket.bench import BenchConfig, LatencyStats, bench_onnx
from edgeticket.bench.runner import timed_runs
from edgeticket.errors import EdgeticketError
from edgeticket.export import export_onnx
from edgeticket.models.checkpoints import load_checkpoint


def test_stats_on_known_samples():
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.runs == 100 and stats.min_ms == pytest.approx(1.0)
    assert stats.p50_ms == pytest.approx(50.5) and stats.p90_ms == pytest.approx(90.1)
    assert stats.mean_ms == pytest.approx(50.5) and stats.std_ms == pytest.approx(28.866, abs=1e-3)


def test_timed_runs_counts_first_warmup_and_runs():
    calls = []
    first_ms, stats = timed_runs(lambda: calls.append(1), runs=7, warmup=3)
    assert len(calls) == 1 + 3 + 7 and stats.runs == 7 and first_ms >= 0


def test_bench_onnx_is_sane(small_checkpoint, tmp_path):
    export_onnx(load_checkpoint(small_checkpoint, "small_resnet"), tmp_path / "m.onnx")
    result = bench_onnx(tmp_path / "m.onnx", BenchConfig(runs=20, warmup=2, seconds=0))
    lat = result.latency
    assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms
    assert result.input_shape == [1, 1, 28, 28] and result.file_size_bytes == (tmp_path / "m.onnx").stat().st_size
    assert result.threads == 1 and result.runtime_version


def test_bench_refuses_a_non_model(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(EdgeticketError, match="not a readable ONNX model"):
        bench_onnx(tmp_path / "x.onnx")


def test_an_8_bit_int8_model_on_x86_without_vnni_is_flagged():
    from edgeticket.bench.run import int8_weights_note
    from edgeticket.host import CpuInfo
    avx2, vnni = CpuInfo("x", "x86_64", ("avx2",)), CpuInfo("y", "x86_64", ("avx2", "avx512_vnni"))
    assert "saturate" in int8_weights_note({"edgeticket.int8_weight_bits": "8"}, avx2)
    assert int8_weights_note({"edgeticket.int8_weight_bits": "7"}, avx2) is None
    assert int8_weights_note({"edgeticket.int8_weight_bits": "8"}, vnni) is None
    assert int8_weights_note({}, avx2) is None  # fp32 models carry no weight bits


@pytest.mark.parametrize("threads", [0, -3, "4", True, 1.5, 100_000])
def test_a_thread_count_that_is_not_one_to_256_is_refused(threads):
    with pytest.raises(EdgeticketError, match="--threads"):
        BenchConfig(threads=threads)


def test_threads_beyond_4_per_cpu_here_are_refused_before_running(small_checkpoint, tmp_path, monkeypatch):
    import os
    export_onnx(load_checkpoint(small_checkpoint, "small_resnet"), tmp_path / "m.onnx")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(EdgeticketError, match="--threads 9 is more than 4 per CPU") as error:
        bench_onnx(tmp_path / "m.onnx", BenchConfig(runs=1, warmup=0, seconds=0, threads=9))
    assert "--threads 2" in error.value.hint
    assert not list(tmp_path.glob("*.bench.json"))


def test_the_cpu_bound_is_this_machines_not_a_boards(monkeypatch):
    import os
    from dataclasses import replace

    from edgeticket.bench import get_device
    from edgeticket.bench.devices import SshTarget
    from edgeticket.bench.run import check_threads
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    here = get_device("ort-cpu-1t")
    with pytest.raises(EdgeticketError, match="at most 8"):
        check_threads(9, here)
    check_threads(8, here)
    check_threads(64, replace(here, ssh=SshTarget("board")))  # its CPUs are known only once it is probed


def test_a_threads_override_is_recorded_and_never_overwrites_the_profiles_result(small_checkpoint, tmp_path):
    import json

    from edgeticket.bench import record_bench
    model = tmp_path / "m.onnx"
    export_onnx(load_checkpoint(small_checkpoint, "small_resnet"), model)
    quick = dict(runs=3, warmup=0, seconds=0)
    own = record_bench(bench_onnx(model, BenchConfig(**quick)))
    same = bench_onnx(model, BenchConfig(**quick, threads=1))  # the profile's own count: no override
    assert (same.device, same.threads_overridden) == ("ort-cpu-1t", False)
    two = record_bench(bench_onnx(model, BenchConfig(**quick, threads=2)))
    assert sorted(p.name for p in tmp_path.glob("*.bench.json")) == ["m.onnx.ort-cpu-1t.bench.json",
                                                                      "m.onnx.ort-cpu-1t@2t.bench.json"]
    assert json.loads((tmp_path / "m.onnx.ort-cpu-1t.bench.json").read_text())["threads"] == 1
    saved = json.loads((tmp_path / "m.onnx.ort-cpu-1t@2t.bench.json").read_text())
    assert saved == json.loads(json.dumps(two))
    fields = ("device", "profile", "threads", "profile_threads", "threads_overridden")
    assert [saved[f] for f in fields] == ["ort-cpu-1t@2t", "ort-cpu-1t", 2, 1, True]
    assert [own[f] for f in fields] == ["ort-cpu-1t", "ort-cpu-1t", 1, 1, False]


def test_all_devices_refuses_too_many_threads_before_exporting(small_checkpoint, tmp_path, monkeypatch, runner):
    import os

    from edgeticket.cli import app
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    result = runner.invoke(app, ["bench", str(small_checkpoint), "--all-devices", "--threads", "9",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--threads 9 is more than 4 per CPU" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
