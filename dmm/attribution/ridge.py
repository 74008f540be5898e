"""Ridge regression datamodels in closed form, for all outputs at once.

With centred masks X [m, n] and centred outputs Y [m, O] and the thin SVD X = U S V^T
(r = min(m, n)), the ridge solution of output o is

    beta_o = V diag(S / (S^2 + lambda_o)) U^T Y_o

so one SVD serves every regularisation strength: a path of lambdas costs one
[m_val, r] x [r, O] product per lambda. The result stays factorised, beta = V @ A with
A [r, O]: memory r * O + n * r instead of n * O (r = m when m < n: the dual form).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_RATIOS = tuple(float(x) for x in torch.logspace(-2, 1.5, 15, dtype=torch.float64))


@dataclass
class RidgeFit:
    """A factorised ridge solution: beta [n, O] = basis [n, r] @ coef [r, O]."""

    basis: torch.Tensor
    coef: torch.Tensor
    lambdas: torch.Tensor  # [O] per-output lambda


@dataclass
class PathSelection:
    """Per-output choice on held-out models along a regularisation path."""

    choice: torch.Tensor  # [O] index into the path
    values: torch.Tensor  # [L] the path
    val_mse: torch.Tensor  # [L, O] held-out mean squared error
    val_pred: torch.Tensor  # [m_val, O] held-out predictions (centred) at the choice


def _svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    keep = s > s.max() * 1e-10
    return u[:, keep].float(), s[keep], vh[keep].T.float()


def lambda_grid(x: torch.Tensor, ratios: tuple[float, ...] = DEFAULT_RATIOS) -> torch.Tensor:
    """Ridge strengths ``ratio * m * mean column variance of x`` (x centred, [m, n])."""
    scale = x.shape[0] * x.pow(2).mean()
    return torch.tensor(ratios, dtype=torch.float64) * scale.double().cpu()


def ridge_fit(x: torch.Tensor, y: torch.Tensor, lambdas: torch.Tensor | float,
              device: str = "cpu", chunk: int = 8192) -> RidgeFit:
    """Solve min ||Y_o - X beta_o||^2 + lambda_o ||beta_o||^2 for every output o.

    ``x`` [m, n] and ``y`` [m, O] must be centred; ``lambdas`` is a scalar or [O].
    """
    u, s, v = _svd(x.to(device))
    n_out = y.shape[1]
    lam = torch.as_tensor(lambdas, dtype=torch.float64).to(device).expand(n_out)
    coef = torch.empty(len(s), n_out)
    for start in range(0, n_out, chunk):
        cols = slice(start, min(start + chunk, n_out))
        q = u.T @ y[:, cols].to(device)
        d = (s[:, None] / (s[:, None] ** 2 + lam[None, cols])).float()
        coef[:, cols] = (d * q).cpu()
    return RidgeFit(v.cpu(), coef, lam.cpu())


def ridge_path(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor,
               y_val: torch.Tensor, lambdas: torch.Tensor, device: str = "cpu",
               chunk: int = 8192) -> PathSelection:
    """Held-out error of every lambda for every output; choose the best per output.

    All four arrays must be centred with the fitting models' means.
    """
    u, s, v = _svd(x_fit.to(device))
    p_val = x_val.to(device) @ v  # [m_val, r]
    n_out = y_fit.shape[1]
    lam = lambdas.to(device)
    mse = torch.empty(len(lam), n_out)
    best_pred = torch.empty(len(x_val), n_out)
    for start in range(0, n_out, chunk):
        cols = slice(start, min(start + chunk, n_out))
        q = u.T @ y_fit[:, cols].to(device)
        target = y_val[:, cols].to(device)
        best = torch.full((cols.stop - start,), float("inf"), device=device)
        for j, lam_j in enumerate(lam):
            d = (s / (s**2 + lam_j)).float()
            pred = (p_val * d) @ q
            err = (pred - target).pow(2).mean(0)
            mse[j, cols] = err.cpu()
            better = err < best
            best = torch.where(better, err, best)
            best_pred[:, cols] = torch.where(better.cpu()[None], pred.cpu(), best_pred[:, cols])
    return PathSelection(mse.argmin(0), lam.cpu(), mse, best_pred)
