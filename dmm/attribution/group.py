"""Group-aware attribution: what retraining does when a coherent group is removed.

Linear datamodels fitted on random halves predict random deletions well and under-predict
the removal of a coherent group (DESIGN.md section 6): the marginal effect of an example
depends on how many of its *substitutes* (examples that influence the same points the
same way) are present, and removing a group removes its members' substitutes with them.

The model (:class:`GroupAttribution`):

* **Density datamodels.** On a fleet whose models train on subsets of varying density
  (model j keeps each example with its own probability alpha_j; alpha_j := the share of
  its mask), the margin of every training point x is regressed (ridge, strength per
  output chosen on held-out models) on ``[m_j, m_j (alpha_j - abar), alpha_j - abar]``:
  the effect of example i on x at density alpha is ``beta_i(x) + (alpha - abar) gamma_i(x)``.
* **Substitutes.** Example j substitutes for i as much as their influence columns
  (beta_i(.), beta_j(.) over the training points) point the same way:
  ``w_ij = max(cos_ij, 0) ** power`` over each example's ``neighbours`` most similar ones.
  For a forget set F, ``phi_i = sum_{j in F} w_ij / sum_j w_ij`` is the share of i's
  substitutes removed with it.
* **The removal path.** While F is removed, the density of i's substitutes falls from 1
  towards 1 - phi_i; the shift of x's margin is
  ``-s * sum_{i in F} [beta_i(x) + (alpha*_i - abar) gamma_i(x)]``, ``alpha*_i =
  1 - kappa * phi_i`` clipped to the densities the density fleet saw (no extrapolation).
  A random forget set (phi ~ 0) is predicted at full density; the members of a coherent
  group at the lower density they leave each other.
* **Where it applies.** The group model predicts the margins of the forget points
  themselves; every other point, and the other logits, come from the ridge datamodels
  (``ridge``), whose small cross-effects are less noisy than the density model's.
* **Amplification off the forget set.** A removed example acts on other points through
  its own error, which grows when its group is removed with it. Each removed example's
  ridge effect is weighted ``w_i = 1 + c * e_i``, where ``e_i = max(0, d_i - d_i^F)`` is
  how much further its own margin falls when all of F is removed (``margin_shift``) than
  when it alone is (``single_shift``): close to 1 for a random forget set (on digits a
  mean of 1.01 / 1.04 / 1.07 at 10 / 50 / 150 random examples: the clipped noise of the
  path's cross terms), 1.4-2.3 on the bench's PC and class sets. Every point but the
  forget points gets ``f(x) - s_ridge * sum_{i in F} w_i beta_i(x)``.
* **Forget points: two predictions blended.** The margin of a forget point is
  ``(1 - lambda) * path + lambda * amplified ridge`` (the means; the spread below applies
  in full): the path and the datamodels err in different places (on development sets
  their average beat either).
* **Spread.** A retrained model's margin at a removed point varies more across seeds
  than the original's (nothing pins it any more). Per forget point the predicted ratio
  of standard deviations is ``r_x = exp(a log rho_x + b phi_x)``, where rho_x is the ratio
  of the residual spread of datamodel-fleet models without x to those with x; each
  model's margin deviation from the originals' mean margin (``margin_mean``) is scaled by
  r_x, so that a fleet of predictions is as spread out as a fleet of oracles.

``s``, ``kappa``, ``a``, ``b``, ``c`` and ``lambda`` are fitted on calibration forget sets that are
never evaluated (random sets and input-space neighbourhoods of seeded random points, with
real oracles): :func:`calibrate`, a robust (Cauchy) fit in which every set weighs the same,
so that one set the path cannot describe cannot set it for all the others, and
:func:`calibrate_ridge_terms`, the c that minimises the sum over sets of the log RMS
error of the mean margin shifts off the forget points, then lambda the same way on the
forget points (scale-free: every set's relative error counts the same), both after and
without refitting s, kappa, a and b (which are fitted for the path alone).
Memory: beta and gamma are [n_train, n_train] each, the substitutes [n_train,
neighbours]; a prediction reads the |F| columns of the removed examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dmm.attribution.linear import LinearAttribution
from dmm.attribution.predictor import ArrayLike, Predictor
from dmm.attribution.ridge import lambda_grid, ridge_fit, ridge_path
from dmm.errors import DmmError
from dmm.fleet import Fleet

MODEL_REVISION = 3  # 3: amplified ridge off the forget set, blended on it (1: path + ridge)
ARRAYS = ("beta", "gamma", "neighbours", "weights", "train_labels", "rho", "margin_mean",
          "margin_std")


@dataclass
class GroupAttribution(Predictor):
    """Group-aware predictions of retrained logits (see the module docstring).

    Args:
        ridge: the ridge datamodels that predict every point but the forget points' margins.
        beta, gamma: [n_train targets, n_train examples] density-datamodel margin effects.
        abar: the density datamodels' centre of alpha.
        neighbours, weights: [n_train, k] each example's most similar examples and their
            substitution weights.
        train_labels: [n_train] labels of the training points (their margins move).
        s, kappa: the group path's scale and density slope.
        alpha_min: the lowest density the density fleet saw (alpha* is clipped to it).
        rho: [n_train] residual-spread ratio without / with each example.
        spread: (a, b) of the spread ratio exp(a log rho + b phi); (0, 0) turns it off.
        amplify: c of the removed examples' weights 1 + c e_i off the forget set; 0 turns
            it off (plain ridge DM-Direct there).
        blend: share of the (amplified) ridge datamodels in the forget points' mean margins;
            the rest is the group path's :meth:`margin_shift` (0: the path alone).
        margin_mean, margin_std: [points] mean and std of original models' margins (the
            spread's centre; the seed spread of quality estimates).
        info: what produced it, for manifests.
    """

    ridge: LinearAttribution
    beta: np.ndarray
    gamma: np.ndarray
    abar: float
    neighbours: np.ndarray
    weights: np.ndarray
    train_labels: np.ndarray
    s: float = 1.0
    kappa: float = 1.0
    alpha_min: float = 0.0
    rho: np.ndarray | None = None
    spread: tuple[float, float] = (0.0, 0.0)
    amplify: float = 0.0
    blend: float = 0.0
    margin_mean: np.ndarray | None = None
    margin_std: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_train, self.n_points, self.n_classes = (self.ridge.n_train, self.ridge.n_points,
                                                       self.ridge.n_classes)
        n = self.n_train
        if self.beta.shape != (n, n) or self.gamma.shape != (n, n):
            raise DmmError(f"beta and gamma must be [{n}, {n}]")
        if self.neighbours.shape != self.weights.shape or len(self.neighbours) != n:
            raise DmmError(f"neighbours and weights must be [{n}, k]")
        if self.rho is None:
            self.rho = np.ones(n, dtype=np.float32)
        self.spread = (float(self.spread[0]), float(self.spread[1]))

    @property
    def scale(self) -> float:
        """The ridge datamodels' DM-Direct scale (used off the forget points)."""
        return self.ridge.scale

    def phi(self, forget: np.ndarray) -> np.ndarray:
        """Share of each forget example's substitutes that lie in the forget set: [|F|]."""
        inside = np.zeros(self.n_train, dtype=bool)
        inside[forget] = True
        w = np.asarray(self.weights[forget], dtype=np.float64)
        total = w.sum(1)
        removed = (w * inside[np.asarray(self.neighbours[forget])]).sum(1)
        return np.where(total > 0, removed / np.where(total > 0, total, 1.0), 0.0)

    def margin_shift(self, forget: np.ndarray) -> np.ndarray:
        """Predicted change of the mean margin at each forget point: [|F|]."""
        astar = np.clip(1.0 - self.kappa * self.phi(forget), self.alpha_min, 1.0)
        cols = np.asarray(self.beta[np.ix_(forget, forget)], dtype=np.float64)
        cols += (astar - self.abar)[None, :] * np.asarray(self.gamma[np.ix_(forget, forget)])
        return -self.s * cols.sum(1)

    def single_shift(self, forget: np.ndarray) -> np.ndarray:
        """Predicted change of each forget example's margin were it removed alone (its
        substitutes all present, alpha* = 1): [|F|]."""
        f = np.asarray(forget)
        return -self.s * (np.asarray(self.beta[f, f], dtype=np.float64)
                          + (1.0 - self.abar) * np.asarray(self.gamma[f, f], dtype=np.float64))

    def extra_drop(self, forget: np.ndarray) -> np.ndarray:
        """e_i = max(0, single_shift - margin_shift): how much further each forget
        example's margin falls when all of F is removed than when it alone is: [|F|]."""
        f = np.asarray(forget)
        return np.maximum(0.0, self.single_shift(f) - self.margin_shift(f))

    def removal_weights(self, forget: np.ndarray) -> np.ndarray:
        """Weights 1 + c e_i of the removed examples' ridge effects off the forget set
        (:meth:`extra_drop`): [|F|]."""
        f = np.asarray(forget)
        if self.amplify == 0.0 or len(f) == 0:
            return np.ones(len(f))
        return 1.0 + self.amplify * self.extra_drop(f)

    def spread_ratio(self, forget: np.ndarray) -> np.ndarray:
        """Predicted std(retrained) / std(original) of the margin at each forget point."""
        a, b = self.spread
        return np.exp(a * np.log(np.asarray(self.rho[forget], dtype=np.float64))
                      + b * self.phi(forget))

    def seed_spread(self, forget: np.ndarray) -> np.ndarray | None:
        """Predicted std across retrained models of the margin at every point: the
        originals' std, times the spread ratio at the forget points ([points]; None when
        the originals' spread was not recorded)."""
        if self.margin_std is None:
            return None
        sd = np.asarray(self.margin_std, dtype=np.float64).copy()
        sd[forget] *= self.spread_ratio(forget)
        return sd

    def spread_term(self, original_margins: np.ndarray, forget: np.ndarray) -> np.ndarray:
        """(spread_ratio - 1) * (m - margin_mean) at the forget points for originals with
        margins m [K, |F|]: what widens a fleet of predictions to the retrained spread."""
        m = np.asarray(original_margins, dtype=np.float64)
        if self.margin_mean is None or self.spread == (0.0, 0.0):
            return np.zeros_like(m)
        centre = np.asarray(self.margin_mean, dtype=np.float64)[forget]
        return (self.spread_ratio(forget) - 1) * (m - centre)

    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        """Ridge DM-Direct logits with the removed examples weighted by :meth:`removal_weights`
        everywhere; at the forget points the true-class logit sets the margin m to
        (1 - ``blend``) (m + :meth:`margin_shift`) + ``blend`` (ridge margin), plus
        :meth:`spread_term`: the means are blended, the spread is the path's in full."""
        z, masks, idx, single = self._prepare(original_logits, forget, points)
        rows = masks.numpy()
        groups = [(np.flatnonzero((rows == key).all(1)), np.flatnonzero(key))
                  for key in np.unique(rows, axis=0)]  # (models, forget set) per distinct set
        w = np.zeros(rows.shape, dtype=np.float32)
        for models, f in groups:
            w[np.ix_(models, f)] = self.removal_weights(f)
        h = z - self.ridge.scale * self.ridge.apply(torch.from_numpy(w), idx)
        pos = {int(p): k for k, p in enumerate(idx.tolist()) if p < self.n_train}
        for models, f in groups:
            at = [pos[int(i)] for i in f if int(i) in pos]
            if not at:
                continue
            sel = [k for k, i in enumerate(f) if int(i) in pos]
            cols = torch.as_tensor(at)
            y = torch.as_tensor(np.asarray(self.train_labels)[f[sel]], dtype=torch.long)
            m = torch.as_tensor(models)
            zk, hk = z[m][:, cols], h[m][:, cols]
            full = np.zeros((len(models), len(f)))
            full[:, sel] = _margins(zk, y).numpy()
            spread = self.spread_term(full, f)
            path = torch.as_tensor((full + self.margin_shift(f) + spread)[:, sel],
                                   dtype=torch.float32)
            ridge = _margins(hk, y)
            widen = torch.as_tensor(spread[:, sel], dtype=torch.float32)
            target = (1 - self.blend) * path + self.blend * (ridge + widen)
            hk[:, torch.arange(len(at)), y] += target - ridge
            h[m[:, None], cols[None, :]] = hk
        return h[0] if single else h


