"""The group-aware backend (dmm.attribution.group): the path formula, the substitutes, the
targets and their spread by hand; planted parameters recovered; storage and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmm.attribution.group import (
    MODEL_REVISION,
    GroupAttribution,
    _margins,
    calibrate,
    calibrate_ridge_terms,
    density_datamodels,
    spread_rho,
    substitutes,
)
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.store import read_manifest
from dmm.errors import DmmError

N, P, C = 6, 8, 3  # 6 training points, 2 validation points, 3 classes


def linear(seed: int = 0) -> LinearAttribution:
    rng = np.random.default_rng(seed)
    return LinearAttribution(rng.normal(size=(P, C)).astype(np.float32),
                             np.full(N, 0.5, np.float32),
                             0.1 * rng.normal(size=(N, P, C)).astype(np.float32), scale=0.6)


def group(**kw) -> GroupAttribution:
    rng = np.random.default_rng(1)
    beta = rng.normal(size=(N, N)).astype(np.float32)
    gamma = rng.normal(size=(N, N)).astype(np.float32)
    # example i's substitutes: its two neighbours on a ring, weights 1 and 3
    neighbours = np.array([[(i + 1) % N, (i - 1) % N] for i in range(N)])
    weights = np.tile(np.array([[1.0, 3.0]], np.float32), (N, 1))
    labels = np.array([0, 1, 2, 0, 1, 2])
    args = dict(ridge=linear(), beta=beta, gamma=gamma, abar=0.6, neighbours=neighbours,
                weights=weights, train_labels=labels, s=0.8, kappa=0.5)
    return GroupAttribution(**{**args, **kw})


def test_phi_is_the_share_of_substitutes_removed_with_each_example():
    g = group()
    # F = {1, 2}: 1's neighbours are 2 (w 1, in F) and 0 (w 3); 2's are 3 (1) and 1 (3, in F)
    np.testing.assert_allclose(g.phi(np.array([1, 2])), [1 / 4, 3 / 4])
    np.testing.assert_allclose(g.phi(np.array([0, 3])), [0.0, 0.0])  # no substitute inside


def test_margin_shift_follows_the_path_formula_by_hand():
    g = group()
    f = np.array([1, 2])
    astar = 1 - 0.5 * np.array([0.25, 0.75])
    want = [-0.8 * sum(g.beta[x, i] + (astar[k] - 0.6) * g.gamma[x, i]
                       for k, i in enumerate(f)) for x in f]
    np.testing.assert_allclose(g.margin_shift(f), want, rtol=1e-6)


def test_alpha_star_is_clipped_to_the_densities_the_fleet_saw():
    g = group(kappa=10.0, alpha_min=0.4)
    f = np.array([1, 2])  # phi = 1/4, 3/4: 1 - 10 phi = -1.5, -6.5 -> both 0.4
    want = [-0.8 * sum(g.beta[x, i] + (0.4 - 0.6) * g.gamma[x, i] for i in f) for x in f]
    np.testing.assert_allclose(g.margin_shift(f), want, rtol=1e-6)


def test_targets_move_forget_margins_by_the_shift_and_keep_the_ridge_elsewhere():
    g = group()
    rng = np.random.default_rng(2)
    z = torch.from_numpy(rng.normal(size=(4, P, C)).astype(np.float32))
    f = np.array([1, 2])
    h = g.predict(z, f)
    ridge = g.ridge.predict(z, f)
    others = np.setdiff1d(np.arange(P), f)
    torch.testing.assert_close(h[:, others], ridge[:, others])
    y = torch.as_tensor(g.train_labels[f])
    moved = _margins(h[:, f], y) - _margins(z[:, f], y)
    torch.testing.assert_close(moved, torch.as_tensor(g.margin_shift(f), dtype=torch.float32)
                               .expand(4, -1), atol=1e-5, rtol=1e-5)
    # only the true-class logit of the forget points differs from the ridge prediction
    diff = (h - ridge).abs() > 1e-6
    assert diff.any() and not diff[:, others].any()
    assert set(np.argwhere(diff[0].numpy())[:, 1].tolist()) <= set(g.train_labels[f].tolist())


def test_spread_of_the_targets_is_the_predicted_ratio_by_hand():
    """Every model's margin deviation from the originals' mean margin is scaled by r at the
    forget points, so the targets spread exactly r times wider than the originals."""
    g = group(rho=np.full(N, 2.0, np.float32), spread=(np.log(1.5) / np.log(2.0), 0.0),
              margin_mean=np.full(N, 0.3, np.float32))
    f = np.array([1, 2])
    np.testing.assert_allclose(g.spread_ratio(f), [1.5, 1.5])
    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.normal(size=(50, P, C)).astype(np.float32))
    y = torch.as_tensor(g.train_labels[f])
    h = g.predict(z, f)
    m_z, m_h = _margins(z[:, f], y), _margins(h[:, f], y)
    torch.testing.assert_close(m_h.std(0), 1.5 * m_z.std(0), rtol=1e-4, atol=1e-5)
    # by hand: m_h = m_z + shift + (1.5 - 1) (m_z - 0.3)
    want = m_z + torch.as_tensor(g.margin_shift(f), dtype=torch.float32) + 0.5 * (m_z - 0.3)
    torch.testing.assert_close(m_h, want, atol=1e-4, rtol=1e-4)


def test_amplified_ridge_weights_each_removed_example_by_its_extra_drop_by_hand():
    """Off the forget set: f(x) - s_ridge * sum_i (1 + c e_i) beta_i(x), with e_i how much
    further i's margin falls when F is removed than when it alone is (0 at the least)."""
    g = group(amplify=0.5)
    f = np.array([1, 2, 4])
    single = [-0.8 * (g.beta[i, i] + (1 - 0.6) * g.gamma[i, i]) for i in f]
    extra = np.maximum(0.0, np.array(single) - g.margin_shift(f))
    assert (extra > 0).any()
    np.testing.assert_allclose(g.single_shift(f), single, rtol=1e-6)
    np.testing.assert_allclose(g.extra_drop(f), extra, rtol=1e-6)
    np.testing.assert_allclose(g.removal_weights(f), 1 + 0.5 * extra, rtol=1e-6)
    rng = np.random.default_rng(9)
    z = torch.from_numpy(rng.normal(size=(3, P, C)).astype(np.float32))
    beta = g.ridge.rows(f).numpy()  # [|F|, P, C]
    want = z.numpy() - 0.6 * np.einsum("i,ipc->pc", 1 + 0.5 * extra, beta)[None]
    others = np.setdiff1d(np.arange(P), f)
    torch.testing.assert_close(g.predict(z, f)[:, others],
                               torch.from_numpy(want[:, others]).float(), atol=1e-5, rtol=1e-5)
    g.amplify = 0.0  # off: plain ridge DM-Direct there
    torch.testing.assert_close(g.predict(z, f)[:, others], g.ridge.predict(z, f)[:, others])


