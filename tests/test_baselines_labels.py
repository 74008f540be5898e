"""Random Labels and SalUn: the labels, the saliency mask, the updates against hand
computations, and SalUn's frozen weights staying bit-identical under momentum and
weight decay."""

from __future__ import annotations

import copy

import numpy as np
import torch

import dmm.baselines as B
from dmm.baselines.random_labels import random_wrong_labels
from tests.test_baselines_common import (
    assert_model,
    ce,
    grad,
    indices,
    plain,
    tiny_problem,
)

LR, WD = 0.5, 0.1


def test_random_labels_are_wrong_uniform_and_only_on_the_forget_set():
    n, c = 3000, 4
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(0))
    forget = np.zeros((2, n), dtype=bool)
    forget[0, :2000] = True
    forget[1, 1000:] = True
    lab = random_wrong_labels(y, forget, [5, 6], epochs=2, n_classes=c)
    assert lab.shape == (2, 2, n)
    for k in range(2):
        f = torch.from_numpy(forget[k])
        assert torch.equal(lab[0, k, ~f], y[~f])
        assert (lab[:, k, f] != y[f]).all()
        shift = (lab[0, k, f] - y[f]) % c  # uniform over 1..c-1
        freq = torch.bincount(shift, minlength=c)[1:].float() / f.sum()
        assert (freq - 1 / (c - 1)).abs().max() < 0.04
    assert not torch.equal(lab[0], lab[1])  # redrawn every epoch
    assert not torch.equal(lab[0, 0, 1000:2000], lab[0, 1, 1000:2000])  # per model


def _rl_step(problem, k, model, labels, lr, wd, mask=None):
    """One hand step of random-label SGD on F ∪ R (first step: no momentum history)."""
    everything = indices(problem.trained[k])
    g = grad(model, ce(model, problem.task, everything, labels[everything]))
    with torch.no_grad():
        for i, (p, gi) in enumerate(zip(model.parameters(), g, strict=True)):
            step = lr * (gi + wd * p)
            p -= step if mask is None else step * mask[i]


def test_random_labels_one_step():
    problem = tiny_problem()
    r = B.RandomLabels(lr=LR, epochs=1, batch_size=16, weight_decay=WD)(problem)
    labels = random_wrong_labels(problem.task.data.y_train, problem.forget, problem.keys, 1,
                                 problem.task.data.n_classes, "random-labels/labels")[0]
    for k in range(2):
        m0 = plain(problem, k)
        m = copy.deepcopy(m0)
        _rl_step(problem, k, m, labels[k], LR, WD)
        assert_model(r.ensemble, k, m, m0)


def _hand_mask(problem, k, gamma):
    m = plain(problem, k)
    g = grad(m, ce(m, problem.task, indices(problem.forget[k])))
    flat = torch.cat([gi.abs().reshape(-1) for gi in g])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.argsort(descending=True)[: int(gamma * len(flat))]] = True
    out, start = [], 0
    for gi in g:
        out.append(keep[start:start + gi.numel()].view_as(gi))
        start += gi.numel()
    return out


def test_salun_mask_is_the_top_gamma_saliency_per_model():
    problem = tiny_problem()
    gamma = 0.3
    masks = B.SalUn(gamma=gamma, batch_size=2).mask(problem, copy.deepcopy(problem.originals))
    for k in range(2):
        want = _hand_mask(problem, k, gamma)
        got = [m[k] for m in masks]  # vectorised: each mask tensor is [K, ...]
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
        assert sum(int(a.sum()) for a in got) == int(gamma * sum(a.numel() for a in got))


def test_salun_one_step_updates_only_the_mask():
    problem = tiny_problem()
    gamma = 0.5
    r = B.SalUn(gamma=gamma, lr=LR, epochs=1, batch_size=16, weight_decay=WD)(problem)
    labels = random_wrong_labels(problem.task.data.y_train, problem.forget, problem.keys, 1,
                                 problem.task.data.n_classes, "salun/labels")[0]
    for k in range(2):
        m0 = plain(problem, k)
        m = copy.deepcopy(m0)
        _rl_step(problem, k, m, labels[k], LR, WD, _hand_mask(problem, k, gamma))
        assert_model(r.ensemble, k, m, m0)


def test_salun_frozen_weights_stay_bit_identical_under_momentum_and_weight_decay():
    problem = tiny_problem()
    salun = B.SalUn(gamma=0.4, lr=0.3, epochs=4, batch_size=3, momentum=0.9, weight_decay=0.5)
    masks = salun.mask(problem, copy.deepcopy(problem.originals))
    r = salun(problem)
    before = list(problem.originals.parameters())
    after = list(r.ensemble.parameters())
    frozen = moved = 0
    for m, b, a in zip(masks, before, after, strict=True):
        assert torch.equal(a[~m], b.detach()[~m])  # bit-identical
        frozen += int((~m).sum())
        moved += int(((a - b).abs() > 1e-6)[m].sum())
    assert frozen > 0 and moved > 0.9 * sum(int(m.sum()) for m in masks)
