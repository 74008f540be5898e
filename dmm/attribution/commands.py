"""CLI commands of the attribution stage: ``dmm attribute`` and ``dmm forget-sets``.

Every input is opened and checked before any fitting starts; outputs are written
atomically, so an error leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dmm.errors import DmmError

if TYPE_CHECKING:
    from dmm.cli import Parser


def _parser(description: str) -> Parser:
    from dmm.cli import Parser, _task_args

    p = Parser(description=description)
    _task_args(p)
    return p


# ---------------------------------------------------------------- attribute
def attribute_parser() -> Parser:
    from dmm.cli import _common

    p = _parser("Fit an attribution backend (regression datamodels or TRAK) that predicts the "
                "logits of models retrained without a forget set, and save it with a "
                "manifest (task, training-set fingerprint, fleet, solver, regularisation, "
                "DM-Direct scale, LDS).")
    p.add_argument("--backend", type=Literal["datamodels", "trak"], required=True,
                   help="datamodels (regression on a datamodel fleet) or trak")
    p.add_argument("--fleet", type=Path, required=True,
                   help="datamodels: a datamodel fleet; trak: a fleet with weights (originals)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--solver", type=Literal["lasso", "ridge"], default="lasso",
                   help="datamodels: lasso (FISTA) or ridge (closed form)")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="datamodels: share of fleet models that choose the regularisation")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the held-out split (datamodels) or of the projection (trak)")
    p.add_argument("--ratios", type=list[float] | None, default=None,
                   help="regularisation path: lasso lambda/lambda_max, ridge lambda/(m var)")
    p.add_argument("--max_iter", type=int, default=300, help="lasso: iterations per path point")
    p.add_argument("--datamodel_fleet", type=Path | None, default=None,
                   help="trak: datamodel fleet fixing the units, intercept and mask centre")
    p.add_argument("--models", type=int | None, default=None,
                   help="trak: number of ensemble models (default: all of --fleet)")
    p.add_argument("--proj_dim", type=int, default=512, help="trak: projection dimension")
    p.add_argument("--lambda_reg", type=float, default=10.0, help="trak: ridge on Phi^T Phi")
    p.add_argument("--calibration_originals", type=Path | None, default=None,
                   help="original fleet for the DM-Direct scale s (with --calibration_oracles)")
    p.add_argument("--calibration_oracles", type=list[Path], default=[],
                   help="oracle fleets of calibration forget sets (never the evaluated ones)")
    p.add_argument("--lds_fleet", type=Path | None, default=None,
                   help="an independent datamodel fleet on which to report the LDS")
    _common(p)
    return p


def run_attribute(args) -> None:  # noqa: ANN001
    from dmm.attribution.calibration import fit_scale_from_fleets
    from dmm.attribution.quality import attribution_lds
    from dmm.attribution.store import save_attribution
    from dmm.fleet import load_fleet
    from dmm.tasks import load_task
    from dmm.training import accelerator

    if args.out.exists() and not args.overwrite:
        raise DmmError(f"output {args.out} already exists (pass --overwrite to replace it)")
    if not 0 < args.holdout < 1:
        raise DmmError(f"--holdout must be in (0, 1), got {args.holdout}")
    if bool(args.calibration_originals) != bool(args.calibration_oracles):
        raise DmmError("--calibration_originals and --calibration_oracles go together")
    task = load_task(args.task, args.data)
    fleet = load_fleet(args.fleet, task)
    if args.backend == "datamodels" and fleet.manifest["kind"] != "datamodel":
        raise DmmError(f"--fleet {fleet.path} is an {fleet.manifest['kind']!r} fleet, not a "
                       "datamodel fleet (dmm fleet --kind datamodel)")
    if args.backend == "trak" and not fleet.manifest["save_weights"]:
        raise DmmError(f"--fleet {fleet.path} kept no weights; TRAK needs trained models "
                       "(e.g. dmm fleet --kind original)")
    device = "cuda" if accelerator(args.device) == "gpu" else "cpu"
    originals = load_fleet(args.calibration_originals, task) if args.calibration_originals \
        else None
    oracles = [load_fleet(p, task) for p in args.calibration_oracles]
    if any(f.manifest["kind"] != "oracle" for f in oracles) or (
            originals is not None and originals.manifest["kind"] != "original"):
        raise DmmError("--calibration_originals must be an original fleet and "
                       "--calibration_oracles oracle fleets")
    lds_fleet = load_fleet(args.lds_fleet, task) if args.lds_fleet else None
    if lds_fleet is not None and lds_fleet.manifest["kind"] != "datamodel":
        raise DmmError(f"--lds_fleet {lds_fleet.path} is not a datamodel fleet")

    t0 = time.perf_counter()
    if args.backend == "datamodels":
        from dmm.attribution.datamodels import fit_datamodels

        attr = fit_datamodels(fleet, args.solver, args.holdout, args.seed,
                              tuple(args.ratios) if args.ratios else None, device,
                              max_iter=args.max_iter)
    else:
        from dmm.attribution.trak_scores import fit_trak

        if args.datamodel_fleet is None:
            raise DmmError("--backend trak needs --datamodel_fleet (to fit its logit units)")
        dm_fleet = load_fleet(args.datamodel_fleet, task)
        if dm_fleet.manifest["kind"] != "datamodel":
            raise DmmError(f"--datamodel_fleet {dm_fleet.path} is not a datamodel fleet")
        attr = fit_trak(task, fleet, dm_fleet, args.models, args.proj_dim, args.lambda_reg,
                        args.seed, device)
    fit_seconds = time.perf_counter() - t0

    if originals is not None:
        attr.scale, attr.info["scale_fit"] = fit_scale_from_fleets(attr, originals, oracles)
    else:
        slope = attr.info.get("heldout_slope", 1.0)
        attr.scale = float(slope)
        attr.info["scale_fit"] = {
            "method": "slope of actual on predicted centred logits of held-out fleet models"
                      if "heldout_slope" in attr.info else "none (units fitted, s = 1)"}

    n_train = task.data.n_train
    if lds_fleet is not None:
        labels = lds_fleet.labels
        attr.info["lds"] = {
            "validation": attribution_lds(attr, lds_fleet.masks, lds_fleet.logits, labels,
                                          range(n_train, attr.n_points)),
            "train": attribution_lds(attr, lds_fleet.masks, lds_fleet.logits, labels,
                                     range(n_train)),
            "on": str(lds_fleet.path), "models": len(lds_fleet)}
    attr.info["fit_seconds"] = fit_seconds
    save_attribution(attr, args.out, task, overwrite=args.overwrite)
    lds = attr.info["lds"]["validation"]
    print(f"{args.backend} ({attr.info['solver']}) for {task.name}: LDS {lds:.4f} "
          f"on validation targets, scale s = {attr.scale:.3f}, {fit_seconds:.0f} s; "
          f"wrote {args.out}")


# ---------------------------------------------------------------- forget-sets
def forget_sets_parser() -> Parser:
    from dmm.cli import _common

    p = _parser("Write a task's forget sets as index files: random (several sizes), top-k and "
                "top-k plus bottom-k by projection on PC1 and PC2 of the train-to-train "
                "attribution matrix (margin datamodels), and class-concentrated sets.")
    p.add_argument("--attribution", type=Path, required=True,
                   help="attribution artifact (dmm attribute) giving the train-to-train matrix")
    p.add_argument("--out", type=Path | None, default=None,
                   help="output directory (default runs/<task>/forget_sets)")
    p.add_argument("--random_sizes", type=list[int], default=[10, 50, 150],
                   help="sizes of the random sets")
    p.add_argument("--pc_sizes", type=list[int], default=[10, 50], help="k of the PC top-k sets")
    p.add_argument("--pc_top_bottom", type=int, default=50,
                   help="k of the PC top-k plus bottom-k sets (0: none)")
    p.add_argument("--classes", type=list[int], default=[3, 8],
                   help="classes of the class-concentrated sets")
    p.add_argument("--class_size", type=int, default=50, help="size of each class set")
    p.add_argument("--seed", type=int, default=0, help="seed of the random and class sets")
    _common(p)
    return p


def run_forget_sets(args) -> None:  # noqa: ANN001
    from dmm.attribution.forget_suite import build_forget_suite, write_suite
    from dmm.attribution.store import load_attribution
    from dmm.tasks import load_task

    task = load_task(args.task, args.data)
    out = args.out or Path("runs") / task.name / "forget_sets"
    if out.exists() and not args.overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    for c in args.classes:
        if not 0 <= c < task.data.n_classes:
            raise DmmError(f"class {c} out of range for {task.data.n_classes} classes")
    attr = load_attribution(args.attribution, task)
    sets, info = build_forget_suite(
        attr, task.data.y_all.numpy(), tuple(args.random_sizes), tuple(args.pc_sizes),
        args.pc_top_bottom, tuple(args.classes), args.class_size, args.seed)
    info = {**task.identity(), "attribution": str(args.attribution), **info}
    write_suite(sets, info, out, overwrite=args.overwrite)
    print(f"{len(sets)} forget sets of {task.name} ({', '.join(sets)}); wrote {out}")