def test_blend_mixes_the_means_of_ridge_and_path_and_keeps_the_paths_spread_in_full():
    g = group(amplify=0.5, blend=0.25, rho=np.full(N, 2.0, np.float32),
              spread=(np.log(1.5) / np.log(2.0), 0.0), margin_mean=np.full(N, 0.3, np.float32))
    f = np.array([1, 2])
    rng = np.random.default_rng(10)
    z = torch.from_numpy(rng.normal(size=(4, P, C)).astype(np.float32))
    y = torch.as_tensor(g.train_labels[f])
    h = g.predict(z, f)
    w = g.removal_weights(f)
    ridge = z - 0.6 * torch.einsum("i,ipc->pc", torch.as_tensor(w, dtype=torch.float32),
                                   g.ridge.rows(f))[None]
    m = _margins(z[:, f], y)
    path = m + torch.as_tensor(g.margin_shift(f), dtype=torch.float32)
    want = 0.75 * path + 0.25 * _margins(ridge[:, f], y) + 0.5 * (m - 0.3)
    torch.testing.assert_close(_margins(h[:, f], y), want, atol=1e-5, rtol=1e-5)


def test_each_model_gets_its_own_forget_sets_weights_and_any_points_subset():
    g = group(amplify=0.7, blend=0.4)
    rng = np.random.default_rng(12)
    z = torch.from_numpy(rng.normal(size=(3, P, C)).astype(np.float32))
    sets = [np.array([1, 2]), np.array([0, 4, 5]), np.array([1, 2])]
    masks = np.zeros((3, N), dtype=bool)
    for k, f in enumerate(sets):
        masks[k, f] = True
    h = g.predict(z, torch.from_numpy(masks))
    for k, f in enumerate(sets):
        torch.testing.assert_close(h[k], g.predict(z[k], f))
    pts = np.array([0, 2, 6, 7])
    torch.testing.assert_close(g.predict(z[:, pts], sets[1], points=pts),
                               g.predict(z, sets[1])[:, pts])


