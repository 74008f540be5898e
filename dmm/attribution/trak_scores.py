"""TRAK (package ``traker``) over an ensemble of independently trained models.

Per-class logits. TRAK attributes one scalar output per target. Its train-side features
(projected gradients of the margin, the out-to-loss term Q = 1 - p_y and the inverse
of Phi^T Phi) approximate the loss gradient and curvature: they do not depend on which
target output is attributed. So we featurise the training set once per model with the
margin, and score the targets once per class with the gradient of that class's logit:
:class:`LogitModelOutput` returns the margin while featurising and ``z_c`` while
scoring class c (one TRAK scoring experiment per class). One TRAK run per class would
redo the identical featurisation C times for the same result.

CPU settings: ``device="cpu"`` as a string, ``use_half_precision=False``, a fresh
temporary ``save_dir`` for each call, traker's ``BasicProjector`` with a normal
projection (:class:`SingleBlockProjector`; no fast_jl), ``proj_dim`` below n_train and
``lambda_reg > 0``. Scores are not in logit units: see :func:`fit_trak`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.func import functional_call
from trak import TRAKer
from trak.modelout_functions import AbstractModelOutput
from trak.projectors import BasicProjector, ProjectionType

from dmm.attribution.calibration import fit_units
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.quality import attribution_lds
from dmm.errors import DmmError
from dmm.fleet import Fleet
from dmm.tasks import Task


class LogitModelOutput(AbstractModelOutput):
    """TRAK model output: the margin when featurising training examples (TRAK's default
    for classification), the logit of ``target_class`` when scoring targets."""

    def __init__(self) -> None:
        super().__init__()
        self.target_class: int | None = None

    def get_output(self, model: torch.nn.Module, weights: dict, buffers: dict,
                   image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (weights, buffers), image.unsqueeze(0))[0]
        if self.target_class is not None:
            return logits[self.target_class]
        is_label = torch.arange(logits.shape[-1], device=logits.device) == label
        others = torch.where(is_label, torch.full_like(logits, float("-inf")), logits)
        return (logits * is_label).sum() - others.logsumexp(-1)

    def get_out_to_loss_grad(self, model: torch.nn.Module, weights: dict, buffers: dict,
                             batch: Sequence[torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        logits = functional_call(model, (weights, buffers), images)
        p = torch.softmax(logits, -1)[torch.arange(len(labels)), labels]
        return (1 - p).detach().unsqueeze(-1)


class SingleBlockProjector(BasicProjector):
    """traker's BasicProjector with its normal matrix generated in one block, once per
    model. ``finalize_features`` frees the projector's memory, after which a single-block
    BasicProjector never regenerates its matrix for the same model id; the matrix is
    small (parameters x proj_dim), so it is kept instead."""

    def __init__(self, grad_dim: int, proj_dim: int, seed: int, device: str):
        super().__init__(grad_dim, proj_dim, seed, ProjectionType.normal, device=device,
                         block_size=proj_dim, dtype=torch.float32)

    def free_memory(self) -> None:
        """Keep the matrix (see the class docstring)."""


def compute_trak_scores(task: Task, states: Sequence[dict[str, torch.Tensor]],
                        proj_dim: int = 512, lambda_reg: float = 10.0, batch_size: int = 512,
                        seed: int = 0, device: str = "cpu") -> np.ndarray:
    """Raw TRAK scores [n_train, points, classes] of every class logit at every point,
    averaged over the models whose ``states`` (state dicts) are given."""
    n_train, x_all, y_all = task.data.n_train, task.data.x_all, task.data.y_all
    if not 0 < proj_dim < n_train:
        raise DmmError(f"proj_dim must be in (0, n_train = {n_train}), got {proj_dim}")
    if lambda_reg <= 0:
        raise DmmError(f"lambda_reg must be positive, got {lambda_reg}")
    if not states:
        raise DmmError("TRAK needs at least one model")
    model = task.build_model().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    output = LogitModelOutput()
    scores = np.zeros((n_train, len(y_all), task.data.n_classes), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="dmm-trak-") as save_dir:
        projector = SingleBlockProjector(n_params, proj_dim, seed, device)
        traker = TRAKer(model=model, task=output, train_set_size=n_train, save_dir=save_dir,
                        device=device, projector=projector,
                        use_half_precision=False, lambda_reg=lambda_reg,
                        logging_level=logging.ERROR)
        for model_id, state in enumerate(states):
            traker.load_checkpoint(state, model_id=model_id)
            for batch in _batches(task.data.x_train, task.data.y_train, batch_size, device):
                traker.featurize(batch=batch, num_samples=len(batch[0]))
        traker.finalize_features()
        for c in range(task.data.n_classes):
            output.target_class = c
            for model_id, state in enumerate(states):
                traker.start_scoring_checkpoint(f"logit{c}", state, model_id, len(y_all))
                for batch in _batches(x_all, y_all, batch_size, device):
                    traker.score(batch=batch, num_samples=len(batch[0]))
            scores[:, :, c] = np.asarray(traker.finalize_scores(exp_name=f"logit{c}"))
            output.target_class = None
    return scores


def _batches(x: torch.Tensor, y: torch.Tensor, size: int, device: str) -> Any:
    for i in range(0, len(y), size):
        yield x[i : i + size].to(device), y[i : i + size].to(device)


def fleet_states(task: Task, fleet: Fleet, models: int | None = None) -> list[dict]:
    """State dicts of the first ``models`` models of a fleet that kept its weights."""
    n = len(fleet) if models is None else models
    if not 1 <= n <= len(fleet):
        raise DmmError(f"asked for {n} models of a fleet of {len(fleet)}")
    ens = fleet.ensemble(task, range(n))
    state = ens.stacked_state()
    return [{k: v[i] for k, v in state.items()} for i in range(n)]


def fit_trak(task: Task, ensemble: Fleet, datamodel_fleet: Fleet, models: int | None = None,
             proj_dim: int = 512, lambda_reg: float = 10.0, seed: int = 0,
             device: str = "cpu", units_models: int = 1000, lds_models: int = 500
             ) -> LinearAttribution:
    """TRAK attribution in logit units, usable wherever regression datamodels are.

    Scores come from the ``ensemble`` fleet's models (weights kept, e.g. originals). The
    intercept b(x) and the mask centre come from the ``datamodel_fleet`` (random-half
    subset models); the units factor a (beta = a * tau) is the least-squares slope of the
    centred logits of its first ``units_models`` models on TRAK's centred predictions
    (:func:`fit_units`), and the LDS recorded in ``info`` is measured on up to
    ``lds_models`` of its other models.
    """
    states = fleet_states(task, ensemble, models)
    raw = compute_trak_scores(task, states, proj_dim, lambda_reg, seed=seed, device=device)
    masks = np.asarray(datamodel_fleet.masks)
    logits = datamodel_fleet.logits
    n_units = min(units_models, len(masks) // 2)
    unit = LinearAttribution(np.asarray(logits, dtype=np.float32).mean(0),
                             masks.mean(0).astype(np.float32), raw)
    a = fit_units(unit, masks[:n_units], logits[:n_units])
    attr = unit.rescaled(a)
    n_train = task.data.n_train
    labels = np.asarray(datamodel_fleet.labels)
    held = slice(n_units, n_units + lds_models)
    attr.info = {
        "backend": "trak",
        "solver": "traker",
        "ensemble": {"path": str(ensemble.path), "models": len(states),
                     "kind": ensemble.manifest.get("kind")},
        "fleet": {"path": str(datamodel_fleet.path), "models": len(masks),
                  "seed": datamodel_fleet.manifest["seed"]},
        "regularisation": {"proj_dim": proj_dim, "lambda_reg": lambda_reg,
                           "projector": "BasicProjector normal", "seed": seed},
        "units": {"factor": a, "models": n_units,
                  "fit": "least squares of centred datamodel-fleet logits on TRAK's centred "
                         "predictions, class-centred"},
        "lds": {
            "validation": attribution_lds(attr, masks[held], logits[held], labels,
                                          np.arange(n_train, attr.n_points)),
            "train": attribution_lds(attr, masks[held], logits[held], labels,
                                     np.arange(n_train)),
            "on": f"models {held.start}..{min(held.stop, len(masks))} of the datamodel fleet "
                  "(not used for the units)"},
    }
    return attr
