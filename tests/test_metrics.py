import math

import numpy as np
import pytest
import torch

from edgeticket.metrics import (accuracy, expected_calibration_error, frechet_distance, negative_log_likelihood,
                                ood_roc_auc)


def test_perfectly_calibrated_has_zero_ece():
    probs = torch.tensor([[0.7, 0.3]] * 10)
    labels = torch.tensor([0] * 7 + [1] * 3)  # 70% right at 70% confidence
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-6)


def test_overconfident_ece_is_the_gap():
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1])  # 75% right at 0.9, 50% right at 0.6
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.15 + 0.5 * 0.10)


def test_nll_of_uniform_logits_is_log_k():
    assert negative_log_likelihood(torch.zeros(5, 4), torch.arange(5) % 4) == pytest.approx(math.log(4))


def test_accuracy():
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_roc_auc_by_hand():
    # in-distribution 0.9, 0.4; OOD 0.5, 0.1: of the 4 (in, out) pairs, 3 are ordered right
    assert ood_roc_auc(np.array([0.9, 0.4]), np.array([0.5, 0.1])) == pytest.approx(0.75)


def test_frechet_of_a_gaussian_to_itself_and_a_shift():
    samples = np.random.default_rng(0).normal(size=(2000, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(samples, samples) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(samples, samples + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)


def test_frechet_distance_of_dead_units_is_finite_and_quiet(recwarn):
    rng = np.random.default_rng(0)
    a, b = rng.random((50, 8)), rng.random((60, 8)) + 0.5
    a[:, 0] = b[:, 0] = 0.0  # a dead ReLU unit: singular covariances
    distance = frechet_distance(a, b)
    assert np.isfinite(distance) and distance > 7 * 0.25 * 0.9  # the mean shift of the 7 live units alone
    assert not [w for w in recwarn if "singular" in str(w.message).lower()]


# --- differential tests: each metric against a maintained library or the paper's formula by hand ---

def random_predictions(seed: int, count: int = 500, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, classes, generator=generator) * 3
    labels = torch.where(torch.rand(count, generator=generator) < 0.6, logits.argmax(1),
                         torch.randint(0, classes, (count,), generator=generator))
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_equals_guo_et_al_binned_sum(seed):
    """ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over 15 equal-width bins [k/15, (k+1)/15), by hand."""
    logits, labels = random_predictions(seed)
    confidence, predicted = logits.softmax(1).max(1)
    expected = 0.0
    for k in range(15):
        inside = [i for i in range(len(labels)) if k / 15 <= confidence[i] < (k + 1) / 15]
        if inside:
            accuracy_bin = sum(int(predicted[i] == labels[i]) for i in inside) / len(inside)
            confidence_bin = sum(float(confidence[i]) for i in inside) / len(inside)
            expected += len(inside) / len(labels) * abs(accuracy_bin - confidence_bin)
    assert expected > 0.01  # a miscalibrated case, so a zero or constant answer fails
    assert expected_calibration_error(logits.softmax(1), labels) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_nll_equals_log_softmax_by_hand(seed):
    logits, labels = random_predictions(seed)
    log_probs = logits.double() - torch.logsumexp(logits.double(), dim=1, keepdim=True)
    assert negative_log_likelihood(logits, labels) == pytest.approx(float(-log_probs[torch.arange(500), labels].mean()),
                                                                    rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_auc_equals_the_mann_whitney_count(seed):
    """AUC = P(score_in > score_out) + P(tie) / 2 over all pairs (Hanley & McNeil), counted pair by pair."""
    rng = np.random.default_rng(seed)
    inside, outside = rng.random(120).round(2), (rng.random(90) * 0.8).round(2)  # rounding makes ties
    pairs = inside[:, None] - outside[None, :]
    assert ood_roc_auc(inside, outside) == pytest.approx(float((pairs > 0).mean() + 0.5 * (pairs == 0).mean()))


class FeaturesAsTheyAre(torch.nn.Module):
    """torchmetrics' FID with an identity feature extractor compares the features we give it."""
    num_features = 6

    def forward(self, x):
        return x


@pytest.mark.parametrize("seed", [0, 1])
def test_frechet_distance_equals_torchmetrics_fid(seed):
    from torchmetrics.image.fid import FrechetInceptionDistance
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.7
    fid = FrechetInceptionDistance(feature=FeaturesAsTheyAre(), normalize=False).double()
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b), real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_a_constant_predictor_is_flagged_at_chance_and_a_real_one_is_not():
    from edgeticket.metrics import table_row
    labels = torch.arange(600) % 10
    constant = torch.zeros(600, 10)
    constant[:, 1] = 5.0  # predicts class 1 for everything: 10% right
    assert table_row(constant, labels).at_chance
    informed = torch.nn.functional.one_hot(labels, 10).float() * 3
    informed[:200] = constant[:200]  # right on 2/3 of the images
    assert not table_row(informed, labels).at_chance
