"""`dmm bench --quick`: every code path end to end, outputs, and exact re-runs from cache."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import dmm.fleet.train
from dmm.cli import main
from dmm.errors import DmmError

CONFIG = Path(__file__).parents[1] / "configs" / "bench" / "digits.yaml"
REQUIRED = ["forget_set", "method", "klom95_forget", "klom95_retain", "klom95_val",
            "klom95_mean", "accuracy_val", "ulira_auc", "compute_fraction", "seconds"]


MINE = [3, 14, 15, 92, 65, 35, 89, 79]  # a user's own deletion request


@pytest.fixture(scope="module")
def quick_config(tmp_path_factory):
    """The shipped config with a user's forget-set file (relative to the config)."""
    folder = tmp_path_factory.mktemp("config")
    (folder / "requests").mkdir()
    (folder / "requests" / "mine.txt").write_text("\n".join(map(str, MINE)) + "\n")
    text = CONFIG.read_text().replace("forget_sets:\n", "forget_sets:\n  files: {mine: "
                                      "requests/mine.txt}\n", 1)
    (folder / "digits.yaml").write_text(text)
    return folder / "digits.yaml"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, quick_config):
    out = tmp_path_factory.mktemp("bench") / "quick"
    main(["bench", "--config", str(quick_config), "--quick", "--out", str(out), "--wandb",
          "offline"])
    return out


def read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_quick_bench_writes_every_output(quick_run):
    rows = read(quick_run / "results.csv")
    assert list(rows[0])[: len(REQUIRED)] == REQUIRED
    sets = {r["forget_set"] for r in rows}
    assert sets == {"random_10", "pc1_top_10", "mine"}  # the user's file evaluated too
    for s in sets:
        methods = [r["method"] for r in rows if r["forget_set"] == s]
        assert methods[0] == "noise-floor"
        assert {"dmm", "dmm[ridge]", "dm-direct", "dm-direct[ridge]", "om", "do-nothing", "ga",
                "gd", "neggrad-plus", "scrub", "random-labels", "salun", "l1-sparse", "ssd",
                "retrain@1"} <= set(methods)
    summary = json.loads((quick_run / "summary.json").read_text())
    assert summary["sets"]["mine"] == sorted(MINE) and summary["user_sets"] == ["mine"]
    costs = summary["backends"]
    assert costs["group"]["models"] > costs["ridge"]["models"] > 0
    for r in rows:
        assert 0 <= float(r["klom95_forget"]) <= 11.6
    assert all(r["ulira_auc"] for r in rows if r["method"] in ("dmm", "om"))  # OM's too
    assert not any(r["ulira_auc"] for r in rows if r["method"] == "noise-floor")
    assert all(r["competition_score"] and r["loss_attack_auc"] for r in rows)
    assert read(quick_run / "grid.csv") and read(quick_run / "selection.csv")
    # selection rows skip what selection does not use (intervals, competition score)
    assert not any(r["competition_score"] or r["klom95_mean_lo"]
                   for r in read(quick_run / "grid.csv"))
    assert (quick_run / "pareto.png").stat().st_size > 10_000
    assert len(list((quick_run / "histograms").glob("*.png"))) == 6
    md = (quick_run / "results.md").read_text()
    assert "KL(oracle ‖ unlearned)" in md and "KL(unlearned ‖ oracle)" in md
    assert "## Checks" in md and "## Attribution backends" in md and "worst-direction" in md
    for r in rows:  # a 95% bootstrap interval for every KLoM95, both directions
        for k in ("klom95_forget", "klom95_mean_rev"):
            assert float(r[f"{k}_lo"]) <= float(r[f"{k}_hi"])
    assert list((quick_run / "wandb").glob("offline-run-*"))


