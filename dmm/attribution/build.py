"""``dmm attribute``: fit an attribution backend on fleets and save it as an artifact.

Every input is opened and checked before any fitting starts; the output is written
atomically, so an error leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from dmm.attribution.group import GroupAttribution
from dmm.attribution.linear import LinearAttribution
from dmm.errors import DmmError
from dmm.fleet import load_fleet
from dmm.tasks import Task


def attribute(task: Task, backend: Literal["datamodels", "trak", "group"], fleet: Path,
              out: Path,
              solver: Literal["lasso", "ridge"] = "lasso", holdout: float = 0.1,
              seed: int = 0, ratios: list[float] | None = None, max_iter: int = 300,
              datamodel_fleet: Path | None = None, models: int | None = None,
              proj_dim: int = 512, lambda_reg: float = 10.0,
              calibration_originals: Path | None = None,
              calibration_oracles: list[Path] | None = None, lds_fleet: Path | None = None,
              linear: Path | None = None, neighbours: int = 64, power: float = 8.0,
              device: Literal["auto", "cpu", "cuda"] = "auto",
              overwrite: bool = False) -> LinearAttribution | GroupAttribution:
    """Fit an attribution backend (regression datamodels, TRAK, or the group-aware backend)
    that predicts the logits of models retrained without a forget set, and save it with a
    manifest (task, training-set fingerprint, fleets, solver, regularisation, scales, LDS).

    Args:
        task: the task of the fleets.
        backend: datamodels (regression on a datamodel fleet), trak, or group (density
            datamodels on top of linear datamodels: dmm.attribution.group).
        fleet: datamodels: a datamodel fleet; trak: a fleet with weights (originals);
            group: a density fleet (dmm fleet --kind datamodel --alpha_range 0.3 0.97).
        out: output directory.
        solver: datamodels: lasso (FISTA) or ridge (closed form).
        holdout: datamodels: share of fleet models that choose the regularisation.
        seed: seed of the held-out split (datamodels) or of the projection (trak).
        ratios: regularisation path: lasso lambda/lambda_max, ridge lambda/(m var).
        max_iter: lasso: iterations per path point.
        datamodel_fleet: trak: datamodel fleet fixing the units, intercept and mask centre;
            group: the linear datamodels' fleet (random halves; their residual spread).
        models: trak: number of ensemble models (default: all of the fleet).
        proj_dim: trak: projection dimension.
        lambda_reg: trak: ridge on Phi^T Phi.
        calibration_originals: original fleet for the DM-Direct scale s (with
            calibration_oracles).
        calibration_oracles: oracle fleets of calibration forget sets (never the
            evaluated ones).
        lds_fleet: an independent datamodel fleet on which to report the LDS.
        linear: group: the linear datamodels (dmm attribute --backend datamodels) used off
            the forget points.
        neighbours: group: substitutes kept per example.
        power: group: exponent of the substitution weights.
        device: auto (CUDA when present), cpu or cuda.
        overwrite: replace an existing output (only once the new one is complete).
    """
    from dmm.attribution.calibration import fit_scale_from_fleets
    from dmm.attribution.quality import attribution_lds
    from dmm.attribution.store import save_attribution
    from dmm.training import accelerator

    calibration_oracles = calibration_oracles or []
    if out.exists() and not overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if not 0 < holdout < 1:
        raise DmmError(f"--holdout must be in (0, 1), got {holdout}")
    if bool(calibration_originals) != bool(calibration_oracles):
        raise DmmError("--calibration_originals and --calibration_oracles go together")
    fit_fleet = load_fleet(fleet, task)
    if backend in ("datamodels", "group") and fit_fleet.manifest["kind"] != "datamodel":
        raise DmmError(f"--fleet {fit_fleet.path} is an {fit_fleet.manifest['kind']!r} fleet, "
                       "not a datamodel fleet (dmm fleet --kind datamodel)")
    if backend == "trak" and not fit_fleet.manifest["save_weights"]:
        raise DmmError(f"--fleet {fit_fleet.path} kept no weights; TRAK needs trained models "
                       "(e.g. dmm fleet --kind original)")
    solver_device = "cuda" if accelerator(device) == "gpu" else "cpu"
    originals = load_fleet(calibration_originals, task) if calibration_originals else None
    oracles = [load_fleet(p, task) for p in calibration_oracles]
    if any(f.manifest["kind"] != "oracle" for f in oracles) or (
            originals is not None and originals.manifest["kind"] != "original"):
        raise DmmError("--calibration_originals must be an original fleet and "
                       "--calibration_oracles oracle fleets")
    lds_models = load_fleet(lds_fleet, task) if lds_fleet else None
    if lds_models is not None and lds_models.manifest["kind"] != "datamodel":
        raise DmmError(f"--lds_fleet {lds_models.path} is not a datamodel fleet")
    dm_fleet = None
    if backend == "group":
        from dmm.attribution.group import fit_group_from_fleets
        from dmm.attribution.store import load_attribution

        if linear is None or datamodel_fleet is None or originals is None:
            raise DmmError("--backend group needs --linear DIR, --datamodel_fleet DIR and "
                           "--calibration_originals / --calibration_oracles")
        ridge = load_attribution(linear, task)
        if not isinstance(ridge, LinearAttribution):
            raise DmmError(f"--linear {linear} is not a linear attribution")
        t0 = time.perf_counter()
        attr = fit_group_from_fleets(ridge, fit_fleet, load_fleet(datamodel_fleet, task),
                                     originals, oracles, neighbours, power)
        attr.info["fit_seconds"] = time.perf_counter() - t0
        save_attribution(attr, out, task, overwrite=overwrite)
        return attr
    if backend == "trak":
        if datamodel_fleet is None:
            raise DmmError("--backend trak needs --datamodel_fleet (to fit its logit units)")
        dm_fleet = load_fleet(datamodel_fleet, task)
        if dm_fleet.manifest["kind"] != "datamodel":
            raise DmmError(f"--datamodel_fleet {dm_fleet.path} is not a datamodel fleet")

    t0 = time.perf_counter()
    if backend == "datamodels":
        from dmm.attribution.datamodels import fit_datamodels

        attr = fit_datamodels(fit_fleet, solver, holdout, seed,
                              tuple(ratios) if ratios else None, solver_device,
                              max_iter=max_iter)
    else:
        from dmm.attribution.trak_scores import fit_trak

        attr = fit_trak(task, fit_fleet, dm_fleet, models, proj_dim, lambda_reg, seed,
                        solver_device)
    fit_seconds = time.perf_counter() - t0

    if originals is not None:
        attr.scale, attr.info["scale_fit"] = fit_scale_from_fleets(attr, originals, oracles)
    else:
        attr.scale = float(attr.info.get("heldout_slope", 1.0))
        attr.info["scale_fit"] = {
            "method": "slope of actual on predicted centred logits of held-out fleet models"
                      if "heldout_slope" in attr.info else "none (units fitted, s = 1)"}
    if lds_models is not None:
        n_train, labels = task.data.n_train, lds_models.labels
        attr.info["lds"] = {
            "validation": attribution_lds(attr, lds_models.masks, lds_models.logits, labels,
                                          range(n_train, attr.n_points)),
            "train": attribution_lds(attr, lds_models.masks, lds_models.logits, labels,
                                     range(n_train)),
            "on": str(lds_models.path), "models": len(lds_models)}
    attr.info["fit_seconds"] = fit_seconds
    save_attribution(attr, out, task, overwrite=overwrite)
    return attr
