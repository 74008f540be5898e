"""KLoM (DESIGN.md section 5): hand-computed cases, errors, summaries, speed."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from dmm.evals import KLOM_CAP, KLOM_DIRECTION, klom, klom_bin_edges, klom_summary


def col(*values: float) -> np.ndarray:
    """One evaluation point: N samples as an [N, 1] array."""
    return np.asarray(values, dtype=float)[:, None]


def reference_klom(oracle: np.ndarray, unlearned: np.ndarray) -> np.ndarray:
    """Slow per-point KLoM with np.histogram, written straight from the definition."""
    out = []
    for a, b in zip(np.clip(oracle, -100, 100).T, np.clip(unlearned, -100, 100).T, strict=True):
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        rng = (lo, hi) if hi > lo else (lo, lo + 20.0)  # width 1 when degenerate
        p = np.histogram(a, bins=20, range=rng)[0] / a.size
        q = np.histogram(b, bins=20, range=rng)[0] / b.size
        q = np.where((p > 0) & (q == 0), 1e-5, q)
        q = q / q.sum()
        m = p > 0
        out.append(float((p[m] * np.log(p[m] / q[m])).sum()))
    return np.asarray(out)


def test_identical_samples_give_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 30))
    np.testing.assert_allclose(klom(x, x.copy()), 0.0, atol=1e-12)
    # Same multiset in another order: same histogram, still 0.
    np.testing.assert_allclose(klom(x, x[::-1]), 0.0, atol=1e-12)


def test_disjoint_single_bins_give_the_cap():
    # Oracle all in bin 0, unlearned all in bin 19: p = (1, 0..), q = (0.., 1)
    # -> q_0 := 1e-5, renormalised 1e-5 / (1 + 1e-5); KL = ln(1e5 + 1).
    value = klom(col(0, 0, 0, 0), col(1, 1, 1, 1))[0]
    assert value == pytest.approx(math.log(1e5 + 1), rel=1e-12)
    assert value == pytest.approx(KLOM_CAP, abs=1e-4)


def test_disjoint_two_oracle_bins():
    # Joint range [0, 5], width 0.25: oracle in bins 0 and 4 (p = 1/2 each), unlearned
    # in bin 19. Both oracle bins get q = 1e-5, total 1 + 2e-5 before renormalising:
    # KL = 2 * 0.5 * ln(0.5 * (1 + 2e-5) / 1e-5) = ln(5e4 + 1).
    value = klom(col(0, 0, 1, 1), col(5, 5, 5, 5))[0]
    assert value == pytest.approx(math.log(5e4 + 1), rel=1e-12)


def test_direction_matters_on_an_asymmetric_case():
    oracle, unlearned = col(0, 0, 1, 1), col(0, 0, 0, 1)
    # Bins 0 and 19 only. p = (1/2, 1/2), q = (3/4, 1/4).
    forward = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = 0.5 ln(4/3)
    backward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert klom(oracle, unlearned)[0] == pytest.approx(forward, rel=1e-12)
    assert klom(unlearned, oracle)[0] == pytest.approx(backward, rel=1e-12)
    assert abs(forward - backward) > 0.01
    # The reverse direction is KL(unlearned || oracle), oracles still given first.
    assert klom(oracle, unlearned, "unlearned||oracle")[0] == pytest.approx(backward, rel=1e-12)


def test_reverse_direction_floors_empty_oracle_bins():
    # Unlearned in bins 0 and 19, oracle only in bin 0: in KL(u || o) the empty oracle bin
    # gets 1e-5, renormalised: p_o = (1, 1e-5) / (1 + 1e-5), q_u = (1/2, 1/2).
    oracle, unlearned = col(0, 0, 0, 0), col(0, 0, 1, 1)
    p0, p1 = 1 / (1 + 1e-5), 1e-5 / (1 + 1e-5)
    want = 0.5 * math.log(0.5 / p0) + 0.5 * math.log(0.5 / p1)
    assert klom(oracle, unlearned, "unlearned||oracle")[0] == pytest.approx(want, rel=1e-12)
    # The forward direction sees nothing missing: every oracle bin has unlearned mass.
    assert klom(oracle, unlearned)[0] == pytest.approx(math.log(2), rel=1e-12)
    with pytest.raises(ValueError, match="direction"):
        klom(oracle, unlearned, "both")


def test_a_wider_unlearned_fleet_is_flagged_by_the_strict_direction_only():
    """Same means, unlearned margins spread 1.3x wider: KL(unlearned || oracle) flags it,
    KL(oracle || unlearned) barely moves (measured against two oracle fleets' noise)."""
    rng = np.random.default_rng(0)
    n, points = 100, 2000
    mean = rng.normal(scale=3.0, size=points)
    oracle, oracle_2, base = (mean + rng.normal(size=(n, points)) for _ in range(3))
    wider = mean + 1.3 * (base - mean)
    p95 = {d: {name: np.percentile(klom(oracle, other, d), 95)
               for name, other in (("floor", oracle_2), ("wider", wider))}
           for d in ("oracle||unlearned", "unlearned||oracle")}
    fwd, rev = p95["oracle||unlearned"], p95["unlearned||oracle"]
    assert rev["wider"] > 1.5 * rev["floor"]
    assert fwd["wider"] < 1.25 * fwd["floor"]
    assert rev["wider"] / rev["floor"] > fwd["wider"] / fwd["floor"] + 0.3


def test_sample_at_joint_maximum_is_counted():
    # The oracle's single sample at 1.0 is the joint maximum. Counted in bin 19,
    # p = (3/4, 1/4) and q = (1, 0) -> q_19 := 1e-5, renormalised by 1 + 1e-5.
    # Dropping it would leave p = q = (1) and KLoM = 0.
    expected = 0.75 * math.log(0.75 * (1 + 1e-5)) + 0.25 * math.log(0.25 * (1 + 1e-5) / 1e-5)
    value = klom(col(0, 0, 0, 1), col(0, 0, 0, 0))[0]
    assert value == pytest.approx(expected, rel=1e-12)
    assert value > 2.0


def test_degenerate_range_gives_zero():
    # Every point has all 2N samples equal (different values across points).
    x = np.tile(np.array([[3.7, -2.0, 0.0, 100.0]]), (10, 1))
    np.testing.assert_array_equal(klom(x, x.copy()), 0.0)
    np.testing.assert_array_equal(klom_bin_edges(x, x)[:, 1] - klom_bin_edges(x, x)[:, 0], 1.0)


def test_margins_are_clipped_to_100():
    # 150 and 200 both clip to 100: identical samples.
    assert klom(col(150, 150, 150), col(200, 200, 200))[0] == 0.0
    # 50 vs 200 (clipped to 100) stay apart: the cap.
    assert klom(col(50, 50, 50), col(200, 200, 200))[0] == pytest.approx(math.log(1e5 + 1))


def test_vectorised_matches_per_point_histograms():
    rng = np.random.default_rng(1)
    oracle = rng.normal(size=(40, 300)) * rng.uniform(0.1, 5, size=300)
    unlearned = oracle[::-1] * 1.3 + rng.normal(size=(40, 300))
    unlearned[:, :10] = oracle[:, :10]  # identical columns
    unlearned[:, 10:20] = 500.0  # beyond the clip
    oracle[:, 20:25] = 2.5  # oracle side constant
    values = klom(oracle, unlearned)
    np.testing.assert_allclose(values, reference_klom(oracle, unlearned), rtol=1e-12, atol=1e-12)
    assert values.shape == (300,)
    assert (values >= -1e-12).all() and (values <= math.log(1e5 + 19) + 1e-9).all()


def test_accepts_torch_tensors():
    oracle, unlearned = col(0, 0, 1, 1), col(0, 0, 0, 1)
    value = klom(torch.tensor(oracle, dtype=torch.float32), torch.tensor(unlearned))
    assert value[0] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


@pytest.mark.parametrize(
    ("oracle", "unlearned", "message"),
    [
        (np.zeros((5, 3)), np.zeros((4, 3)), "same number of models"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "same points"),
        (np.zeros(5), np.zeros(5), "2 dimensions"),
        (np.zeros((2, 5, 3)), np.zeros((2, 5, 3)), "2 dimensions"),
        (np.array([[0.0, np.nan]]), np.zeros((1, 2)), "NaN or infinite"),
        (np.zeros((1, 2)), np.array([[np.inf, 0.0]]), "NaN or infinite"),
    ],
)
def test_bad_input_raises_value_error(oracle, unlearned, message):
    with pytest.raises(ValueError, match=message):
        klom(oracle, unlearned)


def test_summary_by_split():
    values = np.arange(300, dtype=float)
    splits = {
        "forget": np.arange(0, 100),
        "retain": np.arange(100, 200),
        "validation": np.arange(300) >= 200,  # a boolean mask over all 300 points
    }
    s = klom_summary(values, splits)
    assert s["direction"] == KLOM_DIRECTION == "KL(oracle || unlearned)"
    # np.percentile (linear): the 95th percentile of 0..99 is 94.05.
    assert s["splits"]["forget"]["p95"] == pytest.approx(94.05)
    assert s["splits"]["forget"]["p99"] == pytest.approx(98.01)
    assert s["splits"]["retain"]["mean"] == pytest.approx(149.5)
    assert s["splits"]["validation"]["n_points"] == 100
    assert s["mean_p95"] == pytest.approx((94.05 + 194.05 + 294.05) / 3)
    json.dumps(s, allow_nan=False)


def test_summary_without_all_three_splits_has_no_mean():
    s = klom_summary(np.ones(4), {"forget": [0, 1], "retain": []})
    assert s["mean_p95"] is None
    assert s["splits"]["retain"]["p95"] is None
    with pytest.raises(ValueError, match="indices must lie"):
        klom_summary(np.ones(4), {"forget": [7]})


def test_speed_100_vs_100_models_on_1797_points():
    rng = np.random.default_rng(2)
    oracle = rng.normal(size=(100, 1797))
    unlearned = rng.normal(size=(100, 1797)) + 0.2
    klom(oracle, unlearned)  # warm up
    start = time.perf_counter()
    values = klom(oracle, unlearned)
    elapsed = time.perf_counter() - start
    print(f"KLoM 100 vs 100 models, 1797 points: {elapsed * 1000:.1f} ms")
    assert values.shape == (1797,)
    assert elapsed < 1.0
