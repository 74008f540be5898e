"""Evaluation: margins, KLoM, membership inference, accuracy, LDS, plots and reports.

Everything works on plain arrays (numpy, or torch tensors, converted on entry).
KLoM's direction is KL(oracle || unlearned): the oracle fleet is the reference p.
:mod:`~dmm.evals.metrics` makes the metrics components that ``dmm eval``
(:func:`evaluate`) and ``dmm bench`` run from one list.
"""

from .accuracy import accuracy, accuracy_by_split
from .klom import DIRECTION as KLOM_DIRECTION
from .klom import KLOM_CAP, klom, klom_bin_edges, klom_summary
from .lds import lds, spearman_per_target
from .margins import confidence, loss, margins
from .membership import (
    competition_epsilon_points,
    competition_epsilons,
    competition_score,
    loss_threshold_attack,
    ulira,
)
from .metrics import DEFAULT_METRICS, METRICS, Case, Outputs, columns, evaluate_case
from .plots import plot_margin_histograms
from .report import klom_block, klom_table_markdown
from .roc import balanced_accuracy_at, best_balanced_accuracy, roc_auc, roc_curve, tpr_at_fpr
from .splits import Splits

__all__ = [
    "DEFAULT_METRICS",
    "KLOM_CAP",
    "KLOM_DIRECTION",
    "METRICS",
    "Case",
    "Outputs",
    "Splits",
    "accuracy",
    "accuracy_by_split",
    "balanced_accuracy_at",
    "best_balanced_accuracy",
    "competition_epsilon_points",
    "competition_epsilons",
    "competition_score",
    "columns",
    "confidence",
    "evaluate_case",
    "klom",
    "klom_bin_edges",
    "klom_block",
    "klom_summary",
    "klom_table_markdown",
    "lds",
    "loss",
    "loss_threshold_attack",
    "margins",
    "plot_margin_histograms",
    "roc_auc",
    "roc_curve",
    "spearman_per_target",
    "tpr_at_fpr",
    "ulira",
]