def _margins(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margins of logits z [K, P, C] at labels y [P]: z_y - logsumexp_{k != y} z_k."""
    true = z.gather(-1, y.expand(z.shape[0], -1)[..., None])[..., 0]
    other = z.scatter(-1, y.expand(z.shape[0], -1)[..., None], float("-inf"))
    return true - torch.logsumexp(other, -1)


# ---------------------------------------------------------------- fitting
def density_datamodels(masks: np.ndarray, margins: np.ndarray, holdout: float = 0.1,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
    """Ridge of margins [M, n targets] on [m, m (alpha - abar), alpha - abar] over a fleet
    of varying density (alpha_j = mask share of model j); the strength of each output is
    chosen on ``holdout`` held-out models. Returns beta, gamma [targets, examples], abar and
    a description."""
    from dmm.attribution.datamodels import split_models

    m = np.asarray(masks, dtype=np.float32)
    alpha = m.mean(1)
    abar = float(alpha.mean())
    x = np.concatenate([m, m * (alpha - abar)[:, None], (alpha - abar)[:, None]], 1)
    x = torch.from_numpy(x - x.mean(0))
    y = torch.from_numpy(np.asarray(margins, dtype=np.float32))
    y = y - y.mean(0)
    fit, val = split_models(len(m), holdout, seed)
    sel = ridge_path(x[fit], y[fit], x[val], y[val], lambda_grid(x[fit]))
    lam = sel.values[sel.choice] * len(m) / len(fit)
    rf = ridge_fit(x, y, lam)
    w = (rf.basis @ rf.coef).numpy()
    n = m.shape[1]
    info = {"models": len(m), "alpha_range": [float(alpha.min()), float(alpha.max())],
            "abar": abar, "heldout_mse": float(sel.val_mse.min(0).values.mean()),
            "ridge_lambda_median": float(lam.median())}
    return w[:n].T.copy(), w[n:2 * n].T.copy(), abar, info


def substitutes(beta: np.ndarray, neighbours: int = 64, power: float = 8.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each example's ``neighbours`` most similar examples by the cosine of their influence
    columns, and weights max(cos, 0) ** power: ([n, k] int, [n, k] float32)."""
    cols = torch.from_numpy(np.asarray(beta, dtype=np.float32))
    cols = cols / cols.norm(dim=0, keepdim=True).clamp_min(1e-12)
    n = cols.shape[1]
    k = min(neighbours, n - 1)
    idx = np.empty((n, k), dtype=np.int64)
    wts = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, 1024):
        block = cols[:, start:start + 1024].T @ cols  # [b, n]
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = -2.0  # not its own substitute
        top = block.topk(k, dim=1)
        idx[start:start + len(block)] = top.indices.numpy()
        wts[start:start + len(block)] = top.values.clamp_min(0).pow(power).numpy()
    return idx, wts


