"""GA, GD, NegGrad+ and l1-sparse: updates against hand computations from the definitions.

Two models forget different sets; each model's update must be its own (no interaction).
Full-batch streams make each epoch exactly one step, so the order of examples is moot.
"""

from __future__ import annotations

import copy

import torch

import dmm.baselines as B
from tests.test_baselines_common import (
    assert_model,
    ce,
    grad,
    indices,
    plain,
    sgd,
    tiny_problem,
)

LR = 0.5


def test_gradient_ascent_one_step():
    problem = tiny_problem()
    r = B.GradientAscent(lr=LR, epochs=1, batch_size=16)(problem)
    for k in range(2):
        m0 = plain(problem, k)
        m = copy.deepcopy(m0)
        sgd(m, grad(m, -ce(m, problem.task, indices(problem.forget[k]))), LR)
        assert_model(r.ensemble, k, m, m0)
    assert r.examples == (3 + 4) / 2


def test_gradient_descent_two_steps_with_momentum_and_weight_decay():
    problem = tiny_problem()
    mu, wd = 0.9, 0.1
    r = B.GradientDescent(lr=LR, epochs=2, batch_size=16, momentum=mu, weight_decay=wd)(problem)
    for k in range(2):
        m0 = plain(problem, k)
        m = copy.deepcopy(m0)
        retain = indices(problem.retain[k])
        buf = None
        for _ in range(2):
            g = grad(m, ce(m, problem.task, retain))
            with torch.no_grad():
                d = [gi + wd * p for gi, p in zip(g, m.parameters(), strict=True)]
                buf = d if buf is None else [mu * b + di for b, di in zip(buf, d, strict=True)]
                for p, b in zip(m.parameters(), buf, strict=True):
                    p -= LR * b
        assert_model(r.ensemble, k, m, m0)


def test_neggrad_plus_one_step():
    problem = tiny_problem()
    alpha, wd = 0.7, 5e-4
    r = B.NegGradPlus(alpha=alpha, lr=LR, epochs=1, batch_size=16, forget_batch_size=16,
                      weight_decay=wd)(problem)
    for k in range(2):
        m0 = plain(problem, k)
        m = copy.deepcopy(m0)
        loss = (alpha * ce(m, problem.task, indices(problem.retain[k]))
                - (1 - alpha) * ce(m, problem.task, indices(problem.forget[k])))
        sgd(m, grad(m, loss), LR, wd)
        assert_model(r.ensemble, k, m, m0)


def test_neggrad_plus_cycles_the_forget_set_over_the_retain_epoch():
    problem = tiny_problem()
    r = B.NegGradPlus(lr=1e-3, epochs=2, batch_size=2, forget_batch_size=2)(problem)
    # Retain sets of 9 and 8, batch 2: 5 steps an epoch, 10 in all, each retain example
    # twice. Forget sets of 3 and 4 take 2 steps a pass: 5 passes in 10 steps.
    assert r.examples == (2 * 9 + 2 * 8 + 5 * 3 + 5 * 4) / 2


def test_l1_sparse_two_steps_with_linearly_decaying_gamma():
    problem = tiny_problem()
    gamma = 0.05
    r = B.L1Sparse(gamma=gamma, lr=LR, epochs=2, batch_size=16, momentum=0.0,
                   weight_decay=0.0)(problem)
    for k in range(2):
        m0 = plain(problem, k)
        m = copy.deepcopy(m0)
        for epoch in range(2):
            g_t = gamma * (1 - epoch / 2)  # gamma_0 = gamma, gamma_1 = gamma / 2
            l1 = sum(p.abs().sum() for p in m.parameters())
            sgd(m, grad(m, ce(m, problem.task, indices(problem.retain[k])) + g_t * l1), LR)
        assert_model(r.ensemble, k, m, m0)
