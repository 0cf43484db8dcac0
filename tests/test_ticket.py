import pytest
import torch

from edgeticket.errors import EdgeticketError
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.ticket import Provenance, Stage, Ticket
from edgeticket.tickets import DrawConfig, draw_ticket


@pytest.fixture
def source(small_checkpoint):
    return load_checkpoint(small_checkpoint, "small_resnet")


def test_two_draws_from_one_source_share_no_provenance(source):
    """Round two's defect: the second draw's stages read import, draw:0.5, draw:0.8, and the source's changed too."""
    before = source.provenance.to_dict()
    half, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.5))
    most, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.8))
    assert source.provenance.to_dict() == before
    assert [s.stage for s in most.provenance.stages] == ["import", "draw"]
    assert most.provenance.stages[-1].details["sparsity"] == 0.8 and half.provenance.stages[-1].details["sparsity"] == 0.5
    most.provenance.stages[0].details["file"] = "changed"
    assert half.provenance.stages[0].details["file"] == source.provenance.stages[0].details["file"] != "changed"


def test_provenance_round_trips_and_keeps_unknown_keys(source, tmp_path):
    source.provenance.extra["from_a_newer_version"] = {"x": 1}
    source.add_stage("custom", note="kept")
    source.save(tmp_path / "s.ticket")
    loaded = Ticket.load(tmp_path / "s.ticket")
    assert loaded.provenance == source.provenance
    assert loaded.provenance.stages[-1] == Stage("custom", {"note": "kept"}, source.provenance.stages[-1].edgeticket_version)
    assert Provenance.from_dict(loaded.provenance.to_dict()) == loaded.provenance


def test_load_names_a_foreign_file(small_checkpoint):
    with pytest.raises(EdgeticketError, match="small.pt: not an edgeticket file") as error:
        Ticket.load(small_checkpoint)
    assert "arch" in error.value.hint


def test_with_model_copies_weights_not_shares_them(source):
    model = source.build_model()
    copy = source.with_model(model)
    with torch.no_grad():
        model.conv1.weight.add_(1.0)
    assert torch.equal(copy.state_dict["conv1.weight"], source.state_dict["conv1.weight"])
