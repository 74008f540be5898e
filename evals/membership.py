"""Membership-inference evaluations of unlearning (DESIGN.md section 5).

Three tests, all on plain arrays of per-example margins or losses:

* :func:`ulira` - U-LiRA, the per-example likelihood-ratio attack of Hayes et al.
  (2024), "Inexact unlearning needs more careful evaluations to avoid a false sense
  of privacy" (arXiv:2403.01218), as used by Georgiev et al. (2024),
  "Attribute-to-Delete: Machine Unlearning via Datamodel Matching".
* :func:`competition_score` - the forgetting-quality score of the NeurIPS 2023
  machine-unlearning competition (Triantafillou et al. 2024, arXiv:2406.09073).
* :func:`loss_threshold_attack` - a population loss-threshold attack on one model.

Margins are the logit-scaled confidences log(p_y / (1 - p_y)) that LiRA, U-LiRA
and the competition use (see :func:`dmm.evals.margins.margins`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import as_bool, as_float
from .roc import balanced_accuracy_at, best_balanced_accuracy, roc_auc, tpr_at_fpr


def _finite_or_none(x: float) -> float | None:
    """JSON has no infinities: a threshold of +-inf (predict all one way) becomes None."""
    return float(x) if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------
# U-LiRA


def _gaussian_logpdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (x - mean) / std
    return -0.5 * z * z - np.log(std) - 0.5 * math.log(2.0 * math.pi)


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and sample std (ddof=1) over the rows where ``mask``; NaN if < 2."""
    n = mask.sum(axis=0)
    total = np.where(mask, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        dev = np.where(mask, values - mean, 0.0)
        var = (dev * dev).sum(axis=0) / (n - 1)
    return mean, np.sqrt(np.where(n >= 2, var, np.nan))


def ulira(
    shadow_margins: Any,
    shadow_in: Any,
    shadow_out: Any,
    target_margins: Any,
    target_in: Any,
    target_out: Any,
    *,
    min_shadow: int = 2,
    min_std: float = 1e-2,
    fixed_variance: bool = False,
) -> dict[str, Any]:
    """U-LiRA: can an attacker tell "trained on, then unlearned" from "never trained on"?

    Setting (Hayes et al. 2024): shadow originals are trained on random halves of the
    data; forget sets are drawn inside each shadow's half and unlearned with the
    method under test. For each example x, Gaussians are fitted to x's margin under
    the shadow models that unlearned x (IN) and under those that never trained on x
    (OUT). A target model (also an original + the same unlearning, not a shadow) is
    scored at x by the log likelihood ratio log N(phi; IN) - log N(phi; OUT); a high
    score says "x was in my training set and was unlearned".

    Args:
        shadow_margins: [M, P] margins of M unlearned shadow models on P examples.
        shadow_in: [M, P] bool, shadow m trained on example p and then unlearned it.
        shadow_out: [M, P] bool, example p was not in shadow m's training set.
        target_margins: [T, P] margins of T unlearned target models.
        target_in / target_out: [T, P] bool, the same roles for the target models.
            Every (t, p) with target_in or target_out set is one trial; the others
            (retained examples) are ignored. IN and OUT must not overlap.
        min_shadow: examples with fewer IN or fewer OUT shadow samples are skipped
            (at least 2, so that a std exists); they are counted in the output.
        min_std: floor on the fitted standard deviations.
        fixed_variance: use one pooled std per side (IN, OUT) over all examples, as
            LiRA does when there are few shadow models.

    Returns a JSON-serialisable dict. ``accuracy`` is the balanced accuracy
    ((TPR + TNR) / 2, equal to accuracy on a balanced IN/OUT set) of the fixed
    likelihood-ratio rule "IN iff log LR > 0", i.e. threshold 0, not tuned on the
    targets; ``accuracy_best_threshold`` is the best balanced accuracy over all
    thresholds (optimistic for the attacker, never below 0.5). ``auc`` is the ROC
    AUC; 0.5 is ideal for all three. ``tpr_at_1pct_fpr`` / ``tpr_at_0.1pct_fpr``
    are the largest TPRs at FPR <= 1% / 0.1%.
    """
    if min_shadow < 2:
        raise ValueError(f"min_shadow must be at least 2, got {min_shadow}")
    if not min_std > 0:
        raise ValueError(f"min_std must be positive, got {min_std}")
    shadow = as_float(shadow_margins, "shadow_margins", ndim=2)
    target = as_float(target_margins, "target_margins", ndim=2)
    if shadow.shape[1] != target.shape[1]:
        raise ValueError(
            f"shadow and target margins must cover the same examples: "
            f"{shadow.shape[1]} vs {target.shape[1]}"
        )
    s_in = as_bool(shadow_in, "shadow_in", shadow.shape)
    s_out = as_bool(shadow_out, "shadow_out", shadow.shape)
    t_in = as_bool(target_in, "target_in", target.shape)
    t_out = as_bool(target_out, "target_out", target.shape)
    if (s_in & s_out).any():
        raise ValueError("shadow_in and shadow_out overlap")
    if (t_in & t_out).any():
        raise ValueError("target_in and target_out overlap")

    mean_in, std_in = _masked_mean_std(shadow, s_in)
    mean_out, std_out = _masked_mean_std(shadow, s_out)
    usable = (s_in.sum(axis=0) >= min_shadow) & (s_out.sum(axis=0) >= min_shadow)
    if fixed_variance and usable.any():
        std_in = np.full_like(std_in, math.sqrt(np.mean(std_in[usable] ** 2)))
        std_out = np.full_like(std_out, math.sqrt(np.mean(std_out[usable] ** 2)))
    std_in = np.maximum(np.where(usable, std_in, 1.0), min_std)
    std_out = np.maximum(np.where(usable, std_out, 1.0), min_std)

    trial = (t_in | t_out) & usable[None, :]
    has_trial = (t_in | t_out).any(axis=0)
    log_lr = _gaussian_logpdf(target, mean_in, std_in) - _gaussian_logpdf(
        target, mean_out, std_out
    )
    scores = log_lr[trial]
    labels = t_in[trial]
    n_in, n_out = int(labels.sum()), int((~labels).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError(
            f"U-LiRA needs IN and OUT target trials on usable examples, got {n_in} IN "
            f"and {n_out} OUT ({int((has_trial & ~usable).sum())} examples skipped)"
        )
    best_acc, best_thr = best_balanced_accuracy(scores, labels)
    return {
        "attack": "U-LiRA",
        "positive_class": "IN: target trained on the example, then unlearned it",
        "negative_class": "OUT: target never trained on the example",
        "score": "log N(margin; IN fit) - log N(margin; OUT fit), fitted on shadow models",
        "ideal": 0.5,
        "accuracy": balanced_accuracy_at(scores, labels, 0.0),
        "accuracy_rule": "balanced accuracy of 'IN iff log LR > 0' (fixed threshold 0)",
        "accuracy_best_threshold": best_acc,
        "best_threshold": _finite_or_none(best_thr),
        "auc": roc_auc(scores, labels),
        "tpr_at_1pct_fpr": tpr_at_fpr(scores, labels, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(scores, labels, 0.001),
        "n_trials_in": n_in,
        "n_trials_out": n_out,
        "n_examples_used": int((has_trial & usable).sum()),
        "n_examples_skipped": int((has_trial & ~usable).sum()),
        "min_shadow": int(min_shadow),
        "min_std": float(min_std),
        "fixed_variance": bool(fixed_variance),
    }


# ---------------------------------------------------------------------------------------
# NeurIPS 2023 unlearning competition: forgetting quality and final score

COMPETITION_DELTA = 1e-5
COMPETITION_EPSILON_CAP = 50.0
_THRESHOLDS_PER_UNIT = 100
_INTERVAL_BUFFER = 2.0
_PEAKY_RATIO = 0.01


def _count_at_least(sorted_x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return sorted_x.size - np.searchsorted(sorted_x, t, side="left")


def _count_within(sorted_x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    inside = np.searchsorted(sorted_x, right, side="right") - np.searchsorted(
        sorted_x, left, side="left"
    )
    return np.maximum(inside, 0)


def _single_threshold_errors(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, false negatives) of "positive iff c >= t", 100 thresholds per unit."""
    lo = min(pos[0], neg[0])
    hi = max(pos[-1], neg[-1])
    t = np.linspace(lo, hi, int(math.ceil((hi - lo) * _THRESHOLDS_PER_UNIT)))
    return _count_at_least(neg, t), pos.size - _count_at_least(pos, t)


def _interval_errors(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, false negatives) of "positive iff l <= c <= r".

    The positive class here is the narrower sample a (range w). Right ends r: 100 per
    unit on [max_a - 2, max_a + 2]; for each r, 400 left ends on [r - w - 2, r - w + 2].
    """
    if pos[-1] - pos[0] >= neg[-1] - neg[0]:
        pos, neg = neg, pos
    width = pos[-1] - pos[0]
    r_lo = pos[0] + width - _INTERVAL_BUFFER
    r_hi = pos[-1] + _INTERVAL_BUFFER
    rights = np.linspace(r_lo, r_hi, int(math.ceil((r_hi - r_lo) * _THRESHOLDS_PER_UNIT)))
    n_left = int(math.ceil(2 * _INTERVAL_BUFFER * _THRESHOLDS_PER_UNIT))
    offsets = np.linspace(-width - _INTERVAL_BUFFER, -width + _INTERVAL_BUFFER, n_left)
    lefts = (rights[:, None] + offsets[None, :]).ravel()
    rights = np.repeat(rights, n_left)
    return _count_within(neg, lefts, rights), pos.size - _count_within(pos, lefts, rights)


def _epsilon_from_errors(fp: np.ndarray, fn: np.ndarray, n: int, delta: float) -> float:
    """Largest epsilon over tests with fp false positives and fn false negatives of n each."""
    if np.any((fp == 0) & (fn == 0)):
        return math.inf  # a test separates the two samples perfectly
    # Only distinct (fp, fn) pairs matter: mark them on an (n + 1) x (n + 1) grid.
    seen = np.zeros((n + 1) * (n + 1), dtype=bool)
    seen[fp * (n + 1) + fn] = True
    fp, fn = np.divmod(np.flatnonzero(seen), n + 1)
    keep = (fp > 0) & (fn > 0)  # one rate exactly 0: too few samples to judge, dropped
    fpr, fnr = fp[keep] / n, fn[keep] / n
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1.0 - delta - fpr) - np.log(fnr)
        b = np.log(1.0 - delta - fnr) - np.log(fpr)
    eps = np.fmax(a, b)  # NaN only where both are (rates of 1)
    eps = eps[~np.isnan(eps)]
    return float(np.maximum(eps, 0.0).max()) if eps.size else 0.0


def _example_epsilon(retrained: np.ndarray, unlearned: np.ndarray, delta: float) -> float:
    if np.median(retrained) > np.median(unlearned):
        pos, neg = np.sort(retrained), np.sort(unlearned)
    else:
        pos, neg = np.sort(unlearned), np.sort(retrained)
    ranges = (pos[-1] - pos[0], neg[-1] - neg[0])
    if max(ranges) == 0:
        return 0.0 if pos[0] == neg[0] else math.inf
    if min(ranges) / max(ranges) < _PEAKY_RATIO:
        return COMPETITION_EPSILON_CAP
    fp_s, fn_s = _single_threshold_errors(pos, neg)
    if np.any((fp_s == 0) & (fn_s == 0)):
        return math.inf  # perfectly separated: the interval tests cannot change that
    fp_d, fn_d = _interval_errors(pos, neg)
    return _epsilon_from_errors(np.r_[fp_d, fp_s], np.r_[fn_d, fn_s], pos.size, delta)


def competition_epsilons(
    unlearned_margins: Any, retrained_margins: Any, *, delta: float = COMPETITION_DELTA
) -> np.ndarray:
    """Per forget example, the epsilon implied by the best threshold test, shape [F].

    Inputs are [N, F] margins (logit-scaled confidences) of N unlearned and N
    retrained models on the F forget examples. Values are clipped to [0, 50]; see
    :func:`competition_score` for the definition.
    """
    unlearned = as_float(unlearned_margins, "unlearned_margins", ndim=2)
    retrained = as_float(retrained_margins, "retrained_margins", ndim=2)
    if unlearned.shape != retrained.shape:
        raise ValueError(
            f"unlearned and retrained margins must have the same shape [N, F]: "
            f"{unlearned.shape} vs {retrained.shape}"
        )
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    eps = [
        _example_epsilon(retrained[:, i], unlearned[:, i], delta)
        for i in range(unlearned.shape[1])
    ]
    return np.clip(np.asarray(eps, dtype=np.float64), 0.0, COMPETITION_EPSILON_CAP)


def competition_epsilon_points(epsilons: Any, n_models: int) -> np.ndarray:
    """Points of each epsilon: bucket k = [k/2, (k+1)/2) scores 2 / 2^(k+1) = 2^-k.

    Buckets run while their upper end is at most ceil(ln(n_models - 1)); an epsilon
    past the last bucket scores 0. With 100 models: 10 buckets, up to epsilon = 5.
    """
    if n_models < 3:
        raise ValueError(f"the competition score needs at least 3 models per side, got {n_models}")
    eps = as_float(epsilons, "epsilons", finite=False)
    if np.isnan(eps).any() or (eps < 0).any():
        raise ValueError("epsilons must be non-negative numbers")
    n_buckets = 2 * int(math.ceil(math.log(n_models - 1)))
    k = np.floor(2.0 * np.minimum(eps, 2.0 * n_buckets)).astype(np.int64)
    return np.where(k < n_buckets, 2.0 ** (-k.astype(np.float64)), 0.0)


def _mean_accuracy(x: Any, name: str) -> float:
    a = as_float(x, name)
    if a.size == 0 or (a < 0).any() or (a > 1).any():
        raise ValueError(f"{name} must be accuracies in [0, 1]")
    return float(a.mean())


def competition_score(
    unlearned_margins: Any,
    retrained_margins: Any,
    *,
    retain_acc_unlearned: Any,
    retain_acc_retrained: Any,
    test_acc_unlearned: Any,
    test_acc_retrained: Any,
    delta: float = COMPETITION_DELTA,
) -> dict[str, Any]:
    """Forgetting quality and final score of the NeurIPS 2023 unlearning competition.

    Source: the organisers' released evaluation (github.com/google-deepmind/
    unlearning_evaluation, metric.py and main.py) and Triantafillou et al. 2024,
    "Are we making progress in unlearning?" (arXiv:2406.09073). Reimplemented here
    from that definition:

    0. Inputs: [N, F] margins of N unlearned and N retrained models on the F forget
       examples. The released code scores the logit-scaled confidence
       log p_y - log(1 - p_y), which is exactly the margin.
    1. Per forget example, "positive" is whichever of the two samples (N unlearned,
       N retrained margins) has the larger median.
    2. If the narrower sample's range is under 1% of the wider one's, epsilon = 50.
    3. Two families of tests: one threshold ("positive iff c >= t"; t on a grid of
       100 per unit over the joint range) and one interval ("positive iff l <= c <= r"
       with the narrower sample as positive; r on a grid of 100 per unit over
       [max - 2, max + 2] of the narrower sample, 400 left ends l on
       [r - w - 2, r - w + 2], w its range).
    4. For each test: FPR = FP / N, FNR = FN / N. If FPR = FNR = 0, epsilon = inf
       (perfect separation). If exactly one is 0 the test is dropped. Otherwise
       epsilon = max(0, log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR)),
       delta = 1e-5. The example's epsilon is the maximum over tests, clipped to
       [0, 50].
    5. Bucket k = [k/2, (k+1)/2) scores 2^-k (1, 1/2, 1/4, ...) for buckets up to
       ceil(ln(N - 1)); larger epsilons score 0. Forgetting quality F = mean points.
    6. score = F * (RA_unlearned / RA_retrained) * (TA_unlearned / TA_retrained),
       each accuracy the mean over the models (RA: retain set, TA: test set).

    Additions where the released code has no answer: two constant samples give
    epsilon 0 if equal and inf if different; an example where every test is dropped
    gets epsilon 0; N must be at least 3 (with N = 2 no bucket exists).
    The accuracies may be scalars or per-model arrays (their mean is used).
    """
    eps = competition_epsilons(unlearned_margins, retrained_margins, delta=delta)
    n_models = as_float(unlearned_margins, "unlearned_margins", ndim=2).shape[0]
    points = competition_epsilon_points(eps, n_models)
    if points.size == 0:
        raise ValueError("competition_score needs at least one forget example")
    forget_quality = float(points.mean())
    ra_u = _mean_accuracy(retain_acc_unlearned, "retain_acc_unlearned")
    ra_r = _mean_accuracy(retain_acc_retrained, "retain_acc_retrained")
    ta_u = _mean_accuracy(test_acc_unlearned, "test_acc_unlearned")
    ta_r = _mean_accuracy(test_acc_retrained, "test_acc_retrained")
    if ra_r == 0 or ta_r == 0:
        raise ValueError("retrained accuracies must be positive to form the ratios")
    ra_ratio, ta_ratio = ra_u / ra_r, ta_u / ta_r
    return {
        "metric": "NeurIPS 2023 unlearning competition score",
        "reference": "retrained models (oracles)",
        "compared": "unlearned models",
        "higher_is_better": True,
        "forget_quality": forget_quality,
        "retain_accuracy_ratio": ra_ratio,
        "test_accuracy_ratio": ta_ratio,
        "score": forget_quality * ra_ratio * ta_ratio,
        "epsilon_median": float(np.median(eps)),
        "epsilon_mean": float(eps.mean()),
        "n_models": int(n_models),
        "n_forget": int(eps.size),
        "delta": float(delta),
    }


# ---------------------------------------------------------------------------------------
# Population loss-threshold attack


def loss_threshold_attack(forget_losses: Any, validation_losses: Any) -> dict[str, Any]:
    """One model, one global threshold on the loss: forget points vs validation points.

    Members (positives) are the forget points; a lower loss means "member". Returns
    the ROC AUC and the best balanced accuracy over thresholds (with the loss
    threshold t of the rule "member iff loss <= t"); 0.5 is ideal for both.
    """
    forget = as_float(forget_losses, "forget_losses", ndim=1)
    validation = as_float(validation_losses, "validation_losses", ndim=1)
    if forget.size == 0 or validation.size == 0:
        raise ValueError("loss_threshold_attack needs forget and validation losses")
    scores = -np.r_[forget, validation]
    labels = np.r_[np.ones(forget.size, bool), np.zeros(validation.size, bool)]
    best_acc, best_thr = best_balanced_accuracy(scores, labels)
    return {
        "attack": "population loss threshold",
        "positive_class": "forget points",
        "negative_class": "validation points",
        "ideal": 0.5,
        "auc": roc_auc(scores, labels),
        "accuracy_best_threshold": best_acc,
        "loss_threshold": _finite_or_none(-best_thr),
        "n_forget": int(forget.size),
        "n_validation": int(validation.size),
    }
