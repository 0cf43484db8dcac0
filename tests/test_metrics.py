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
