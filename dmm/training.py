"""Training with Lightning: one model or a vectorised ensemble, each model with its own
initialisation, data order and augmentation randomness (DESIGN.md section 5)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.recipe import Recipe, lr_factor, make_optimizer, model_key
from dmm.tasks import Task

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
warnings.filterwarnings("ignore", message=".*LightningModule.*has parameters that were not used.*")

PAD = 4  # crop_flip augmentation padding


class BatchStream(Dataset):
    """Minibatch indices for K models at once: item t is step t of every model.

    Model k's example multiset is ``counts[k]`` (0/1 for a subset, larger to up-weight);
    ``counts`` may also be [epochs, K, n] to give each epoch its own multiset. Model k draws
    its own permutations (and augmentation) from ``default_rng([keys[k], salt, pass])``.

    Two ways to count steps:

    * ``steps_per_epoch=None`` (fine-tuning): an epoch is one pass over each model's
      multiset, ``ceil(max_k n_k / batch_size)`` steps; models with fewer examples get
      zero-weight padding slots, so each sees each of its examples exactly ``counts`` times.
    * ``steps_per_epoch=T`` (training, a fixed step budget): every model takes T full
      batches per epoch, streaming through successive permutations of its own subset; no
      padding, so the K models train in lockstep exactly as they would one at a time.
    """

    def __init__(
        self,
        counts: np.ndarray,
        keys: Sequence[int],
        epochs: int,
        batch_size: int,
        augment: bool = False,
        salt: int = 0,
        steps_per_epoch: int | None = None,
    ):
        counts = np.asarray(counts)
        if counts.ndim == 2:
            counts = np.broadcast_to(counts, (epochs, *counts.shape))
        if counts.ndim != 3 or counts.shape[:2] != (epochs, len(keys)):
            raise ValueError("counts must be [models, n] or [epochs, models, n], one key a model")
        sizes = counts.sum(2)
        if (sizes == 0).any():
            raise ValueError("every model needs at least one example")
        k, b = len(keys), batch_size
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch or math.ceil(sizes.max() / b)
        slots = self.steps_per_epoch * b
        self.idx = np.zeros((epochs, k, slots), dtype=np.int64)
        self.weight = np.zeros((epochs, k, slots), dtype=np.float32)
        self.aug = None
        if augment:
            self.aug = np.zeros((epochs, k, slots, 3), dtype=np.int64)
        items = np.arange(counts.shape[2])
        for j, key in enumerate(keys):
            if steps_per_epoch is None:
                for e in range(epochs):
                    self._fill(e, j, np.repeat(items, counts[e, j]), key, salt, e)
            else:
                multiset = np.repeat(items, counts[0, j])
                passes = math.ceil(epochs * slots / len(multiset))
                stream = np.concatenate([np.random.default_rng([key, salt, p]).permutation(
                    multiset) for p in range(passes)])
                for e in range(epochs):
                    self._fill(e, j, stream[e * slots : (e + 1) * slots], key, salt, e,
                               shuffle=False)
        self.idx = self.idx.reshape(epochs, k, self.steps_per_epoch, b)
        self.weight = self.weight.reshape(epochs, k, self.steps_per_epoch, b)
        if augment:
            self.aug = self.aug.reshape(epochs, k, self.steps_per_epoch, b, 3)

    def _fill(self, e: int, j: int, items: np.ndarray, key: int, salt: int, epoch: int,
              shuffle: bool = True) -> None:
        rng = np.random.default_rng([key, salt, epoch])
        self.idx[e, j, : len(items)] = rng.permutation(items) if shuffle else items
        self.weight[e, j, : len(items)] = 1.0
        if self.aug is not None:
            slots = self.aug.shape[2]
            aug_rng = np.random.default_rng([key, salt, epoch, 1])
            self.aug[e, j, :, :2] = aug_rng.integers(0, 2 * PAD + 1, size=(slots, 2))
            self.aug[e, j, :, 2] = aug_rng.integers(0, 2, size=slots)

    def __len__(self) -> int:
        return self.epochs * self.steps_per_epoch

    def __getitem__(self, t: int) -> dict[str, torch.Tensor]:
        e, s = divmod(t, self.steps_per_epoch)
        out = {
            "idx": torch.from_numpy(self.idx[e, :, s]),
            "weight": torch.from_numpy(self.weight[e, :, s]),
        }
        if self.aug is not None:
            out["aug"] = torch.from_numpy(self.aug[e, :, s])
        return out

    def loader(self) -> DataLoader:
        """A loader over one epoch's steps; Lightning advances the epoch via the sampler."""
        return DataLoader(self, batch_size=None, sampler=_EpochSampler(self), num_workers=0)


