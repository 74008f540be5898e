"""Experiment logging: a CSV log always, wandb offline by default (no account, no network)."""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger


def make_loggers(save_dir: str | Path, name: str, wandb: str = "offline",
                 config: dict | None = None, project: str = "dmm") -> list[Logger]:
    """CSV logger plus, unless ``wandb == "disabled"``, a wandb logger in that mode."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    loggers: list[Logger] = [CSVLogger(save_dir, name=name)]
    if wandb != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        lg = WandbLogger(project=project, name=name, save_dir=str(save_dir), mode=wandb)
        if config:
            lg.log_hyperparams(config)
        loggers.append(lg)
    return loggers
