"""Runtimes as plugins: the contract every runtime file keeps, the registry's errors, and a runtime from outside
the package (examples/runtimes/numpy_linear.py) that `devices`, `export` and `bench` run through with no other file
touched, found through a plugin path and through an entry point."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeticket import api, runtimes
from edgeticket.bench import devices
from edgeticket.cli import app
from edgeticket.data import DataConfig, load_dataset
from edgeticket.errors import EdgeticketError
from edgeticket.export import ExportCheckFailed, artifact_metadata
from edgeticket.models import get_model
from edgeticket.models.archs import ARCHS, ArchSpec
from edgeticket.tickets import Ticket

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "runtimes" / "numpy_linear.py"
BUILTIN_FILES = sorted((ROOT / "edgeticket" / "runtimes").glob("[!_]*.py"))


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """$EDGETICKET_RUNTIMES names a folder holding the example runtime; the registry looks again."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder)
    monkeypatch.setenv("EDGETICKET_RUNTIMES", str(folder))
    runtimes.reset()
    yield folder
    runtimes.reset()  # the next lookup, after monkeypatch restores the environment, finds the built-ins alone


def digits_28():
    return load_dataset(DataConfig("digits", image_size=28, channels=1))


@pytest.fixture
def linear_ticket(monkeypatch):
    """A linear classifier of digit pixels (ridge regression onto one-hot labels: ~90% test accuracy), under an
    architecture registered for this test only."""
    build = lambda num_classes, in_channels: nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes))
    monkeypatch.setitem(ARCHS._entries, "linear", ArchSpec("linear", build, "1", "1", 28, (0.5,), (0.5,)))
    train = digits_28().train
    pixels = (train.images.double().flatten(1) / 255 - 0.5) / 0.5
    features = torch.cat([pixels, torch.ones(len(pixels), 1, dtype=torch.float64)], 1)
    targets = nn.functional.one_hot(train.labels, 10).double()
    solution = torch.linalg.solve(features.T @ features + 1.0 * torch.eye(features.shape[1], dtype=torch.float64),
                                  features.T @ targets)
    model = build(10, 1)
    model[1].weight.data, model[1].bias.data = solution[:-1].T.float(), solution[-1].float()
    return Ticket("linear", {"num_classes": 10, "in_channels": 1}, model.state_dict(), (1, 28, 28), (0.5,), (0.5,),
                  [str(i) for i in range(10)], provenance={"source_kind": "natural", "target": "digits"})


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or ".").split(".")[0] if node.level == 0 else ".")
    return names


@pytest.mark.parametrize("path", BUILTIN_FILES + [EXAMPLE], ids=lambda p: p.name)
def test_a_runtime_file_imports_only_the_standard_library_and_numpy_at_its_top(path):
    """The runner loads the file alone, on a board without edgeticket or torch: a `from edgeticket...` or
    `import torch` at the top would break it there."""
    assert top_level_imports(path) - {"__future__", "numpy"} <= sys.stdlib_module_names, path


