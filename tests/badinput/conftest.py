"""Tiny inputs for the bad-input corpus, built once per test run and copied into each case's own folder."""

import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

import edgeticket
from edgeticket import signals
from edgeticket.fileio import temp_root

from .harness import Fixtures, Harness


def foreign_onnx(path) -> None:
    """An ONNX model edgeticket did not write: a 1x1x28x28 -> 1x10 graph with no edgeticket metadata."""
    import onnx
    from onnx import TensorProto, helper
    weight = helper.make_tensor("w", TensorProto.FLOAT, [784, 10], [0.01] * 7840)
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1, 784])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["flat"]),
                               helper.make_node("MatMul", ["flat", "w"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [weight, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


class Payload:
    """Unpickling this opens MARKER for writing: a file that exists afterwards means pickle ran code."""
    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> Fixtures:
    from edgeticket import api
    from edgeticket.models import get_model
    from edgeticket.models.checkpoints import load_checkpoint
    folder = tmp_path_factory.mktemp("badinput-fixtures")
    torch.manual_seed(0)
    torch.save(get_model("small_resnet", num_classes=10, in_channels=1).state_dict(), folder / "state.pt")
    ticket = load_checkpoint(folder / "state.pt", "small_resnet", source_kind="natural")
    ticket.save(folder / "in.ticket")
    api.export(folder / "in.ticket", folder / "model.onnx")
    foreign_onnx(folder / "foreign.onnx")
    Payload.marker = str(folder.parent / "PICKLE-RAN-CODE")
    torch.save({"model": Payload()}, folder / "hostile.pt")
    shutil.copy(Path(edgeticket.__file__).parent / "devices" / "ort-cpu-1t.toml", folder / "profile.toml")
    return Fixtures(folder, marker=folder.parent / "PICKLE-RAN-CODE")


@pytest.fixture
def harness(fixtures, tmp_path, monkeypatch) -> Harness:
    """One case's folder, a temp root of its own, and the process's signal handlers put back afterwards."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    saved = {signum: signal.getsignal(signum) for signum in signals.SIGNALS}
    case_folder = tmp_path / "case"
    case_folder.mkdir()
    yield Harness(fixtures, case_folder, temp_root())
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    signals._state.installed = signals._state.finished = False
    signals._state.received, signals._state.committed = None, []
