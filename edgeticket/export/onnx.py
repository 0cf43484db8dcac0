"""ONNX export: pixels in [0, 1] in, logits out; normalization inside the graph; checked against torch."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import torch

from ..data import TensorImages
from ..errors import EdgeticketError
from ..ticket import Ticket
from .checks import metadata

INPUT_NAME, OUTPUT_NAME = "images", "logits"


WEIGHTS_SHA256 = "edgeticket.weights_sha256"


def weights_sha256(graph: onnx.ModelProto) -> str:
    """sha256 over every initializer and Constant tensor (name, dtype, shape, values), however protobuf stores
    them (raw_data or typed fields): a flipped weight byte changes it, and the metadata (added after) does not."""
    digest = hashlib.sha256()
    tensors = [(t.name, t) for t in graph.graph.initializer]
    tensors += [(f"{node.name}/{a.name}", a.t) for node in graph.graph.node if node.op_type == "Constant"
                for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    for name, tensor in sorted(tensors, key=lambda pair: pair[0]):
        values = numpy_helper.to_array(tensor)
        digest.update(f"{name}:{values.dtype}:{values.shape};".encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model's edgeticket metadata; its weights are checked against the sha256 recorded at export, when the
    export recorded one (a corrupt file is refused before anything evaluates or benches it)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise EdgeticketError(f"{Path(path).name} is not a readable ONNX model ({type(error).__name__})",
                              hint="export it again with `edgeticket export`") from None
    entries = {p.key: p.value for p in model.metadata_props}
    if WEIGHTS_SHA256 in entries and entries[WEIGHTS_SHA256] != weights_sha256(model):
        raise EdgeticketError(f"{Path(path).name}: its weights do not match the sha256 recorded at export (the file "
                              "is corrupt)", hint="copy or export it again")
    return entries


def open_session(path: str | Path, threads: int = 1, provider: str = "cpu") -> ort.InferenceSession:
    """The onnxruntime runtime's session (int8 calibration checks, tests), with a clear error for a file
    onnxruntime cannot load."""
    from ..runtimes.onnxruntime import session
    try:
        return session(path, threads, provider)
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise EdgeticketError(f"onnxruntime cannot load {Path(path).name}: {str(error).splitlines()[0][:160]}",
                              hint="export it again with `edgeticket export`") from None


def run_onnx(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]


def predict_onnx(session: ort.InferenceSession, data: TensorImages, batch_size: int = 256,
                 description: str = "onnxruntime") -> np.ndarray:
    """Logits for a whole image set, in batches, through one session, counted on a progress bar."""
    from ..metrics import map_batches
    return np.concatenate(map_batches(lambda images, _: run_onnx(session, images.numpy()), data, batch_size,
                                      description))


def add_metadata(path: Path, entries: dict[str, str]) -> None:
    """Replace the model's metadata with `entries` and the sha256 of its weights."""
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in {**entries, WEIGHTS_SHA256: weights_sha256(graph)}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))


def write_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = 18) -> None:
    """Export (dynamic batch, one self-contained file); metadata is added after the parity check."""
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module, (example.repeat(2, 1, 1, 1),), str(path), dynamo=True, verbose=False,
                          opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          external_data=False, dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))


def write_onnx(ticket: Ticket, path: Path, ticket_sha256: str | None) -> None:
    """The ticket as an unchecked fp32 ONNX file with its metadata (int8 quantization starts from it)."""
    write_graph(ticket.deployable(), ticket.example_input(), path)
    add_metadata(path, metadata(ticket, ticket_sha256))


def graph_io(path: Path) -> tuple[list[int | str], list[int | str]]:
    """The first graph input's and output's dimensions: an int where fixed, the dimension's name where not."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    first_input = next((i for i in graph.input if i.name not in initializers), None)
    if first_input is None or not graph.output:
        raise EdgeticketError(f"{path.name} has no graph input or output", hint="is it an image classifier?")
    dims = lambda value: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                          for d in value.type.tensor_type.shape.dim]
    return dims(first_input), dims(graph.output[0])
