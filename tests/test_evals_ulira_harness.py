"""U-LiRA harness: per-model forget sets inside each shadow's half, IN/OUT from one fleet.

The statistics are checked with synthetic methods whose margins are known (a real
do-nothing vs retrain comparison needs well-trained models: scripts/noise_floor.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmm.errors import DmmError
from dmm.evals.ulira_harness import draw_forget_masks, run_ulira, ulira_from_margins
from dmm.fleet import train_fleet
from dmm.unlearning.base import Problem, Result
from dmm.unlearning.configs import configured_method

N_MODELS, N_TARGETS, FORGET, POOL = 24, 4, 30, 100


@pytest.fixture(scope="module")
def shadows(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ulira") / "shadows"
    return train_fleet(tiny, "datamodel", N_MODELS, out, seed=5, save_weights=True,
                       device="cpu", progress=False)


def synthetic(leak: bool, shift: float = 0.0, calls: list | None = None):
    """A 'method' whose margin at a training point is 3 if the model still knows it, else 0,
    plus per-model noise; ``leak``: forgotten points still count as known."""

    def method(problem: Problem) -> Result:
        if calls is not None:
            calls.append(problem)
        n_train, n_classes = problem.task.data.n_train, problem.task.data.n_classes
        labels = problem.task.data.y_all.numpy()
        known = problem.trained if leak else problem.retain
        rows = []
        for k, key in enumerate(problem.keys):
            noise = np.random.default_rng(key).normal(size=labels.size)
            margin = noise + shift
            margin[:n_train] += 3.0 * known[k]
            z = np.zeros((labels.size, n_classes))
            z[np.arange(labels.size), labels] = margin + np.log(n_classes - 1)
            rows.append(z)
        logits = torch.tensor(np.stack(rows), dtype=torch.float32)
        return Result("synthetic", {}, None, logits, 0.0, 0.0, 0.0,
                      np.zeros(problem.k, dtype=bool))

    return method


def test_forget_sets_lie_inside_each_half_and_the_pool(tiny, shadows):
    calls: list[Problem] = []
    report = run_ulira(tiny, synthetic(False, calls=calls), shadows, N_TARGETS, FORGET, seed=1,
                       pool=POOL)
    (problem,) = calls
    assert problem.k == N_MODELS and list(problem.keys) == shadows.keys
    assert np.array_equal(problem.trained, shadows.masks)
    assert (problem.forget.sum(1) == FORGET).all()
    assert not (problem.forget & ~problem.trained).any()
    assert len(np.unique(np.flatnonzero(problem.forget.any(0)))) <= POOL
    assert report["design"] == {"fleet": str(shadows.path), "n_models": N_MODELS,
                                "n_shadows": N_MODELS - N_TARGETS, "n_targets": N_TARGETS,
                                "forget_size": FORGET, "pool_size": POOL, "seed": 1}
    # IN trials: every (target, example it forgot) pair, less those on skipped examples
    assert 0.9 * N_TARGETS * FORGET <= report["n_trials_in"] <= N_TARGETS * FORGET
    # OUT trials: (target, pool example) pairs whose half never contained the example
    assert report["n_trials_out"] > 0 and report["n_examples_skipped"] < POOL // 4


def test_auc_half_when_forgotten_points_look_never_trained_and_high_when_they_leak(
        tiny, shadows):
    good = run_ulira(tiny, synthetic(False), shadows, N_TARGETS, FORGET, seed=1, pool=POOL)
    # A method that moves every model it touches: OUT models are unlearned models too, so
    # the shift is no membership signal.
    shifted = run_ulira(tiny, synthetic(False, shift=-2.0), shadows, N_TARGETS, FORGET,
                        seed=1, pool=POOL)
    leaky = run_ulira(tiny, synthetic(True), shadows, N_TARGETS, FORGET, seed=1, pool=POOL)
    assert abs(good["auc"] - 0.5) < 0.1 and abs(good["accuracy"] - 0.5) < 0.1
    assert abs(shifted["auc"] - 0.5) < 0.1
    assert leaky["auc"] > 0.9 and leaky["tpr_at_1pct_fpr"] > 0.1
    assert good["model_accuracy"]["forget"] < leaky["model_accuracy"]["forget"]


def test_chunked_unlearning_gives_the_same_attack(tiny, shadows):
    whole = run_ulira(tiny, synthetic(True), shadows, N_TARGETS, FORGET, seed=2, pool=POOL)
    chunked = run_ulira(tiny, synthetic(True), shadows, N_TARGETS, FORGET, seed=2, pool=POOL,
                        chunk=7)
    drop = ("seconds", "method_seconds")
    assert {k: v for k, v in whole.items() if k not in drop} == \
        {k: v for k, v in chunked.items() if k not in drop}


def test_a_real_method_runs_end_to_end(tiny, shadows):
    report = run_ulira(tiny, configured_method("do-nothing"), shadows, N_TARGETS, FORGET, pool=POOL)
    assert report["method"] == "do-nothing" and report["compute_fraction"] == 0.0
    assert report["attack"] == "U-LiRA" and 0.0 <= report["auc"] <= 1.0
    assert "never contained" in report["out_models"] and report["diverged_models"] == 0
    assert 0.0 < report["model_accuracy"]["validation"] <= 1.0


def test_margins_of_retained_examples_are_not_trials():
    rng = np.random.default_rng(0)
    m, p = 60, 40
    trained = rng.random((m, p)) < 0.5
    forget = trained & (rng.random((m, p)) < 0.5)
    margins = rng.normal(size=(m, p))
    margins[trained & ~forget] += 50.0  # kept examples: neither IN nor OUT
    targets = np.arange(m) >= 45
    fair = ulira_from_margins(margins, trained, forget, targets)
    assert abs(fair["auc"] - 0.5) < 0.1
    assert fair["n_trials_in"] == forget[targets].sum()
    assert fair["n_trials_out"] == (~trained[targets]).sum()
    margins[forget] += 3.0
    assert ulira_from_margins(margins, trained, forget, targets)["auc"] > 0.95


def test_bad_designs_are_refused(tiny, shadows, tmp_path):
    with pytest.raises(DmmError, match="n_targets"):
        run_ulira(tiny, synthetic(False), shadows, N_MODELS, FORGET, pool=POOL)
    with pytest.raises(DmmError, match="larger pool"):
        run_ulira(tiny, synthetic(False), shadows, N_TARGETS, FORGET, pool=FORGET)
    originals = train_fleet(tiny, "original", 6, tmp_path / "orig", device="cpu",
                            progress=False)
    with pytest.raises(DmmError, match="random halves"):
        run_ulira(tiny, synthetic(False), originals, 2, 5)
    with pytest.raises(DmmError, match="fewer than the forget size"):
        draw_forget_masks(np.zeros((2, 10), bool), np.arange(10), 1, np.random.default_rng(0))


def test_oracle_matching_gets_its_u_lira_from_oracles_of_each_shadow_half(tiny, shadows,
                                                                          tmp_path):
    """OM needs, for each shadow, an oracle trained on its half minus its forget set: the
    harness asks for exactly those masks, and OM's targets come from those models."""
    from dmm.fleet import FleetCache

    asked = []

    def oracles(masks):
        asked.append(masks.copy())
        return FleetCache(tmp_path, tiny, device="cpu", progress=False).get(
            "ulira_oracles", "subset", len(masks), seed=9, masks=masks)

    om = configured_method("om", epochs=1, batch_size=64)
    report = run_ulira(tiny, om, shadows, N_TARGETS, FORGET, pool=POOL, oracles=oracles)
    assert 0 <= report["auc"] <= 1 and report["method"] == "om"
    (masks,) = asked
    trained = np.asarray(shadows.masks)
    assert (masks <= trained).all() and ((trained & ~masks).sum(1) == FORGET).all()
    with pytest.raises(DmmError, match="needs oracles"):
        run_ulira(tiny, om, shadows, N_TARGETS, FORGET, pool=POOL)
