"""ROC helpers for membership tests, in numpy.

Convention: ``labels`` are 1 for members (the class the attack tries to detect)
and 0 otherwise; a higher ``score`` means "more likely a member"; the attack
predicts member when ``score >= threshold``. Ties are handled exactly (a tied
pair counts one half towards the AUC).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_float, as_numpy


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_float(scores, "scores", ndim=1)
    y = as_numpy(labels)
    if y.shape != s.shape:
        raise ValueError(f"labels must have shape {s.shape}, got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 or boolean")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("ROC needs at least one positive and one negative example")
    return s, y


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds decreasing from +inf (nothing predicted member)."""
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    thresholds = np.r_[np.inf, s[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg), ties count 1/2)."""
    s, y = _scores_labels(scores, labels)
    from scipy.stats import rankdata  # imported lazily: scipy.stats takes ~1 s to import

    ranks = rankdata(s)  # average ranks for ties
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def tpr_at_fpr(scores: Any, labels: Any, max_fpr: float) -> float:
    """Largest TPR over thresholds whose FPR is at most ``max_fpr``."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1], got {max_fpr}")
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(tpr[fpr <= max_fpr].max())


def best_balanced_accuracy(scores: Any, labels: Any) -> tuple[float, float]:
    """(best balanced accuracy over thresholds, the threshold achieving it).

    Balanced accuracy = (TPR + TNR) / 2, the accuracy on a set with equal numbers
    of members and non-members. It is at least 0.5 (predict everything one way),
    and optimistic for the attacker because the threshold is chosen on the data.
    """
    fpr, tpr, thresholds = roc_curve(scores, labels)
    bal = (tpr + 1.0 - fpr) / 2.0
    i = int(np.argmax(bal))
    return float(bal[i]), float(thresholds[i])


def balanced_accuracy_at(scores: Any, labels: Any, threshold: float) -> float:
    """Balanced accuracy of the rule "member iff score > threshold" (a fixed threshold)."""
    s, y = _scores_labels(scores, labels)
    pred = s > threshold
    return float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))
