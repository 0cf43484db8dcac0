import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from edgeticket import attacks
from edgeticket.attacks import AttackConfig
from edgeticket.data import DataConfig, load_dataset
from edgeticket.errors import EdgeticketError
from edgeticket.models.checkpoints import load_checkpoint
from edgeticket.tickets import DrawConfig, Ticket, draw_ticket
from edgeticket.train import TrainConfig, finetune, fit, replace_head, state_file


@pytest.fixture
def source(small_checkpoint):
    return load_checkpoint(small_checkpoint, "small_resnet")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", subset=128, image_size=28, channels=1))


def test_masks_stay_exactly_zero_after_finetune(source, digits):
    ticket, _ = draw_ticket(source, DrawConfig(pattern="unstructured", sparsity=0.7))
    trained, history = finetune(ticket, digits, TrainConfig(epochs=2, lr=0.05))
    weights = dict(trained.build_model().named_parameters())
    for name, mask in trained.masks.items():
        assert torch.all(weights[name][~mask] == 0) and torch.any(weights[name][mask] != 0)
    assert trained.provenance.stages[-1].stage == "finetune" and len(history) == 2


def test_channel_ticket_stays_small_with_new_head(source, digits):
    ticket, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.5))
    trained, _ = finetune(ticket, digits, TrainConfig(epochs=1))
    model = trained.build_model()
    assert model.layer4[0].conv2.out_channels == 64 and model.fc.in_features == 64


def assert_exactly_the_trained_parts_move(source, digits, mode, changed, attack):
    """BatchNorm statistics move in every block that trains, adversarially too, and stay bit-identical elsewhere.
    Without the closing re-estimation (batchnorm_images=0), so only training itself can move them."""
    before = source.build_model().state_dict()
    config = TrainConfig(epochs=1, lr=0.1, mode=mode, attack=AttackConfig.parse(attack, steps=1), batchnorm_images=0)
    trained, _ = finetune(source, digits, config)
    after = trained.build_model().state_dict()
    moved = {k.split(".")[0] for k in before if k.split(".")[0] != "fc" and not torch.equal(before[k], after[k])}
    assert moved == changed
    statistics = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for key in statistics:
        assert torch.equal(before[key], after[key]) != (key.split(".")[0] in changed), key


WHOLE = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}


@pytest.mark.parametrize("attack", ["none", "l2:1.0", "linf:8/255", "noise:0.25"])
@pytest.mark.parametrize("mode, changed", [("whole", WHOLE), ("linear", set()), ("last-k:1", {"layer4"})])
def test_exactly_the_trained_parts_move(source, digits, mode, changed, attack):
    assert_exactly_the_trained_parts_move(source, digits, mode, changed, attack)


