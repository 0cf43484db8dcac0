"""The torch-free runner and the host side around it: isolation, memory, metrics from logits, data that
follows the model, foreign ONNX models."""

import ast
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeticket.bench import BenchConfig, TargetData, bench_artifact
from edgeticket.bench.run import bench_model, parse_shape
from edgeticket.bench.transport import RUNNER
from edgeticket.cli import app
from edgeticket.data import DataConfig, load_dataset
from edgeticket.errors import EdgeticketError
from edgeticket.export import export_onnx
from edgeticket.metrics import expected_calibration_error, negative_log_likelihood, predict

from .processes import wait_until

FAST = BenchConfig(runs=5, warmup=1, seconds=0)
RUNTIME_MODULES = {"onnxruntime", "ncnn", "executorch", "torch"}  # torch: only inside ExecuTorch's opener


@pytest.fixture(scope="module")
def digits_onnx(digits_ticket, tmp_path_factory):
    """The digits fixture exported with its finetune target in its provenance, as `edgeticket export` writes it."""
    digits_ticket.provenance.target = "digits"
    path = tmp_path_factory.mktemp("onnx") / "t.onnx"
    export_onnx(digits_ticket, path)
    return path


def foreign_onnx(path, classes: int = 10, dynamic_size: bool = False):
    """A model edgeticket did not export: no metadata, a dynamic batch (and optionally dynamic H, W)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, classes)).eval()
    dims = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    torch.onnx.export(model, (torch.rand(1, 1, 8, 8),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": dims}, dynamo=False)
    return path


def test_runner_source_imports_only_the_standard_library_numpy_and_a_runtime():
    """Every import in runner.py, at any depth: a stray `from edgeticket...` or `import torch` at the top fails."""
    tree = ast.parse(RUNNER.read_text())
    top, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or "."]
            roots = {n.split(".")[0] for n in names}
            (top if node in tree.body else inner).update(roots)
    assert top - {"__future__", "numpy"} <= sys.stdlib_module_names, top
    assert inner <= RUNTIME_MODULES, inner
    assert "edgeticket" not in top | inner


def test_the_runner_process_loads_neither_torch_nor_edgeticket(digits_onnx):
    result = bench_model(digits_onnx, config=FAST)
    assert result.modules == {"torch": False, "edgeticket": False}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_runner_memory_is_the_runtimes_not_torchs(digits_onnx):
    """The runner's peak stays below what importing torch alone costs on this machine (the old worker's floor)."""
    probe = ("import torch, pathlib; print([l.split()[1] for l in pathlib.Path('/proc/self/status').read_text()"
             ".splitlines() if l.startswith('VmRSS:')][0])")
    torch_mb = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout) / 1024
    result = bench_model(digits_onnx, config=FAST)
    assert result.memory["measure"].startswith("VmRSS/VmHWM") and result.runtime_memory_mb > 0
    assert result.peak_memory_mb < torch_mb, (result.peak_memory_mb, torch_mb)


def weights_onnx(path, megabytes: int):
    """A foreign model holding about `megabytes` MB of float32 weights in its first Linear layer (and a tenth of
    that in the second) and little else."""
    features = megabytes * 2 ** 20 // 4 // 64
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, features), torch.nn.Linear(features, 10))
    torch.onnx.export(model.eval(), (torch.rand(1, 1, 8, 8),), str(path), dynamo=False)
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_session_memory_grows_with_the_models_weights(tmp_path):
    """An independent reference: the extra weights on disk (about 70 MB) must show up as at least that much
    more session memory, and not many times it; the runtime import and everything else cancel between the two.
    (Measured here: 75 MB more weights, 80 MB more session memory.)"""
    small, large = weights_onnx(tmp_path / "small.onnx", 1), weights_onnx(tmp_path / "large.onnx", 65)
    extra_mb = (large.stat().st_size - small.stat().st_size) / 2 ** 20
    grown = bench_model(large, config=FAST).memory["session_mb"] - bench_model(small, config=FAST).memory["session_mb"]
    assert 0.9 * extra_mb <= grown <= 3 * extra_mb, (grown, extra_mb)


def test_accuracy_ece_and_nll_from_the_runners_logits_match_torch(digits_ticket, digits_onnx):
    """Computed on the host from logits the runtime produced; the reference is the ticket in torch."""
    result = bench_model(digits_onnx, config=BenchConfig(runs=5, warmup=1, seconds=0, images=200))
    assert result.data == "digits" and result.test_images == 200  # the data followed the model's provenance
    test = load_dataset(DataConfig("digits", image_size=28, channels=1)).test.head(200)
    logits = predict(digits_ticket.deployable(), test).double()
    assert result.accuracy == pytest.approx(100 * float((logits.argmax(1) == test.labels).double().mean()), abs=1e-9)
    assert result.ece == pytest.approx(expected_calibration_error(logits.softmax(1), test.labels), abs=1e-4)
    assert result.nll == pytest.approx(negative_log_likelihood(logits, test.labels), abs=1e-4)


def test_without_target_data_only_latency(small_checkpoint, tmp_path):
    from edgeticket.models.checkpoints import load_checkpoint
    export_onnx(load_checkpoint(small_checkpoint, "small_resnet"), tmp_path / "m.onnx")  # no finetune target
    result = bench_model(tmp_path / "m.onnx", config=FAST)
    assert result.accuracy is None and result.data is None and result.latency.runs >= 5


def test_a_foreign_onnx_benches_from_its_graph(tmp_path, runner):
    path = foreign_onnx(tmp_path / "foreign.onnx")
    result = runner.invoke(app, ["bench", str(path), "--json", "--runs", "5", "--seconds", "0", "--data", "digits"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["input_shape"] == [1, 1, 8, 8]  # the dynamic batch became 1
    assert record["test_images"] > 0 and 0 <= record["accuracy"] <= 100 and "foreign model" in record["note"]


def test_all_devices_wants_a_ticket_not_an_export(tmp_path, runner):
    result = runner.invoke(app, ["bench", str(foreign_onnx(tmp_path / "f.onnx")), "--all-devices"])
    assert result.exit_code == 1 and "already exported" in result.output and "--device" in result.output


def test_a_foreign_onnx_with_open_sizes_needs_input_shape(tmp_path):
    path = foreign_onnx(tmp_path / "open.onnx", dynamic_size=True)
    with pytest.raises(EdgeticketError, match="open dimensions") as error:
        bench_model(path, config=FAST)
    assert "--input-shape" in error.value.hint
    result = bench_model(path, config=BenchConfig(runs=5, warmup=1, seconds=0, input_shape=(1, 1, 16, 16)))
    assert result.input_shape == [1, 1, 16, 16]


def test_bench_measures_batch_1(tmp_path):
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    with pytest.raises(EdgeticketError, match="batch 1"):
        parse_shape("4,1,8,8")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.onnx.export(model, (torch.rand(4, 1, 8, 8),), str(tmp_path / "four.onnx"), dynamo=False)
    with pytest.raises(EdgeticketError, match="batch is fixed at 4"):
        bench_model(tmp_path / "four.onnx", config=FAST)


def test_a_class_count_mismatch_is_an_error(tmp_path):
    path = foreign_onnx(tmp_path / "five.onnx", classes=5)
    with pytest.raises(EdgeticketError, match="predicts 5 classes but digits has 10"):
        bench_model(path, data="digits", config=FAST)


def test_the_class_count_is_checked_on_the_logits_when_the_graph_does_not_say(tmp_path):
    """A .onnx whose output dimension is open: the runner's logits decide."""
    path = foreign_onnx(tmp_path / "five.onnx", classes=5)
    import onnx
    model = onnx.load(str(path))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    onnx.save(model, str(path))
    test = load_dataset(DataConfig("digits", image_size=8, channels=1)).test.head(20)
    with pytest.raises(EdgeticketError, match="predicts 5 classes"):
        bench_artifact(path, "ort-cpu-1t", FAST, TargetData("digits", test, 10))


