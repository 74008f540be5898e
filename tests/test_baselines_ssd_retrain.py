"""SSD (importances and dampening against hand computations) and Retrain (full and
reduced budgets equal to training from scratch on the retain set)."""

from __future__ import annotations

import copy

import pytest
import torch

import dmm.baselines as B
from dmm.baselines._common import squared_grads
from dmm.baselines.retrain import reduced_recipe
from dmm.baselines.ssd import dampen
from dmm.recipe import model_key
from dmm.training import train_ensemble
from dmm.unlearning.finetune import salt, stream
from tests.test_baselines_common import ce, grad, indices, plain, tiny_problem


def test_dampen_formula():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    i_f = torch.tensor([5.0, 1.0, 0.0, 30.0])
    i_d = torch.tensor([1.0, 1.0, 0.0, 1.0])
    # selected where i_f > 2 i_d: entries 0 and 3; beta = min(0.5 * i_d / i_f, 1)
    out = dampen(w, i_f, i_d, alpha=2.0, lam=0.5)
    torch.testing.assert_close(out, torch.tensor([1.0 * 0.1, 2.0, 3.0, 4.0 / 60]))
    assert torch.equal(dampen(w, i_f, i_d, alpha=2.0, lam=100.0), w)  # beta capped at 1


def test_ssd_one_pass_matches_hand_computation():
    problem = tiny_problem()
    alpha, lam = 1.5, 0.5
    r = B.SSD(alpha=alpha, lam=lam, batch_size=16)(problem)  # one minibatch per pass
    changed = 0
    for k in range(2):
        m0 = plain(problem, k)
        i_f = [g ** 2 for g in grad(m0, ce(m0, problem.task, indices(problem.forget[k])))]
        i_d = [g ** 2 for g in grad(m0, ce(m0, problem.task, indices(problem.trained[k])))]
        m = copy.deepcopy(m0)
        with torch.no_grad():
            for p, f, d in zip(m.parameters(), i_f, i_d, strict=True):
                sel = f > alpha * d
                p[sel] *= torch.clamp(lam * d[sel] / f[sel], max=1.0)
                changed += int(sel.sum())
        got = r.ensemble.model_state(k)
        for name, v in m.state_dict().items():
            torch.testing.assert_close(got[name], v, rtol=1e-5, atol=1e-7)
    assert changed > 0
    assert r.examples == (3 + 12 + 4 + 12) / 2


def test_fisher_with_batch_one_is_the_mean_squared_per_example_gradient():
    problem = tiny_problem()
    data = stream(problem.forget, list(problem.keys), 1, 1, salt("test"))
    imp = squared_grads(problem, copy.deepcopy(problem.originals), data)
    for k in range(2):  # model 0 has 3 examples (and 1 padded step), model 1 has 4
        m = plain(problem, k)
        per_example = [grad(m, ce(m, problem.task, [i])) for i in indices(problem.forget[k])]
        for j, v in enumerate(imp):
            want = torch.stack([g[j] ** 2 for g in per_example]).mean(0)
            torch.testing.assert_close(v[k], want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_retrain_is_training_from_scratch_on_the_retain_set(fraction):
    problem = tiny_problem()
    r = B.Retrain(fraction=fraction)(problem)
    recipe = reduced_recipe(problem.task.recipe, fraction)
    assert recipe.epochs == round(2 * fraction)
    keys = [model_key(k, salt("retrain")) for k in problem.keys]
    want = train_ensemble(problem.task, keys, problem.retain, recipe, "cpu")
    for name, v in want.stacked_state().items():
        assert torch.equal(r.ensemble.stacked_state()[name], v)
    assert r.compute_fraction == pytest.approx(fraction)
    # Fresh models: not the originals' initialisation.
    fresh = plain(problem, 0)
    assert not torch.equal(r.ensemble.model_state(0)["1.weight"], fresh.state_dict()["1.weight"])


def test_reduced_recipe_compresses_the_schedule():
    base = tiny_problem().task.recipe
    half = reduced_recipe(base, 0.5)
    assert half.epochs == 1 and half.peak_epoch == pytest.approx(base.peak_epoch * 0.5)
    assert reduced_recipe(base, 0.01).epochs == 1  # at least one epoch
    with pytest.raises(ValueError):
        reduced_recipe(base, 0.0)
