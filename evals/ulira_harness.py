"""U-LiRA for any unlearning method: shadow fleet -> per-model forget sets -> method -> attack.

Protocol (DESIGN.md section 5; Hayes et al. 2024, arXiv:2403.01218):

1. Shadow originals: a ``datamodel`` fleet with weights kept, model m trained on a
   random half S_m of the training set.
2. A candidate **pool** of training examples is drawn once. Model m's forget set F_m
   is ``forget_size`` examples drawn inside ``S_m`` and the pool (never truncated).
3. Every model of the fleet is unlearned by the method, each with its own F_m
   (``Problem.forget`` is [K, n_train]).
4. For each pool example x, on the *unlearned* models only (IN and OUT come from the
   same fleet of method outputs):
     IN  = models that trained on x and then unlearned it   (x in F_m),
     OUT = models whose half never contained x               (x not in S_m).
   Models that trained on x and kept it are not used for x.
5. ``n_targets`` models, chosen at random, are held out as targets; Gaussians are fitted
   to x's margin on the remaining (shadow) models and every IN/OUT (target, x) pair is
   scored by :func:`dmm.evals.ulira` (accuracy, AUC, TPR at 1% / 0.1% FPR; 0.5 ideal).

The accuracies of the unlearned models are reported beside the attack: a method can
reach AUC 0.5 by wrecking the models.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dmm.errors import DmmError

from .accuracy import accuracy
from .margins import margins
from .membership import ulira

if TYPE_CHECKING:
    from dmm.fleet import Fleet
    from dmm.tasks import Task
    from dmm.unlearning.base import Inputs, Method, Problem, Result

IN_DEFINITION = "unlearned models that trained on the example and were asked to forget it"
OUT_DEFINITION = "unlearned models whose training half never contained the example"


def draw_pool(n_train: int, pool: int | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted candidate examples: ``pool`` random training indices, or the indices given."""
    if isinstance(pool, (int, np.integer)):
        if not 0 < pool <= n_train:
            raise DmmError(f"pool size must be in [1, {n_train}], got {pool}")
        return np.sort(rng.choice(n_train, int(pool), replace=False))
    idx = np.unique(np.asarray(pool, dtype=np.int64))
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n_train:
        raise DmmError(f"pool must be non-empty training indices in [0, {n_train})")
    return idx


