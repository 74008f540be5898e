"""The ``dmm`` command line: one subcommand per stage of the pipeline.

Every subcommand documents itself (``dmm <command> --help``). Bad input prints one line,
``dmm: error: ...``, and exits with status 2 without writing anything.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Literal, NoReturn

from jsonargparse import ArgumentParser

from dmm.attribution import commands as attribution_commands
from dmm.errors import DmmError
from dmm.evals import commands as eval_commands

Device = Literal["auto", "cpu", "cuda"]
WandbMode = Literal["offline", "online", "disabled"]


class Parser(ArgumentParser):
    """jsonargparse parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str, *args, **kwargs) -> NoReturn:  # noqa: ARG002
        print(f"dmm: error: {' '.join(str(message).split())}", file=sys.stderr)
        sys.exit(2)


def _task_args(p: Parser) -> None:
    p.add_argument("--task", default="digits",
                   help="task name (configs/tasks/<name>.yaml) or a task YAML path")
    p.add_argument("--data", type=str, default=None,
                   help="local data for tasks that need it: cifar10 directory or tensors file")


def _common(p: Parser) -> None:
    p.add_argument("--device", type=Device, default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only once the new one is complete)")


# ---------------------------------------------------------------- tasks
def tasks_parser() -> Parser:
    return Parser(description="List the tasks shipped in configs/tasks.")


def run_tasks(args) -> None:  # noqa: ANN001
    from dmm.tasks import TASK_DIR, task_names

    for name in task_names():
        first = (TASK_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:12s} {first}")


# ---------------------------------------------------------------- train
def train_parser() -> Parser:
    p = Parser(description="Train one model of a task with its recipe and write a checkpoint "
               "(safetensors weights + metadata). Logs to CSV and to wandb (offline by default).")
    _task_args(p)
    p.add_argument("--out", type=Path, required=True,
                   help="checkpoint path, e.g. runs/digits/model.ckpt")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's init and data order")
    p.add_argument("--wandb", type=WandbMode, default="offline",
                   help="wandb logging: offline (default, no account), online or disabled")
    _common(p)
    return p


def run_train(args) -> None:  # noqa: ANN001
    from dmm.checkpoint import save_checkpoint
    from dmm.logging import make_loggers
    from dmm.tasks import load_task
    from dmm.training import model_key, train_ensemble

    out: Path = args.out
    if out.exists() and not args.overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if out.is_dir():
        raise DmmError(f"output {out} is a directory, not a checkpoint file")
    task = load_task(args.task, args.data)
    key = model_key(args.seed, 0)
    loggers = make_loggers(out.parent / "logs", out.stem, args.wandb, config={
        "task": task.name, "seed": args.seed, "recipe": vars(task.recipe)})
    t0 = time.perf_counter()
    ens = train_ensemble(task, [key], device=args.device, logger=loggers, progress=True)
    seconds = time.perf_counter() - t0
    acc = _accuracies(ens, task)
    for lg in loggers:
        lg.log_metrics({f"accuracy/{k}": v for k, v in acc.items()})
        lg.finalize("success")
    save_checkpoint(out, task, ens.model_state(0), key=key, seed=args.seed,
                    recipe=vars(task.recipe), accuracy=acc, train_seconds=seconds,
                    examples_processed=task.recipe.examples(task.data.n_train))
    print(f"train accuracy {acc['train']:.4f}  validation accuracy {acc['val']:.4f}  "
          f"({seconds:.1f} s)  wrote {out}")


def _accuracies(ens, task) -> dict[str, float]:  # noqa: ANN001
    logits = ens.predict(task.data.x_all)[0]
    correct = (logits.argmax(-1) == task.data.y_all).float()
    n = task.data.n_train
    return {"train": correct[:n].mean().item(), "val": correct[n:].mean().item()}


