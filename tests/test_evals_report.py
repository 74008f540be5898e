"""Report, markdown table, atomic JSON writer and the histogram plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dmm.artifacts import write_json
from dmm.evals import (
    klom,
    klom_report,
    klom_table_markdown,
    plot_margin_histograms,
    ulira,
)


def fleets(rng, n=30, points=60):
    oracle = rng.normal(size=(n, points))
    oracle_2 = rng.normal(size=(n, points))
    unlearned = rng.normal(size=(n, points))
    unlearned[:, :10] += 4.0  # the forget points are badly unlearned
    return oracle, unlearned, oracle_2


SPLITS = {"forget": np.arange(10), "retain": np.arange(10, 40), "validation": np.arange(40, 60)}


def test_report_names_references_and_directions():
    oracle, unlearned, oracle_2 = fleets(np.random.default_rng(0))
    report = klom_report(oracle, unlearned, SPLITS, noise_floor_margins=oracle_2, method="GA")
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    k, nf = report["klom"], report["noise_floor"]
    assert k["direction"] == "KL(oracle || unlearned)"
    assert (k["reference_models"], k["compared_models"]) == ("oracle", "unlearned")
    assert nf["direction"] == "KL(oracle || oracle_2)"
    assert (nf["reference_models"], nf["compared_models"]) == ("oracle", "oracle_2")
    assert report["models"]["oracle_2"]["n"] == 30
    expected = klom(oracle, unlearned)[:10]
    assert k["splits"]["forget"]["p95"] == pytest.approx(np.percentile(expected, 95))
    p95 = [k["splits"][s]["p95"] for s in ("forget", "retain", "validation")]
    assert k["mean_p95"] == pytest.approx(np.mean(p95))
    # The badly unlearned forget split stands far above its noise floor.
    assert k["splits"]["forget"]["p95"] > nf["splits"]["forget"]["p95"] + 3


def test_report_without_noise_floor_and_with_extra_metrics():
    rng = np.random.default_rng(1)
    oracle, unlearned, _ = fleets(rng)
    extra = {"ulira": {"auc": np.float64(0.5), "tpr": np.array([0.1, np.nan])}}
    report = klom_report(oracle, unlearned, SPLITS, extra_metrics=extra)
    assert report["noise_floor"] is None
    assert report["metrics"]["ulira"] == {"auc": 0.5, "tpr": [0.1, None]}
    json.dumps(report, allow_nan=False)


def test_report_checks_inputs():
    oracle, unlearned, oracle_2 = fleets(np.random.default_rng(2))
    with pytest.raises(ValueError, match="missing"):
        klom_report(oracle, unlearned, {"forget": [0]})
    with pytest.raises(ValueError, match="noise floor"):
        klom_report(oracle, unlearned, SPLITS, noise_floor_margins=oracle_2[:20])


def test_markdown_table_shows_noise_floor_beside_results():
    oracle, unlearned, oracle_2 = fleets(np.random.default_rng(3))
    report = klom_report(oracle, unlearned, SPLITS, noise_floor_margins=oracle_2, method="GA")
    table = klom_table_markdown(report)
    lines = table.strip().splitlines()
    assert "KL(oracle || unlearned)" in lines[0] and "KL(oracle || oracle_2)" in lines[0]
    assert lines[2].startswith("| split | p95 | p99 | mean | noise floor p95")
    forget_row = next(line for line in lines if line.startswith("| forget |"))
    cells = [c.strip() for c in forget_row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(report["klom"]["splits"]["forget"]["p95"], abs=1e-3)
    assert float(cells[4]) == pytest.approx(
        report["noise_floor"]["splits"]["forget"]["p95"], abs=1e-3
    )
    assert len(lines) == 3 + 3 + 1 + 1  # title, blank, header, rule, 3 splits, mean


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "sub" / "report.json"
    write_json(path, {"a": np.float32(1.5), "b": [math.inf]})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [None]}
    write_json(path, {"a": 2})  # replaces
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 2}  # untouched by the failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_plot_draws_worst_points_atomically(tmp_path):
    oracle, unlearned, _ = fleets(np.random.default_rng(4))
    unlearned[:, 7] += 50.0  # the single worst point
    path = tmp_path / "hist.png"
    drawn = plot_margin_histograms(oracle, unlearned, path, n_worst=3)
    assert drawn[0] == 7 and len(drawn) == 3
    values = klom(oracle, unlearned)
    assert set(drawn) == set(np.argsort(-values)[:3].tolist())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hist.png"]
    drawn = plot_margin_histograms(oracle, unlearned, tmp_path / "h.svg", points=[2],
                                   titles=["a"])
    assert drawn == [2]
    with pytest.raises(ValueError, match="titles"):
        plot_margin_histograms(oracle, unlearned, tmp_path / "x.png", points=[1], titles=[])


def test_ulira_result_fits_in_a_report():
    rng = np.random.default_rng(5)
    oracle, unlearned, _ = fleets(rng)
    m = rng.normal(size=(8, 60))
    masks = rng.random((8, 60)) < 0.5
    result = ulira(m, masks, ~masks, m, masks, ~masks)
    report = klom_report(oracle, unlearned, SPLITS, extra_metrics={"ulira": result})
    assert report["metrics"]["ulira"]["attack"] == "U-LiRA"
