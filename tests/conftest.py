import os
from contextlib import contextmanager

import pytest
import torch
from rich.progress import Progress
from typer.testing import CliRunner

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N (make test)
    os.environ.pop("COLUMNS", None)  # workers get COLUMNS=80; output is piped, as without -n (edgeticket prints 200 wide)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

from edgeticket.models import get_model  # noqa: E402 (after COLUMNS: edgeticket's console reads it on import)


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the groups into the test ids
def pytest_collection_modifyitems(items):
    """Under `--dist loadgroup` a module's tests stay on one worker (its module fixtures are built once), unless
    they name their own group (tests/models/test_zoo.py: one per architecture). Groups that hold a slow test go
    first: `make test` passes --no-loadscope-reorder, so xdist hands the groups out in this order, and the short
    groups even out the two workers' ends (by default it orders them by their number of tests, which put the
    README's and the sweep's two-test modules last, alone on one worker)."""
    group = lambda item: item.get_closest_marker("xdist_group").args[0]
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    slow = {group(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: group(item) not in slow)  # stable: a group's tests stay in their order


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def launcher():
    """tests/forkserver.py's fork server, one per worker: edgeticket commands to signal, without the imports."""
    from tests.forkserver import Launcher
    launcher = Launcher()
    yield launcher
    launcher.close()


@pytest.fixture
def progress_recorder(monkeypatch):
    """`bars = progress_recorder(module)`: every bar `module` opens, kept (hidden) so a test can read its tasks."""
    def record(module) -> list[Progress]:
        bars = []

        @contextmanager
        def recording():
            with Progress(disable=True) as bar:
                bars.append(bar)
                yield bar
        monkeypatch.setattr(module, "progress_bar", recording)
        return bars
    return record


@pytest.fixture
def small_checkpoint(tmp_path):
    """A plain state_dict of the small ResNet (1 input channel, 10 classes), as a foreign file."""
    torch.manual_seed(0)
    model = get_model("small_resnet", num_classes=10, in_channels=1)
    path = tmp_path / "small.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def digits_ticket():
    """A 50% channel small ResNet finetuned briefly on digits (90% test accuracy, pinned in test_evaluate): a real
    target model. Before BatchNorm statistics were re-estimated after training, this fixture scored 10% (chance)
    in eval mode, and the int8 check agreed 100% with a model that predicted one class."""
    from edgeticket.data import DataConfig, load_dataset
    from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
    from edgeticket.train import TrainConfig, finetune
    torch.manual_seed(0)
    model = get_model("small_resnet", num_classes=10, in_channels=1)
    source = Ticket("small_resnet", {"num_classes": 10, "in_channels": 1}, model.state_dict(), (1, 28, 28), (0.3,),
                    (0.3,), [str(i) for i in range(10)], provenance={"source_kind": "robust"})
    ticket, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.5))
    digits = load_dataset(DataConfig("digits", subset=300, image_size=28, channels=1))
    return finetune(ticket, digits, TrainConfig(epochs=8, lr=0.05))[0]
