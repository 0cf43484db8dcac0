"""timm's models through `--arch timm:NAME` (the optional `edgeticket[timm]` extra; CI installs it): random
weights, pruned by channel through torch-pruning, their checkpoints read with timm's own normalization."""

import numpy as np
import pytest
import torch

from edgeticket.errors import EdgeticketError
from edgeticket.export import export_onnx
from edgeticket.export.onnx import open_session, run_onnx
from edgeticket.models import get_arch, get_model
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket

timm = pytest.importorskip("timm")

# inception_v3 needs at least 75 pixels
TIMM = [("resnet50", 64), ("mobilenetv3_large_100", 64), ("efficientnet_b0", 64), ("inception_v3", 96)]


def timm_ticket(name: str, size: int) -> Ticket:
    torch.manual_seed(0)
    spec = get_arch(f"timm:{name}")
    model = get_model(f"timm:{name}", num_classes=10)
    for module in model.modules():  # a trained model's scale: timm's inception_v3 inits convs at std 0.1, whose
        if isinstance(module, torch.nn.Conv2d):  # logits of ~1e3 leave fp32 ONNX parity 2e-6 relative, past 1e-6
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return Ticket(f"timm:{name}", {"num_classes": 10, "in_channels": 3}, model.state_dict(), (3, size, size),
                  spec.mean, spec.std, [str(i) for i in range(10)])


@pytest.mark.slow
@pytest.mark.parametrize("name, size", TIMM)
def test_timm_channel_ticket_reloads_exports_and_shrinks(name, size, tmp_path):
    ticket, report = draw_ticket(timm_ticket(name, size), DrawConfig("omp", "channel", 0.5))
    assert report.after.macs < 0.45 * report.before.macs
    ticket.save(tmp_path / "t.ticket")
    reloaded = Ticket.load(tmp_path / "t.ticket")  # weights_only; rebuilt through timm.create_model
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        expected = reloaded.deployable()(x).numpy()
        assert np.array_equal(expected, ticket.deployable()(x).numpy())
    export_onnx(reloaded, tmp_path / "t.onnx")
    assert np.abs(run_onnx(open_session(tmp_path / "t.onnx"), x.numpy()) - expected).max() < 1e-4
    assert reloaded.build_model().get_submodule(get_arch(ticket.arch).classifier).out_features == 10


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_takes_the_pretrained_config(suffix, tmp_path):
    """inception_v3.tf_adv_in1k (adversarially trained) normalizes with 0.5/0.5 at 299: timm's config, not ImageNet's."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = timm.create_model("inception_v3.tf_adv_in1k", pretrained=False, num_classes=7).eval()
    path = tmp_path / f"model{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(model.state_dict(), path)
    ticket = load_checkpoint(path, "timm:inception_v3.tf_adv_in1k")
    assert ticket.mean == (0.5, 0.5, 0.5) and ticket.std == (0.5, 0.5, 0.5)
    assert ticket.input_size == (3, 299, 299) and ticket.num_classes == 7
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(ticket.build_model()(x), model(x))


def test_timm_names_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(EdgeticketError, match="unknown timm model 'resnet5O'") as error:
        get_arch("timm:resnet5O")
    assert "resnet50" in error.value.hint
    with pytest.raises(EdgeticketError, match="Invalid pretrained tag") as error:
        get_arch("timm:resnet50.bogus")
    assert "resnet50.a1_in1k" in error.value.hint
    with pytest.raises(EdgeticketError, match="no single first conv and classifier"):
        get_arch("timm:deit_tiny_distilled_patch16_224")  # two heads: ('head', 'head_dist')
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(EdgeticketError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "bad.safetensors", "timm:resnet50")
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "timm" else real_import(name, *a, **k))
    with pytest.raises(EdgeticketError, match="need timm") as error:
        get_arch("timm:mobilenetv3_small_100")  # not built before in this process (specs are cached)
    assert "edgeticket[timm]" in error.value.hint