class ZipStream(Dataset):
    """Several named streams stepped together; the first sets the length, the others cycle.

    Item t is ``{name: stream[t'] ...}``, e.g. ``{"retain": ..., "forget": ...}``.
    """

    def __init__(self, **streams: BatchStream):
        if not streams:
            raise ValueError("ZipStream needs at least one stream")
        self.streams = streams
        first = next(iter(streams.values()))
        self.epochs, self.steps_per_epoch = first.epochs, first.steps_per_epoch

    def __len__(self) -> int:
        return self.epochs * self.steps_per_epoch

    def __getitem__(self, t: int) -> dict[str, dict[str, torch.Tensor]]:
        return {name: s[t % len(s)] for name, s in self.streams.items()}

    loader = BatchStream.loader


class _EpochSampler(Sampler):
    """Yields the step numbers of the current epoch (Lightning calls ``set_epoch``)."""

    def __init__(self, stream: BatchStream | ZipStream):
        self.stream, self.epoch = stream, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.stream.steps_per_epoch

    def __iter__(self):  # noqa: ANN204
        t = self.stream.steps_per_epoch
        return iter(range(self.epoch * t, (self.epoch + 1) * t))


def crop_flip(x: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
    """Pad-4 random crop and horizontal flip of images x [..., C, H, W] with per-image
    parameters aug [..., 3] = (dy, dx, flip)."""
    lead = x.shape[:-3]
    c, h, w = x.shape[-3:]
    x = x.reshape(-1, c, h, w)
    aug = aug.reshape(-1, 3)
    xp = F.pad(x, (PAD, PAD, PAD, PAD))
    n = len(x)
    rows = aug[:, 0, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = aug[:, 1, None] + torch.arange(w, device=x.device)  # [n, w]
    flip = aug[:, 2].bool()
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)


def weighted_mean(per_example: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-model mean over real (non-padding) slots: [K, B] -> [K]."""
    return (per_example * weight).sum(1) / weight.sum(1).clamp_min(1.0)


def per_model_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                 label_smoothing: float = 0.0, total: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Each model's mean cross-entropy over its real slots: logits [K, B, C], labels and
    weight [K, B] -> [K]. ``total`` [K] divides instead of each model's slot count (a mean
    over a whole pass of several batches)."""
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none",
                         label_smoothing=label_smoothing).view_as(weight)
    if total is None:
        return weighted_mean(ce, weight)
    return (ce * weight).sum(1) / total.clamp_min(1.0)


class EnsembleModule(pl.LightningModule):
    """Base of every Lightning module of the project: an :class:`Ensemble` and the data
    tensors it reads minibatches from (moved to the training device with the module)."""

    def __init__(self, ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor):
        super().__init__()
        self.ensemble = ensemble
        self.register_buffer("x", x, persistent=False)
        self.register_buffer("y", y, persistent=False)

    def inputs(self, idx: torch.Tensor, aug: torch.Tensor | None = None) -> torch.Tensor:
        x = self.x[idx]
        return x if aug is None else crop_flip(x, aug)

    def logits(self, idx: torch.Tensor, aug: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of model k on its own minibatch idx[k]: [K, B, C]."""
        return self.ensemble(self.inputs(idx, aug))

    def ce(self, batch: dict[str, torch.Tensor], labels: torch.Tensor | None = None,
           label_smoothing: float = 0.0) -> torch.Tensor:
        """Per-model mean cross-entropy on a stream batch: [K]. ``labels`` [K, B] override
        the true labels (e.g. random labels)."""
        y = self.y[batch["idx"]] if labels is None else labels
        return per_model_ce(self.logits(batch["idx"], batch.get("aug")), y, batch["weight"],
                            label_smoothing)


class TrainModule(EnsembleModule):
    """Trains an ensemble with a task's recipe: cross-entropy, SGD/Adam, per-step schedule."""

    def __init__(
        self, ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
        steps_per_epoch: int,
    ):
        super().__init__(ensemble, x, y)
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.ce(batch, label_smoothing=self.recipe.label_smoothing)
        self.log("train_loss", loss.mean(), prog_bar=True)
        return loss.sum()

    def configure_optimizers(self):  # noqa: ANN201
        r = self.recipe
        opt = make_optimizer(
            self.ensemble.parameters(), r.optimizer, r.lr, r.momentum, r.weight_decay, r.nesterov
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(r, self.steps_per_epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def accelerator(device: str) -> str:
    """Lightning accelerator name for ``auto``, ``cpu`` or ``cuda``/``gpu``."""
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if device in ("cuda", "gpu") else "cpu"


def make_trainer(device: str = "auto", logger: object = False, progress: bool = False,
                 max_epochs: int = 1) -> pl.Trainer:
    """A quiet Lightning trainer for the project's modules."""
    return pl.Trainer(
        accelerator=accelerator(device), devices=1, max_epochs=max_epochs, logger=logger,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
        num_sanity_val_steps=0, log_every_n_steps=10,
    )


def train_ensemble(
    task: Task,
    keys: Sequence[int],
    masks: np.ndarray | None = None,
    recipe: Recipe | None = None,
    device: str = "auto",
    logger: object = False,
    progress: bool = False,
) -> Ensemble:
    """Train one model per key on its training subset (``masks`` [K, n_train], default all).

    Every model takes the recipe's fixed step budget, ``epochs x ceil(n_train /
    batch_size)`` steps, whatever its subset's size (see :class:`dmm.recipe.Recipe`).
    Returns the trained ensemble on the CPU. ``keys`` come from :func:`model_key`.
    """
    recipe = recipe or task.recipe
    n = task.data.n_train
    masks = np.ones((len(keys), n), dtype=bool) if masks is None else np.asarray(masks)
    ensemble = Ensemble([task.build_model(k) for k in keys])
    stream = BatchStream(masks.astype(np.int64), keys, recipe.epochs, recipe.batch_size,
                         augment=recipe.augment == "crop_flip",
                         steps_per_epoch=recipe.steps_per_epoch(n))
    module = TrainModule(ensemble, task.data.x_train, task.data.y_train, recipe,
                         stream.steps_per_epoch)
    make_trainer(device, logger, progress, max_epochs=recipe.epochs).fit(module, stream.loader())
    return ensemble.cpu()


def train_checkpoint(task: Task, out: Path, seed: int = 0,
                     wandb: Literal["offline", "online", "disabled"] = "offline",
                     device: Literal["auto", "cpu", "cuda"] = "auto",
                     overwrite: bool = False) -> dict:
    """Train one model of a task with its recipe and write a checkpoint (safetensors
    weights and metadata); logs go to CSV and wandb beside it. Returns the metadata.

    Args:
        task: the task whose recipe trains the model.
        out: checkpoint path, e.g. runs/digits/model.ckpt.
        seed: seed of the model's initialisation and data order.
        wandb: wandb logging: offline (no account), online or disabled.
        device: auto (CUDA when present), cpu or cuda.
        overwrite: replace an existing checkpoint (only once the new one is complete).
    """
    from dmm.checkpoint import save_checkpoint
    from dmm.evals.accuracy import accuracy
    from dmm.logging import make_loggers

    out = Path(out)
    if out.exists() and not overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if out.is_dir():
        raise DmmError(f"output {out} is a directory, not a checkpoint file")
    key = model_key(seed, 0)
    loggers = make_loggers(out.parent / "logs", out.stem, wandb, config={
        "task": task.name, "seed": seed, "recipe": vars(task.recipe)})
    t0 = time.perf_counter()
    ens = train_ensemble(task, [key], device=device, logger=loggers, progress=True)
    seconds = time.perf_counter() - t0
    logits, n = ens.predict(task.data.x_all)[0], task.data.n_train
    acc = {"train": accuracy(logits[:n], task.data.y_train),
           "val": accuracy(logits[n:], task.data.y_val)}
    for lg in loggers:
        lg.log_metrics({f"accuracy/{k}": v for k, v in acc.items()})
        lg.finalize("success")
    meta = dict(key=key, seed=seed, recipe=vars(task.recipe), accuracy=acc,
                train_seconds=seconds, examples_processed=task.recipe.examples(n))
    save_checkpoint(out, task, ens.model_state(0), **meta)
    return meta