# ---------------------------------------------------------------- fleet
def fleet_parser() -> Parser:
    p = Parser(description="Train a fleet of models (vectorised with torch.func when the "
               "model allows), storing each model's mask and logits on all points. Resumable: "
               "re-run the same command after an interruption.")
    _task_args(p)
    p.add_argument("--kind", type=Literal["original", "oracle", "datamodel"], required=True,
                   help="original (all data), oracle (all but --forget), datamodel (random halves)")
    p.add_argument("--models", type=int, required=True, help="number of models")
    p.add_argument("--out", type=Path, required=True, help="fleet directory")
    p.add_argument("--forget", type=Path, default=None,
                   help="forget set index file (.txt/.csv/.npy/.json), for --kind oracle")
    p.add_argument("--seed", type=int, default=0, help="fleet seed")
    p.add_argument("--alpha", type=float, default=0.5, help="subset probability (datamodel)")
    p.add_argument("--shard_size", type=int, default=256, help="models trained together")
    p.add_argument("--dtype", type=Literal["float32", "float16"], default="float32",
                   help="storage type of the logits")
    p.add_argument("--save_weights", type=bool | None, default=None,
                   help="keep weights (default: true for original/oracle, false for datamodel)")
    _common(p)
    return p


def run_fleet(args) -> None:  # noqa: ANN001
    from dmm.fleet import shard_summary, train_fleet
    from dmm.forget_sets import read_indices
    from dmm.tasks import load_task

    if args.models < 1:
        raise DmmError(f"--models must be a positive integer, got {args.models}")
    if args.out.exists() and not args.overwrite:
        raise DmmError(f"output {args.out} already exists (pass --overwrite to replace it)")
    task = load_task(args.task, args.data)
    forget = read_indices(args.forget, task.data.n_train) if args.forget else None
    t0 = time.perf_counter()
    fleet = train_fleet(task, args.kind, args.models, args.out, seed=args.seed, forget=forget,
                        alpha=args.alpha, shard_size=args.shard_size, dtype=args.dtype,
                        save_weights=args.save_weights, device=args.device,
                        overwrite=args.overwrite)
    s = shard_summary(fleet)
    print(f"{len(fleet)} {args.kind} models of {task.name}: validation accuracy "
          f"{s['val_accuracy_mean']:.4f} ± {s['val_accuracy_std']:.4f}, "
          f"{s['seconds_per_model'] * 1000:.0f} ms per model; "
          f"{time.perf_counter() - t0:.1f} s in this run; wrote {args.out}")


