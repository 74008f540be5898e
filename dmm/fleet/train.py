"""Training a fleet shard by shard into a store (:mod:`dmm.fleet.store`).

Each shard is one job of an executor (:mod:`dmm.executor`): in this process, or a Ray task
on any machine that shares the store's filesystem. Every model's randomness comes from its
own key (:func:`dmm.recipe.model_key`), so a shard can be recomputed exactly: the result
does not depend on the executor, the order, retries of a shard whose worker died, or
resumption (re-running the same command after an interruption never recomputes finished
shards and ends with exactly the result of an uninterrupted run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from dmm.artifacts import fingerprint
from dmm.errors import DmmError
from dmm.executor import ExecutorSpec
from dmm.fleet.lock import store_lock
from dmm.fleet.store import (
    FLEET_FORMAT,
    KINDS,
    Fleet,
    FleetWriter,
    Kind,
    load_fleet,
    lock_path,
    record_attempt,
    write_shard,
)
from dmm.forget_sets import validate_indices
from dmm.recipe import model_key
from dmm.tasks import Task
from dmm.training import train_ensemble


def fleet_masks(kind: str, n_models: int, n_train: int, seed: int,
                forget: np.ndarray | None = None, alpha: float = 0.5,
                alpha_range: tuple[float, float] | None = None) -> np.ndarray:
    """Training masks [models, n_train]: all ones (original), all but ``forget`` (oracle),
    or independent Bernoulli(``alpha``) subsets (datamodel); with ``alpha_range``, model j
    draws its own density uniformly in that range first (a density fleet)."""
    masks = np.ones((n_models, n_train), dtype=bool)
    if kind == "oracle":
        masks[:, forget] = False
    elif kind == "datamodel":
        for j in range(n_models):
            rng = np.random.default_rng([model_key(seed, j), 1])
            a = alpha if alpha_range is None else rng.uniform(*alpha_range)
            masks[j] = rng.random(n_train) < a
    elif kind != "original":
        raise DmmError(f"fleet kind {kind!r} has no mask rule (one of original, oracle, "
                       "datamodel; subset fleets take their masks)")
    return masks


@dataclass(frozen=True)
class ShardJob:
    """Shard ``shard``: models ``start`` to ``stop - 1`` of the fleet ``out``."""

    out: Path
    shard: int
    start: int
    stop: int

    def __str__(self) -> str:
        return f"fleet {self.out}: shard {self.shard} (models {self.start}-{self.stop - 1})"


@dataclass(frozen=True)
class ShardContext:
    """What every shard of one fleet shares (sent once to each worker process)."""

    task: Task
    partial: Path
    seed: int
    save_weights: bool
    device: str


def train_shard(ctx: ShardContext, job: ShardJob) -> dict[str, Any]:
    """Train one shard's models and write them into the store (:func:`write_shard`);
    returns its marker."""
    run = record_attempt(ctx.partial, job.shard)
    t0 = time.perf_counter()
    ids = list(range(job.start, job.stop))
    masks = np.load(ctx.partial / "masks.npy", mmap_mode="r")[job.start : job.stop]
    ens = train_ensemble(ctx.task, [model_key(ctx.seed, j) for j in ids], np.array(masks),
                         device=ctx.device)
    logits = ens.predict(ctx.task.data.x_all)
    val = logits[:, ctx.task.data.n_train :].argmax(-1) == ctx.task.data.y_val
    run |= {"seconds": time.perf_counter() - t0, "finished": time.time()}
    marker = write_shard(ctx.partial, job.shard, job.start, logits.numpy(),
                         ens.stacked_state() if ctx.save_weights else None,
                         val.float().mean(1).tolist(), run)
    (ctx.partial / "attempts" / f"{job.shard:05d}.jsonl").unlink(missing_ok=True)
    return marker


def train_fleet(
    task: Task,
    kind: Kind,
    models: int,
    out: Path,
    seed: int = 0,
    forget: np.ndarray | None = None,
    alpha: float = 0.5,
    alpha_range: tuple[float, float] | None = None,
    masks: np.ndarray | None = None,
    shard_size: int = 256,
    dtype: Literal["float32", "float16"] = "float32",
    save_weights: bool | None = None,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    overwrite: bool = False,
    reuse: bool = False,
    executor: Literal["local", "ray"] = "local",
    address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    max_retries: int = 3,
    wait: bool = False,
    progress: bool = True,
) -> Fleet:
    """Train (or resume) a fleet and store every model's logits on all points.
    Resumable: re-run the same command after an interruption.

    Args:
        task: the task whose recipe trains each model.
        kind: original (all data), oracle (all but the forget set), datamodel (random
            subsets, each example in with probability alpha) or subset (given masks).
        models: number of models.
        out: fleet directory (built in <out>.partial, by one process at a time).
        seed: the fleet's seed; model j's randomness is model_key(seed, j).
        forget: the forget set, for oracle fleets.
        alpha: subset probability (datamodel).
        alpha_range: datamodel fleets of varying density: each model draws its own subset
            probability uniformly in this range (lo, hi).
        masks: [models, n_train] training masks of a subset fleet.
        shard_size: models trained together (one vectorised ensemble, one job) and saved
            at once.
        dtype: storage type of the logits.
        save_weights: keep weights (default: true for original, oracle and subset fleets).
        device: auto (CUDA when present), cpu or cuda.
        overwrite: replace an existing output (only once the new one is complete).
        reuse: if out holds a complete fleet with exactly these settings, return it (a
            cache); one with other settings is refused.
        executor: where the shards train: local (in this process, one after another) or
            ray (each shard a Ray task; out must be on a filesystem the workers share).
        address: ray: the cluster; none starts a local one on this machine (127.0.0.1
            only), auto connects to the one `ray start` runs here, or HOST:PORT.
        cpus_per_task: ray: CPUs each shard requests.
        gpus_per_task: ray: GPUs each shard requests (0.5 packs two shards on one GPU).
        max_retries: ray: times a shard whose worker died is run again.
        wait: if another process is writing out, wait for it (and then take its fleet if
            it has exactly these settings) instead of refusing at once.
        progress: show a progress bar.
    """
    out = Path(out)
    if models < 1:
        raise DmmError(f"the number of models must be positive, got {models}")
    if shard_size < 1:
        raise DmmError(f"shard size must be positive, got {shard_size}")
    if kind not in KINDS:
        raise DmmError(f"unknown fleet kind {kind!r} (one of {', '.join(KINDS)})")
    if (kind == "oracle") != (forget is not None):
        raise DmmError("an oracle fleet needs a forget set (--forget), and only an oracle fleet")
    if (kind == "subset") != (masks is not None):
        raise DmmError("a subset fleet needs its training masks, and only a subset fleet")
    if forget is not None:
        forget = validate_indices(forget, task.data.n_train)
    if alpha_range is not None and (kind != "datamodel" or not 0 < alpha_range[0]
                                    <= alpha_range[1] <= 1):
        raise DmmError("alpha_range needs a datamodel fleet and 0 < lo <= hi <= 1")
    spec = ExecutorSpec(executor, address, cpus_per_task, gpus_per_task, max_retries)
    if masks is None:
        masks = fleet_masks(kind, models, task.data.n_train, seed, forget, alpha, alpha_range)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (models, task.data.n_train) or not masks.any(1).all():
        raise DmmError(f"masks must be [{models}, {task.data.n_train}] with an example in "
                       "each row")
    if out.exists() and not overwrite and not reuse:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if save_weights is None:
        save_weights = kind != "datamodel"

    n_points = task.data.n_train + task.data.n_val
    manifest = {
        "format": FLEET_FORMAT,
        **task.identity(),
        "kind": kind,
        "models": models,
        "seed": seed,
        "alpha": alpha if kind == "datamodel" and alpha_range is None else None,
        "forget": None if forget is None else forget.tolist(),
        "shard_size": shard_size,
        "dtype": dtype,
        "save_weights": save_weights,
        "recipe": vars(task.recipe).copy(),
        "n_points": n_points,
    }
    if alpha_range is not None:
        manifest["alpha_range"] = [float(v) for v in alpha_range]
    if kind == "subset":
        manifest["masks_fingerprint"] = fingerprint(masks)
    if out.exists() and reuse and not overwrite:
        return _reused(out, task, manifest)
    with store_lock(lock_path(out), str(out), wait, log=print if progress else None):
        if out.exists() and not overwrite:  # written while we waited: the fleet asked for
            return _reused(out, task, manifest)
        store = FleetWriter(out, manifest, masks, task.data.y_all.numpy(), task.data.n_classes,
                            overwrite)
        done = store.done()
        jobs = [ShardJob(out, s, s * shard_size, min((s + 1) * shard_size, models))
                for s in range(-(-models // shard_size)) if s not in done]
        ctx = ShardContext(task, store.partial.resolve(), seed, save_weights, device)
        with tqdm(total=models, desc=f"fleet {kind}", unit="model", disable=not progress,
                  initial=models - sum(j.stop - j.start for j in jobs)) as bar:
            for i, _ in spec.build().map(partial(train_shard, ctx), jobs):
                store.merge(jobs[i].shard)
                bar.update(jobs[i].stop - jobs[i].start)
        return store.finish()


def _reused(out: Path, task: Task, manifest: dict[str, Any]) -> Fleet:
    fleet = load_fleet(out, task)
    if {k: fleet.manifest.get(k) for k in manifest} != manifest:
        raise DmmError(f"{out} holds a fleet with other settings than requested")
    return fleet
