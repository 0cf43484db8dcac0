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


@pytest.mark.parametrize("spec", ["l2:1.0", "linf:8/255"])
def test_pgd_leaves_every_submodule_in_its_own_mode(model, spec):
    """The defect of round two: restoring only the wrapper's mode left the whole network in eval mode."""
    model.eval()
    model.model.train()
    model.model.layer2.eval()         # mixed modes, as `finetune --mode last-k` makes them
    model.model.layer3[0].bn1.eval()
    before = {name: m.training for name, m in model.named_modules()}
    pgd(model, torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), AttackConfig.parse(spec, steps=2))
    assert {name: m.training for name, m in model.named_modules()} == before


def test_pgd_itself_does_not_move_batchnorm_statistics(model):
    model.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd(model, torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), AttackConfig.parse("l2:1.0", steps=2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def madry_pgd(model, images, labels, kind, eps, alpha, steps):
    """Madry et al. (2018), eq. 2, without random start, written out as the paper states it:
    x <- clip_[0,1]( Proj_{||x - x0|| <= eps}( x + alpha * sign(grad) | grad / ||grad||_2 ) )."""
    x = images.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
        with torch.no_grad():
            if kind == "linf":
                x = torch.min(torch.max(x + alpha * grad.sign(), images - eps), images + eps)
            else:
                norms = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x = x + alpha * grad / norms
                delta = x - images
                delta_norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x = images + delta * torch.clamp(eps / delta_norms, max=1.0)
            x = x.clamp(0, 1)
    return x.detach()


@pytest.mark.parametrize("kind, eps, alpha", [("linf", 8 / 255, 2 / 255), ("l2", 1.0, 0.25), ("l2", 0.1, 0.2)])
def test_pgd_equals_madry_reference_loop(model, kind, eps, alpha):
    torch.manual_seed(2)
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    config = AttackConfig(kind, eps, steps=7, step_size=alpha, random_start=False)
    ours = pgd(model, images, labels, config)
    reference = madry_pgd(model, images, labels, kind, eps, alpha, 7)
    assert (ours - images).abs().max() > eps / 4  # the attack moved: the comparison is not of two no-ops
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
