"""Sweep TOMLs and device-profile TOMLs with wrong types, unknown keys, out-of-range values and unknown names, or
empty: refused before any work, naming the file and the key."""

import pytest

from .harness import Case

SWEEP = """out = "{case}/out"
cache = "{case}/cache"
sources = { natural = "none", robust = "l2:1.0" }
methods = ["omp"]
sparsities = [0.5]
targets = ["digits"]
"""
# one line added to (or replacing a key of) a valid sweep, and what the error must name
SWEEP_CHANGES = {
    "sources = 5": "sources",                       # wrong types
    'sparsities = "0.5"': "sparsities",
    "seeds = [0.5]": "seeds",
    'methods = "omp"': "methods",
    "arch = 3": "arch",
    'deploy = "yes"': "deploy",
    "source_epochs = 1.5": "source_epochs",
    "methodz = [\"omp\"]": "methodz",                # unknown keys
    "[extra]\nx = 1": "extra",
    "sparsities = [1.5]": "sparsities",              # out of range
    "sparsities = [-0.1]": "sparsities",
    "seeds = [-1]": "seeds",
    f"seeds = [{2 ** 40}]": "seeds",
    "target_images = 0": "target_images",
    f"finetune_epochs = {2 ** 62}": "finetune_epochs",
    "bench_runs = 1000000000": "bench_runs",
    "bench_seconds = nan": "bench_seconds",
    "draw_rate = 1.0": "draw_rate",
    "source_lr = -0.1": "source_lr",
    "adv_images = -1": "adv_images",
    'methods = ["omq"]': "omq",                      # unknown names
    'patterns = ["channels"]': "channels",
    'targets = ["nope"]': "nope",
    'arch = "resnet999"': "resnet999",
    'sources = { robust = "l3:1.0" }': "l3:1.0",
    'source_data = "imagenet-21k"': "imagenet-21k",
    'on = "sideways"': "sideways",
    'finetune_mode = "last-k:x"': "last-k:x",
    'attack = "noise:0.25"': "attack",
    'source_files = { robust = "{missing:r.pt}" }': "r.pt",
}


def changed(config: str, line: str) -> str:
    """`config` with `line` added, replacing the line that sets the same key."""
    key = line.split("=")[0].strip()
    kept = [kept for kept in config.splitlines() if kept.split("=")[0].strip() != key]
    return "\n".join(kept) + "\n" + line + "\n"


PROFILE = 'runtime = "onnxruntime"\nprovider = "cpu"\nthreads = 1\nprecision = "fp32"\n'
PROFILE_CHANGES = {
    'threads = "1"': "threads",
    "threads = 0": "threads",
    "threads = 100000": "threads",
    "threads = 1.5": "threads",
    "thread = 1": "thread",
    'runtime = "tflite9"': "tflite9",
    'precision = "fp64"': "fp64",
    'provider = "tpu"': "tpu",
    "round_to = 0": "round_to",
    'stands_for = 5': "stands_for",
    'ssh = { host = 5 }': "ssh",
    '[ssh]\nhost = "board"\nport = 70000': "port",
}


CASES = [Case("configs", "sweep {case}/s.toml", message, files={"s.toml": changed(SWEEP, line)})
         for line, message in SWEEP_CHANGES.items()]
CASES += [Case("configs", "sweep {case}/s.toml", "sets no keys", files={"s.toml": "# nothing\n"})]
CASES += [Case("configs", "bench {onnx} --device {case}/p.toml --runs 1 --seconds 0", message,
               files={"p.toml": changed(PROFILE, line)}) for line, message in PROFILE_CHANGES.items()]
CASES += [Case("configs", "bench {onnx} --device {case}/p.toml", "p.toml", files={"p.toml": ""}),
          Case("configs", "draw {ticket} --device {case}/p.toml -o {case}/o.ticket", "threads",
               files={"p.toml": changed(PROFILE, "threads = -4")}),
          Case("configs", "bench {onnx} --device p", "threads", files={"devices/p.toml": changed(PROFILE, "threads = 0")},
               env={"EDGETICKET_DEVICES": "{case}/devices"})]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_bad_config_is_refused_naming_the_key(harness, case):
    harness.refuse(case)
