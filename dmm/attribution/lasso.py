"""Lasso regression datamodels: FISTA batched over all outputs at once, in torch.

For centred masks X [m, n] and centred outputs Y [m, O], each output o solves

    min_b  1/(2m) ||Y_o - X b||^2 + lambda_o ||b||_1
         = 1/2 b^T G b - c_o^T b + lambda_o ||b||_1 + const,  G = X^T X / m,  c = X^T Y / m.

One iteration for a block of outputs is one [n, n] x [n, block] product (the cost does
not depend on m), a soft threshold and a momentum step with per-output adaptive restart.
Outputs whose iterates stopped moving are dropped from the block, so later iterations
only pay for the outputs still converging. The path runs from large to small lambda
(lambda_o = ratio * lambda_max_o, lambda_max_o = ||c_o||_inf, where b = 0), warm-started,
and each output keeps the path point with the smallest error on held-out models.
Memory: two [n, n] matrices (G, I - G / L) plus about eight [n, block] ones; ``block``
bounds it.
"""

from __future__ import annotations

import torch

from dmm.attribution.ridge import PathSelection

DEFAULT_RATIOS = (0.15, 0.08, 0.05, 0.03, 0.02, 0.012)


def lipschitz(gram: torch.Tensor) -> float:
    """Largest eigenvalue of the (symmetric) Gram matrix: FISTA's step is its inverse."""
    return float(torch.linalg.eigvalsh(gram.double()).max())


