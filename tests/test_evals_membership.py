"""Membership tests: ROC helpers, U-LiRA, the 2023 competition score, loss threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dmm.evals import (
    balanced_accuracy_at,
    best_balanced_accuracy,
    competition_epsilon_points,
    competition_epsilons,
    competition_score,
    loss_threshold_attack,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    ulira,
)

# --------------------------------------------------------------------------- ROC helpers


def test_auc_by_hand_and_with_ties():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([1.0, 1.0], [1, 0]) == pytest.approx(0.5)  # a tie counts 1/2
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(scores, labels)
    assert roc_auc(scores, labels) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)


def test_tpr_at_fpr_and_accuracies_by_hand():
    scores = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    labels = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]  # 4 members, 6 non-members
    assert tpr_at_fpr(scores, labels, 0.0) == pytest.approx(0.5)
    assert tpr_at_fpr(scores, labels, 1 / 6) == pytest.approx(0.75)
    # Best: threshold 6 -> TPR 3/4, FPR 1/6 -> (0.75 + 5/6) / 2.
    acc, thr = best_balanced_accuracy(scores, labels)
    assert acc == pytest.approx((0.75 + 5 / 6) / 2)
    assert thr == 6
    # Fixed rule "score > 5.5": TPR 3/4, TNR 5/6; "score > 4.5" adds a non-member.
    assert balanced_accuracy_at(scores, labels, 5.5) == pytest.approx((0.75 + 5 / 6) / 2)
    assert balanced_accuracy_at(scores, labels, 4.5) == pytest.approx((0.75 + 4 / 6) / 2)
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([1.0, 2.0], [1, 1])


# --------------------------------------------------------------------------- U-LiRA


def synthetic_ulira(rng, shift, *, n_examples=200, n_shadow=64, n_target=20, sd=1.0):
    """Each example has its own OUT mean; unlearned-but-seen (IN) margins are shifted."""
    mu_out = rng.normal(0.0, 2.0, size=n_examples)
    mu_in = mu_out + shift
    u = rng.random((n_shadow, n_examples))
    shadow_in, shadow_out = u < 0.25, u >= 0.5  # the rest: retained, ignored
    shadow = np.where(shadow_in, mu_in, mu_out) + sd * rng.normal(size=u.shape)
    target_in = np.zeros((n_target, n_examples), bool)
    for p in range(n_examples):  # exactly half IN per example: a balanced design
        target_in[rng.permutation(n_target)[: n_target // 2], p] = True
    target_out = ~target_in
    target = np.where(target_in, mu_in, mu_out) + sd * rng.normal(size=target_in.shape)
    return shadow, shadow_in, shadow_out, target, target_in, target_out


def test_ulira_detects_shifted_in_distribution():
    result = ulira(*synthetic_ulira(np.random.default_rng(0), shift=1.0))
    # Known separation d = 1 gives an ideal AUC of Phi(1 / sqrt 2) = 0.76.
    assert result["auc"] > 0.7
    assert result["accuracy"] > 0.62
    assert result["accuracy_best_threshold"] >= result["accuracy"]
    assert result["tpr_at_1pct_fpr"] > 0.02
    assert result["n_trials_in"] == result["n_trials_out"] == 2000
    assert result["n_examples_skipped"] == 0
    json.dumps(result, allow_nan=False)


def test_ulira_identical_distributions_give_chance():
    result = ulira(*synthetic_ulira(np.random.default_rng(1), shift=0.0))
    n_in, n_out = result["n_trials_in"], result["n_trials_out"]
    sigma = math.sqrt((n_in + n_out + 1) / (12 * n_in * n_out))  # Mann-Whitney null s.d.
    assert abs(result["auc"] - 0.5) < 4 * sigma
    assert abs(result["accuracy"] - 0.5) < 4 * 0.5 / math.sqrt(n_in)
    assert result["tpr_at_1pct_fpr"] < 0.05


def test_ulira_skips_examples_without_enough_shadows():
    shadow, s_in, s_out, target, t_in, t_out = synthetic_ulira(np.random.default_rng(2), 1.0)
    s_in[:, :7] = False
    s_in[0, :7], s_out[0, :7] = True, False  # one IN shadow sample only
    result = ulira(shadow, s_in, s_out, target, t_in, t_out, min_shadow=2)
    assert result["n_examples_skipped"] == 7
    assert result["n_examples_used"] == 193
    assert result["n_trials_in"] == 193 * 10


def test_ulira_std_floor_and_fixed_variance():
    shadow, s_in, s_out, target, t_in, t_out = synthetic_ulira(np.random.default_rng(3), 1.0)
    shadow = np.where(s_in, 5.0, shadow)  # constant IN margins: fitted std 0, floored
    result = ulira(shadow, s_in, s_out, target, t_in, t_out, min_std=0.5)
    assert np.isfinite(result["auc"])
    pooled = ulira(*synthetic_ulira(np.random.default_rng(3), 1.0), fixed_variance=True)
    assert pooled["auc"] > 0.7


def test_ulira_rejects_overlapping_masks():
    shadow, s_in, s_out, target, t_in, t_out = synthetic_ulira(np.random.default_rng(4), 0.0)
    with pytest.raises(ValueError, match="target_in and target_out overlap"):
        ulira(shadow, s_in, s_out, target, t_in, t_in)
    with pytest.raises(ValueError, match="shadow_in and shadow_out overlap"):
        ulira(shadow, s_in, s_in, target, t_in, t_out)
    with pytest.raises(ValueError, match="same examples"):
        ulira(shadow, s_in, s_out, target[:, :10], t_in[:, :10], t_out[:, :10])


# --------------------------------------------------------------------------- competition


def test_epsilon_bucket_points_by_hand():
    # 100 models: buckets up to ceil(ln 99) = 5, i.e. 10 buckets of width 0.5.
    eps = [0.0, 0.49, 0.5, 0.7, 1.0, 4.9, 5.0, 50.0, math.inf]
    expected = [1.0, 1.0, 0.5, 0.5, 0.25, 2.0**-9, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(competition_epsilon_points(eps, 100), expected)
    # 4 models: ceil(ln 3) = 2 -> 4 buckets; 1.6 is in bucket [1.5, 2) -> 1/8.
    np.testing.assert_array_equal(competition_epsilon_points([1.6, 2.0], 4), [0.125, 0.0])
    with pytest.raises(ValueError, match="at least 3 models"):
        competition_epsilon_points([0.0], 2)


def test_epsilon_and_score_by_hand():
    retrained = np.array([[0.0, 1.0, 2.0, 3.0]]).T
    unlearned = np.array([[2.5, 3.5, 4.5, 5.5]]).T
    # Unlearned has the larger median. The best test with both error rates non-zero
    # (a zero rate with the other non-zero is dropped) has FPR = FNR = 1/4, e.g.
    # "unlearned iff c >= 2.7": eps = log((1 - 1e-5 - 1/4) / (1/4)) = ln(3 - 4e-5).
    eps = competition_epsilons(unlearned, retrained)
    assert eps[0] == pytest.approx(math.log(3 - 4e-5), rel=1e-12)
    result = competition_score(
        unlearned, retrained,
        retain_acc_unlearned=[0.85, 0.95], retain_acc_retrained=1.0,
        test_acc_unlearned=0.6, test_acc_retrained=0.8,
    )
    # 4 models -> bucket [1, 1.5) scores 1/4; ratios 0.9 and 0.75.
    assert result["forget_quality"] == pytest.approx(0.25)
    assert result["score"] == pytest.approx(0.25 * 0.9 * 0.75)
    json.dumps(result, allow_nan=False)


def test_competition_identical_high_separated_low():
    rng = np.random.default_rng(5)
    n, f = 100, 25
    retrained = rng.normal(size=(n, f))
    same = competition_epsilons(rng.normal(size=(n, f)), retrained)
    shifted = competition_epsilons(rng.normal(size=(n, f)) + 3.0, retrained)
    apart = competition_epsilons(rng.normal(size=(n, f)) + 20.0, retrained)
    q_same = competition_epsilon_points(same, n).mean()
    q_shifted = competition_epsilon_points(shifted, n).mean()
    assert q_same > 0.1
    assert q_shifted < 0.02 < q_same
    np.testing.assert_array_equal(apart, 50.0)  # perfectly separated: capped
    assert competition_epsilon_points(apart, n).sum() == 0.0
    assert np.median(same) < np.median(shifted)


def test_competition_peaky_unlearned_gets_the_cap():
    rng = np.random.default_rng(6)
    retrained = rng.normal(size=(50, 2))
    unlearned = 1e-4 * rng.normal(size=(50, 2))  # range < 1% of the retrained range
    np.testing.assert_array_equal(competition_epsilons(unlearned, retrained), 50.0)
    const = np.full((50, 1), 0.3)
    assert competition_epsilons(const, const.copy())[0] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        competition_epsilons(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)))


# --------------------------------------------------------------------------- loss threshold


def test_loss_threshold_attack_by_hand():
    result = loss_threshold_attack([0.1, 0.2, 0.5], [0.3, 0.4, 0.6, 0.7])
    # Member iff loss <= t. Pairs (forget < validation): 4 + 4 + 2 = 10 of 12.
    assert result["auc"] == pytest.approx(10 / 12)
    # t = 0.2: TPR 2/3, TNR 1 -> 5/6; t = 0.5: TPR 1, TNR 2/4 -> 3/4.
    assert result["accuracy_best_threshold"] == pytest.approx(5 / 6)
    assert result["loss_threshold"] == pytest.approx(0.2)


def test_loss_threshold_attack_null():
    rng = np.random.default_rng(7)
    result = loss_threshold_attack(rng.exponential(size=2000), rng.exponential(size=2000))
    sigma = math.sqrt(4001 / (12 * 2000 * 2000))
    assert abs(result["auc"] - 0.5) < 4 * sigma
