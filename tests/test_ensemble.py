"""The vectorised ensemble behaves exactly like K separate models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dmm.ensemble import Ensemble, plain_layers


def _mlps(k: int) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(k)]


def test_vectorised_forward_matches_each_model():
    models = _mlps(3)
    ens = Ensemble(models)
    assert ens.vectorised and len(ens) == 3
    x = torch.randn(3, 5, 4)
    expected = torch.stack([m(x[k]) for k, m in enumerate(models)])
    torch.testing.assert_close(ens(x), expected)
    shared = torch.randn(5, 4)
    torch.testing.assert_close(ens.forward_shared(shared), torch.stack([m(shared) for m in models]))


def test_sgd_step_on_stacked_params_equals_separate_optimisers():
    """Momentum and weight decay are element-wise and the loss is a sum over models,
    so one optimiser over the stacked parameters is K independent optimisers."""
    models = _mlps(2)
    ens = Ensemble(copy.deepcopy(models))
    x, y = torch.randn(2, 6, 4), torch.randint(0, 3, (2, 6))
    opt = torch.optim.SGD(ens.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
            for m in models]
    for _ in range(3):
        losses = nn.functional.cross_entropy(ens(x).flatten(0, 1), y.flatten(), reduction="none")
        opt.zero_grad()
        losses.view(2, 6).mean(1).sum().backward()
        opt.step()
        for k, (m, o) in enumerate(zip(models, opts, strict=True)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x[k]), y[k]).backward()
            o.step()
    for k, m in enumerate(models):
        for name, v in m.state_dict().items():
            torch.testing.assert_close(ens.stacked_state()[name][k], v)


def test_batchnorm_models_fall_back_to_a_loop():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)) for _ in range(2)]
    ens = Ensemble(models)
    assert not ens.vectorised
    x = torch.randn(2, 5, 4)
    out = ens(x)  # updates each model's own running statistics
    assert out.shape == (2, 5, 3)
    state = ens.stacked_state()
    assert state["1.running_mean"].shape == (2, 8)
    assert not torch.equal(state["1.running_mean"][0], state["1.running_mean"][1])


def test_stacked_state_round_trip_and_select():
    models = _mlps(3)
    ens = Ensemble(models)
    build = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))  # noqa: E731
    again = Ensemble.from_stacked(build, ens.stacked_state())
    x = torch.randn(7, 4)
    torch.testing.assert_close(again.predict(x), ens.predict(x))
    sub = ens.select([2, 0], build)
    torch.testing.assert_close(sub.predict(x), ens.predict(x)[[2, 0]])
    assert set(ens.model_state(1)) == set(models[1].state_dict())


def _cnns(k: int) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 3, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)) for _ in range(k)]


@pytest.mark.parametrize("build", [_mlps, _cnns])
def test_plain_path_matches_each_model_with_gradients(build):
    """The batched-matmul / grouped-convolution path of plain nets (no vmap) gives each
    model's own logits and parameter gradients, for per-model and shared inputs."""
    models = build(3)
    ens = Ensemble(copy.deepcopy(models))
    assert ens._plain is not None
    shape = (5, 4) if build is _mlps else (5, 2, 8, 6)
    x, shared = torch.randn(3, *shape), torch.randn(*shape)
    torch.testing.assert_close(ens(x), torch.stack([m(x[k]) for k, m in enumerate(models)]))
    torch.testing.assert_close(ens.forward_shared(shared),
                               torch.stack([m(shared) for m in models]))
    ens(x).square().sum().backward()
    for k, m in enumerate(models):
        m(x[k]).square().sum().backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(ens.stacked.get_parameter(name).grad[k], p.grad)


def test_other_nets_keep_vmap():
    assert Ensemble([nn.Sequential(nn.Linear(4, 3), nn.Tanh())])._plain is None
    assert Ensemble([nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten())])._plain is None


def test_nets_the_plain_path_cannot_compute_keep_vmap():
    """A Linear on unflattened inputs (it acts on the last axis), a Linear straight after a
    convolution, and a model with a hook are computed as each model computes them."""
    torch.manual_seed(0)
    before_flatten = [nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Flatten(), nn.Linear(20, 3))
                      for _ in range(2)]
    ens = Ensemble(copy.deepcopy(before_flatten))
    x = torch.randn(7, 5, 6)
    torch.testing.assert_close(ens.forward_shared(x), torch.stack([m(x) for m in before_flatten]))
    flat = torch.randn(7, 6)
    mlp = [nn.Sequential(nn.Linear(6, 3)) for _ in range(2)]
    torch.testing.assert_close(Ensemble(copy.deepcopy(mlp)).forward_shared(flat),
                               torch.stack([m(flat) for m in mlp]))
    assert plain_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 2))) is None
    hooked = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    hooked[1].register_forward_hook(lambda _m, _i, out: out * 0)
    assert plain_layers(hooked) is None
    torch.testing.assert_close(Ensemble([hooked]).forward_shared(torch.randn(3, 4)),
                               torch.zeros(1, 3, 2))