def test_uint8_images_are_scaled_as_the_data_loader_does():
    """The runner turns uint8 pixels into [0, 1] floats exactly as TensorImages.batch does."""
    from edgeticket.bench.runner import as_input
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    from edgeticket.data import TensorImages
    expected = TensorImages(torch.from_numpy(pixels), torch.zeros(1)).batch(torch.arange(1))[0].numpy()
    assert np.array_equal(as_input(pixels[0]), expected)


def runner_children(parent: int) -> list[int]:
    """Processes whose parent is `parent` and whose command line runs runner.py."""
    import pathlib
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"runner.py" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_runner_dies_with_its_bench_even_after_kill_9(digits_onnx):
    code = ("from edgeticket.bench.run import BenchConfig, bench_model\n"
            f"bench_model({str(digits_onnx)!r}, config=BenchConfig(runs=1, warmup=0, seconds=600))")
    bench = subprocess.Popen([sys.executable, "-c", code])
    try:
        children = wait_until(lambda: runner_children(bench.pid), 120, 0.2)
        assert children, "the runner never started"
    finally:
        bench.kill()
        bench.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in children), 10)


def alive(pid: int) -> bool:
    """A live process (a zombie waiting for init to reap it counts as gone)."""
    import pathlib
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("make, message", [
    (lambda tmp: (tmp / "t.ticket").write_bytes(b"x") and tmp / "t.ticket", "is a ticket, not an exported model"),
    (lambda tmp: (tmp / "folder").mkdir() or tmp / "folder", "not an ncnn export"),
    (lambda tmp: (tmp / "model.onnx").mkdir() or tmp / "model.onnx", "not an ncnn export"),  # a file format's name
    (lambda tmp: foreign_onnx(tmp / "model.bin"), "cannot tell which runtime runs 'model.bin'"),
])
def test_bench_says_what_a_wrong_model_path_is(tmp_path, make, message):
    with pytest.raises(EdgeticketError, match=message):
        bench_model(make(tmp_path), config=FAST)