def test_ridge_terms_calibration_recovers_planted_amplification_and_blend():
    g = group()
    rng = np.random.default_rng(11)
    z0 = rng.normal(size=(30, P, C)).astype(np.float32)
    labels = np.concatenate([g.train_labels, [0, 1]])
    y = torch.as_tensor(labels)
    truth = dict(amplify=0.4, blend=0.6)
    calibration = []
    for f in (np.array([0, 1, 2]), np.array([1, 2, 4]), np.array([3, 5]), np.array([0, 4])):
        g.amplify, g.blend = truth["amplify"], truth["blend"]
        oracle = _margins(g.predict(torch.from_numpy(z0), f), y).numpy()
        calibration.append((f, oracle))
    g.amplify = g.blend = 0.0
    how = calibrate_ridge_terms(g, z0, labels, calibration)
    assert g.amplify == pytest.approx(0.4, abs=0.01) and g.blend == pytest.approx(0.6, abs=0.01)
    assert len(how["sets"]) == 4
    assert max(e["off_forget_rms"] for e in how["sets"]) < 1e-3
    assert max(e["forget_rms"] for e in how["sets"]) < 1e-3


def test_density_datamodels_recover_a_planted_density_dependent_model():
    rng = np.random.default_rng(4)
    n, m, t = 12, 2000, 5
    alpha = rng.uniform(0.3, 0.97, size=m)
    masks = rng.random((m, n)) < alpha[:, None]
    beta = rng.normal(size=(t, n))
    gamma = rng.normal(size=(t, n))
    abar = masks.mean(1).mean()
    a = masks.mean(1)
    y = masks @ beta.T + (masks * (a - abar)[:, None]) @ gamma.T + 0.01 * rng.normal(size=(m, t))
    b, g, ab, info = density_datamodels(masks, y)
    assert ab == pytest.approx(abar) and info["models"] == m
    np.testing.assert_allclose(b, beta, atol=0.1)  # ridge shrinks a little
    np.testing.assert_allclose(g, gamma, atol=0.4)


def test_substitutes_rank_by_cosine_of_influence_columns():
    cols = np.array([[1.0, 0.9, 0.0, -1.0], [0.0, 0.1, 1.0, 0.0]])  # 2 targets, 4 examples
    idx, w = substitutes(cols, neighbours=2, power=1.0)
    assert idx[0].tolist() == [1, 2]  # 1 is most similar to 0, then 2 (cos 0), never itself
    assert w[0, 0] == pytest.approx(0.9 / np.hypot(0.9, 0.1), rel=1e-5) and w[0, 1] == 0
    assert (idx != np.arange(4)[:, None]).all()


def test_spread_rho_is_the_residual_std_ratio_without_and_with_each_example():
    rng = np.random.default_rng(5)
    masks = rng.random((400, 3)) < 0.5
    r = rng.normal(size=(400, 3))
    r[~masks[:, 0], 0] *= 2.0  # example 0 pins its own output
    rho = spread_rho(masks, r)
    assert rho[0] == pytest.approx(2.0, rel=0.15) and rho[1] == pytest.approx(1.0, rel=0.15)


