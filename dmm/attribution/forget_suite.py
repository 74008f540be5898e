"""Non-random forget sets from the train-to-train attribution matrix (DESIGN.md section 6).

The n x n matrix. Per-class datamodels give beta_i(x) in R^C; DESIGN.md's matrix needs
one number per (target x, train example i). We use the **margin datamodel**: the margin
phi = z_y - logsumexp_{k != y} z_k linearised at the intercept b(x) (the fleet's mean
logits), so

    D[x, i] = sum_c w_c(x) beta_{i,c}(x),   w_y = 1,  w_k = -softmax_{k != y}(b(x))_k,

the first-order change of x's margin when i joins the training set. Rows are training
targets x, columns training examples i.

Principal components. Each training example x is described by its row D[x, :] (what
the training set does to it). Rows are centred; the right singular vectors are the PCs
and U S is each example's projection. The sign of each PC is fixed so that the
projection of largest magnitude is positive. ``pc1_top_k`` is the k examples with the
largest projection on PC1; ``pc1_top_k_bottom_k`` adds the k with the smallest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmm.artifacts import atomic_dir, write_json
from dmm.attribution.linear import LinearAttribution
from dmm.errors import DmmError
from dmm.forget_sets import validate_indices, write_indices
from dmm.tasks import Task


def margin_matrix(attr: LinearAttribution, labels: np.ndarray, chunk: int = 256) -> np.ndarray:
    """D [n_train targets, n_train examples]: margin datamodels of the training points."""
    n = attr.n_train
    labels = np.asarray(labels)[:n]
    b = torch.from_numpy(np.asarray(attr.intercept[:n], dtype=np.float32))
    is_label = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), b.shape[1]).bool()
    w = -torch.softmax(b.masked_fill(is_label, float("-inf")), -1)
    w = torch.where(is_label, torch.ones_like(w), w)  # [targets, C]
    out = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        beta = attr.rows(rows, np.arange(n))  # [chunk examples, targets, C]
        out[:, rows] = torch.einsum("itc,tc->ti", beta, w).numpy()
    return out


def principal_projections(matrix: np.ndarray, k: int = 2) -> np.ndarray:
    """Projections [rows, k] of the rows of ``matrix`` (centred) on their top-k PCs.

    Only the top k singular triplets are computed (ARPACK, deterministic start vector).
    """
    from scipy.sparse.linalg import svds

    m = np.asarray(matrix, dtype=np.float64)
    m = m - m.mean(0, keepdims=True)
    if not 0 < k < min(m.shape):
        raise DmmError(f"cannot take {k} principal components of a {m.shape} matrix")
    u, s, _ = svds(m, k=k, v0=np.ones(min(m.shape)) / np.sqrt(min(m.shape)))
    order = np.argsort(-s)
    proj = u[:, order] * s[order]
    sign = np.sign(proj[np.abs(proj).argmax(0), np.arange(k)])
    return proj * np.where(sign == 0, 1.0, sign)


def random_set(n_train: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct training indices drawn uniformly."""
    _check_size(size, n_train, "random set")
    return np.sort(rng.choice(n_train, size, replace=False))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores (ties broken by index)."""
    _check_size(k, len(scores), "top-k set")
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def top_bottom_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The k largest and the k smallest scores' indices (2k distinct indices)."""
    _check_size(2 * k, len(scores), "top-k plus bottom-k set")
    order = np.argsort(-scores, kind="stable")
    return np.sort(np.concatenate([order[:k], order[-k:]]))


