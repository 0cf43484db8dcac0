"""Probe a board before a bench over ssh: what it is, and what a bench needs there.

Sent on stdin and run as `python -I - REQUEST_JSON`, before anything is pushed. It uses only the standard
library and plain Python 3 syntax, so an interpreter too old for the runner still answers that it is too old.
It prints one JSON document: the board (uname, CPU and board model, cores, CPU governor, temperature, load),
its Python, numpy and the runtime's version (null where missing; the runtime is found, not imported), the free
space where files go, and the sha256 of the files the host asked about, so it pushes only what is not there."""

import hashlib
import json
import os
import platform
import shutil
import sys

try:
    import importlib.metadata as metadata
except ImportError:  # Python < 3.8: main() says it is too old
    metadata = None

MIN_PYTHON = (3, 8)  # the runner's dataclasses and importlib.metadata


def read(path):
    try:
        with open(path, errors="replace") as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return None


def cpu_model():
    """The CPU's name from /proc/cpuinfo: `model name` on x86, `Hardware` or `Model` on ARM boards."""
    fields = {}
    for line in (read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "cpu model", "model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or None


def temperature_c():
    """The first thermal zone's temperature in degrees C, with its name, where readable."""
    for zone in range(16):
        folder = "/sys/class/thermal/thermal_zone%d" % zone
        value = read(folder + "/temp")
        if value and value.lstrip("-").isdigit():
            return {"celsius": int(value) / 1000.0, "zone": read(folder + "/type") or "thermal_zone%d" % zone}
    return None


def version(distributions, module):
    """The module's version from its pip distributions; None when the module is not importable."""
    import importlib.util  # here, not above: Python 2 has no importlib.util, and must still hear it is too old
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ImportError:  # a dotted module whose package is missing (tflite_runtime.interpreter)
        return None
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return "unknown"


def sha256(path):
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def nearest_folder(folder):
    """`folder`, or where it would be made: its nearest existing parent."""
    folder = os.path.abspath(os.path.expanduser(folder))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def probe(request):
    uname = platform.uname()
    loads = os.getloadavg() if hasattr(os, "getloadavg") else None
    workdir = nearest_folder(request["workdir"])
    return {"python": platform.python_version(), "python_path": sys.executable,
            "machine": uname.machine, "system": uname.system, "release": uname.release, "node": uname.node,
            "cpu": cpu_model(), "board": (read("/proc/device-tree/model") or "").rstrip("\x00") or None,
            "cpus": os.cpu_count(), "governor": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "temperature": temperature_c(), "load_average": list(loads) if loads else None,
            "numpy": version(["numpy"], "numpy"),
            "runtime_version": version(request["distributions"], request["module"]),
            "free_bytes": shutil.disk_usage(workdir).free, "workdir_writable": os.access(workdir, os.W_OK | os.X_OK),
            "uid": os.getuid() if hasattr(os, "getuid") else None,
            "sha256": dict((path, sha256(path)) for path in request["files"])}


def main(argv):
    if sys.version_info < MIN_PYTHON:
        print(json.dumps({"error": "too old", "python": platform.python_version()}))
        return 0
    print(json.dumps(probe(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