def spread_rho(masks: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Per example x: std of the residual margins of fleet models without x over those
    with x (``residuals`` [M, n] of a datamodel fleet whose masks are [M, n])."""
    m = np.asarray(masks, dtype=bool)
    r = np.asarray(residuals, dtype=np.float64)
    out = np.ones(m.shape[1])
    for x in range(m.shape[1]):
        inside, outside = r[m[:, x], x], r[~m[:, x], x]
        if len(inside) > 2 and len(outside) > 2 and inside.std() > 0:
            out[x] = outside.std() / inside.std()
    return out.astype(np.float32)


def calibrate(attr: GroupAttribution, original_margins: np.ndarray,
              calibration: list[tuple[np.ndarray, np.ndarray]], threshold: float = 0.3
              ) -> dict[str, Any]:
    """Fit ``s, kappa`` on the mean margin shifts at the forget points and the spread's
    ``a, b`` on their log ratios of standard deviations, over calibration sets: (forget
    indices, oracle margins [K', points]) against originals' margins [K, points].

    Every set weighs the same: ``s, kappa`` minimise the sum over sets of the Cauchy loss
    ``t^2 log(1 + (rms / t)^2)`` of each set's RMS shift error, with ``t = threshold`` the
    seed-to-seed difference of a margin (about 0.3 margin units on digits). A set within
    noise counts quadratically; a set the path cannot describe at all (an input-space
    neighbourhood whose oracles move twice as far as any density predicts) counts only
    logarithmically, so it cannot drag the path of every other set with it. ``a, b`` are
    the least-squares solution, each set weighing the same. Sets ``attr`` in place and
    returns a description."""
    from scipy.optimize import least_squares

    m0, sd0 = original_margins.mean(0), original_margins.std(0)
    sets = [(f, om.mean(0)[f] - m0[f], np.log(om.std(0)[f] / np.maximum(sd0[f], 1e-6)))
            for f, om in calibration]

    def residuals(theta: np.ndarray) -> np.ndarray:
        attr.s, attr.kappa = float(theta[0]), float(theta[1])
        return np.array([np.sqrt(np.mean((attr.margin_shift(f) - shift) ** 2))
                         for f, shift, _ in sets])

    fit = least_squares(residuals, np.array([1.0, 1.0]), bounds=([0.0, 0.0], [5.0, 10.0]),
                        loss="cauchy", f_scale=threshold)
    rms = [float(r) for r in residuals(fit.x)]
    weight = np.concatenate([np.full(len(f), 1 / np.sqrt(len(f))) for f, _, _ in sets])
    design = np.concatenate([np.stack([np.log(attr.rho[f]), attr.phi(f)], 1)
                             for f, _, _ in sets])
    target = np.concatenate([lr for *_, lr in sets])
    ab, *_ = np.linalg.lstsq(design * weight[:, None], target * weight, rcond=None)
    attr.spread = (float(ab[0]), float(ab[1]))
    return {"method": "calibration sets (never evaluated), each weighing the same: s and "
                      "kappa by the Cauchy loss of each set's RMS error of the forget "
                      "points' mean margin shifts, the spread's a and b by least squares of "
                      "their log std ratios",
            "threshold": threshold, "s": attr.s, "kappa": attr.kappa,
            "spread": list(attr.spread), "alpha_min": attr.alpha_min,
            "forget_margin_rms": float(np.median(rms)),
            "sets": [{"size": int(len(f)), "forget_margin_rms": r}
                     for (f, _), r in zip(calibration, rms, strict=True)]}


def calibrate_ridge_terms(attr: GroupAttribution, original_logits: np.ndarray,
                          labels: np.ndarray, calibration: list[tuple[np.ndarray, np.ndarray]],
                          bounds: tuple[float, float] = (0.0, 3.0)) -> dict[str, Any]:
    """Fit the terms that use the ridge datamodels, after :func:`calibrate`, on
    calibration sets (forget indices, oracle margins [K', points]) against originals'
    logits [K, points, C]. Each is the minimum of a sum over sets of log RMS(predicted -
    actual mean margin shift), so every set's relative error counts the same and a set
    that a term does not move adds a constant:

    * ``attr.amplify`` (c in ``bounds``), over the points outside each forget set;
    * then ``attr.blend`` (lambda in [0, 1]), over the forget points.

    Returns a description.
    """
    z0 = torch.from_numpy(np.array(original_logits, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    m0 = _margins(z0, y).double()
    n, scale = attr.n_train, attr.ridge.scale
    sets = []
    for forget, oracle_margins in calibration:
        f = np.asarray(forget)
        keep = np.setdiff1d(np.arange(attr.n_points), f)
        ones, extra = np.zeros((1, n), np.float32), np.zeros((1, n), np.float32)
        ones[0, f] = 1.0
        extra[0, f] = attr.extra_drop(f)
        a = attr.ridge.apply(torch.from_numpy(ones))[0]
        b = attr.ridge.apply(torch.from_numpy(extra))[0]
        actual = np.asarray(oracle_margins, dtype=np.float64).mean(0) - m0.mean(0).numpy()
        sets.append((keep, a, b, actual))

    def rms(c: float) -> np.ndarray:
        out = []
        for keep, a, b, actual in sets:
            shift = (_margins(z0 - scale * (a + c * b), y).double() - m0).mean(0).numpy()
            out.append(np.sqrt(np.mean((shift - actual)[keep] ** 2)))
        return np.array(out)

    attr.amplify = _log_rms_minimum(rms, bounds)
    before, after = rms(0.0), rms(attr.amplify)

    paths = []
    for (f, _), (_, a, b, actual) in zip(calibration, sets, strict=True):
        ridge = (_margins(z0[:, f] - scale * (a + attr.amplify * b)[f], y[f]).double()
                 - m0[:, f]).mean(0).numpy()
        paths.append((attr.margin_shift(f), ridge, actual[f]))

    def forget_rms(lam: float) -> np.ndarray:
        return np.array([np.sqrt(np.mean(((1 - lam) * path + lam * ridge - actual) ** 2))
                         for path, ridge, actual in paths])

    attr.blend = _log_rms_minimum(forget_rms, (0.0, 1.0))
    path, blended = forget_rms(0.0), forget_rms(attr.blend)
    return {"method": "amplification c, then the blend lambda: each the minimum of the sum "
                      "over calibration sets of the log RMS error of the mean margin shifts, "
                      "off the forget set (c) and on it (lambda)",
            "c": attr.amplify, "blend": attr.blend, "bounds": list(bounds),
            "sets": [{"size": int(len(f)), "off_forget_rms_ridge": float(r0),
                      "off_forget_rms": float(r1), "forget_rms_path": float(p0),
                      "forget_rms": float(p1)}
                     for (f, _), r0, r1, p0, p1 in zip(calibration, before, after, path,
                                                       blended, strict=True)]}


def _log_rms_minimum(rms: Any, bounds: tuple[float, float]) -> float:
    """The argument in ``bounds`` that minimises sum(log rms(x)) (bounded Brent)."""
    from scipy.optimize import minimize_scalar

    fit = minimize_scalar(lambda x: float(np.log(np.maximum(rms(x), 1e-12)).sum()),
                          bounds=bounds, method="bounded", options={"xatol": 1e-3})
    return float(fit.x)


def fit_group_attribution(ridge: LinearAttribution, density_masks: np.ndarray,
                          density_margins: np.ndarray, ridge_masks: np.ndarray,
                          ridge_residuals: np.ndarray, labels: np.ndarray,
                          original_logits: np.ndarray,
                          calibration: list[tuple[np.ndarray, np.ndarray]],
                          neighbours: int = 64, power: float = 8.0,
                          holdout: float = 0.1) -> GroupAttribution:
    """Fit the group-aware backend (see the module docstring).

    Args:
        ridge: ridge datamodels (random halves) with their calibrated scale.
        density_masks, density_margins: the density fleet: masks [M, n] of varying density
            and the models' margins at the training points [M, n].
        ridge_masks, ridge_residuals: the ridge fleet's masks [M', n] and the residuals of
            its models' training-point margins under the ridge datamodels [M', n] (spread).
        labels: labels of all points.
        original_logits: [K, points, C] logits of originals (the calibration originals).
        calibration: (forget indices, oracle logits [K', points, C]) per calibration set.
        neighbours, power: the substitutes' count and weight exponent.
        holdout: share of density-fleet models that choose the ridge strengths.
    """
    from dmm.evals import margins as margins_of

    beta, gamma, abar, dinfo = density_datamodels(density_masks, density_margins, holdout)
    idx, wts = substitutes(beta, neighbours, power)
    z0 = np.asarray(original_logits, dtype=np.float32)
    n = ridge.n_train
    m0 = margins_of(z0, labels)
    attr = GroupAttribution(ridge, beta.astype(np.float32), gamma.astype(np.float32), abar, idx,
                            wts, np.asarray(labels)[:n].astype(np.int64),
                            alpha_min=float(np.asarray(density_masks).mean(1).min()),
                            rho=spread_rho(ridge_masks, ridge_residuals),
                            margin_mean=m0.mean(0).astype(np.float32),
                            margin_std=m0.std(0).astype(np.float32))
    sets = [(np.asarray(f), margins_of(np.asarray(o, dtype=np.float32), labels))
            for f, o in calibration]
    how = calibrate(attr, m0, sets)
    how["ridge_terms"] = calibrate_ridge_terms(attr, z0, labels, sets)
    attr.info = ({"backend": "group", "solver": "density ridge + ridge",
                      "density_datamodels": dinfo,
                      "substitutes": {"neighbours": int(idx.shape[1]), "power": power,
                                      "similarity": "cosine of density-datamodel influence "
                                                    "columns over the training points"},
                      "calibration": how, "lds": ridge.info.get("lds"), "ridge": ridge.info})
    return attr


def fit_group_from_fleets(ridge: LinearAttribution, density: Fleet, ridge_fleet: Fleet,
                          originals: Fleet, calibration: list[Fleet], neighbours: int = 64,
                          power: float = 8.0) -> GroupAttribution:
    """:func:`fit_group_attribution` from fleets: a density fleet (datamodel fleet of
    varying density), the ridge datamodels' fleet (random halves), calibration originals
    and calibration oracle fleets (each names its forget set; never evaluated ones)."""
    from dmm.evals import margins as margins_of

    for f in (density, ridge_fleet):
        if f.manifest.get("kind") != "datamodel":
            raise DmmError(f"fleet {f.path} is not a datamodel fleet")
    if originals.manifest.get("kind") != "original":
        raise DmmError(f"calibration originals {originals.path} is not an original fleet")
    if not calibration or any(f.manifest.get("kind") != "oracle" for f in calibration):
        raise DmmError("the group backend needs calibration oracle fleets")
    n, labels = ridge.n_train, np.asarray(density.labels)
    masks = np.asarray(ridge_fleet.masks)
    residuals = np.empty(masks.shape, dtype=np.float32)
    for i in range(0, len(masks), 256):
        pred = ridge.predict_subset(masks[i:i + 256].astype(np.float32), np.arange(n)).numpy()
        actual = np.asarray(ridge_fleet.logits[i:i + 256, :n], dtype=np.float32)
        residuals[i:i + 256] = margins_of(actual, labels[:n]) - margins_of(pred, labels[:n])
    attr = fit_group_attribution(
        ridge, np.asarray(density.masks),
        margins_of(np.asarray(density.logits[:, :n], dtype=np.float32), labels[:n]), masks,
        residuals, labels, np.asarray(originals.logits),
        [(f.forget, np.asarray(f.logits)) for f in calibration], neighbours, power)
    attr.info["fleets"] = {"density": str(density.path), "ridge": str(ridge_fleet.path),
                           "calibration_originals": str(originals.path)}
    for entry, f in zip(attr.info["calibration"]["sets"], calibration, strict=True):
        entry["oracles"] = str(f.path)
    return attr
