"""`dmm bench --quick`: every code path end to end, outputs, and exact re-runs from cache."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

import dmm.fleet
from dmm.cli import main
from dmm.errors import DmmError

CONFIG = Path(__file__).parents[1] / "configs" / "bench" / "digits.yaml"
REQUIRED = ["forget_set", "method", "klom95_forget", "klom95_retain", "klom95_val",
            "klom95_mean", "accuracy_val", "ulira_auc", "compute_fraction", "seconds"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick"
    main(["bench", "--config", str(CONFIG), "--quick", "--out", str(out), "--wandb", "offline"])
    return out


def read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_quick_bench_writes_every_output(quick_run):
    rows = read(quick_run / "results.csv")
    assert list(rows[0])[: len(REQUIRED)] == REQUIRED
    sets = {r["forget_set"] for r in rows}
    assert sets == {"random_10", "pc1_top_10"}
    for s in sets:
        methods = [r["method"] for r in rows if r["forget_set"] == s]
        assert methods[0] == "noise-floor"
        assert {"dmm", "dm-direct", "om", "do-nothing", "ga", "gd", "neggrad-plus", "scrub",
                "random-labels", "salun", "l1-sparse", "ssd", "retrain@1"} <= set(methods)
    for r in rows:
        assert 0 <= float(r["klom95_forget"]) <= 11.6
    assert any(r["ulira_auc"] for r in rows if r["method"] == "dmm")
    assert not any(r["ulira_auc"] for r in rows if r["method"] in ("om", "noise-floor"))
    assert read(quick_run / "grid.csv") and read(quick_run / "selection.csv")
    assert (quick_run / "pareto.png").stat().st_size > 10_000
    assert len(list((quick_run / "histograms").glob("*.png"))) == 4
    md = (quick_run / "results.md").read_text()
    assert "KL(oracle ‖ unlearned)" in md and "## Checks" in md
    assert list((quick_run / "wandb").glob("offline-run-*"))


def test_rerun_reuses_every_cached_fleet_and_reproduces_the_table(quick_run, tmp_path,
                                                                 monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached fleet was retrained")

    monkeypatch.setattr(dmm.fleet, "train_ensemble", no_training)
    before = (quick_run / "results.csv").read_text()
    main(["bench", "--config", str(CONFIG), "--quick", "--out", str(quick_run),
          "--wandb", "disabled"])
    assert (quick_run / "results.csv").read_text() == before


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