@contextmanager
def eval_mode_that_freezes_batchnorm(model):
    """The old defect in attacks.eval_mode: only the wrapper's own mode came back, so a training network inside
    an eval-mode wrapper stayed in eval mode and adversarial training never updated BatchNorm statistics."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def test_the_batchnorm_checks_fail_on_the_old_attack_defect(source, digits, monkeypatch):
    monkeypatch.setattr(attacks, "eval_mode", eval_mode_that_freezes_batchnorm)
    with pytest.raises(AssertionError):
        assert_exactly_the_trained_parts_move(source, digits, "whole", WHOLE, "l2:1.0")
    with pytest.raises(AssertionError):
        assert_robust_pretraining_trains_batchnorm(digits)


def test_resume_state_must_match(source, digits, tmp_path):
    fit(source, digits.train, TrainConfig(epochs=1), tmp_path / "s.resume")
    with pytest.raises(EdgeticketError, match="different run"):
        fit(source, digits.train, TrainConfig(epochs=1, lr=0.5), tmp_path / "s.resume")


def finetune_args(ticket, output):
    return ["finetune", str(ticket), "--data", "digits", "--subset", "300", "--epochs", "8", "--adv", "noise:0.1",
            "--seed", "3", "-o", str(output), "--quiet"]


@pytest.mark.slow
def test_kill_9_then_rerun_equals_uninterrupted(source, tmp_path, launcher):
    """The three runs are forked from the fork server (tests/forkserver.py): a process of its own, the imports
    done."""
    source.save(tmp_path / "src.ticket")
    folder = tmp_path / "run"
    assert launcher.run(finetune_args(tmp_path / "src.ticket", tmp_path / "full.ticket"), folder).code == 0
    output = tmp_path / "resumed.ticket"
    saved = lambda: state_file(output).exists() and torch.load(state_file(output), weights_only=True)["epoch"] >= 3
    killed = launcher.run(finetune_args(tmp_path / "src.ticket", output), folder, signal.SIGKILL, after=saved,
                          poll=0.05)
    saved_epoch = torch.load(state_file(output), weights_only=True)["epoch"]
    assert killed.code == -signal.SIGKILL and not output.exists() and 3 <= saved_epoch < 8, \
        "killed before the run could finish"
    assert launcher.run(finetune_args(tmp_path / "src.ticket", output), folder).code == 0
    full, resumed = Ticket.load(tmp_path / "full.ticket"), Ticket.load(output)
    assert all(torch.equal(full.state_dict[k], resumed.state_dict[k]) for k in full.state_dict)
    assert not state_file(output).exists()


DDP_TOLERANCE = 1e-5  # linear mode: frozen BN, so 2 x 32 images give the gradient of the same 64; only float order differs


@pytest.mark.slow
def test_two_gloo_processes_match_one(source, tmp_path, launcher):
    """The single process is forked from the fork server (tests/forkserver.py); torchrun starts the two."""
    source.save(tmp_path / "src.ticket")
    args = ["finetune", str(tmp_path / "src.ticket"), "--data", "digits", "--subset", "256", "--mode", "linear",
            "--epochs", "3", "--lr", "0.1", "--device", "cpu", "--quiet"]
    one = launcher.run([*args, "-o", str(tmp_path / "one.ticket")], tmp_path / "run")
    assert one.code == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "edgeticket", *args, "-o", str(tmp_path / "two.ticket")], check=True, env=env,
                   capture_output=True)
    one, two = Ticket.load(tmp_path / "one.ticket"), Ticket.load(tmp_path / "two.ticket")
    untrained = replace_head(source, [str(i) for i in range(10)], seed=0)
    assert not torch.allclose(one.state_dict["fc.weight"], untrained.state_dict["fc.weight"], atol=1e-3)
    for key in one.state_dict:
        assert torch.allclose(one.state_dict[key].float(), two.state_dict[key].float(), atol=DDP_TOLERANCE), key


def test_pretraining_from_scratch_is_reproducible(digits):
    from edgeticket.train import pretrain
    first, second = (pretrain("small_resnet", digits, TrainConfig(epochs=1, lr=0.05, seed=3))[0] for _ in range(2))
    torch.manual_seed(12345)  # whatever the global generator holds, the seed decides
    third = pretrain("small_resnet", digits, TrainConfig(epochs=1, lr=0.05, seed=3))[0]
    other = pretrain("small_resnet", digits, TrainConfig(epochs=1, lr=0.05, seed=4))[0]
    for name, value in first.state_dict.items():
        assert torch.equal(value, second.state_dict[name]) and torch.equal(value, third.state_dict[name]), name
    assert not torch.equal(first.state_dict["conv1.weight"], other.state_dict["conv1.weight"])


def assert_robust_pretraining_trains_batchnorm(digits):
    """Without the closing re-estimation (batchnorm_images=0), so only adversarial training can move them."""
    from edgeticket.train import pretrain
    source, _ = pretrain("small_resnet", digits, TrainConfig(epochs=1, lr=0.05, attack=AttackConfig.parse("l2:1.0"),
                                                             batchnorm_images=0))
    tracked = [v for k, v in source.state_dict.items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) > 0 for v in tracked)
    means = [v for k, v in source.state_dict.items() if k.endswith("running_mean")]
    assert all(v.abs().sum() > 0 for v in means)


def test_robust_pretraining_trains_batchnorm(digits):
    assert_robust_pretraining_trains_batchnorm(digits)


def test_eval_mode_accuracy_tracks_train_mode_after_finetune_of_a_robust_ticket(digits):
    """Round two's symptom: a robust ticket finetuned to 66% in train mode scored 12% in eval mode."""
    from edgeticket.metrics import accuracy, predict
    from edgeticket.train import pretrain
    source, _ = pretrain("small_resnet", digits, TrainConfig(epochs=2, lr=0.05, attack=AttackConfig.parse("l2:1.0")))
    ticket, _ = draw_ticket(source, DrawConfig(pattern="channel", sparsity=0.5))
    trained, history = finetune(ticket, digits, TrainConfig(epochs=5, lr=0.05))
    eval_accuracy = accuracy(predict(trained.deployable(), digits.train), digits.train.labels)
    assert history[-1].accuracy > 30  # percent, as every accuracy edgeticket reports
    assert abs(100 * eval_accuracy - history[-1].accuracy) < 20, (eval_accuracy, history[-1].accuracy)
