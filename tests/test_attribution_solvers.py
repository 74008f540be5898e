"""Ridge and lasso datamodel solvers recover planted linear datamodels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dmm.attribution.datamodels import fit_datamodels, split_models
from dmm.attribution.lasso import fista_lasso, lasso_path
from dmm.attribution.ridge import lambda_grid, ridge_fit, ridge_path
from dmm.errors import DmmError
from dmm.fleet import Fleet


def planted(m: int, n: int, n_out: int, nonzero: int, noise: float, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random-half masks [m, n], a sparse beta [n, n_out] and outputs b + (X - 1/2) beta + e."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(m, n, generator=g) < 0.5).float()
    beta = torch.zeros(n, n_out)
    for o in range(n_out):
        rows = torch.randperm(n, generator=g)[:nonzero]
        beta[rows, o] = torch.randn(nonzero, generator=g).sign() * (0.5 + torch.rand(nonzero,
                                                                                     generator=g))
    y = 3.0 + (x - 0.5) @ beta + noise * torch.randn(m, n_out, generator=g)
    return x, beta, y


def fake_fleet(x: torch.Tensor, y: torch.Tensor, n_val: int, n_classes: int) -> Fleet:
    """A datamodel fleet in memory: outputs y [m, (n + n_val) * n_classes]."""
    m, n = x.shape
    n_points = n + n_val
    manifest = {"kind": "datamodel", "n_train": n, "seed": 0, "alpha": 0.5}
    labels = np.arange(n_points) % n_classes
    return Fleet(Path("synthetic"), manifest, x.numpy().astype(bool),
                 y.reshape(m, n_points, n_classes).numpy(), labels)


def test_fista_matches_sklearn_lasso():
    from sklearn.linear_model import Lasso

    x, _, y = planted(200, 30, 3, 4, 0.3)
    xc, yc = x - x.mean(0), y - y.mean(0)
    m = len(xc)
    gram, cov = (xc.T @ xc / m).double(), (xc.T @ yc / m).double()
    lam = torch.tensor([0.02, 0.05, 0.1], dtype=torch.float64)
    ours, _ = fista_lasso(gram, cov, lam, max_iter=5000, tol=1e-10)
    for o in range(3):
        ref = Lasso(alpha=float(lam[o]), fit_intercept=False, tol=1e-12, max_iter=100000)
        ref.fit(xc.double().numpy(), yc[:, o].double().numpy())
        np.testing.assert_allclose(ours[:, o].numpy(), ref.coef_, atol=1e-5)


def test_fista_first_step_is_a_proximal_gradient_step_by_hand():
    """From b0 (momentum starts at 0): b1 = S(b0 - (G b0 - c) / L, lam / L), S the soft
    threshold, computed here elementwise with plain Python floats."""
    gram = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    cov = torch.tensor([[1.0, -0.2], [0.3, 0.9]], dtype=torch.float64)
    lam = torch.tensor([0.4, 0.1], dtype=torch.float64)
    b0 = torch.tensor([[0.1, 0.0], [-0.2, 0.5]], dtype=torch.float64)
    lip = 2.5
    b1, it = fista_lasso(gram, cov, lam, init=b0, lip=lip, max_iter=1)
    assert it == 1
    for i in range(2):
        for o in range(2):
            g = sum(float(gram[i, k]) * float(b0[k, o]) for k in range(2)) - float(cov[i, o])
            z, thr = float(b0[i, o]) - g / lip, float(lam[o]) / lip
            expected = (abs(z) - thr) * (1 if z > 0 else -1) if abs(z) > thr else 0.0
            assert abs(float(b1[i, o]) - expected) < 1e-12


def test_ridge_fit_matches_normal_equations():
    x, _, y = planted(50, 80, 4, 5, 0.3)  # m < n: the dual regime
    xc, yc = x - x.mean(0), y - y.mean(0)
    lam = torch.tensor([0.5, 2.0, 8.0, 30.0])
    fit = ridge_fit(xc, yc, lam)
    assert fit.basis.shape == (80, 50) and fit.coef.shape == (50, 4)
    beta = fit.basis @ fit.coef
    for o in range(4):
        a = xc.double().T @ xc.double() + lam[o].double() * torch.eye(80, dtype=torch.float64)
        ref = torch.linalg.solve(a, xc.double().T @ yc[:, o].double())
        torch.testing.assert_close(beta[:, o].double(), ref, atol=1e-4, rtol=1e-4)


def test_ridge_and_lasso_recover_planted_beta():
    x, beta, y = planted(800, 40, 90, 4, 0.2)
    fleet = fake_fleet(x, y, n_val=5, n_classes=2)
    for solver in ("ridge", "lasso"):
        attr = fit_datamodels(fleet, solver, holdout=0.2)
        est = attr.dense().reshape(40, 90)
        assert (est - beta).abs().max() < 0.15, solver
        assert abs(attr.info["heldout_slope"] - 1) < 0.1
        np.testing.assert_allclose(attr.intercept.reshape(-1), y.mean(0).numpy(), atol=1e-4)
    # Lasso finds the support: planted zeros stay (near) zero.
    assert est[beta == 0].abs().max() < 0.1 and (est[beta != 0].abs() > 0.3).all()


def test_lasso_beats_ridge_on_sparse_beta_with_few_models():
    x, beta, y = planted(250, 100, 210, 3, 0.3, seed=1)
    fleet = fake_fleet(x, y, n_val=5, n_classes=2)
    err = {s: (fit_datamodels(fleet, s, holdout=0.2).dense().reshape(100, 210) - beta)
           .pow(2).mean().item() for s in ("ridge", "lasso")}
    assert err["lasso"] < 0.5 * err["ridge"]


def test_path_selection_prefers_weak_regularisation_without_noise():
    x, _, y = planted(600, 30, 5, 10, 0.01)
    xc, yc = x - x.mean(0), y - y.mean(0)
    fit_i, val_i = split_models(600, 0.2)
    sel = ridge_path(xc[fit_i], yc[fit_i], xc[val_i], yc[val_i], lambda_grid(xc[fit_i]))
    assert (sel.choice <= 2).all()
    _, _, lsel = lasso_path(xc[fit_i], yc[fit_i], xc[val_i], yc[val_i])
    assert (lsel.choice == len(lsel.values) - 1).all()


def test_split_models_refuses_tiny_holdout():
    fit_i, val_i = split_models(100, 0.1)
    assert len(val_i) == 10 and not set(fit_i) & set(val_i) and len(fit_i) == 90
    with pytest.raises(DmmError, match="too few"):
        split_models(10, 0.1)


def test_fit_datamodels_refuses_non_datamodel_fleet():
    x, _, y = planted(50, 10, 22, 2, 0.1)
    fleet = fake_fleet(x, y, 1, 2)
    fleet.manifest["kind"] = "original"
    with pytest.raises(DmmError, match="datamodel fleet"):
        fit_datamodels(fleet, "ridge")