def test_calibration_recovers_planted_scale_and_slope():
    g = group(rho=np.linspace(1.0, 1.5, N).astype(np.float32))
    rng = np.random.default_rng(6)
    truth = dict(s=0.7, kappa=1.2)
    originals = rng.normal(size=(200, P))
    calibration = []
    for f in (np.array([0, 1, 2]), np.array([3, 4]), np.array([1, 3, 5])):
        g.s, g.kappa = truth["s"], truth["kappa"]
        shift = np.zeros(P)
        shift[f] = g.margin_shift(f)
        ratio = np.ones(P)
        ratio[f] = np.asarray(g.rho[f]) ** 1.5
        oracles = originals.mean(0) + shift + (originals - originals.mean(0)) * ratio
        calibration.append((f, oracles))
    g.s, g.kappa = 1.0, 1.0
    how = calibrate(g, originals, calibration)
    assert g.s == pytest.approx(0.7, abs=1e-3) and g.kappa == pytest.approx(1.2, abs=1e-2)
    assert g.spread[0] == pytest.approx(1.5, abs=0.05) and abs(g.spread[1]) < 0.1
    assert how["forget_margin_rms"] < 1e-4 and len(how["sets"]) == 3


def test_calibration_lets_one_unusual_set_bend_the_fit_less_than_least_squares():
    n, p = 40, 42
    rng = np.random.default_rng(8)
    ridge = LinearAttribution(rng.normal(size=(p, C)).astype(np.float32),
                              np.full(n, 0.5, np.float32),
                              0.1 * rng.normal(size=(n, p, C)).astype(np.float32))
    g = GroupAttribution(ridge, rng.normal(size=(n, n)).astype(np.float32),
                         rng.normal(size=(n, n)).astype(np.float32), 0.6,
                         np.array([[(i + 1) % n, (i - 1) % n] for i in range(n)]),
                         np.ones((n, 2), np.float32), rng.integers(0, C, n), s=0.7, kappa=1.2)
    originals = rng.normal(size=(100, p))
    calibration = []
    for k in range(6):  # five sets on the planted path, the sixth 4 margin units further
        f = np.sort(rng.choice(n, 6, replace=False)) if k < 5 else np.arange(10, 16)
        shift = np.zeros(p)
        shift[f] = g.margin_shift(f) - (4.0 if k == 5 else 0.0)
        calibration.append((f, originals + shift))
    plain = calibrate(g, originals, calibration, threshold=1e6)
    robust = calibrate(g, originals, calibration)
    assert abs(robust["kappa"] - 1.2) < abs(plain["kappa"] - 1.2) / 4
    assert robust["s"] == pytest.approx(0.7, abs=0.01)
    assert max(e["forget_margin_rms"] for e in robust["sets"][:5]) < 0.05
    assert max(e["forget_margin_rms"] for e in plain["sets"][:5]) > 0.2


def test_shapes_are_checked():
    with pytest.raises(DmmError, match="beta and gamma"):
        group(beta=np.zeros((N, N + 1), np.float32))
    with pytest.raises(DmmError, match="neighbours and weights"):
        group(weights=np.ones((N, 3), np.float32))


@pytest.fixture(scope="module")
def tiny_fleets(tiny, tmp_path_factory):
    """Real fleets of the tiny task: random halves, a density fleet, calibration sets."""
    from dmm.fleet import FleetCache

    cache = FleetCache(tmp_path_factory.mktemp("group_fleets"), tiny, device="cpu",
                       progress=False)
    n = tiny.data.n_train
    return {
        "ridge": cache.get("dm", "datamodel", 40, seed=1),
        "density": cache.get("density", "datamodel", 40, seed=2, alpha_range=(0.3, 0.97)),
        "originals": cache.get("orig", "original", 4, seed=3),
        "oracles": [cache.get(f"oracle{i}", "oracle", 4, seed=4 + i,
                              forget=np.arange(i * 20, i * 20 + 10)) for i in range(2)]
                   + [cache.get("nbhd", "oracle", 4, seed=9, forget=np.arange(n - 15, n))],
    }


def fit_tiny(fleets):
    from dmm.attribution.datamodels import fit_datamodels
    from dmm.attribution.group import fit_group_from_fleets

    ridge = fit_datamodels(fleets["ridge"], "ridge")
    return fit_group_from_fleets(ridge, fleets["density"], fleets["ridge"], fleets["originals"],
                                 fleets["oracles"], neighbours=8)


