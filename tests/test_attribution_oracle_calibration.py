"""The oracle backend and the fitted scales (TRAK units, DM-Direct s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dmm.attribution.calibration import fit_scale_on_oracles, fit_units
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.oracle import OraclePredictor
from dmm.errors import DmmError
from dmm.fleet import Fleet

N, P, C = 20, 26, 3


def oracle_fleet(forget: list[int], models: int, offset: float) -> Fleet:
    logits = np.zeros((models, P, C), dtype=np.float32)
    logits[:] = offset + np.arange(models)[:, None, None]  # model j's logits are offset + j
    manifest = {"kind": "oracle", "n_train": N, "forget": forget, "fingerprint": "abc"}
    masks = np.ones((models, N), dtype=bool)
    masks[:, forget] = False
    return Fleet(Path(f"oracle{offset}"), manifest, masks, logits, np.zeros(P, dtype=np.int64))


def test_oracle_returns_distinct_models_of_the_matching_fleet():
    a, b = oracle_fleet([1, 2], 3, 0.0), oracle_fleet([5], 2, 100.0)
    oracle = OraclePredictor([a, b])
    z = torch.zeros(4, P, C)
    out = oracle.predict(z, [np.array([1, 2]), np.array([5]), np.array([1, 2]), np.array([5])],
                         points=[0, 3])
    assert out.shape == (4, 2, C)
    assert out[:, 0, 0].tolist() == [0.0, 100.0, 1.0, 101.0]
    with pytest.raises(DmmError, match="no oracle fleet"):
        oracle.predict(z, [7])
    with pytest.raises(DmmError, match="fewer than requested"):
        oracle.predict(torch.zeros(3, P, C), [5])


def test_oracle_refuses_other_fleet_kinds():
    f = oracle_fleet([1], 2, 0.0)
    f.manifest["kind"] = "datamodel"
    with pytest.raises(DmmError, match="not an oracle fleet"):
        OraclePredictor(f)


def linear(seed: int = 0) -> LinearAttribution:
    rng = np.random.default_rng(seed)
    return LinearAttribution(rng.normal(size=(P, C)).astype(np.float32),
                             np.full(N, 0.5, dtype=np.float32),
                             rng.normal(size=(N, P, C)).astype(np.float32))


def test_scale_on_oracles_recovers_planted_scale():
    attr = linear()
    rng = np.random.default_rng(1)
    originals = rng.normal(size=(50, P, C)).astype(np.float32)
    calibration = []
    for forget in ([0, 3, 4], [7, 8, 9, 10]):
        effect = attr.rows(forget).sum(0).numpy()
        # Oracles: the originals' mean shifted by -0.7 * effect, plus a per-point constant
        # (softmax ignores it, so must the fit) and noise.
        shift = -0.7 * effect + rng.normal(size=(P, 1)) * 5
        oracles = originals.mean(0) + shift + 0.05 * rng.normal(size=(40, P, C))
        calibration.append((np.array(forget), oracles.astype(np.float32)))
    s, per_set = fit_scale_on_oracles(attr, originals, calibration)
    assert abs(s - 0.7) < 0.02
    assert [p["size"] for p in per_set] == [3, 4]
    assert all(abs(p["scale"] - 0.7) < 0.05 for p in per_set)


def test_units_recover_planted_factor():
    attr = linear()
    rng = np.random.default_rng(2)
    masks = rng.random((200, N)) < 0.5
    truth = attr.predict_subset(masks.astype(np.float32)).numpy()
    b = attr.intercept
    logits = b + 2.5 * (truth - b) + 0.1 * rng.normal(size=truth.shape)
    assert abs(fit_units(attr, masks, logits.astype(np.float32)) - 2.5) < 0.05
    rescaled = attr.rescaled(2.5)
    np.testing.assert_allclose(rescaled.coef, 2.5 * np.asarray(attr.coef), rtol=1e-6)


def test_scale_needs_calibration_sets():
    with pytest.raises(DmmError, match="no calibration"):
        fit_scale_on_oracles(linear(), np.zeros((2, P, C)), [])


def test_splits_partition_all_points():
    from dmm.evals import Splits

    s = Splits.of(np.array([3, 1]), 6, 9)
    assert s["forget"].tolist() == [1, 3] and s.retain.tolist() == [0, 2, 4, 5]
    assert s["validation"].tolist() == [6, 7, 8] and list(s) == ["forget", "retain", "validation"]
    assert dict(s).keys() == {"forget", "retain", "validation"}


def test_scale_from_fleets_checks_kinds():
    from dmm.attribution.calibration import fit_scale_from_fleets

    oracle = oracle_fleet([1], 3, 0.0)
    with pytest.raises(DmmError, match="not an original fleet"):
        fit_scale_from_fleets(linear(), oracle, [oracle])


def test_perfect_mean_shift_moves_each_mean_margin_exactly_and_keeps_the_spread():
    from dmm.evals import margins
    from dmm.studies.references import perfect_mean_shift

    rng = np.random.default_rng(0)
    originals = rng.normal(size=(5, 4, 3)).astype(np.float32)
    oracles = rng.normal(size=(7, 4, 3)).astype(np.float32) + 1.0
    labels = np.array([0, 2, 1, 1])
    shifted = perfect_mean_shift(originals, oracles, labels)
    m0, m1, mo = margins(originals, labels), margins(shifted, labels), margins(oracles, labels)
    np.testing.assert_allclose(m1.mean(0), mo.mean(0), atol=1e-5)
    # one shift per point: every model moves by the same amount, so the spread is unchanged
    np.testing.assert_allclose(m1 - m0, np.broadcast_to((mo.mean(0) - m0.mean(0)), m0.shape),
                               atol=1e-5)
    other = np.ones_like(originals, dtype=bool)
    other[:, np.arange(4), labels] = False
    np.testing.assert_array_equal(shifted[other], originals[other])  # only true-class logits
    assert not np.shares_memory(shifted, originals)