def test_rerun_reuses_every_cached_fleet_and_reproduces_the_table(quick_run, quick_config,
                                                                 tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached fleet was retrained")

    monkeypatch.setattr(dmm.fleet.train, "train_ensemble", no_training)
    before = (quick_run / "results.csv").read_text()
    main(["bench", "--config", str(quick_config), "--quick", "--out", str(quick_run),
          "--wandb", "disabled"])
    assert (quick_run / "results.csv").read_text() == before


def test_moved_out_dir_reruns_from_its_own_cache(quick_run, quick_config, tmp_path,
                                                 monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached fleet was retrained")

    moved = tmp_path / "moved"
    shutil.copytree(quick_run, moved)
    shutil.rmtree(moved / "histograms")
    hidden = quick_run.with_name("hidden")
    quick_run.rename(hidden)  # nothing may be read from the old location
    try:
        monkeypatch.setattr(dmm.fleet.train, "train_ensemble", no_training)
        main(["bench", "--config", str(quick_config), "--quick", "--out", str(moved),
              "--wandb", "disabled"])
    finally:
        hidden.rename(quick_run)
    assert (moved / "results.csv").read_text() == (quick_run / "results.csv").read_text()
    assert len(list((moved / "histograms").glob("*.png"))) == 6


def test_bench_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {dmm: {grid: {lr: [1.0e-3]}}}\nmodels: 2\n")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "models must be at least 4" in capsys.readouterr().err
    shutil.copy(CONFIG, tmp_path / "c.yaml")
    from dmm.bench import load_bench_config

    with pytest.raises(DmmError, match="no quick profile"):
        load_bench_config(tmp_path / "bad.yaml", quick=True)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["digits", "cifar10"])
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_bench_configs_build_every_grid_point(name, quick):
    from dmm.bench import load_bench_config
    from dmm.bench.runner import method_grids

    cfg = load_bench_config(CONFIG.with_name(f"{name}.yaml"), quick=quick)
    grids = method_grids(cfg)
    assert {"dmm", "dm-direct", "om", "do-nothing", "retrain"} <= set(grids)
    if quick:
        assert all(len(points) <= 4 for points in grids.values())
    if name == "cifar10" and not quick:  # the published settings (DESIGN.md sections 4, 6-8)
        suite = cfg.forget_sets
        assert (suite.random_sizes, suite.pc_sizes, suite.pc_top_bottom) == (
            [10, 100, 500], [10, 100], 250)
        assert {p["lr"] for p in grids["dmm"]} == {1e-3, 1e-4, 1e-5, 1e-6}
        assert {p["epochs"] for p in grids["dmm"]} == {1, 2, 4, 8}
        assert {p["batch_size"] for p in grids["dmm"]} == {512}


def test_bad_grid_or_missing_data_fails_before_any_training(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: 4\nmethods: {dmm: {grid: {learning_rate: [1.0e-3]}}}\n")
    for argv, message in (
        (["--config", str(bad)], "has no hyperparameter(s) learning_rate"),
        (["--config", str(CONFIG.with_name("cifar10.yaml")), "--data", str(tmp_path / "no")],
         "does not exist"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["bench", *argv, "--out", str(tmp_path / "o"), "--wandb", "disabled"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
        assert not (tmp_path / "o").exists()


def test_dmm_eval_reports_the_bench_metrics_for_the_same_models(quick_run, tmp_path):
    """One evaluation path: `dmm eval` on a report run's saved outputs gives the values of
    its results.csv row (every metric but U-LiRA, which evaluates the method itself)."""
    row = next(r for r in read(quick_run / "results.csv")
               if r["forget_set"] == "random_10" and r["method"] == "dmm")
    runs = quick_run / "cache" / "runs" / "report" / "random_10"
    (outputs,) = (runs / "dmm[group]").glob("*.npz")
    fleets = quick_run / "cache" / "fleets"
    main(["eval", "--oracles", str(fleets / "oracles_random_10_of_select"), "--unlearned",
          str(outputs), "--out", str(tmp_path / "eval"), "--metrics", "[klom, klom_interval, "
          "spread, accuracy, competition_score, loss_attack]"])
    import json

    from dmm.evals import METRICS, columns

    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    values = columns(report["metrics"])
    for column, value in values.items():
        assert float(row[column]) == pytest.approx(value, rel=1e-5), column
    assert set(values) == {c for name, m in METRICS.items() if name != "ulira"
                           for c in m.columns}


def test_no_method_name_is_compared_in_the_cli_the_api_or_the_bench():
    """Methods declare what they need and yield; nothing compares their names."""
    import ast

    from dmm.unlearning.base import METHODS

    root = Path(__file__).parents[1] / "dmm"
    files = [root / "cli.py", root / "unlearning" / "api.py", *(root / "bench").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    for leaf in ast.walk(side):
                        assert not (isinstance(leaf, ast.Constant) and leaf.value in METHODS), \
                            f"{path.name}:{node.lineno} compares a method name"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("3 14 99999\n", "out of range"),
    ("", "is empty"),
    ("1 2 x\n", "cannot read indices"),
])
def test_bad_forget_set_files_exit_2_before_anything_is_written(tmp_path, capsys, content,
                                                               message):
    if content is not None:
        (tmp_path / "bad.txt").write_text(content)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.read_text().replace("forget_sets:\n", "forget_sets:\n  files: "
                                              "{bad: bad.txt}\n", 1))
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--config", str(cfg), "--quick", "--out", str(tmp_path / "o"),
              "--wandb", "disabled"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_forget_set_file_may_not_take_a_suite_name(tmp_path, capsys):
    (tmp_path / "r.txt").write_text("1 2 3\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.read_text().replace("forget_sets:\n", "forget_sets:\n  files: "
                                              "{random_10: r.txt}\n", 1))
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--config", str(cfg), "--quick", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "suite set" in capsys.readouterr().err


def test_prepare_gives_the_bench_backends_and_dmm_unlearns_a_checkpoint_with_them(
        quick_run, quick_config, tmp_path, capsys, monkeypatch):
    """`dmm prepare` on the bench's run directory trains nothing more (its fleets are the
    bench's) and names each backend's artifact; `dmm unlearn` takes the default one."""
    def no_training(*args, **kwargs):
        raise AssertionError("a cached fleet was retrained")

    with monkeypatch.context() as m:
        m.setattr(dmm.fleet.train, "train_ensemble", no_training)
        main(["prepare", "--config", str(quick_config), "--quick", "--out", str(quick_run)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("group (default): ") and lines[1].startswith("ridge: ")
    group = lines[0].split()[2]
    main(["train", "--out", str(tmp_path / "m.ckpt"), "--wandb", "disabled", "--device", "cpu"])
    (tmp_path / "f.txt").write_text("3 14 15 92\n")
    main(["unlearn", "--checkpoint", str(tmp_path / "m.ckpt"), "--forget", str(tmp_path / "f.txt"),
          "--attribution", group, "--out", str(tmp_path / "u.ckpt"), "--device", "cpu"])
    report = json.loads((tmp_path / "u.json").read_text())
    assert report["method"] == "dmm" and report["quality"]["available"]


def test_a_recalibrated_backend_gets_new_run_cache_keys():
    import numpy as np

    from dmm.attribution.linear import LinearAttribution
    from dmm.bench.protocol import identity

    def ridge(scale: float) -> LinearAttribution:
        return LinearAttribution(np.zeros((3, 2), np.float32), np.full(2, 0.5, np.float32),
                                 np.zeros((2, 3, 2), np.float32), scale=scale)

    assert identity(ridge(0.5)) == identity(ridge(0.5))
    assert identity(ridge(0.5)) != identity(ridge(0.6))
    recalibrated = ridge(0.5)
    recalibrated.info["settings"] = {"neighbourhood_sizes": [20]}
    assert identity(recalibrated) != identity(ridge(0.5))


def test_om_matches_its_originals_retrained_twins_and_is_scored_by_others(quick_run):
    """Each phase's oracles are keyed like the other phase's originals: the fleet OM
    matches in a phase retrains that phase's originals (same keys, so the same
    initialisation), and the fleet that scores it shares none of them."""
    from dmm.fleet import load_fleet

    fleets = quick_run / "cache" / "fleets"
    for phase, other in (("select", "report"), ("report", "select")):
        originals = set(load_fleet(fleets / f"originals_{phase}").keys)
        for name in ("random_10", "pc1_top_10"):
            matched = load_fleet(fleets / f"oracles_{name}_of_{phase}")
            scoring = load_fleet(fleets / f"oracles_{name}_of_{other}")
            assert list(matched.keys) == list(load_fleet(fleets / f"originals_{phase}").keys)
            assert not originals & set(scoring.keys)


def test_an_empty_evaluate_list_benchmarks_only_the_files(tmp_path, capsys):
    """``evaluate: []`` means none of the suite's sets (not all of them); with no files
    that leaves nothing, refused before anything is written."""
    from dmm.bench.config import load_bench_config
    from dmm.bench.protocol import load_forget_sets

    (tmp_path / "r.txt").write_text("1 2 3\n")
    text = CONFIG.read_text()
    start = text.index("  evaluate:")
    end = text.index("\n", text.index("]", start))
    only_files = text[:start] + "  evaluate: []\n  files: {mine: r.txt}" + text[end:]
    (tmp_path / "f.yaml").write_text(only_files)
    cfg = load_bench_config(tmp_path / "f.yaml")
    assert cfg.forget_sets.evaluate == [] and list(cfg.forget_sets.files) == ["mine"]
    (tmp_path / "cache" / "forget_sets").mkdir(parents=True)
    (tmp_path / "cache" / "forget_sets" / "random_10.txt").write_text("4 5\n")
    ws = SimpleNamespace(cfg=cfg, cache=tmp_path / "cache", n=100)
    mine = {"mine": np.array([1, 2, 3])}
    assert list(load_forget_sets(ws, mine)) == ["mine"]
    cfg.forget_sets.evaluate = None  # the default: every suite set, then the files
    assert list(load_forget_sets(ws, mine)) == ["random_10", "mine"]
    (tmp_path / "e.yaml").write_text(text[:start] + "  evaluate: []" + text[end:])
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--config", str(tmp_path / "e.yaml"), "--out", str(tmp_path / "o"),
              "--wandb", "disabled"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "no forget sets" in err[0], err
    assert not (tmp_path / "o").exists()
