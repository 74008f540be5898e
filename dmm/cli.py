"""The ``dmm`` command line: one subcommand per stage of the pipeline.

Every subcommand is built here, in one place, from the signature and docstring of the
library function it calls: its parameters become flags (``--shard_size``: the
parameter's name), their types and defaults the flags' types and defaults, their
docstring lines the help. What the command line gives differently from Python (a task
by name, a forget set as an index file, attribution artifacts and oracle fleets as
directories, hyperparameters as ``--set KEY=VALUE``) is turned into the function's
arguments by the few :class:`Adapter` objects below. Bad input prints one line,
``dmm: error: ...``, and exits with status 2 without writing anything.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import docstring_parser
from jsonargparse import ArgumentParser, DefaultHelpFormatter

from dmm.errors import DmmError

REQUIRED = inspect.Parameter.empty


def readable(hint: Any) -> str:
    """A type hint as users read it: ``int``, ``Path | None``, ``list[float]``, ``one of a, b``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else readable(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(map(readable, args))}]"
    return getattr(hint, "__name__", str(hint))


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with readable types."""

    def _get_type_str(self, action: Any) -> str | None:  # noqa: ANN401
        hint = getattr(action, "_typehint", None) or action.type
        return None if hint is None else readable(hint)


class Parser(ArgumentParser):
    """jsonargparse parser whose errors are one line on stderr and exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str, *args: Any, **kwargs: Any) -> NoReturn:  # noqa: ARG002
        print(f"dmm: error: {' '.join(str(message).split())}", file=sys.stderr)
        sys.exit(2)


@dataclass(frozen=True)
class Flag:
    """A command-line flag an adapter adds."""

    name: str
    type: Any
    help: str
    default: Any = None  # REQUIRED: the flag must be given
    nargs: str | None = None


@dataclass(frozen=True)
class Adapter:
    """Command-line inputs that become some of a function's arguments: ``resolve(args,
    given)`` returns them from the parsed flags and the arguments resolved so far."""

    flags: tuple[Flag, ...]
    provides: tuple[str, ...]
    resolve: Callable[[Any, dict[str, Any]], dict[str, Any]]


