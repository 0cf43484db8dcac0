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
