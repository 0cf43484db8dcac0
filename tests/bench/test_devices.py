import json

import pytest

from edgeticket.bench import BenchConfig, BrokenProfile, get_device, list_devices, unavailable_reason
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
def test_all_devices_table(digits_ticket, tmp_path, progress_recorder):
    pytest.importorskip("executorch")
    from edgeticket.bench import all_devices
    bars = progress_recorder(all_devices)
    digits_ticket.provenance.target = "digits"
    digits_ticket.save(tmp_path / "t.ticket")
    rows = {r.device: r for r in bench_all_devices(tmp_path / "t.ticket", None, tmp_path,
                                                    BenchConfig(runs=5, warmup=1, seconds=0, images=100))}
    assert SHIPPED <= set(rows)
    (task,) = bars[0].tasks
    assert task.completed == task.total == len(rows)  # one step per profile
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


PROFILE = 'runtime = "onnxruntime"\nprovider = "cpu"\nthreads = {threads}\nprecision = "fp32"\n'


@pytest.fixture
def user_devices(tmp_path, monkeypatch):
    """An empty $EDGETICKET_DEVICES folder, and no ~/.config or ./devices profiles from the machine."""
    folder = tmp_path / "env-devices"
    folder.mkdir()
    monkeypatch.setenv("EDGETICKET_DEVICES", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    import edgeticket.bench.devices as devices
    monkeypatch.setattr(devices, "_announced", set())
    return folder


def test_builtin_profiles_ship_in_the_package(user_devices):
    profiles = {p.name: p for p in list_devices()}
    assert SHIPPED <= set(profiles) and all(profiles[name].builtin for name in SHIPPED)
    assert all("/edgeticket/devices/" in profiles[name].path for name in SHIPPED)


@pytest.mark.parametrize("where", ["env", "config", "cwd"])
def test_user_profiles_come_from_env_config_and_cwd(user_devices, tmp_path, where):
    folder = {"env": user_devices, "config": tmp_path / "config" / "edgeticket" / "devices",
              "cwd": tmp_path / "devices"}[where]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "board.toml").write_text(PROFILE.format(threads=3))
    board = get_device("board")
    assert board.threads == 3 and board.path == str(folder / "board.toml") and not board.builtin


def test_a_shadowing_profile_is_announced_once_and_recorded(user_devices, tmp_path, monkeypatch):
    import edgeticket.bench.devices as devices
    from edgeticket.bench.run import bench_model
    said = []
    monkeypatch.setattr(devices, "info", said.append)
    from edgeticket.export import export_onnx
    from edgeticket.models.checkpoints import load_checkpoint
    (user_devices / "ort-cpu-1t.toml").write_text(PROFILE.format(threads=2))
    assert get_device("ort-cpu-1t").threads == 2
    list_devices()
    assert said == [f"device profile ort-cpu-1t: using {user_devices / 'ort-cpu-1t.toml'}, not the built-in one"]
    torch_model = tmp_path / "small.pt"
    import torch
    from edgeticket.models import get_model
    torch.save(get_model("small_resnet", num_classes=10, in_channels=1).state_dict(), torch_model)
    export_onnx(load_checkpoint(torch_model, "small_resnet"), tmp_path / "m.onnx")
    result = bench_model(tmp_path / "m.onnx", config=BenchConfig(runs=3, warmup=0, seconds=0))
    assert result.threads == 2 and result.profile_path == str(user_devices / "ort-cpu-1t.toml")