def test_a_suffix_no_runtime_has_runs_in_the_runtime_of_the_device_named(tmp_path):
    """`bench model.bin --device ort-cpu-1t`: the user says which runtime; its graph gives the input shape."""
    result = bench_model(foreign_onnx(tmp_path / "model.bin"), "ort-cpu-1t", config=FAST)
    assert result.runtime == "onnxruntime" and result.input_shape == [1, 1, 8, 8]


def test_an_input_shape_must_keep_the_graphs_fixed_dimensions(tmp_path):
    path = foreign_onnx(tmp_path / "f.onnx")  # [batch, 1, 8, 8]
    with pytest.raises(EdgeticketError, match="does not fit"):
        bench_model(path, config=BenchConfig(runs=1, warmup=0, seconds=0, input_shape=(1, 3, 8, 8)))


def test_a_runtime_failure_is_one_line_with_the_runtimes_own_message(tmp_path):
    pytest.importorskip("ncnn")
    folder = tmp_path / "broken.ncnn"
    folder.mkdir()
    (folder / "model.ncnn.param").write_text("not a param file\n")
    (folder / "model.ncnn.bin").write_bytes(b"")
    with pytest.raises(EdgeticketError, match="ncnn failed on broken.ncnn: RuntimeError: ncnn cannot load"):
        bench_artifact(folder, "ncnn-cpu-1t", BenchConfig(runs=1, warmup=0, seconds=0, input_shape=(1, 1, 8, 8)))


def test_eval_refuses_a_foreign_onnx_and_points_to_bench(tmp_path):
    from edgeticket.evaluate import EvalConfig, evaluate
    with pytest.raises(EdgeticketError, match="not exported by edgeticket") as error:
        evaluate(foreign_onnx(tmp_path / "f.onnx"), EvalConfig("digits"), save=False)
    assert "edgeticket bench" in error.value.hint
