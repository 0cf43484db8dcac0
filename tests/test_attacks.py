import pytest
import torch
import torch.nn.functional as F

from edgeticket.attacks import AttackConfig, perturb, pgd
from edgeticket.errors import EdgeticketError
from edgeticket.models import get_model
from edgeticket.models.normalize import Normalized


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Normalized(get_model("small_resnet", num_classes=10, in_channels=1), (0.5,), (0.5,)).eval()


@pytest.mark.parametrize("spec", ["l2:1.0", "linf:8/255"])
def test_pgd_stays_in_the_ball_and_box_and_raises_the_loss(model, spec):
    torch.manual_seed(1)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    config = AttackConfig.parse(spec, steps=10)
    adv = pgd(model, images, labels, config)
    delta = (adv - images).flatten(1)
    size = delta.norm(dim=1) if config.kind == "l2" else delta.abs().max(1).values
    assert torch.all(size <= config.eps + 1e-5) and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), labels) > F.cross_entropy(model(images), labels)


def test_noise_and_none(model):
    images, labels = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    assert perturb(model, images, labels, AttackConfig.parse("none")) is images
    noisy = perturb(model, images, labels, AttackConfig.parse("noise:0.25"))
    assert 0.2 < (noisy - images).std() < 0.3


@pytest.mark.parametrize("spec", ["l3:1", "linf", "l2:abc", "l2:-1"])
def test_bad_threat_models_are_refused(spec):
    with pytest.raises(EdgeticketError):
        AttackConfig.parse(spec)


def test_linf_fraction_parses():
    assert AttackConfig.parse("linf:8/255").eps == pytest.approx(8 / 255)