@pytest.mark.parametrize("body, key", [
    ('runtime = "tflite"\nprovider = "cpu"\nthreads = 1\nprecision = "fp32"\n', "runtime"),
    ('runtime = "onnxruntime"\nprovider = "vulkan"\nthreads = 1\nprecision = "fp32"\n', "provider"),
    (PROFILE.format(threads='"four"'), "threads"),
    (PROFILE.format(threads=-3), "threads"),
    (PROFILE.format(threads=0), "threads"),
    (PROFILE.format(threads="true"), "threads"),
    (PROFILE.format(threads=1) + "round_to = 0\n", "round_to"),
    (PROFILE.format(threads=1) + "thread = 2\n", "thread"),
    ('runtime = "onnxruntime"\nthreads = 1\nprecision = "fp32"\n', "provider"),
    (PROFILE.format(threads=1).replace("fp32", "fp8"), "precision"),
    (PROFILE.format(threads=1).replace('"onnxruntime"', '["onnxruntime"]'), "runtime"),
    (PROFILE.format(threads=1) + "stands_for = 3\n", "stands_for"),
    (PROFILE.format(threads=100000), "threads"),  # ran for over 10 minutes when benched
    (PROFILE.format(threads=257), "threads"),
    (PROFILE.format(threads=1) + "round_to = 100000\n", "round_to"),
    (PROFILE.format(threads=1) + 'round_to = "8"\n', "round_to"),
    (PROFILE.format(threads=1).replace("fp32", "fp64"), "precision"),
    (PROFILE.format(threads=1) + 'name = "other"\n', "name"),
])
def test_a_broken_user_profile_fails_only_when_used_naming_file_and_key(user_devices, body, key):
    (user_devices / "mine.toml").write_text(body)
    profiles = {p.name: p for p in list_devices()}  # listing still works, and every other profile with it
    assert SHIPPED <= set(profiles) and isinstance(profiles["mine"], BrokenProfile)
    get_device("ort-cpu-1t")
    with pytest.raises(EdgeticketError) as error:
        get_device("mine")
    assert str(user_devices / "mine.toml") in error.value.message and f"key '{key}'" in error.value.message


def test_the_first_folder_wins_env_then_config_then_cwd(user_devices, tmp_path):
    folders = [user_devices, tmp_path / "config" / "edgeticket" / "devices", tmp_path / "devices"]
    for threads, folder in enumerate(folders, 1):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "board.toml").write_text(PROFILE.format(threads=threads))
    for threads, folder in enumerate(folders, 1):
        assert get_device("board").threads == threads
        (folder / "board.toml").unlink()


def test_a_folder_named_like_a_profile_is_a_broken_profile(user_devices):
    (user_devices / "odd.toml").mkdir()
    assert isinstance({p.name: p for p in list_devices()}["odd"], BrokenProfile)
    with pytest.raises(EdgeticketError, match="odd.toml"):
        get_device("odd")


def test_unknown_runtimes_are_listed(user_devices):
    (user_devices / "lite.toml").write_text('runtime = "tflite"\nprovider = "cpu"\nthreads = 1\nprecision = "fp32"\n')
    with pytest.raises(EdgeticketError, match="known: onnxruntime, executorch, ncnn"):
        get_device("lite")


def test_invalid_toml_is_named(user_devices):
    (user_devices / "bad.toml").write_text("runtime = \n")
    with pytest.raises(EdgeticketError, match="bad.toml is not valid TOML"):
        get_device("bad")


def test_devices_lists_a_broken_profile_instead_of_failing(user_devices, runner):
    (user_devices / "mine.toml").write_text(PROFILE.format(threads=-3))
    result = runner.invoke(app, ["devices", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)["devices"]}
    assert not rows["mine"]["available"] and "threads" in rows["mine"]["error"] and rows["ort-cpu-1t"]["available"]


