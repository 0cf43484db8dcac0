import pytest
import torch
from typer.testing import CliRunner

from edgeticket.models import get_model


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def small_checkpoint(tmp_path):
    """A plain state_dict of the small ResNet (1 input channel, 10 classes), as a foreign file."""
    torch.manual_seed(0)
    model = get_model("small_resnet", num_classes=10, in_channels=1)
    path = tmp_path / "small.pt"
    torch.save(model.state_dict(), path)
    return path
