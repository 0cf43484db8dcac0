"""The public API: `import edgeticket as et`, as a notebook user writes it."""

import subprocess
import sys

import torch

import edgeticket as et


def test_draws_leave_the_source_unchanged_and_record_one_draw_each(small_checkpoint):
    s = et.load(small_checkpoint, arch="small_resnet")
    before = (s.provenance.to_dict(), {k: v.clone() for k, v in s.state_dict.items()})
    a = et.draw(s, sparsity=0.5)
    b = et.draw(s, sparsity=0.8)
    assert s.provenance.to_dict() == before[0]
    assert all(torch.equal(v, before[1][k]) for k, v in s.state_dict.items())
    assert [st.stage for st in b.provenance.stages].count("draw") == 1 and b.provenance.sparsity == 0.8
    assert a.provenance.sparsity == 0.5 and a.build_model().conv1.out_channels > b.build_model().conv1.out_channels


def with_stem_input_sizes(run):
    """`run()`'s result, and the (H, W) of every image the 1-channel stem conv saw meanwhile: what the model was fed."""
    seen = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 1:
            seen.add(tuple(inputs[0].shape[-2:]))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        return run(), seen
    finally:
        handle.remove()


def test_finetune_follows_the_tickets_input_size(small_checkpoint, tmp_path):
    """Round two's pitfall: DataConfig('digits') gave 8x8 images to a 28x28 ticket, silently."""
    ticket = et.draw(et.load(small_checkpoint, arch="small_resnet"), sparsity=0.5)
    tuned, sizes = with_stem_input_sizes(lambda: et.finetune(ticket, "digits", subset=100, epochs=1,
                                                             output=tmp_path / "t.ticket"))
    assert sizes == {(28, 28)}
    assert tuned.input_size == (1, 28, 28) and tuned.provenance.target == "digits"
    assert 1 < tuned.provenance.stages[-1].details["test_accuracy"] <= 100  # a percentage, as eval and bench give
    assert et.Ticket.load(tmp_path / "t.ticket").provenance == tuned.provenance


def test_the_input_size_check_sees_the_old_pitfall(small_checkpoint, monkeypatch):
    """The check above fails when the data ignores the ticket's size (digits at their native 8x8)."""
    from edgeticket import api
    from edgeticket.data import DataConfig, load_dataset
    monkeypatch.setattr(api, "_splits", lambda name, ticket, root=None, subset=None, seed=0, image_size=None:
                        load_dataset(DataConfig(name, subset=subset, seed=seed, channels=1)))
    ticket = et.draw(et.load(small_checkpoint, arch="small_resnet"), sparsity=0.5)
    assert (8, 8) in with_stem_input_sizes(lambda: et.finetune(ticket, "digits", subset=100, epochs=1))[1]


def test_the_api_is_documented_and_lazy():
    for name in ("load", "pretrain", "draw", "finetune", "evaluate", "export", "bench", "sweep"):
        assert getattr(et, name).__doc__, name
    code = "import sys, edgeticket; assert 'torch' not in sys.modules; print(edgeticket.__version__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
