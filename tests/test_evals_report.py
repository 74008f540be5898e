"""Report, markdown table, atomic JSON writer and the histogram plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dmm.artifacts import write_json
from dmm.evals import (
    DEFAULT_METRICS,
    METRICS,
    Case,
    Outputs,
    Splits,
    columns,
    evaluate_case,
    klom,
    klom_block,
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


SPLITS = Splits(np.arange(10), np.arange(10, 40), np.arange(40, 60))


def report(oracle, unlearned, floor=None, metrics=("klom",), ulira_job=None):
    case = Case(Outputs(oracle), Outputs(unlearned), SPLITS,
                None if floor is None else Outputs(floor), ulira_job)
    return {"method": "GA", "metrics": evaluate_case(case, metrics)}


def test_report_names_references_and_directions():
    oracle, unlearned, oracle_2 = fleets(np.random.default_rng(0))
    blocks = report(oracle, unlearned, oracle_2)["metrics"]
    text = json.dumps(blocks, allow_nan=False)
    assert json.loads(text) == blocks
    k = blocks["klom"]
    nf = k["noise_floor"]
    assert k["direction"] == "KL(oracle || unlearned)"
    assert (k["reference_models"], k["compared_models"]) == ("oracle", "unlearned")
    assert nf["direction"] == "KL(oracle || oracle_2)"
    assert (nf["reference_models"], nf["compared_models"]) == ("oracle", "oracle_2")
    assert nf["n_models_per_side"] == 30
    expected = klom(oracle, unlearned)[:10]
    assert k["splits"]["forget"]["p95"] == pytest.approx(np.percentile(expected, 95))
    p95 = [k["splits"][s]["p95"] for s in ("forget", "retain", "validation")]
    assert k["mean_p95"] == pytest.approx(np.mean(p95))
    # The badly unlearned forget split stands far above its noise floor.
    assert k["splits"]["forget"]["p95"] > nf["splits"]["forget"]["p95"] + 3
    assert columns(blocks)["klom95_forget"] == k["splits"]["forget"]["p95"]


def test_metrics_without_noise_floor_or_logits_say_what_they_lack():
    rng = np.random.default_rng(1)
    oracle, unlearned, _ = fleets(rng)
    blocks = report(oracle, unlearned, metrics=DEFAULT_METRICS)["metrics"]
    assert blocks["klom"]["noise_floor"] is None
    assert blocks["accuracy"]["unlearned"] is None and "no accuracy" in blocks["accuracy"]["note"]
    assert blocks["competition_score"]["score"] is None
    assert blocks["ulira"]["auc"] is None and "shadow fleet" in blocks["ulira"]["note"]
    lt = blocks["loss_attack"]["unlearned"]
    assert 0 <= lt["auc_mean"] <= 1 and lt["n_models"] == 30
    vals = columns(blocks)
    assert set(vals) == {c for name in DEFAULT_METRICS for c in METRICS[name].columns}
    assert np.isnan(vals["ulira_auc"]) and np.isnan(vals["accuracy_val"])
    json.dumps(blocks, allow_nan=False)


def test_report_checks_inputs():
    oracle, unlearned, oracle_2 = fleets(np.random.default_rng(2))
    with pytest.raises(ValueError, match="missing"):
        klom_block(oracle, unlearned, {"forget": [0]})
    with pytest.raises(ValueError, match="same number of models"):
        report(oracle, unlearned, oracle_2[:20])
    with pytest.raises(ValueError, match="unknown metric"):
        report(oracle, unlearned, metrics=("klom", "bleu"))


def test_markdown_table_shows_both_directions_and_their_floors():
    oracle, unlearned, oracle_2 = fleets(np.random.default_rng(3))
    rep = report(oracle, unlearned, oracle_2)
    table = klom_table_markdown(rep)
    lines = table.strip().splitlines()
    for name in ("KL(oracle || unlearned)", "KL(unlearned || oracle)", "KL(oracle || oracle_2)",
                 "KL(oracle_2 || oracle)"):
        assert name in lines[0]
    assert lines[2].startswith("| split | p95 | p95 rev | p95 floor | p95 floor rev | p99")
    forget_row = next(line for line in lines if line.startswith("| forget |"))
    cells = [float(c) for c in forget_row.strip("|").split("|")[1:5]]
    k = rep["metrics"]["klom"]
    want = [k["splits"]["forget"]["p95"], k["reverse"]["splits"]["forget"]["p95"],
            k["noise_floor"]["splits"]["forget"]["p95"],
            k["noise_floor"]["reverse"]["splits"]["forget"]["p95"]]
    assert cells == pytest.approx(want, abs=1e-3)
    assert len(lines) == 3 + 3 + 1 + 1  # title, blank, header, rule, 3 splits, mean


def test_reverse_blocks_and_spread_name_their_direction():
    rng = np.random.default_rng(6)
    oracle, _, _ = fleets(rng)
    wider = oracle.mean(0) + 1.5 * (rng.normal(size=oracle.shape))
    blocks = report(oracle, wider, metrics=("klom", "spread"))["metrics"]
    rev = blocks["klom"]["reverse"]
    assert rev["direction"] == "KL(unlearned || oracle)"
    assert rev["splits"]["forget"]["p95"] == pytest.approx(
        np.percentile(klom(oracle, wider, "unlearned||oracle")[:10], 95))
    vals = columns(blocks)
    assert vals["klom95_mean_rev"] == rev["mean_p95"]
    # std(unlearned) / std(oracle) per point, median per split: about 1.5 here
    assert 1.3 < vals["spread_retain"] < 1.7 and set(vals) >= {"spread_forget", "spread_val"}


def test_bootstrap_interval_on_cases_with_known_answers():
    from dmm.evals.klom import bootstrap_p95

    # Disjoint single bins at every point: every resample gives the cap, the interval is it.
    o, u = np.zeros((20, 60)), np.ones((20, 60))
    boot = bootstrap_p95(o, u, SPLITS, resamples=200, seed=1)["oracle||unlearned"]
    assert set(boot) == {"forget", "retain", "validation", "mean"}
    np.testing.assert_allclose(boot["forget"], np.log(1e5 + 1))
    # One model a side: every resample is the same pair of models, so the interval is the
    # point value itself.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1, 60)), rng.normal(size=(1, 60))
    boot = bootstrap_p95(a, b, SPLITS, resamples=200, seed=2)
    for d in ("oracle||unlearned", "unlearned||oracle"):
        np.testing.assert_allclose(boot[d]["retain"], np.percentile(klom(a, b, d)[10:40], 95))
    # The metric: the 2.5th-97.5th percentiles of B = 200 resamples shifted by their bias
    # (mean of the resamples minus the estimate), in both directions.
    oracle, unlearned, _ = fleets(rng)
    blocks = report(oracle, unlearned, metrics=("klom_interval",))["metrics"]
    ci = blocks["klom_interval"]
    assert ci["resamples"] == 200 and ci["seed"] == 0
    direct = bootstrap_p95(oracle, unlearned, SPLITS, 200, 0)["unlearned||oracle"]["forget"]
    estimate = np.percentile(klom(oracle, unlearned, "unlearned||oracle")[:10], 95)
    expected = np.percentile(direct, [2.5, 97.5]) - (direct.mean() - estimate)
    assert ci["unlearned||oracle"]["forget"] == pytest.approx(np.maximum(expected, 0).tolist())
    vals = columns(blocks)
    assert vals["klom95_forget_lo"] < vals["klom95_forget_hi"]
    assert len(vals) == 16


def test_bootstrap_interval_covers_the_estimate_of_two_equal_fleets():
    """Plain resamples duplicate models and inflate a binned KL: their interval for two
    fleets of one distribution lay wholly above the estimate. The corrected one holds it,
    and its width is that of the estimate's spread across independent pairs of fleets."""
    from dmm.evals.klom import klom_interval

    rng = np.random.default_rng(3)
    mu, sd = rng.normal(0, 3, 200), rng.uniform(0.2, 0.6, 200)
    def pair():
        return [mu + sd * rng.standard_normal((100, 200)) for _ in range(2)]
    splits = {"forget": np.arange(50), "retain": np.arange(50, 150),
              "validation": np.arange(150, 200)}
    estimates = []
    for _ in range(8):
        o, u = pair()
        estimates.append(np.percentile(klom(o, u)[50:150], 95))
    o, u = pair()
    ci = klom_interval(o, u, splits, resamples=200, seed=0)
    lo, hi = ci["oracle||unlearned"]["retain"]
    assert lo <= np.percentile(klom(o, u)[50:150], 95) <= hi
    assert lo <= np.mean(estimates) <= hi
    assert 0.5 < (hi - lo) / (4 * np.std(estimates)) < 3
    for d in ci.values():
        assert set(d) == {"forget", "retain", "validation", "mean"}
        assert all(0 <= a <= b for a, b in d.values())
    # Identical constant margins on both sides: KLoM 0, and every resample too.
    const = np.tile(mu, (100, 1))
    for d in klom_interval(const, const.copy(), splits, resamples=20).values():
        assert all(v == [0.0, 0.0] for v in d.values())


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
    worst = np.maximum(klom(oracle, unlearned), klom(oracle, unlearned, "unlearned||oracle"))
    assert set(drawn) == set(np.argsort(-worst)[:3].tolist())  # worst in either direction
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
    blocks = report(oracle, unlearned, metrics=("ulira",), ulira_job=lambda: result)["metrics"]
    assert blocks["ulira"]["attack"] == "U-LiRA" and blocks["ulira"]["auc"] == result["auc"]
    assert columns(blocks) == {"ulira_auc": result["auc"]}