def draw_forget_masks(trained: np.ndarray, pool: np.ndarray, forget_size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """[M, n_train] bool: for each model, ``forget_size`` examples of pool ∩ its half."""
    trained = np.asarray(trained, dtype=bool)
    forget = np.zeros_like(trained)
    for m in range(trained.shape[0]):
        candidates = pool[trained[m, pool]]
        if candidates.size < forget_size:
            raise DmmError(f"model {m} trained on only {candidates.size} pool examples, fewer "
                           f"than the forget size {forget_size} (use a larger pool)")
        forget[m, rng.choice(candidates, forget_size, replace=False)] = True
    return forget


def ulira_from_margins(
    pool_margins: np.ndarray,
    trained: np.ndarray,
    forget: np.ndarray,
    is_target: np.ndarray,
    **ulira_kwargs: Any,
) -> dict[str, Any]:
    """The attack on margins of unlearned models at the pool examples.

    Args:
        pool_margins: [M, P] margins of the M unlearned models on the P pool examples.
        trained: [M, P] bool, the original model m trained on pool example p.
        forget: [M, P] bool, model m was asked to forget p (a subset of ``trained``).
        is_target: [M] bool, held-out target models; the others are shadows.
        ulira_kwargs: passed to :func:`dmm.evals.ulira` (min_shadow, fixed_variance, ...).
    """
    trained, forget = np.asarray(trained, bool), np.asarray(forget, bool)
    is_target = np.asarray(is_target, bool)
    if (forget & ~trained).any():
        raise ValueError("a model forgot an example it was not trained on")
    if is_target.all() or not is_target.any():
        raise ValueError("need at least one target and one shadow model")
    inside, outside = forget, ~trained
    sh, tg = ~is_target, is_target
    return ulira(pool_margins[sh], inside[sh], outside[sh],
                 pool_margins[tg], inside[tg], outside[tg], **ulira_kwargs)


def unlearn_fleet(
    task: Task,
    method: Callable[[Problem], Result],
    fleet: Fleet,
    forget: np.ndarray,
    *,
    chunk: int | None = None,
    device: str = "auto",
    inputs: Inputs | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Apply ``method`` to every model of ``fleet``, model m forgetting ``forget[m]``.

    Models are loaded and unlearned ``chunk`` at a time (default: all at once); ``inputs``
    go to every :class:`~dmm.unlearning.base.Problem` (e.g. DMM's predictor). Returns
    (logits [M, points, C] float32, diverged [M] bool, seconds, compute fraction).
    """
    from dmm.unlearning.base import Problem

    n_models = len(fleet)
    step = n_models if chunk is None else chunk
    if step < 1:
        raise DmmError(f"chunk must be positive, got {chunk}")
    keys = fleet.keys
    logits, diverged = [], []
    seconds = fraction = 0.0
    for start in range(0, n_models, step):
        ids = list(range(start, min(start + step, n_models)))
        problem = Problem(task, fleet.ensemble(task, ids), forget[ids], fleet.masks[ids],
                          [keys[j] for j in ids], device=device, inputs=inputs)
        result = method(problem)
        logits.append(np.asarray(result.logits.detach().cpu().numpy(), dtype=np.float32))
        diverged.append(np.asarray(result.diverged, dtype=bool))
        seconds += result.seconds
        fraction = result.compute_fraction
    return np.concatenate(logits), np.concatenate(diverged), seconds, fraction


def _mean_accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean over models of each model's accuracy on its own masked points."""
    acc = accuracy(logits, labels, mask)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else None


def run_ulira(
    task: Task,
    method: Callable[[Problem], Result],
    shadows: Fleet,
    n_targets: int,
    forget_size: int,
    seed: int = 0,
    *,
    pool: int | np.ndarray | None = None,
    chunk: int | None = None,
    device: str = "auto",
    inputs: Inputs | None = None,
    oracles: Callable[[np.ndarray], Fleet] | None = None,
    min_shadow: int = 2,
    fixed_variance: bool = False,
) -> dict[str, Any]:
    """U-LiRA of ``method`` on a shadow fleet (see the module docstring).

    Args:
        task: the task of the fleet.
        method: an unlearning :class:`~dmm.unlearning.base.Method` (any callable
            Problem -> Result with ``.logits`` [K, points, C] works).
        shadows: a ``datamodel`` fleet (random halves) trained with ``save_weights=True``.
        n_targets: models held out as attack targets; the rest fit the Gaussians.
        forget_size: examples each model forgets, drawn inside its half and the pool.
        seed: draws the pool, the targets and the forget sets.
        pool: candidate examples, a size or indices (default ``4 * forget_size``, so that
            about half of the pool examples in a model's half are forgotten).
        chunk: models unlearned per method call (bounds memory; default all).
        inputs: what the method needs (``Problem.inputs``), e.g. DMM's predictor.
        oracles: for a method that requires oracles (Oracle Matching): given the masks
            [M, n_train] each model keeps (its half minus its forget set), a fleet of
            models trained on exactly those masks.
        min_shadow, fixed_variance: see :func:`dmm.evals.ulira`.

    Returns the :func:`dmm.evals.ulira` dict plus the design, the method, and the
    unlearned models' accuracy on their forget / retain / validation points.
    """
    from dmm.artifacts import check_compatible

    check_compatible(shadows.manifest, task.name, task.fingerprint, f"fleet {shadows.path}")
    if shadows.manifest.get("kind") != "datamodel":
        raise DmmError(f"U-LiRA needs shadow models trained on random halves (a datamodel "
                       f"fleet), got a {shadows.manifest.get('kind')!r} fleet")
    n_models, n_train = len(shadows), task.data.n_train
    if not 0 < n_targets <= n_models - 2 * min_shadow:
        raise DmmError(f"n_targets must be in [1, {n_models - 2 * min_shadow}] for a fleet "
                       f"of {n_models} models, got {n_targets}")
    if forget_size < 1:
        raise DmmError(f"forget_size must be positive, got {forget_size}")
    rng = np.random.default_rng(seed)
    pool_idx = draw_pool(n_train, 4 * forget_size if pool is None else pool, rng)
    is_target = np.zeros(n_models, dtype=bool)
    is_target[rng.choice(n_models, n_targets, replace=False)] = True
    trained = np.asarray(shadows.masks, dtype=bool)
    forget = draw_forget_masks(trained, pool_idx, forget_size, rng)

    t0 = time.perf_counter()
    if "oracle" in getattr(method, "requires", ()):
        if oracles is None:
            raise DmmError(f"U-LiRA of {method.name!r} needs oracles of the shadows' halves "
                           "minus their forget sets")
        from dmm.attribution.oracle import OraclePredictor
        from dmm.unlearning.base import Inputs

        inputs = Inputs(predictor=None if inputs is None else inputs.predictor,
                        oracle=OraclePredictor(oracles(trained & ~forget)))
    logits, diverged, method_seconds, fraction = unlearn_fleet(
        task, method, shadows, forget, chunk=chunk, device=device, inputs=inputs)
    labels = np.asarray(shadows.labels)
    pool_margins = margins(logits[:, pool_idx], labels[pool_idx])
    report = ulira_from_margins(pool_margins, trained[:, pool_idx], forget[:, pool_idx],
                                is_target, min_shadow=min_shadow, fixed_variance=fixed_variance)

    name = getattr(method, "name", type(method).__name__)
    hparams = method.hparams() if hasattr(method, "hparams") else {}
    report.update({
        "method": name,
        "hparams": hparams,
        "in_models": IN_DEFINITION,
        "out_models": OUT_DEFINITION,
        "design": {
            "fleet": str(shadows.path),
            "n_models": n_models,
            "n_shadows": int(n_models - n_targets),
            "n_targets": int(n_targets),
            "forget_size": int(forget_size),
            "pool_size": int(pool_idx.size),
            "seed": int(seed),
        },
        "model_accuracy": {
            "models": f"{name}-unlearned shadow and target models",
            "forget": _mean_accuracy(logits[:, :n_train], labels[:n_train], forget),
            "retain": _mean_accuracy(logits[:, :n_train], labels[:n_train], trained & ~forget),
            "validation": float(accuracy(logits[:, n_train:], labels[n_train:]).mean()),
        },
        "diverged_models": int(diverged.sum()),
        "compute_fraction": float(fraction),
        "method_seconds": float(method_seconds),
        "seconds": time.perf_counter() - t0,
    })
    return report


def ulira_job(task: Task, method: Method, shadows: Fleet, n_targets: int, forget_size: int,
              seed: int = 0, **kwargs: Any) -> Callable[[], dict[str, Any]]:
    """U-LiRA of ``method`` as a job for :class:`dmm.evals.metrics.Case` (``kwargs`` as
    :func:`run_ulira` takes them)."""
    return lambda: run_ulira(task, method, shadows, n_targets, forget_size, seed, **kwargs)
