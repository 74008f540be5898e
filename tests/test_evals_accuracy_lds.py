"""Accuracy (one model and fleets, per split) and the linear datamodeling score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmm.evals import accuracy, accuracy_by_split, lds, spearman_per_target


def test_accuracy_one_model_by_hand():
    logits = np.array([[2.0, 1.0], [0.0, 1.0], [5.0, -1.0], [0.2, 0.1]])
    labels = np.array([0, 0, 0, 1])
    assert accuracy(logits, labels) == pytest.approx(0.5)  # points 0 and 2 correct
    assert isinstance(accuracy(logits, labels), float)


def test_accuracy_fleet_and_splits_by_hand():
    labels = np.array([0, 1, 2, 1])
    eye = np.eye(3)
    model_a = eye[[0, 1, 2, 1]]  # all correct
    model_b = eye[[0, 0, 0, 0]]  # only point 0 correct
    fleet = np.stack([model_a, model_b])
    np.testing.assert_allclose(accuracy(torch.tensor(fleet), labels), [1.0, 0.25])
    splits = {"forget": [0, 1], "retain": np.array([False, False, True, True]), "none": []}
    out = accuracy_by_split(fleet, labels, splits)
    assert out["forget"] == {"mean": 0.75, "std": 0.25, "n_models": 2, "n_points": 2}
    assert out["retain"]["mean"] == pytest.approx(0.5)  # a: 1, b: 0
    assert out["none"]["mean"] is None
    single = accuracy_by_split(model_b, labels, {"all": [0, 1, 2, 3]})
    assert single["all"] == {"mean": 0.25, "std": 0.0, "n_models": 1, "n_points": 4}


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="models, points, classes"):
        accuracy(np.zeros((1, 2, 3, 4)), [0, 1, 2])


def test_lds_is_one_for_a_monotone_transform():
    rng = np.random.default_rng(0)
    actual = rng.normal(size=(50, 20))
    predicted = np.exp(actual) * 3 - 7  # strictly increasing per column
    result = lds(predicted, actual)
    assert result["lds"] == pytest.approx(1.0)
    assert result["n_skipped_constant"] == 0
    assert lds(-predicted, actual)["lds"] == pytest.approx(-1.0)


def test_lds_near_zero_for_independent_noise():
    rng = np.random.default_rng(1)
    m, t = 200, 100
    result = lds(rng.normal(size=(m, t)), rng.normal(size=(m, t)))
    # Each Spearman has s.d. about 1 / sqrt(m - 1); the mean of t of them, / sqrt(t).
    assert abs(result["lds"]) < 4 / math.sqrt((m - 1) * t)


def test_lds_matches_scipy_and_skips_constant_columns():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    actual = rng.normal(size=(30, 5))
    predicted = actual + rng.normal(size=(30, 5))
    predicted[:, 1] = np.round(predicted[:, 1])  # ties
    predicted[:, 3] = 2.0  # constant: no correlation
    rho = spearman_per_target(predicted, actual)
    for j in (0, 1, 2, 4):
        assert rho[j] == pytest.approx(spearmanr(predicted[:, j], actual[:, j]).statistic)
    assert np.isnan(rho[3])
    result = lds(predicted, actual)
    assert result["n_skipped_constant"] == 1 and result["n_targets_used"] == 4
    assert result["lds"] == pytest.approx(np.nanmean(rho))
    with pytest.raises(ValueError, match="same shape"):
        lds(predicted, actual[:, :4])