def test_fitted_on_tiny_fleets_shapes_determinism_storage_and_refusals(tiny, digits, tiny_fleets,
                                                                      tmp_path):
    from dmm.attribution.store import load_attribution, save_attribution

    n = tiny.data.n_train
    masks = np.asarray(tiny_fleets["density"].masks)
    assert masks.mean(1).min() < 0.5 < masks.mean(1).max()  # densities vary per model
    g = fit_tiny(tiny_fleets)
    assert g.beta.shape == g.gamma.shape == (n, n) and g.neighbours.shape == (n, 8)
    assert g.rho.shape == (n,) and g.margin_std.shape == (n + tiny.data.n_val,)
    cal = g.info["calibration"]
    assert [s["size"] for s in cal["sets"]] == [10, 10, 15] and cal["s"] == g.s
    again = fit_tiny(tiny_fleets)
    for name in ("beta", "gamma", "neighbours", "weights", "rho"):
        np.testing.assert_array_equal(getattr(g, name), getattr(again, name))
    assert (g.s, g.kappa, g.spread, g.amplify, g.blend) == (again.s, again.kappa, again.spread,
                                                            again.amplify, again.blend)
    z = tiny_fleets["originals"].logits
    forget = np.arange(5, 25)
    path = save_attribution(g, tmp_path / "group", tiny)
    loaded = load_attribution(path, tiny)
    assert isinstance(loaded, GroupAttribution) and loaded.info["backend"] == "group"
    torch.testing.assert_close(loaded.predict(z, forget), g.predict(z, forget))
    assert (loaded.amplify, loaded.blend) == (g.amplify, g.blend)
    assert read_manifest(path)["model_revision"] == MODEL_REVISION
    with pytest.raises(DmmError, match="made for task 'tiny', not 'digits'"):
        load_attribution(path, digits)
    with pytest.raises(DmmError, match="not a datamodel fleet"):
        from dmm.attribution.group import fit_group_from_fleets

        fit_group_from_fleets(g.ridge, tiny_fleets["originals"], tiny_fleets["ridge"],
                              tiny_fleets["originals"], tiny_fleets["oracles"])


def test_cli_attribute_group_fits_and_the_unlearn_report_estimates_quality(tiny, tiny_fleets,
                                                                           tmp_path, capsys):
    import json

    from dmm.attribution.store import save_attribution
    from dmm.cli import main
    from dmm.forget_sets import write_indices
    from tests.conftest import TINY

    f = tiny_fleets
    linear = save_attribution(fit_tiny(f).ridge, tmp_path / "ridge", tiny)
    out = tmp_path / "group"
    main(["attribute", "--task", str(TINY), "--backend", "group", "--fleet",
          str(f["density"].path), "--linear", str(linear), "--datamodel_fleet",
          str(f["ridge"].path), "--calibration_originals", str(f["originals"].path),
          "--calibration_oracles", json.dumps([str(o.path) for o in f["oracles"]]),
          "--neighbours", "8", "--device", "cpu", "--out", str(out)])
    assert "group s =" in capsys.readouterr().out and (out / "manifest.json").is_file()
    main(["train", "--task", str(TINY), "--out", str(tmp_path / "m.ckpt"), "--wandb",
          "disabled", "--device", "cpu"])
    write_indices(tmp_path / "f.txt", np.arange(5, 25))
    main(["unlearn", "--checkpoint", str(tmp_path / "m.ckpt"), "--forget",
          str(tmp_path / "f.txt"), "--method", "dmm", "--attribution", str(out), "--out",
          str(tmp_path / "u.ckpt"), "--task", str(TINY), "--device", "cpu", "--set",
          "epochs=1"])
    assert "distance to the predicted retrained margins" in capsys.readouterr().out
    q = json.loads((tmp_path / "u.json").read_text())["quality"]
    assert q["available"] and "seed spread" in q["meaning"]
    assert q["forget"]["points"] == 20 and q["retain"]["points"] == 200
    assert all(q[k]["median"] >= 0 for k in ("forget", "retain", "validation"))