def test_draw_rounds_channels_to_the_devices_multiple(user_devices, small_checkpoint, tmp_path, runner):
    (user_devices / "board.toml").write_text(PROFILE.format(threads=1) + "round_to = 8\n")
    out = tmp_path / "t.ticket"
    result = runner.invoke(app, ["draw", str(small_checkpoint), "--arch", "small_resnet", "--sparsity", "0.6",
                                 "--device", "board", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    from edgeticket.models.checkpoints import load_checkpoint
    convs = [v for k, v in load_checkpoint(out).state_dict.items() if v.dim() == 4]
    assert all(w.shape[0] % 8 == 0 for w in convs), [w.shape[0] for w in convs]
    assert any(w.shape[0] % 16 for w in convs)  # not whole layers only: some were pruned to a multiple of 8


def test_an_explicit_round_to_beats_the_devices(user_devices, small_checkpoint):
    from edgeticket import api
    (user_devices / "board.toml").write_text(PROFILE.format(threads=1) + "round_to = 8\n")
    ticket = api.draw(api.load(small_checkpoint, "small_resnet"), sparsity=0.6, device="board", round_to=1)
    assert any(v.shape[0] % 8 for k, v in ticket.state_dict.items() if v.dim() == 4)


@pytest.mark.slow
def test_a_wheel_install_run_outside_the_checkout_lists_every_builtin_profile(tmp_path):
    """`pip install --target DIR .` (not editable), then `edgeticket devices` from elsewhere: the profiles
    travel as package data."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    checkout = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(checkout, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info",
                                                                     "__pycache__", ".pytest_cache", "docs"))
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(target)}  # no $EDGETICKET_DEVICES
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True,
                                       text=True, check=True).stdout
    assert run("-c", "import edgeticket; print(edgeticket.__file__)").startswith(str(target))
    listed = {row["name"]: row for row in json.loads(run("-m", "edgeticket", "devices", "--json"))["devices"]}
    assert SHIPPED <= set(listed)
    assert all(listed[name]["path"].startswith(str(target)) for name in SHIPPED)


@pytest.mark.slow
def test_all_devices_on_a_torchvision_resnet18_ticket_without_target_data(tmp_path, runner):
    """No --data and no finetune target: every runnable profile still gets its latency row, accuracy "-", and
    the int8 row says it needs --data to calibrate."""
    import torch
    import torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    drawn = runner.invoke(app, ["draw", str(tmp_path / "resnet18.pth"), "--arch", "resnet18", "--sparsity", "0.5",
                                "-o", str(tmp_path / "r18.ticket"), "--quiet"])
    assert drawn.exit_code == 0, drawn.output
    result = runner.invoke(app, ["bench", str(tmp_path / "r18.ticket"), "--all-devices", "--json", "--runs", "3",
                                 "--warmup", "1", "--seconds", "0"])
    assert result.exit_code == 0, result.output
    rows = {row["device"]: row for row in json.loads(result.stdout)}
    assert SHIPPED <= set(rows)
    assert rows["ort-int8-1t"]["status"] == "needs --data" and "--data" in rows["ort-int8-1t"]["reason"]
    for name, row in rows.items():
        available = unavailable_reason(get_device(name)) is None
        if name == "ort-int8-1t" or not available:
            continue
        assert row["status"] == "ok", (name, row["reason"])
        assert row["result"]["accuracy"] is None and row["result"]["latency"]["runs"] >= 3
        assert row["result"]["input_shape"] == [1, 3, 224, 224]
    assert rows["ort-cpu-1t"]["result"]["modules"] == {"torch": False, "edgeticket": False}


def test_more_threads_than_cores_is_flagged():
    from edgeticket.bench.devices import timing_note
    four = get_device("ort-cpu-4t")
    assert "4 threads on 2 cores" in timing_note(four, cpu_info(), cpus=2)
    assert timing_note(four, cpu_info(), cpus=8) is None


def test_a_missing_devices_folder_in_the_environment_is_said(user_devices, tmp_path, monkeypatch):
    import edgeticket.bench.devices as devices
    said = []
    monkeypatch.setattr(devices, "info", said.append)
    monkeypatch.setenv("EDGETICKET_DEVICES", str(tmp_path / "nope"))
    list_devices()
    list_devices()
    assert said == [f"$EDGETICKET_DEVICES names {tmp_path / 'nope'}, which is not a folder"]


def test_the_readmes_profile_example_reads(user_devices):
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("# ~/.config/edgeticket/devices/rpi4.toml")
    (user_devices / "rpi4.toml").write_text(readme[start:readme.index("```", start)])
    rpi4 = get_device("rpi4")
    assert (rpi4.runtime, rpi4.threads, rpi4.round_to) == ("onnxruntime", 4, 8)


def test_benching_a_broken_profile_names_its_file_and_key(user_devices, small_checkpoint, tmp_path, runner):
    from edgeticket.export import export_onnx
    from edgeticket.models.checkpoints import load_checkpoint
    export_onnx(load_checkpoint(small_checkpoint, "small_resnet"), tmp_path / "m.onnx")
    (user_devices / "mine.toml").write_text(PROFILE.format(threads=1000))
    listed = json.loads(runner.invoke(app, ["devices", "--json"]).stdout)
    mine = {r["name"]: r for r in listed["devices"]}["mine"]
    assert not mine["available"] and "key 'threads'" in mine["error"] and "1000" in mine["error"]
    result = runner.invoke(app, ["bench", str(tmp_path / "m.onnx"), "--device", "mine", "--runs", "1",
                                 "--warmup", "0", "--seconds", "0"])
    assert result.exit_code == 1 and "mine.toml: key 'threads'" in result.output
    assert not list(tmp_path.glob("m.onnx.*.bench.json"))