def fista_lasso(gram: torch.Tensor, cov: torch.Tensor, lam: torch.Tensor,
                init: torch.Tensor | None = None, lip: float | None = None,
                max_iter: int = 500, tol: float = 1e-4) -> tuple[torch.Tensor, int]:
    """Solve min 1/2 b^T G b - c^T b + lam ||b||_1 for every column of ``cov``.

    Args:
        gram: [n, n] G (positive semi-definite).
        cov: [n, O] c.
        lam: [O] or scalar L1 strengths.
        init: [n, O] warm start (default zeros).
        lip: largest eigenvalue of G (computed when omitted).
        max_iter: iterations per column at most.
        tol: a column stops when its relative change in one step is below ``tol``.

    Returns the solution [n, O] and the number of iterations the slowest column ran.

    The gradient step is one fused product, z = (I - G / L) y + c / L, the soft threshold
    is z - clamp(z, -thr, thr), and per-column sums are products summed over rows (a
    column norm of a row-major [n, block] matrix is several times slower). Every
    [n, block] iterate lives in a buffer allocated once per block, not once per operation.
    """
    n, n_out = cov.shape
    lam = torch.as_tensor(lam, dtype=cov.dtype, device=cov.device).expand(n_out)
    step = 1.0 / (lip if lip is not None else lipschitz(gram))
    descent = torch.eye(n, dtype=gram.dtype, device=gram.device).sub_(gram, alpha=step)
    x_all = (torch.zeros_like(cov) if init is None else init.clone())
    active = torch.arange(n_out, device=cov.device)
    t = torch.ones(n_out, dtype=cov.dtype, device=cov.device)

    def block(cols: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The buffers of the columns ``cols``: x, y, x_new, two scratch, c / L, thr."""
        x = x_all[:, cols]  # a copy (advanced indexing): x_all is written back on drops
        return (x, x.clone(), torch.empty_like(x), torch.empty_like(x), torch.empty_like(x),
                cov[:, cols] * step, (lam[cols] * step)[None])

    x, y, x_new, tmp, sq, c_step, thr = block(active)
    it = 0
    while it < max_iter:
        it += 1
        torch.addmm(c_step, descent, y, out=tmp)                 # z
        torch.sub(tmp, torch.clamp(tmp, -thr, thr, out=x_new), out=x_new)
        diff = torch.sub(x_new, x, out=tmp)
        restart = torch.mul(y.sub_(x_new), diff, out=sq).sum(0) > 0
        t_new = torch.where(restart, torch.ones_like(t), (1 + torch.sqrt(1 + 4 * t * t)) / 2)
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
        moving = (torch.mul(diff, diff, out=sq).sum(0)
                  > tol**2 * torch.mul(x_new, x_new, out=sq).sum(0).clamp_min(1e-24))
        torch.addcmul(x_new, diff, momentum[None], out=y)
        x, x_new, t = x_new, x, t_new
        if not moving.any():
            break
        if (~moving).sum() > 0.1 * len(active):  # drop converged columns from the block
            x_all[:, active] = x
            keep = moving.nonzero().squeeze(1)
            y_kept, active, t = y[:, keep], active[keep], t[keep]
            x, y, x_new, tmp, sq, c_step, thr = block(active)
            y.copy_(y_kept)
    x_all[:, active] = x
    return x_all, it


def lasso_path(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor,
               y_val: torch.Tensor, ratios: tuple[float, ...] = DEFAULT_RATIOS,
               device: str = "cpu", block: int = 8192, max_iter: int = 300,
               tol: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, PathSelection]:
    """Run the lasso path on the fitting models; choose lambda per output on held-out ones.

    All arrays must be centred with the fitting models' means.
    Returns (beta [n, O] at each output's choice, lambda [O] chosen, the selection).
    """
    xf, xv = x_fit.to(device), x_val.to(device)
    m, n = xf.shape
    gram = xf.T @ xf / m
    lip = lipschitz(gram)
    n_out = y_fit.shape[1]
    ratios_t = torch.tensor(sorted(ratios, reverse=True))
    beta = torch.zeros(n, n_out)
    lam_chosen = torch.zeros(n_out)
    mse = torch.empty(len(ratios_t), n_out)
    best_pred = torch.zeros(len(xv), n_out)
    for start in range(0, n_out, block):
        cols = slice(start, min(start + block, n_out))
        cov = xf.T @ y_fit[:, cols].to(device) / m
        target = y_val[:, cols].to(device)
        lam_max = cov.abs().amax(0)
        best = target.pow(2).mean(0)  # b = 0 (lambda >= lambda_max)
        lam_chosen[cols] = lam_max.cpu()
        b = None
        for j, ratio in enumerate(ratios_t.tolist()):
            b, _ = fista_lasso(gram, cov, ratio * lam_max, init=b, lip=lip,
                               max_iter=max_iter, tol=tol)
            pred = xv @ b
            err = (pred - target).pow(2).mean(0)
            mse[j, cols] = err.cpu()
            better = (err < best).cpu()
            best = torch.minimum(err, best)
            beta[:, cols] = torch.where(better[None], b.cpu(), beta[:, cols])
            lam_chosen[cols] = torch.where(better, ratio * lam_max.cpu(), lam_chosen[cols])
            best_pred[:, cols] = torch.where(better[None], pred.cpu(), best_pred[:, cols])
    choice = mse.argmin(0)
    return beta, lam_chosen, PathSelection(choice, ratios_t, mse, best_pred)


def lasso_refit(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, init: torch.Tensor,
                device: str = "cpu", block: int = 8192, max_iter: int = 300,
                tol: float = 1e-3) -> torch.Tensor:
    """Solve the lasso on all models (centred ``x``, ``y``) at each output's chosen
    ``lam``, warm-started from ``init``."""
    xd = x.to(device)
    m = xd.shape[0]
    gram = xd.T @ xd / m
    lip = lipschitz(gram)
    out = torch.zeros_like(init)
    n_out = y.shape[1]
    for start in range(0, n_out, block):
        cols = slice(start, min(start + block, n_out))
        cov = xd.T @ y[:, cols].to(device) / m
        b, _ = fista_lasso(gram, cov, lam[cols].to(device), init=init[:, cols].to(device), lip=lip,
                           max_iter=max_iter, tol=tol)
        out[:, cols] = b.cpu()
    return out
