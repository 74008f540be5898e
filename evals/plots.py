"""Diagnostic plots: oracle vs unlearned margin histograms at single points."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmm.artifacts import atomic_path

from ._arrays import as_numpy
from .klom import CLIP, DIRECTION, _check_pair, klom, klom_bin_edges


def plot_margin_histograms(
    oracle_margins: Any,
    unlearned_margins: Any,
    path: str | os.PathLike[str],
    *,
    points: Sequence[int] | None = None,
    n_worst: int = 12,
    titles: Sequence[str] | None = None,
    labels: tuple[str, str] = ("oracle", "unlearned"),
    ncols: int = 4,
    suptitle: str | None = None,
) -> list[int]:
    """Grid of per-point overlaid margin histograms, binned exactly as KLoM bins them.

    Args:
        oracle_margins, unlearned_margins: [N, points] margins (as for ``klom``).
        path: output image; the format follows the suffix (.png, .pdf, .svg).
        points: which points to draw; default the ``n_worst`` with the largest KLoM in
            either direction.
        titles: one title per drawn point (default "point i").
        labels: legend names of the two fleets.

    The file is written atomically (temporary file in the same directory, then
    os.replace); uses matplotlib's Agg canvas, never pyplot. Returns the point
    indices drawn, in order.
    """
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    values = klom(oracle, unlearned)
    reverse = klom(oracle, unlearned, "unlearned||oracle")
    if points is None:
        if n_worst < 1:
            raise ValueError(f"n_worst must be positive, got {n_worst}")
        worst = np.maximum(values, reverse)
        chosen = [int(i) for i in np.argsort(-worst, kind="stable")[:n_worst]]
    else:
        chosen = [int(i) for i in as_numpy(points).ravel()]
        bad = [i for i in chosen if not 0 <= i < values.size]
        if bad or not chosen:
            raise ValueError(f"points must be indices in [0, {values.size}), got {chosen}")
    if titles is not None and len(titles) != len(chosen):
        raise ValueError(f"titles has {len(titles)} entries for {len(chosen)} points")
    suffix = Path(path).suffix.lstrip(".").lower()
    if not suffix:
        raise ValueError(f"path needs a file suffix that names the format, got {path!s}")

    # Imported here so that `import dmm.evals` does not pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    edges = klom_bin_edges(oracle, unlearned)
    ncols = max(1, min(ncols, len(chosen)))
    nrows = math.ceil(len(chosen) / ncols)
    fig = Figure(figsize=(max(3.2 * ncols, 4.8), 2.6 * nrows + 0.6))
    FigureCanvasAgg(fig)
    for k, i in enumerate(chosen):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        # KLoM's last bin is closed; np.histogram's is too, so these counts match it.
        ax.hist(oracle[:, i], bins=edges[i], alpha=0.55, label=labels[0], color="tab:blue")
        ax.hist(unlearned[:, i], bins=edges[i], alpha=0.55, label=labels[1], color="tab:orange")
        head = titles[k] if titles is not None else f"point {i}"
        ax.set_title(f"{head}\nKLoM {values[i]:.2f} fwd, {reverse[i]:.2f} rev", fontsize=9)
        ax.set_xlabel(f"margin (clipped to ±{CLIP:g})", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(suptitle or f"Margin histograms; fwd = {DIRECTION}, rev = KL(unlearned || "
                 "oracle)", fontsize=10)
    # Fixed spacing (constrained layout costs more than the drawing itself).
    width, height = fig.get_figwidth(), fig.get_figheight()
    fig.subplots_adjust(left=0.6 / width, right=1.0 - 0.15 / width, bottom=0.55 / height,
                        top=1.0 - 0.9 / height, wspace=0.3, hspace=0.75)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=suffix, dpi=110)
    return chosen