def class_set(labels: np.ndarray, cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` random training examples of class ``cls``."""
    members = np.flatnonzero(np.asarray(labels) == cls)
    _check_size(size, len(members), f"class-{cls} set")
    return np.sort(rng.choice(members, size, replace=False))


def _check_size(size: int, available: int, what: str) -> None:
    if size < 1:
        raise DmmError(f"{what}: size must be positive, got {size}")
    if size > available:
        raise DmmError(f"{what}: {size} examples asked, only {available} available "
                       "(forget sets are never truncated)")


def build_forget_suite(
    attr: LinearAttribution,
    labels: np.ndarray,
    random_sizes: tuple[int, ...] = (10, 50, 150),
    pc_sizes: tuple[int, ...] = (10, 50),
    pc_top_bottom: int = 50,
    classes: tuple[int, ...] = (3, 8),
    class_size: int = 50,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The forget sets of a task: random, PC1/PC2 top-k and top-k + bottom-k, and
    class-concentrated. Returns {name: sorted indices} and a description."""
    n = attr.n_train
    train_labels = np.asarray(labels)[:n]
    for size in (*random_sizes, *pc_sizes, 2 * pc_top_bottom or 1):
        _check_size(size, n, "forget set")
    for cls in classes:
        _check_size(class_size, int((train_labels == cls).sum()), f"class-{cls} set")
    rng = np.random.default_rng(seed)
    sets: dict[str, np.ndarray] = {}
    for size in random_sizes:
        sets[f"random_{size}"] = random_set(n, size, rng)
    proj = principal_projections(margin_matrix(attr, labels), k=2)
    for pc in (0, 1):
        for k in pc_sizes:
            sets[f"pc{pc + 1}_top_{k}"] = top_k(proj[:, pc], k)
        if pc_top_bottom:
            k = pc_top_bottom
            sets[f"pc{pc + 1}_top_{k}_bottom_{k}"] = top_bottom_k(proj[:, pc], k)
    for cls in classes:
        sets[f"class_{cls}_{class_size}"] = class_set(train_labels, cls, class_size, rng)
    for name, idx in sets.items():
        validate_indices(idx, n, name)
    info = {
        "seed": seed,
        "matrix": "margin datamodel of training targets, linearised at the intercept",
        "pca": "rows (training examples) centred; sign: largest projection positive",
        "sets": {name: {"size": len(idx), "classes": np.bincount(train_labels[idx],
                                                                 minlength=int(labels.max()) + 1)
                        .tolist()} for name, idx in sets.items()},
    }
    return sets, info


def write_suite(sets: dict[str, np.ndarray], info: dict[str, Any], out: str | Path,
                overwrite: bool = False) -> Path:
    """Write each set as ``<name>.txt`` and ``suite.json`` into ``out`` (atomically)."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, idx in sets.items():
            write_indices(tmp / f"{name}.txt", idx)
        write_json(tmp / "suite.json", info)
    return Path(out)


def write_forget_sets(task: Task, attribution: Path, out: Path | None = None,
                      random_sizes: list[int] | None = None, pc_sizes: list[int] | None = None,
                      pc_top_bottom: int = 50, classes: list[int] | None = None,
                      class_size: int = 50, seed: int = 0,
                      overwrite: bool = False) -> dict[str, np.ndarray]:
    """Write a task's forget sets as index files: random (several sizes), top-k and top-k
    plus bottom-k by projection on PC1 and PC2 of the train-to-train attribution matrix
    (margin datamodels), and class-concentrated sets.

    Args:
        task: the task of the attribution.
        attribution: attribution artifact (dmm attribute) giving the train-to-train matrix.
        out: output directory (default runs/<task>/forget_sets).
        random_sizes: sizes of the random sets (default 10, 50, 150).
        pc_sizes: k of the PC top-k sets (default 10, 50).
        pc_top_bottom: k of the PC top-k plus bottom-k sets (0: none).
        classes: classes of the class-concentrated sets (default 3, 8).
        class_size: size of each class set.
        seed: seed of the random and class sets.
        overwrite: replace an existing output (only once the new one is complete).
    """
    from dmm.attribution.store import load_attribution

    out = Path(out) if out is not None else Path("runs") / task.name / "forget_sets"
    if out.exists() and not overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    classes = [3, 8] if classes is None else classes
    for c in classes:
        if not 0 <= c < task.data.n_classes:
            raise DmmError(f"class {c} out of range for {task.data.n_classes} classes")
    attr = load_attribution(attribution, task)
    sets, info = build_forget_suite(
        attr, task.data.y_all.numpy(), tuple(random_sizes or (10, 50, 150)),
        tuple(pc_sizes or (10, 50)), pc_top_bottom, tuple(classes), class_size, seed)
    write_suite(sets, {**task.identity(), "attribution": str(attribution), **info}, out,
                overwrite=overwrite)
    return sets