def _task(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    from dmm.tasks import load_task

    return {"task": load_task(args.task, args.data)}


def _checkpoint_task(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    from dmm.checkpoint import read_checkpoint
    from dmm.config import config_names
    from dmm.tasks import load_task

    _, meta = read_checkpoint(args.checkpoint)
    if args.task is None and meta["task"] not in config_names("tasks"):
        raise DmmError(f"checkpoint {args.checkpoint} is of task {meta['task']!r}, not a "
                       "shipped one: give its task YAML with --task")
    return {"task": load_task(args.task or meta["task"], args.data)}


def _bench_config(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    from dmm.config import config_path

    return {"config": config_path("bench", args.config)}


def _forget(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    from dmm.forget_sets import read_indices

    if args.forget is None:
        return {"forget": None}
    return {"forget": read_indices(args.forget, given["task"].data.n_train)}


def _hparams(args: Any) -> dict[str, Any]:
    """``--set KEY=VALUE ...`` as the method's hyperparameters, each parsed as YAML and
    checked against the method."""
    from dmm.config import parse_yaml
    from dmm.unlearning.configs import checked_hparams

    out = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DmmError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = parse_yaml(value)
    return checked_hparams(args.method, out, "--set")


def _predictor(args: Any, task: Any, needed: bool) -> Any:
    if not needed:
        return None
    from dmm.attribution import load
    from dmm.unlearning.base import Inputs

    if args.attribution is None:
        raise DmmError(f"method {args.method!r} needs {Inputs.DESCRIPTIONS['predictor']}")
    return load(args.attribution, task)


def _method_inputs(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    """What the method requires (an attribution backend, oracles) from directories, and
    its hyperparameters."""
    from dmm.unlearning.base import Inputs
    from dmm.unlearning.registry import method_class

    cls, task = method_class(args.method), given["task"]
    hparams = _hparams(args)
    oracle = None
    if "oracle" in cls.requires:
        if args.oracles is None:
            raise DmmError(f"method {args.method!r} needs {Inputs.DESCRIPTIONS['oracle']}")
        from dmm.attribution import OraclePredictor
        from dmm.fleet import load_fleet

        oracle = OraclePredictor(load_fleet(args.oracles, task))
    return {"predictor": _predictor(args, task, "predictor" in cls.requires),
            "oracle": oracle, "hparams": hparams}


def _ulira(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    """A U-LiRA job of the evaluated method on a shadow fleet, when one is given (the
    shadows' own oracles, for a method that requires oracles, are trained beside it)."""
    if args.shadows is None:
        return {"ulira": None}
    from dmm.evals.ulira_harness import ulira_job
    from dmm.fleet import FleetCache, load_fleet
    from dmm.tasks import load_task
    from dmm.unlearning.base import Inputs
    from dmm.unlearning.configs import configured_method
    from dmm.unlearning.registry import method_class

    if args.method is None:
        raise DmmError("--shadows needs --method (the method whose U-LiRA is computed)")
    shadows = load_fleet(args.shadows)
    task = load_task(args.task or shadows.manifest["task"], args.data)
    cls = method_class(args.method)
    inputs = Inputs(predictor=_predictor(args, task, "predictor" in cls.requires))
    cache = FleetCache(args.shadows.parent / f"{args.shadows.name}-ulira-oracles", task,
                       progress=False)
    return {"ulira": ulira_job(
        task, configured_method(args.method, **_hparams(args)), shadows, args.ulira_targets,
        args.ulira_forget, inputs=inputs,
        oracles=lambda masks: cache.get(  # shadow j's twin: its key, on its half minus F_j
            f"oracles_{args.ulira_forget}_of_shadows", "subset", len(masks),
            seed=shadows.manifest["seed"], masks=masks))}


TASK = Adapter((Flag("task", str, "task name (configs/tasks/<name>.yaml) or a task YAML path",
                     "digits"),
                Flag("data", str | None, "local data for tasks that need it: a cifar10 "
                     "directory or a tensors file")), ("task",), _task)
CHECKPOINT_TASK = Adapter((Flag("task", str | None, "task (default: the checkpoint's)"),
                           Flag("data", str | None, "local data for cifar10/tensors tasks")),
                          ("task",), _checkpoint_task)
BENCH_CONFIG = Adapter((Flag("config", str, "bench config: the name of a shipped one "
                             "(configs/bench/<name>.yaml: digits, cifar10) or a YAML path",
                             "digits"),), ("config",), _bench_config)
FORGET = Adapter((Flag("forget", Path | None, "forget set index file (.txt/.csv/.npy/.json), "
                      "for oracle fleets"),), ("forget",), _forget)
REQUEST = Adapter((Flag("forget", Path, "index file of the training examples to delete "
                        "(.txt/.csv/.npy/.json)", REQUIRED),), ("forget",), _forget)
METHOD_INPUTS = Adapter(
    (Flag("attribution", Path | None, "attribution artifact (dmm attribute), for dmm and "
          "dm-direct"),
     Flag("oracles", Path | None, "oracle fleet for this forget set, for om (train it "
                                  "with the originals' seed: each original then matches "
                                  "its own retrained twin)"),
     Flag("set", list[str], "hyperparameter overrides, e.g. --set lr=1e-3 epochs=4 "
          "(defaults: configs/methods/<method>.yaml)", [], "+")),
    ("predictor", "oracle", "hparams"), _method_inputs)
ULIRA = Adapter(
    (Flag("shadows", Path | None, "U-LiRA: shadow fleet (random halves, weights kept) to "
          "unlearn with --method"),
     Flag("ulira_targets", int, "U-LiRA: shadow models held out as targets", 16),
     Flag("ulira_forget", int, "U-LiRA: examples each shadow forgets", 50),
     Flag("task", str | None, "U-LiRA: task name or YAML path (default: the shadow fleet's)"),
     Flag("data", str | None, "U-LiRA: local data for cifar10/tensors tasks"),
     Flag("attribution", Path | None, "U-LiRA: attribution artifact, for dmm and dm-direct"),
     Flag("set", list[str], "U-LiRA: hyperparameter overrides of --method", [], "+")),
    ("ulira",), _ulira)


@dataclass(frozen=True)
class Command:
    """A subcommand: the library function it calls, its adapters, what it prints."""

    call: Callable[..., Any]
    help: str
    adapters: tuple[Adapter, ...] = ()
    skip: tuple[str, ...] = ()
    report: Callable[[Any, Any], None] = lambda result, args: None

    def parser(self) -> Parser:
        doc = docstring_parser.parse(inspect.getdoc(self.call) or "")
        p = Parser(description=" ".join(f"{doc.short_description or ''} "
                                        f"{doc.long_description or ''}".split()))
        names = set()
        for adapter in self.adapters:
            for flag in adapter.flags:
                if flag.name not in names:
                    _add(p, flag.name, flag.type, flag.default, flag.help, flag.nargs)
                    names.add(flag.name)
        provided = {n for a in self.adapters for n in a.provides}
        helps = {d.arg_name: " ".join((d.description or "").split()) for d in doc.params}
        hints = typing.get_type_hints(self.call)
        for name, param in inspect.signature(self.call).parameters.items():
            if (name in provided or name in self.skip or name in names
                    or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL)):
                continue
            _add(p, name, hints[name], param.default, helps.get(name, ""))
        return p

    def __call__(self, args: Any) -> None:
        given: dict[str, Any] = {}
        for adapter in self.adapters:
            given.update(adapter.resolve(args, given))
        hparams = given.pop("hparams", {})
        params = inspect.signature(self.call).parameters
        kwargs = {k: v for k, v in vars(args).items() if k in params and k not in given}
        self.report(self.call(**kwargs, **given, **hparams), args)


def _add(p: Parser, name: str, hint: Any, default: Any, help_: str,
         nargs: str | None = None) -> None:
    if hint is bool and default is False:
        p.add_argument(f"--{name}", action="store_true", help=help_)
    elif nargs is not None:  # KEY=VALUE lists, as in --set lr=1e-3 epochs=4
        p.add_argument(f"--{name}", type=str, nargs=nargs, default=default, help=help_,
                       metavar="KEY=VALUE")
    elif default is REQUIRED:
        p.add_argument(f"--{name}", type=hint, required=True, help=help_)
    else:
        p.add_argument(f"--{name}", type=hint, default=default, help=help_)


# ---------------------------------------------------------------- what each command prints
def _print_tasks(result: dict[str, str], args: Any) -> None:
    for name, description in result.items():
        print(f"{name:12s} {description}")


def _print_train(meta: dict, args: Any) -> None:
    acc = meta["accuracy"]
    print(f"train accuracy {acc['train']:.4f}  validation accuracy {acc['val']:.4f}  "
          f"({meta['train_seconds']:.1f} s)  wrote {args.out}")


def _print_import(meta: dict, args: Any) -> None:
    acc = meta["accuracy"]
    print(f"imported {args.weights}: train accuracy {acc['train']:.4f}  validation accuracy "
          f"{acc['val']:.4f}  wrote {args.out}")


def _print_fleet(fleet: Any, args: Any) -> None:
    from dmm.fleet import shard_summary

    s = shard_summary(fleet)
    print(f"{len(fleet)} {args.kind} models of {fleet.manifest['task']}: validation accuracy "
          f"{s['val_accuracy_mean']:.4f} ± {s['val_accuracy_std']:.4f}, "
          f"{s['seconds_per_model'] * 1000:.0f} ms per model; wrote {args.out}")


def _print_attribute(attr: Any, args: Any) -> None:
    lds = attr.info["lds"]["validation"]
    extra = ""
    if args.backend == "group":
        extra = (f", group s = {attr.s:.3f}, kappa = {attr.kappa:.3f}, "
                 f"amplify c = {attr.amplify:.3f}, blend = {attr.blend:.3f}")
    print(f"{args.backend} ({attr.info['solver']}): LDS {lds:.4f} on validation targets, "
          f"scale s = {attr.scale:.3f}{extra}, {attr.info['fit_seconds']:.0f} s; "
          f"wrote {args.out}")


def _print_forget_sets(sets: dict, args: Any) -> None:
    print(f"{len(sets)} forget sets ({', '.join(sets)}); wrote {args.out or 'runs/<task>/'}")


def _print_unlearn(report: dict, args: Any) -> None:
    a, b = report["accuracy_before"], report["accuracy_after"]
    print(f"{report['method']}: forgot {len(report['forget_request'])} examples "
          f"({len(report['forgotten'])} in total) in {report['seconds']:.1f} s, "
          f"{report['compute_fraction_of_retraining']:.1%} of a retraining")
    for split in ("forget", "retain", "validation"):
        print(f"  accuracy {split:10s} {a[split]:.4f} -> {b[split]:.4f}")
    q = report["quality"]
    if q["available"]:
        print("  distance to the predicted retrained margins (median, in seed spreads): "
              + ", ".join(f"{k} {q[k]['median']:.2f}" for k in ("forget", "retain",
                                                                  "validation"))
              + " (below about 1: within seed noise of the prediction)")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


def _print_eval(report: dict, args: Any) -> None:
    from dmm.evals.report import klom_table_markdown

    print(klom_table_markdown(report), end="")
    m = report["metrics"]
    acc = m.get("accuracy")
    if acc and acc["unlearned"] is not None:
        print("accuracy (oracle -> unlearned): " + ", ".join(
            f"{k} {acc['oracle'][k]['mean']:.3f} -> {acc['unlearned'][k]['mean']:.3f}"
            for k in acc["oracle"]))
    if "competition_score" in m:
        score = m["competition_score"]["score"]
        print(f"competition score {'-' if score is None else f'{score:.3f}'}")
    if "loss_attack" in m:
        lt = m["loss_attack"]
        print(f"loss-threshold AUC oracle {lt['oracle']['auc_mean']:.3f}, unlearned "
              f"{lt['unlearned']['auc_mean']:.3f}")
    if m.get("ulira", {}).get("auc") is not None:
        print(f"U-LiRA AUC {m['ulira']['auc']:.3f}")
    print(f"wrote {args.out} in {report['seconds']:.1f} s")


def _print_bench(out: Path, args: Any) -> None:
    print(f"wrote {out}/results.csv, results.md, pareto.png, histograms/")


def _print_prepare(paths: dict[str, Path], args: Any) -> None:
    for k, (name, path) in enumerate(paths.items()):
        print(f"{name}{' (default)' if k == 0 else ''}: {path}  (dmm unlearn --attribution "
              f"{path})")


def commands() -> dict[str, Command]:
    """Every subcommand (the library is imported only here, when the CLI runs)."""
    from dmm.attribution.build import attribute
    from dmm.attribution.forget_suite import write_forget_sets
    from dmm.bench.runner import bench, prepare
    from dmm.checkpoint import import_checkpoint
    from dmm.evals.evaluate import evaluate
    from dmm.fleet import train_fleet
    from dmm.tasks import describe_tasks
    from dmm.training import train_checkpoint
    from dmm.unlearning.api import unlearn_checkpoint

    return {
        "tasks": Command(describe_tasks, "list the available tasks", report=_print_tasks),
        "train": Command(train_checkpoint, "train one model and write a checkpoint", (TASK,),
                         report=_print_train),
        "import": Command(import_checkpoint, "import a model trained elsewhere (its state "
                          "dict) as a checkpoint", (TASK,), report=_print_import),
        "fleet": Command(train_fleet, "train a fleet of models (originals, oracles, datamodels)",
                         (TASK, FORGET), skip=("masks", "reuse", "progress"),
                         report=_print_fleet),
        "attribute": Command(attribute, "fit an attribution backend (datamodels or TRAK) and "
                             "save it", (TASK,), report=_print_attribute),
        "forget-sets": Command(write_forget_sets, "write a task's forget sets (random, PC "
                               "top-k, class-concentrated)", (TASK,), report=_print_forget_sets),
        "unlearn": Command(unlearn_checkpoint, "unlearn a forget set from a checkpoint",
                           (CHECKPOINT_TASK, REQUEST, METHOD_INPUTS), report=_print_unlearn),
        "eval": Command(evaluate, "evaluate unlearned models against oracles (KLoM, accuracy, "
                        "MIA) as a report", (ULIRA,), report=_print_eval),
        "bench": Command(bench, "benchmark every method on many forget sets",
                         (BENCH_CONFIG,), report=_print_bench),
        "prepare": Command(prepare, "train the fleets and fit the attribution backends that "
                           "dmm unlearn needs, as the bench does", (BENCH_CONFIG,),
                           report=_print_prepare),
    }


COMMANDS = ("tasks", "train", "import", "fleet", "attribute", "forget-sets", "unlearn", "eval",
            "bench", "prepare")


def build_parser(table: dict[str, Command]) -> Parser:
    p = Parser(prog="dmm", description="Machine unlearning by Datamodel Matching: fleets, "
               "attribution, unlearning, evaluation (KLoM) and benchmarks.")
    sub = p.add_subcommands(dest="command")
    for name, command in table.items():
        sub.add_subcommand(name, command.parser(), help=command.help)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001, ARG001
    print(f"dmm: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dmm`` console script."""
    table = commands()
    args = build_parser(table).parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        table[args.command](args[args.command])
    except DmmError as e:
        print(f"dmm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("dmm: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
