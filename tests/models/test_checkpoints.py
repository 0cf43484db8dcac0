import pytest
import torch
import torchvision

from edgeticket.errors import EdgeticketError
from edgeticket.models import get_model, list_models
from edgeticket.models.checkpoints import load_checkpoint, source_kind_from_name


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def madry_layout(state):
    """MadryLab robustness: DataParallel(AttackerModel) with a normalizer and an attacker copy."""
    model = {f"module.model.{k}": v for k, v in state.items()}
    model.update({f"module.attacker.model.{k}": v for k, v in state.items()})
    model["module.normalizer.new_mean"] = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)
    model["module.normalizer.new_std"] = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "schedule": None, "epoch": 90}


LAYOUTS = {
    "torchvision": lambda s: s,
    "madry": madry_layout,
    "state_dict+module": lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},
    "model+orig_mod": lambda s: {"model": {f"_orig_mod.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_format_round_trips(layout, resnet18, tmp_path):
    path = tmp_path / "resnet18_l2_eps3.ckpt"
    torch.save(LAYOUTS[layout](resnet18.state_dict()), path)
    ticket = load_checkpoint(path, "resnet18")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ticket.build_model()(x), resnet18(x))
    assert ticket.num_classes == 10
    if layout == "madry":
        assert ticket.mean == pytest.approx((0.4, 0.5, 0.6)) and ticket.std == pytest.approx((0.2, 0.25, 0.3))
        assert ticket.provenance.source_kind == "robust" and ticket.provenance.threat_model == "l2:3"


def test_own_ticket_round_trips(resnet18, tmp_path):
    torch.save(resnet18.state_dict(), tmp_path / "r.pt")
    ticket = load_checkpoint(tmp_path / "r.pt", "resnet18")
    ticket.save(tmp_path / "r.ticket")
    again = load_checkpoint(tmp_path / "r.ticket")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again.build_model()(x), resnet18(x))


def test_wrong_arch_names_keys_and_guess(resnet18, tmp_path):
    torch.save(resnet18.state_dict(), tmp_path / "r.pt")
    with pytest.raises(EdgeticketError) as error:
        load_checkpoint(tmp_path / "r.pt", "resnet34")
    assert "layer1.2.conv1.weight" in error.value.message and "resnet34" in error.value.message
    assert "resnet18" in error.value.hint


def test_shape_mismatch_is_named(tmp_path):
    state = get_model("small_resnet", num_classes=10, in_channels=1).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "s.pt")
    with pytest.raises(EdgeticketError, match="layer1.0.conv1.weight"):
        load_checkpoint(tmp_path / "s.pt", "small_resnet")


def test_pickle_refused_unless_trusted(tmp_path):
    torch.save({"state_dict": get_model("small_resnet").state_dict(), "hparams": torch.nn.ReLU()}, tmp_path / "p.pt")
    with pytest.raises(EdgeticketError, match="needs pickle"):
        load_checkpoint(tmp_path / "p.pt", "small_resnet")
    assert load_checkpoint(tmp_path / "p.pt", "small_resnet", trust_pickle=True).arch == "small_resnet"


def test_missing_arch_for_foreign_file_suggests_one(small_checkpoint):
    with pytest.raises(EdgeticketError) as error:
        load_checkpoint(small_checkpoint)
    assert "--arch small_resnet" in error.value.hint


def test_registry_lists_names_on_unknown():
    assert {"resnet18", "resnet50", "wide_resnet50_2", "mobilenet_v2", "small_resnet"} <= set(list_models())
    with pytest.raises(EdgeticketError) as error:
        get_model("resnet19")
    assert "resnet18" in error.value.hint


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "small_resnet"])
def test_every_arch_takes_classes_and_channels(name):
    model = get_model(name, num_classes=7, in_channels=1).eval()
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 7)


@pytest.mark.parametrize("name, expected", [("resnet50_l2_eps0.ckpt", ("natural", None)),
                                            ("resnet18_linf_eps4.0.ckpt", ("robust", "linf:4/255")),
                                            ("mine.pt", ("unknown", None))])
def test_source_kind_from_madry_names(name, expected):
    assert source_kind_from_name(name) == expected


@pytest.mark.parametrize("seed", range(40))
def test_any_garbage_is_a_clear_error(tmp_path, seed):
    """Random bytes break the unpickler in many ways (UnpicklingError, IndexError, ...): always one clear error."""
    import random
    path = tmp_path / "garbage.pt"
    path.write_bytes(random.Random(seed).randbytes(random.Random(seed).randint(1, 5000)))
    with pytest.raises(EdgeticketError, match="not a"):
        load_checkpoint(path, "small_resnet")
