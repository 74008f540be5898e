"""Fitting regression datamodels on a datamodel fleet (random-half subset models).

The fleet's models are split once: ``holdout`` of them choose each output's
regularisation along a path fitted on the rest (ridge or lasso); the chosen strengths
are then refitted on all models. Masks are centred (mask_mean) and outputs too: the
intercept b(x) is the fleet's mean logit. Targets are all points (train and validation)
and every class logit: beta is [n_train, points, classes].
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from dmm.attribution.lasso import DEFAULT_RATIOS as LASSO_RATIOS
from dmm.attribution.lasso import lasso_path, lasso_refit
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.quality import margin_lds
from dmm.attribution.ridge import DEFAULT_RATIOS as RIDGE_RATIOS
from dmm.attribution.ridge import PathSelection, lambda_grid, ridge_fit, ridge_path
from dmm.errors import DmmError
from dmm.fleet import Fleet

Solver = Literal["lasso", "ridge"]


def split_models(n_models: int, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of model indices into (fit, held-out)."""
    n_val = int(round(holdout * n_models))
    if not 3 <= n_val <= n_models - 3:
        raise DmmError(f"holdout {holdout} of {n_models} models leaves too few on a side "
                       "(need at least 3 held-out and 3 fitting models)")
    perm = np.random.default_rng(seed).permutation(n_models)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fleet_design(fleet: Fleet) -> tuple[torch.Tensor, torch.Tensor]:
    """The regression problem of a fleet: masks [m, n] float and outputs [m, points*C]."""
    if fleet.manifest.get("kind") != "datamodel":
        raise DmmError(f"fleet {fleet.path} is a {fleet.manifest.get('kind')!r} fleet; "
                       "datamodels are fitted on a datamodel fleet (random subsets)")
    masks = torch.from_numpy(np.asarray(fleet.masks, dtype=np.float32))
    outputs = torch.from_numpy(np.array(fleet.logits, dtype=np.float32))
    return masks, outputs.reshape(len(outputs), -1)


def fit_datamodels(
    fleet: Fleet,
    solver: Solver = "lasso",
    holdout: float = 0.1,
    seed: int = 0,
    ratios: tuple[float, ...] | None = None,
    device: str = "cpu",
    block: int = 8192,
    max_iter: int = 300,
    tol: float = 1e-3,
) -> LinearAttribution:
    """Fit per-class-logit datamodels on every point of a datamodel fleet.

    Args:
        fleet: a datamodel fleet (``dmm fleet --kind datamodel``).
        solver: ``lasso`` (FISTA, per-output lambda) or ``ridge`` (closed form,
            per-output lambda).
        holdout: share of the fleet's models that choose the regularisation.
        seed: seed of the fit/held-out split.
        ratios: the path: lasso lambda / lambda_max, or ridge lambda / (m * mask variance).
        device: torch device of the solver (``cpu`` or ``cuda``).
        block: outputs solved at once (bounds memory).
        max_iter, tol: lasso iteration limit and relative-change tolerance.

    The returned attribution's ``info`` records the solver, the path, the chosen
    strengths and the LDS on the held-out models (fitted without them).
    """
    if solver not in ("lasso", "ridge"):
        raise DmmError(f"unknown solver {solver!r} (lasso or ridge)")
    masks, outputs = fleet_design(fleet)
    n_points, n_classes = fleet.logits.shape[1:]
    fit_idx, val_idx = split_models(len(masks), holdout, seed)
    x_mean, y_mean = masks[fit_idx].mean(0), outputs[fit_idx].mean(0)
    x_fit, y_fit = masks[fit_idx] - x_mean, outputs[fit_idx] - y_mean
    x_val, y_val = masks[val_idx] - x_mean, outputs[val_idx] - y_mean

    x_all_mean, y_all_mean = masks.mean(0), outputs.mean(0)
    x_all, y_all = masks - x_all_mean, outputs - y_all_mean
    if solver == "ridge":
        grid = lambda_grid(x_fit, ratios or RIDGE_RATIOS)
        sel = ridge_path(x_fit, y_fit, x_val, y_val, grid, device, block)
        chosen = sel.values[sel.choice]
        refit = ridge_fit(x_all, y_all, chosen * len(x_all) / len(x_fit), device, block)
        basis, coef = refit.basis.numpy(), refit.coef.numpy()
        density = None
    else:
        beta, chosen, sel = lasso_path(x_fit, y_fit, x_val, y_val, ratios or LASSO_RATIOS,
                                       device, block, max_iter, tol)
        beta = lasso_refit(x_all, y_all, chosen, beta, device, block, max_iter, tol)
        basis, coef = None, beta.numpy()
        density = float((beta != 0).float().mean())
    del x_fit, y_fit

    val_logits = (sel.val_pred + y_mean).reshape(len(val_idx), n_points, n_classes)
    actual = outputs[val_idx].reshape(len(val_idx), n_points, n_classes)
    n_train = fleet.n_train
    labels = np.asarray(fleet.labels)
    info = {
        "backend": "datamodels",
        "solver": solver,
        "fleet": {"path": str(fleet.path), "models": len(masks), "seed": fleet.manifest["seed"],
                  "alpha": fleet.manifest.get("alpha")},
        "holdout": {"fraction": holdout, "models": len(val_idx), "seed": seed},
        "regularisation": _path_summary(solver, sel),
        "density": density,
        "heldout_lds": {
            "validation": margin_lds(val_logits[:, n_train:], actual[:, n_train:],
                                     labels[n_train:]),
            "train": margin_lds(val_logits[:, :n_train], actual[:, :n_train], labels[:n_train]),
        },
        "heldout_slope": heldout_slope(sel.val_pred, y_val),
    }
    info["lds"] = {**info["heldout_lds"], "on": f"{len(val_idx)} held-out models of the "
                   "fitting fleet (they chose the regularisation)"}
    return LinearAttribution(
        intercept=y_all_mean.reshape(n_points, n_classes).numpy(),
        mask_mean=x_all_mean.numpy(),
        coef=coef.reshape(len(coef), n_points, n_classes),
        basis=basis,
        info=info,
    )


def heldout_slope(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    """Least-squares slope of actual on predicted centred outputs of held-out models:
    the factor that removes the regression's shrinkage (1 = unbiased)."""
    p, a = predicted.double(), actual.double()
    return float((p * a).sum() / (p * p).sum().clamp_min(1e-30))


def _path_summary(solver: Solver, sel: PathSelection) -> dict:
    counts = torch.bincount(sel.choice, minlength=len(sel.values))
    return {
        "path": sel.values.tolist(),
        "path_meaning": "lambda / lambda_max per output (L1, 1/(2m) loss)" if solver == "lasso"
        else "lambda (L2, sum-of-squares loss)",
        "chosen_counts": counts.tolist(),
        "selection": "per output (target point x class) by held-out mean squared error",
        "heldout_mse": sel.val_mse.mean(1).tolist(),
    }
