"""ONNX Runtime: .onnx files (fp32, or static QDQ int8) on its CPU, CUDA or TensorRT execution provider.

The reference runtime: `eval` of an exported model and the sweep's deploy step run through it too
(edgeticket/export/onnx.py, export/quantize.py)."""

from __future__ import annotations

from pathlib import Path

NAME, FORMAT, SUFFIX, ORDER = "onnxruntime", "onnx", ".onnx", 0
PROVIDERS = ("cpu", "cuda", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# the same fp32 kernels up to summation order (measured: <= 4e-6); relative 1e-6 (~8 float32 ulps) so logits
# of 1e8 are not held to 1e-4
TOLERANCE = (1e-4, 1e-6)
MODULE, DISTRIBUTIONS = "onnxruntime", ("onnxruntime", "onnxruntime-gpu")  # onnxruntime-gpu provides onnxruntime
DEFAULT_DEVICES = {"fp32": "ort-cpu-1t", "int8": "ort-int8-1t"}
EXECUTION_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                       "tensorrt": "TensorrtExecutionProvider"}


def session(path: str | Path, threads: int = 1, provider: str = "cpu", precision: str = "fp32"):
    """One onnxruntime session, for bench, eval and export checks alike: `threads` intra-op threads, nothing else."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    fp16 = provider == "tensorrt" and precision == "fp16"
    return ort.InferenceSession(str(path), options, providers=[EXECUTION_PROVIDERS[provider]],
                                provider_options=[{"trt_fp16_enable": True}] if fp16 else None)


def open_model(path: str, provider: str, threads: int, precision: str):
    model = session(path, threads, provider, precision)
    name = model.get_inputs()[0].name  # looked up once: this is the timed loop
    return lambda images: model.run(None, {name: images})[0]


def unavailable_reason(provider: str) -> str | None:
    import onnxruntime as ort
    available = ort.get_available_providers()
    if EXECUTION_PROVIDERS[provider] not in available:
        return f"onnxruntime here has {', '.join(available)}; {provider} needs onnxruntime-gpu and an NVIDIA GPU"
    return None


def write(module, example, path: Path) -> None:
    from edgeticket.export.onnx import write_graph
    write_graph(module, example, path)


def write_block(block, path: Path) -> None:
    """A latency table's conv + BatchNorm + activation block, built as an ONNX graph directly: the table writes
    hundreds of them, and torch's exporter takes about a second each. onnxruntime folds the BatchNorm into the
    conv and fuses a ReLU or Clip into it, as it does in an exported network."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((block.out_channels, block.in_channels // block.groups, *block.kernel), np.float32)
    ones, zeros = np.ones(block.out_channels, np.float32), np.zeros(block.out_channels, np.float32)
    arrays = [(weight, "w"), (ones, "scale"), (zeros, "bias"), (zeros, "mean"), (ones, "var")]
    if block.activation == "relu6":
        arrays += [(np.float32(0), "zero"), (np.float32(6), "six")]
    tensors = [numpy_helper.from_array(a, n) for a, n in arrays]
    activation = {"relu": [helper.make_node("Relu", ["b"], ["y"])],
                  "relu6": [helper.make_node("Clip", ["b", "zero", "six"], ["y"])],
                  "hardswish": [helper.make_node("HardSwish", ["b"], ["y"])],
                  "hardsigmoid": [helper.make_node("HardSigmoid", ["b"], ["y"], alpha=1 / 6)],
                  "sigmoid": [helper.make_node("Sigmoid", ["b"], ["y"])],
                  "silu": [helper.make_node("Sigmoid", ["b"], ["s"]), helper.make_node("Mul", ["b", "s"], ["y"])],
                  "none": [helper.make_node("Identity", ["b"], ["y"])]}[block.activation]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=list(block.kernel), strides=list(block.stride),
                              pads=list(block.padding) * 2, dilations=list(block.dilation), group=block.groups),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"]), *activation]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, block.in_channels, block.height, block.width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], tensors)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def embed_metadata(path: Path, entries: dict[str, str]) -> None:
    from edgeticket.export.onnx import add_metadata
    add_metadata(path, entries)


def read_metadata(path: Path) -> dict[str, str]:
    from edgeticket.export.onnx import read_metadata
    return read_metadata(path)


def export_int8(ticket, path: Path, splits, ticket_sha256: str | None):
    from edgeticket.export.quantize import export_onnx_int8
    return export_onnx_int8(ticket, path, splits, ticket_sha256)


def model_io(path: Path):
    from edgeticket.export.onnx import graph_io
    return graph_io(path)
