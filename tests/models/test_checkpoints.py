import re
from collections import OrderedDict

import pytest
import torch
import torchvision

from edgeticket.errors import EdgeticketError
from edgeticket.models import get_model, list_models
from edgeticket.models.checkpoints import arch_from_file_name, guess_archs, load_checkpoint, source_kind_from_name
from edgeticket.models.normalize import Normalized


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


def test_foreign_file_without_arch_is_fitted_by_keys_and_shapes(small_checkpoint, tmp_path):
    assert load_checkpoint(small_checkpoint).arch == "small_resnet"  # 1 input channel, 10 classes: read from the file
    # resnet50, wide_resnet50_2 and resnext50_32x4d share every parameter name: the shapes tell them apart
    for arch in ("resnet50", "wide_resnet50_2", "resnext50_32x4d"):
        with torch.device("meta"):
            state = get_model(arch, num_classes=10).state_dict()
        assert guess_archs(state) == [arch]
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "odd.pt")
    with pytest.raises(EdgeticketError, match="fits no registered architecture") as error:
        load_checkpoint(tmp_path / "odd.pt")
    assert "--arch" in error.value.hint


def test_a_name_the_parameters_contradict_is_not_believed(resnet18, tmp_path):
    torch.save(madry_layout(resnet18.state_dict()), tmp_path / "resnet50_l2_eps3.ckpt")
    ticket = load_checkpoint(tmp_path / "resnet50_l2_eps3.ckpt")
    assert ticket.arch == "resnet18" and ticket.provenance.stages[-1].details["arch_from"] == "parameter names and shapes"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "mobilenet_l2_eps3.ckpt")
    with pytest.raises(EdgeticketError, match="its name says mobilenet_v2") as error:
        load_checkpoint(tmp_path / "mobilenet_l2_eps3.ckpt")
    assert "--arch mobilenet_v2" in error.value.hint


def test_ambiguous_file_lists_the_candidates(small_checkpoint, monkeypatch):
    from edgeticket.models.archs import ARCHS
    monkeypatch.setitem(ARCHS._entries, "small_resnet_twin", ARCHS.get("small_resnet"))
    with pytest.raises(EdgeticketError, match="small_resnet, small_resnet_twin") as error:
        load_checkpoint(small_checkpoint)
    assert "--arch small_resnet" in error.value.hint
    assert load_checkpoint(small_checkpoint, "small_resnet_twin").arch == "small_resnet_twin"


RELEASE = ([f"{a}_l2_eps{e}.ckpt" for a in ("resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4")
            for e in (0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 3, 5)]
           + [f"{a}_linf_eps{e}.ckpt" for a in ("resnet18", "resnet50", "wide_resnet50_2")
              for e in ("0.5", "1.0", "2.0", "4.0", "8.0")]
           + [f"{a}_l2_eps{e}.ckpt" for a in ("densenet", "mnasnet", "mobilenet", "resnext50_32x4d", "shufflenet",
                                                "vgg16_bn") for e in (0, 3)])
RELEASED_AS = {"densenet": "densenet161", "mnasnet": "mnasnet1_0", "mobilenet": "mobilenet_v2",
               "shufflenet": "shufflenet_v2_x1_0"}


@pytest.mark.parametrize("name", RELEASE)
def test_every_release_file_name_gives_arch_and_threat(name):
    family, norm, eps = re.fullmatch(r"(.+)_(l2|linf)_eps([\d.]+)\.ckpt", name).groups()
    assert arch_from_file_name(name) == RELEASED_AS.get(family, family)
    kind, threat = source_kind_from_name(name)
    assert (kind, threat) == (("natural", None) if float(eps) == 0 else
                              ("robust", f"{norm}:{float(eps):g}" + ("/255" if norm == "linf" else "")))


def test_names_outside_the_release_say_nothing():
    assert arch_from_file_name("resnet18.pt") is None
    assert arch_from_file_name("alexnet_l2_eps3.ckpt") is None  # released, not registered: keys decide
    assert arch_from_file_name("my_mobilenet_l2_eps3.ckpt") is None


def robustbench_layout(model, mean, std):
    """RobustBench's ImageNet zoo: `normalize_model` wraps the net as Sequential(normalize, model), its
    ImageNormalizer holding mean and std as (1, 3, 1, 1) buffers (robustbench/model_zoo/architectures/utils_architectures.py)."""
    class ImageNormalizer(torch.nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.as_tensor(std).view(1, 3, 1, 1))

        def forward(self, x):
            return (x - self.mean) / self.std
    return torch.nn.Sequential(OrderedDict([("normalize", ImageNormalizer(mean, std)), ("model", model)]))


@pytest.mark.parametrize("wrapped", [False, True])
def test_robustbench_layout_keeps_its_normalizer(resnet18, tmp_path, wrapped):
    reference = robustbench_layout(resnet18, (0.4, 0.45, 0.5), (0.2, 0.22, 0.24)).eval()
    state = reference.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrapped else state,
               tmp_path / "Salman2020Do_R18.pt")
    ticket = load_checkpoint(tmp_path / "Salman2020Do_R18.pt")  # no --arch: the keys and shapes say resnet18
    assert ticket.arch == "resnet18" and ticket.provenance.source_format == "robustbench"
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ticket.deployable()(x), reference(x), atol=1e-5)
        plain = Normalized(ticket.build_model(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
        assert not torch.allclose(plain(x), reference(x), atol=1e-3)  # the normalizer matters on this input


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
                                            ("resnet50_l2_eps3.safetensors", ("robust", "l2:3")),
                                            ("resnet50_l2_eps0.01 (1).ckpt", ("robust", "l2:0.01")),
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
