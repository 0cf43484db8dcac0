"""The bench worker: one runtime in its own process. Reads a job as JSON on stdin, prints one JSON line.

Timing: the first inference alone, then warm-up, then at least `runs` calls and at least `min_seconds`.
Memory: the process's peak resident set (ru_maxrss) and its growth from loading and running the model.
Accuracy: top-1 of the artifact in this runtime on the images of the job's .npz, one at a time (batch 1).
Host: the CPU it ran on (model, architecture, the flags that change a kernel), so a number names its machine."""

from __future__ import annotations

import json
import resource
import sys

import numpy as np

from ..host import cpu_info
from .devices import DeviceProfile
from .runtimes import open_runner, runtime_version
from .stats import timed_runs


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(job: dict) -> dict:
    profile = DeviceProfile(**job["profile"])
    before = peak_rss_mb()
    predict = open_runner(job["path"], profile)
    data = np.load(job["data"]) if job.get("data") else None
    shape = job["input_shape"]
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    first_ms, latency = timed_runs(lambda: predict(images), job["runs"], job["warmup"], job["min_seconds"])
    result = {"runtime_version": runtime_version(profile.runtime), "first_inference_ms": first_ms,
              "latency": latency.as_dict(), "accuracy": None, "test_images": None, "max_abs_diff": None,
              "host": cpu_info().as_dict()}
    if data is not None and "images" in data:
        predicted = np.array([predict(image[None]).argmax() for image in data["images"]])
        result.update(accuracy=float((predicted == data["labels"]).mean() * 100), test_images=int(len(predicted)))
    if data is not None and "reference_inputs" in data:
        outputs = np.concatenate([predict(x[None]) for x in data["reference_inputs"]])
        result["max_abs_diff"] = float(np.abs(outputs - data["reference_logits"]).max())
    result.update(peak_memory_mb=peak_rss_mb(), model_memory_mb=peak_rss_mb() - before)
    return result


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))), flush=True)