def test_the_runner_loads_every_runtime_file_without_torch_or_edgeticket():
    """Loaded as the runner loads them (by path, isolated), the files pull in neither torch nor edgeticket."""
    runner = ROOT / "edgeticket" / "bench" / "runner.py"
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("runner", {str(runner)!r})
        runner = sys.modules["runner"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(runner)
        names = [runner.load_runtime(path).NAME for path in sys.argv[1:]]
        print(json.dumps({{"names": names, "torch": "torch" in sys.modules, "edgeticket": "edgeticket" in sys.modules}}))
    """)
    out = subprocess.run([sys.executable, "-I", "-c", script, *map(str, BUILTIN_FILES + [EXAMPLE])],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"names": ["executorch", "ncnn", "onnxruntime", "numpy-linear"], "torch": False,
                               "edgeticket": False}


def test_every_builtin_runtime_is_registered_with_its_declarations():
    names = [r.name for r in runtimes.list_runtimes()]
    assert names[:3] == ["onnxruntime", "executorch", "ncnn"]  # their ORDER; error messages list them so
    for runtime in runtimes.list_runtimes():
        assert runtimes.runtime_for_format(runtime.format) is runtime
        assert runtimes.runtime_for_path(f"model{runtime.suffix}") is runtime
        assert runtime.check_provider in runtime.providers and "fp32" in runtime.precisions
    from edgeticket.bench.devices import get_device
    for runtime in runtimes.list_runtimes():
        for precision, device in runtime.default_devices.items():
            assert get_device(device).runtime == runtime.name and get_device(device).precision == precision


def test_a_plugin_runtime_is_listed_with_its_profile(plugin_folder, runner):
    out = runner.invoke(app, ["devices", "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)
    mine = next(r for r in listed["runtimes"] if r["name"] == "numpy-linear")
    assert mine["format"] == "npz" and not mine["builtin"] and mine["source"] == str(plugin_folder / EXAMPLE.name)
    assert mine["available"] and mine["version"] == np.__version__
    profile = next(d for d in listed["devices"] if d["name"] == "numpy-linear-1t")
    assert profile["runtime"] == "numpy-linear" and profile["available"] and str(plugin_folder) in profile["path"]
    table = runner.invoke(app, ["devices"]).output
    assert "numpy-linear" in table and "npz" in table


def test_export_and_bench_run_through_a_plugin_runtime(plugin_folder, linear_ticket, tmp_path, runner):
    """`export -o model.npz` writes the plugin's format after the same parity check as any runtime's; `bench`
    picks the plugin's profile, ships the plugin's file to the torch-free runner, and measures the accuracy
    torch has, from logits the runner computed with numpy."""
    linear_ticket.save(tmp_path / "linear.ticket")
    out = runner.invoke(app, ["export", str(tmp_path / "linear.ticket"), "-o", str(tmp_path / "m.npz"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["format"] == "npz" and report["check"] == "max |numpy-linear - torch|"
    assert report["value"] <= report["threshold"]
    assert artifact_metadata(tmp_path / "m.npz")["edgeticket.arch"] == "linear"  # beside it, as m.npz.json
    out = runner.invoke(app, ["bench", str(tmp_path / "m.npz"), "--runs", "5", "--seconds", "0", "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.output)
    assert (record["device"], record["runtime"], record["runtime_version"]) == ("numpy-linear-1t", "numpy-linear",
                                                                                np.__version__)
    assert record["modules"] == {"torch": False, "edgeticket": False} and record["latency"]["p50_ms"] > 0
    test = digits_28().test
    with torch.no_grad():
        torch_accuracy = 100 * float((linear_ticket.deployable()(test.images.float() / 255).argmax(1)
                                      == test.labels).double().mean())
    assert torch_accuracy > 80 and record["data"] == "digits"
    assert abs(record["accuracy"] - torch_accuracy) <= 100 / len(test) + 1e-9  # one near-tie at most


def test_a_model_the_plugin_cannot_hold_fails_its_parity_check_and_leaves_nothing(plugin_folder, tmp_path):
    """The example reads a weight matrix off the model; a CNN is not one, and the registry's export check
    (not the plugin) refuses it."""
    cnn = get_model("small_resnet", num_classes=10, in_channels=1)
    ticket = Ticket("small_resnet", {"num_classes": 10, "in_channels": 1}, cnn.state_dict(), (1, 28, 28), (0.5,),
                    (0.5,), [str(i) for i in range(10)])
    with pytest.raises(ExportCheckFailed, match="parity"):
        api.export(ticket, tmp_path / "cnn.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugins"]


BROKEN = {
    "missing": ("NAME = 'half'\n", "does not declare FORMAT"),
    "crashing": ("import os\nraise RuntimeError('no such board')\n",
                 r"does not import \(line 2\): RuntimeError: no such board"),
    "bad suffix": (EXAMPLE.read_text().replace('"numpy-linear", "npz", ".npz"', '"numpy-linear", "npz", "npz"'),
                   "SUFFIX must be a suffix such as '.npz', not 'npz'"),
    "taken": (EXAMPLE.read_text().replace('"numpy-linear", "npz", ".npz"', '"ncnn", "npz2", ".npz2"'),
              "'ncnn' of .* is already registered"),
    "same suffix": (EXAMPLE.read_text().replace('"numpy-linear", "npz", ".npz"', '"other", "other", ".ONNX"'),
                    "its SUFFIX '.ONNX' is runtime 'onnxruntime's"),
    "torch at the top": (EXAMPLE.read_text().replace("import numpy as np\n", "import numpy as np\nimport torch\n"),
                         "imports torch at its top level"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_a_broken_plugin_is_one_clear_error_naming_its_file(case, tmp_path, monkeypatch, runner):
    source, message = BROKEN[case]
    (tmp_path / "mine.py").write_text(source)
    monkeypatch.setenv("EDGETICKET_RUNTIMES", str(tmp_path))
    runtimes.reset()
    try:
        with pytest.raises(EdgeticketError, match=message) as error:
            runtimes.list_runtimes()
        assert "mine.py" in error.value.message
        out = runner.invoke(app, ["devices"])
        assert out.exit_code != 0 and "mine.py" in out.output and "Traceback" not in out.output
    finally:
        runtimes.reset()


def test_a_fresh_process_finds_a_plugin_through_its_entry_point(tmp_path):
    """An installed plugin: a module and its distribution's entry point on the path, nothing else; a fresh
    interpreter lists the runtime and the profile it brings (`devices` shows the same lists, tested above)."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE, site)
    info = site / "edgeticket_numpy_linear-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeticket-numpy-linear\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgeticket.runtimes]\nnumpy-linear = numpy_linear\n")
    script = ("import json; from edgeticket.runtimes import list_runtimes; from edgeticket.bench.devices import "
              "list_devices; print(json.dumps([[str(r.source) for r in list_runtimes() if r.name == 'numpy-linear'], "
              "[d.name for d in list_devices() if d.runtime == 'numpy-linear']]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("EDGETICKET_RUNTIMES", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[str(site / EXAMPLE.name)], ["numpy-linear-1t"]]


def test_a_runtime_whose_module_is_missing_is_not_available_and_says_what_to_install(tmp_path, monkeypatch):
    """The default check, for a dotted module whose package is absent (find_spec raises there)."""
    (tmp_path / "lite.py").write_text(EXAMPLE.read_text().replace(
        'MODULE, DISTRIBUTIONS = "numpy", ("numpy",)', 'MODULE, DISTRIBUTIONS = "nosuchpkg.interpreter", ("nosuchpkg",)'))
    monkeypatch.setenv("EDGETICKET_RUNTIMES", str(tmp_path))
    runtimes.reset()
    try:
        reason = runtimes.get_runtime("numpy-linear").unavailable_reason("cpu")
    finally:
        runtimes.reset()
    assert reason == "nosuchpkg.interpreter is not installed; pip install nosuchpkg"


def runtime_words() -> set[str]:
    return {word for r in runtimes.list_runtimes() for word in (r.name, r.format, r.suffix)}


def branches_on(path: Path, words: set[str]) -> list[tuple[int, str]]:
    """(line, word) wherever code compares to, keys a dict by, or tests a suffix against a runtime's name,
    format or suffix."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            parts = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("endswith", "startswith"):
            parts = node.args
        else:
            continue
        found += [(node.lineno, c.value) for part in parts for c in ast.walk(part)
                  if isinstance(c, ast.Constant) and c.value in words]
    return found


def test_no_code_outside_the_runtimes_branches_on_a_runtime():
    """`if runtime == "ncnn"`, `{"onnx": ...}` or `path.endswith(".pte")` outside edgeticket/runtimes/ would
    make a new runtime more than one file."""
    words = runtime_words()
    offenders = {str(path.relative_to(ROOT)): hits for path in sorted((ROOT / "edgeticket").rglob("*.py"))
                 if "runtimes" not in path.parts and (hits := branches_on(path, words))}
    assert offenders == {}


def test_the_branch_finder_finds_a_branch(tmp_path):
    """The guard above can fail: each form it looks for, planted in a file, is found."""
    planted = tmp_path / "planted.py"
    planted.write_text('if runtime == "ncnn":\n    pass\nTOLERANCE = {"onnx": 1}\nok = name.endswith(".pte")\n')
    assert branches_on(planted, runtime_words()) == [(1, "ncnn"), (3, "onnx"), (4, ".pte")]


def test_the_readme_shows_the_example_runtime_whole():
    """The README's plugin example is this tested file, character for character, and its command names it."""
    readme = (ROOT / "README.md").read_text()
    assert EXAMPLE.read_text() in readme
    assert f"EDGETICKET_RUNTIMES={EXAMPLE.parent.relative_to(ROOT)} edgeticket devices" in readme


def test_a_plugin_profile_named_like_a_builtin_one_is_not_used_and_is_announced(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(EXAMPLE.read_text().replace('DEVICES = {"numpy-linear-1t"',
                                                                   'DEVICES = {"ort-cpu-1t"'))
    monkeypatch.setenv("EDGETICKET_RUNTIMES", str(tmp_path))
    said = []
    monkeypatch.setattr(devices, "info", said.append)
    monkeypatch.setattr(devices, "_announced", set())
    runtimes.reset()
    try:
        listed = {p.name: p for p in devices.list_devices()}
        devices.list_devices()
    finally:
        runtimes.reset()
    assert listed["ort-cpu-1t"].runtime == "onnxruntime" and "numpy-linear-1t" not in listed
    assert said == [f"{tmp_path / 'mine.py'}: DEVICES['ort-cpu-1t'] is not used: {listed['ort-cpu-1t'].path} has the "
                    "name ort-cpu-1t"]  # once
