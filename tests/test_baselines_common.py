"""Baselines: shared helpers for their tests, the per-model views, registry and configs,
Do-nothing and divergence reporting. Tests of single methods live in the other
``test_baselines_*.py`` files and import the helpers from here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dmm.baselines as B
from dmm.baselines._common import per_model, rows, unrows
from dmm.config import CONFIG_DIR
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.recipe import Recipe
from dmm.tasks import Task, TaskData, TaskSpec
from dmm.tasks.models import ModelSpec
from dmm.unlearning.base import METHODS, Problem
from dmm.unlearning.configs import configured_method, grid_points, method_config
from dmm.unlearning.finetune import Schedule, epoch_steps, examples, stream
from dmm.unlearning.registry import method_class

BASELINES = ["ga", "gd", "neggrad-plus", "scrub", "random-labels", "salun", "l1-sparse", "ssd",
             "retrain", "do-nothing"]
N_TRAIN, DIM, CLASSES = 12, 3, 3
FORGET = [[0, 1, 2], [3, 4, 5, 6]]  # model 0 and model 1 forget different sets


# ---------------------------------------------------------------- helpers
def tiny_task(seed: int = 0, n: int = N_TRAIN) -> Task:
    """Random data, a 3-4-3 MLP, a 2-epoch recipe."""
    g = torch.Generator().manual_seed(seed)
    data = TaskData(torch.randn(n, DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g),
                    torch.randn(6, DIM, generator=g), torch.randint(0, CLASSES, (6,), generator=g),
                    CLASSES)
    spec = TaskSpec(model=ModelSpec("mlp", [4]),
                    recipe=Recipe(epochs=2, batch_size=4, lr=0.1, schedule="constant"))
    return Task("random", spec, data)


def tiny_problem(task: Task | None = None, forget: list[list[int]] = FORGET) -> Problem:
    """K = len(forget) models, model k forgetting ``forget[k]``."""
    task = task or tiny_task()
    k = len(forget)
    ens = Ensemble([task.build_model(100 + j) for j in range(k)])
    mask = np.zeros((k, task.data.n_train), dtype=bool)
    for j, rows_ in enumerate(forget):
        mask[j, rows_] = True
    return Problem(task, ens, mask, np.ones_like(mask), keys=[11 + j for j in range(k)],
                   device="cpu")


def plain(problem: Problem, k: int) -> nn.Module:
    """Model k of the originals as a separate, ordinary module."""
    m = problem.task.build_model()
    m.load_state_dict(problem.originals.model_state(k))
    return m


def ce(model: nn.Module, task: Task, idx: np.ndarray, labels: torch.Tensor | None = None
       ) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on training examples ``idx``."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    y = task.data.y_train[idx] if labels is None else labels
    return F.cross_entropy(model(task.data.x_train[idx]), y)


def grad(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


@torch.no_grad()
def sgd(model: nn.Module, g: list[torch.Tensor], lr: float, wd: float = 0.0) -> None:
    """One plain SGD step (first step of momentum SGD too): θ -= lr (g + wd θ)."""
    for p, gi in zip(model.parameters(), g, strict=True):
        p -= lr * (gi + wd * p)


def assert_model(ensemble: Ensemble, k: int, expected: nn.Module, moved_from: nn.Module) -> None:
    """Model k of ``ensemble`` equals ``expected``, which differs from ``moved_from``."""
    got = ensemble.model_state(k)
    want = expected.state_dict()
    before = moved_from.state_dict()
    assert sum(float((want[n] - before[n]).abs().sum()) for n in want) > 1e-4, "no update"
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)


def indices(mask_row: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask_row)


# ---------------------------------------------------------------- per-model views
def _bn_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("looped", [False, True])
def test_rows_unrows_and_per_model_in_both_ensemble_modes(looped):
    build = _bn_model if looped else (lambda s: tiny_task().build_model(s))
    ens = Ensemble([build(s) for s in range(3)])
    assert ens.vectorised is not looped
    ps = list(ens.parameters())
    flat = rows(ens, ps)
    assert flat.shape[0] == 3
    for k in range(3):  # row k is model k's weights, in state order
        state = ens.model_state(k)
        mine = torch.cat([state[n].reshape(-1) for n, _ in build(0).named_parameters()])
        torch.testing.assert_close(flat[k], mine)
    for a, b in zip(unrows(ens, flat, ps), ps, strict=True):
        assert torch.equal(a, b.detach())
    scaled = [p * s for p, s in zip(ps, per_model(ens, torch.tensor([0.0, 1.0, 2.0]), ps),
                                    strict=True)]
    r = rows(ens, scaled)
    assert torch.equal(r[0], torch.zeros_like(r[0]))
    torch.testing.assert_close(r[2], 2 * flat[2])


def test_schedule_and_example_counting():
    s = stream(np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=bool), [1, 2], 2, 2, salt=5)
    assert examples(s) == pytest.approx((3 + 1) * 2 / 2)
    sched = Schedule([("a", s, t, 0) for t in epoch_steps(s, 0)] + [("b", s, 2, 1)])
    assert len(sched) == 3 and sched.epoch_of == [0, 0, 1] and set(sched[2]) == {"b"}


# ---------------------------------------------------------------- registry and configs
def test_the_registry_knows_every_method_and_checks_hyperparameters():
    assert set(BASELINES) | {"dmm", "dm-direct", "om"} == set(METHODS)
    assert type(method_class("scrub")(lr=0.1)).__name__ == "SCRUB"
    with pytest.raises(DmmError, match="unknown method 'nope'"):
        method_class("nope")
    with pytest.raises(DmmError, match="no hyperparameter"):
        configured_method("ga", learning_rate=1.0)
    with pytest.raises(DmmError, match="optimizer"):
        configured_method("gd", optimizer="rmsprop")
    with pytest.raises(DmmError, match="positive"):
        configured_method("gd", lr=-1.0)


@pytest.mark.parametrize("name", BASELINES)
def test_every_shipped_config_loads_and_instantiates(name):
    defaults, grid = method_config(name)
    points = grid_points(grid)
    assert len(points) == int(np.prod([len(v) for v in grid.values()]))
    for p in points[:3] + points[-1:]:
        assert isinstance(configured_method(name, **p), METHODS[name])
    text = (CONFIG_DIR / "methods" / f"{name}.yaml").read_text()
    assert text.startswith("#")  # every config says where its numbers come from


def test_published_grids_ship_unchanged():
    for name in ("ga", "gd"):
        _, grid = method_config(name)
        assert grid == {"lr": [1e-5, 1e-3, 1e-2], "epochs": [1, 3, 5, 7, 10]}
    d, grid = method_config("scrub")
    assert grid == {"forget_batch_size": [32, 64], "msteps": [3, 5],
                    "lr": [5e-3, 1e-3, 5e-4, 5e-5], "epochs": [5, 7, 10]}
    assert d["batch_size"] == 64


def test_config_errors_are_clear(tmp_path):
    bad = {
        "typo.yaml": ("defaults:\n  lrr: 1\n", "no hyperparameter"),
        "section.yaml": ("grids:\n  lr: [1]\n", "unknown section"),
        "type.yaml": ("grid:\n  epochs: [1, x]\n", "expected int"),
        "scalar.yaml": ("grid:\n  epochs: 3\n", "non-empty list"),
    }
    for fname, (text, msg) in bad.items():
        (tmp_path / fname).write_text(text)
        with pytest.raises(DmmError, match=msg):
            method_config("ga", tmp_path / fname)
    (tmp_path / "ok.yaml").write_text("defaults:\n  lr: 1e-3\n")  # YAML 1.1 reads a string
    assert method_config("ga", tmp_path / "ok.yaml") == ({"lr": 1e-3}, {})
    with pytest.raises(DmmError, match="unknown method"):
        method_config("no_such_method")


def test_grid_points_is_the_cartesian_product():
    assert grid_points({}) == [{}]
    assert grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


# ---------------------------------------------------------------- do-nothing, divergence
def test_do_nothing_returns_the_originals():
    problem = tiny_problem()
    r = B.DoNothing()(problem)
    torch.testing.assert_close(r.logits, problem.originals.predict(problem.task.data.x_all))
    assert r.examples == 0 and r.compute_fraction == 0


def test_a_diverging_method_is_reported_not_raised():
    problem = tiny_problem()
    r = B.GradientAscent(lr=1e8, epochs=3, batch_size=2)(problem)
    assert r.diverged.tolist() == [True, True]


def test_methods_run_on_looped_ensembles_and_salun_still_freezes():
    """Models with BatchNorm buffers are looped, not vectorised; every fine-tuning or
    dampening baseline runs on them (Retrain rebuilds the task's own architecture)."""
    problem = tiny_problem()
    looped = Ensemble([nn.Sequential(nn.Linear(DIM, 4), nn.BatchNorm1d(4), nn.ReLU(),
                                     nn.Linear(4, CLASSES)) for _ in range(2)])
    assert not looped.vectorised
    problem = Problem(problem.task, looped, problem.forget, problem.trained, problem.keys,
                      device="cpu")
    for name in ("ga", "gd", "neggrad-plus", "scrub", "random-labels", "l1-sparse", "ssd"):
        r = configured_method(name, **({} if name == "ssd" else {"epochs": 1, "batch_size": 4}))
        assert torch.isfinite(r(problem).logits).all(), name
    salun = B.SalUn(gamma=0.3, lr=0.3, epochs=2, batch_size=4, weight_decay=0.5)
    masks = salun.mask(problem, copy.deepcopy(looped))
    assert [m.shape for m in masks] == [p.shape for p in looped.parameters()]
    per_model_tensors, per_model_weights = 6, 16 + 8 + 15
    for k in range(2):  # top-30% of each model's own weights
        mine = masks[k * per_model_tensors:(k + 1) * per_model_tensors]
        assert sum(int(m.sum()) for m in mine) == int(0.3 * per_model_weights)
    r = salun(problem)
    for m, b, a in zip(masks, looped.parameters(), r.ensemble.parameters(), strict=True):
        assert torch.equal(a[~m], b.detach()[~m])