# ---------------------------------------------------------------- unlearn
def unlearn_parser() -> Parser:
    p = Parser(description="Unlearn a forget set from a checkpoint: writes the new checkpoint "
               "(which records every index it has forgotten, so later requests compose) and "
               "a report <out>.json (method, hyperparameters, wall time, compute as a fraction "
               "of one retraining, accuracy before/after on forget/retain/validation).")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to unlearn")
    p.add_argument("--forget", type=Path, required=True,
                   help="index file of training examples to delete (.txt/.csv/.npy/.json)")
    p.add_argument("--out", type=Path, required=True, help="new checkpoint path")
    p.add_argument("--method", default="dmm",
                   help="dmm (default), om, or a baseline: ga, gd, neggrad-plus, scrub, "
                   "random-labels, salun, l1-sparse, ssd, retrain, do-nothing")
    p.add_argument("--attribution", type=Path, default=None,
                   help="attribution artifact (dmm attribute) for dmm")
    p.add_argument("--oracles", type=Path, default=None,
                   help="oracle fleet for this forget set, for om")
    p.add_argument("--task", default=None, help="task (default: the checkpoint's)")
    p.add_argument("--data", type=str, default=None, help="local data for cifar10/tensors")
    p.add_argument("--set", type=str, default=[], nargs="+", metavar="KEY=VALUE",
                   help="hyperparameter overrides, e.g. --set lr=1e-3 epochs=4 "
                   "(defaults: configs/methods/<method>.yaml)")
    _common(p)
    return p


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DmmError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def run_unlearn(args) -> None:  # noqa: ANN001
    from dmm.checkpoint import read_checkpoint
    from dmm.forget_sets import read_indices
    from dmm.tasks import load_task
    from dmm.unlearning.api import unlearn_checkpoint

    _, meta = read_checkpoint(args.checkpoint)
    task = load_task(args.task or meta["task"], args.data)
    forget = read_indices(args.forget, task.data.n_train)
    predictor = oracle = None
    if args.method in ("dmm", "dm-direct"):
        if args.attribution is None:
            raise DmmError(f"method {args.method} needs --attribution DIR (from dmm attribute)")
        from dmm.attribution import load

        predictor = load(args.attribution, task)
    if args.method == "om":
        if args.oracles is None:
            raise DmmError("method om needs --oracles DIR (an oracle fleet for this forget set)")
        from dmm.attribution import OraclePredictor
        from dmm.fleet import load_fleet

        oracle = OraclePredictor(load_fleet(args.oracles, task))
    report = unlearn_checkpoint(args.checkpoint, task, forget, args.out, args.method, predictor,
                                oracle, args.device, args.overwrite, **_overrides(args.set))
    a, b = report["accuracy_before"], report["accuracy_after"]
    print(f"{report['method']}: forgot {len(report['forget_request'])} examples "
          f"({len(report['forgotten'])} in total) in {report['seconds']:.1f} s, "
          f"{report['compute_fraction_of_retraining']:.1%} of a retraining")
    for split in ("forget", "retain", "validation"):
        print(f"  accuracy {split:10s} {a[split]:.4f} -> {b[split]:.4f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


# ---------------------------------------------------------------- bench
def bench_parser() -> Parser:
    p = Parser(description="Benchmark every method of a config on the task's forget-set "
               "suite: fleets of N originals and oracles (cached in <out>/cache and reused), "
               "grid search per forget set on one pair of fleets, report on a fresh pair, "
               "KLoM beside the noise floor, U-LiRA, compute. Writes results.csv/.md, "
               "selection.csv, grid.csv, pareto.png, histograms/ and a wandb run.")
    p.add_argument("--config", type=Path, default=Path("configs/bench/digits.yaml"),
                   help="bench config (configs/bench/<task>.yaml)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default runs/bench/<config name>[-quick])")
    p.add_argument("--quick", action="store_true",
                   help="the config's quick profile: tiny fleets, one grid point per method")
    p.add_argument("--data", type=str, default=None,
                   help="local data directory for cifar10/tensors (overrides the config's)")
    p.add_argument("--wandb", type=WandbMode, default="offline",
                   help="wandb logging: offline (default, no account), online or disabled")
    p.add_argument("--device", type=Device, default="auto", help="auto, cpu or cuda")
    return p


def run_bench_command(args) -> None:  # noqa: ANN001
    from dmm.bench import load_bench_config, run_bench

    cfg = load_bench_config(args.config, quick=args.quick)
    if args.data is not None:
        cfg.data = args.data
    out = args.out or Path("runs/bench") / (args.config.stem + ("-quick" if args.quick else ""))
    run_bench(cfg, out, device=args.device, wandb=args.wandb)
    print(f"wrote {out}/results.csv, results.md, pareto.png, histograms/")


COMMANDS = {
    "tasks": (tasks_parser, run_tasks, "list the available tasks"),
    "train": (train_parser, run_train, "train one model and write a checkpoint"),
    "fleet": (fleet_parser, run_fleet, "train a fleet of models (originals, oracles, datamodels)"),
    "unlearn": (unlearn_parser, run_unlearn, "unlearn a forget set from a checkpoint"),
    "bench": (bench_parser, run_bench_command, "benchmark every method on many forget sets"),
    "attribute": (attribution_commands.attribute_parser, attribution_commands.run_attribute,
                  "fit an attribution backend (datamodels or TRAK) and save it"),
    "forget-sets": (attribution_commands.forget_sets_parser, attribution_commands.run_forget_sets,
                    "write a task's forget sets (random, PC top-k, class-concentrated)"),
    "eval": (eval_commands.eval_parser, eval_commands.run_eval,
             "evaluate unlearned models against oracles (KLoM, accuracy, MIA) as a report"),
}


def build_parser() -> Parser:
    p = Parser(prog="dmm", description="Machine unlearning by Datamodel Matching: fleets, "
               "attribution, unlearning, evaluation (KLoM) and benchmarks.")
    sub = p.add_subcommands(dest="command")
    for name, (make, _, help_) in COMMANDS.items():
        sub.add_subcommand(name, make(), help=help_)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001, ARG001
    print(f"dmm: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dmm`` console script."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        COMMANDS[args.command][1](args[args.command])
    except DmmError as e:
        print(f"dmm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("dmm: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
