"""TRAK through ``traker`` on the CPU: the per-class model output and the score matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmm.errors import DmmError
from dmm.evals import margins
from dmm.recipe import model_key
from dmm.training import train_ensemble

trak_scores = pytest.importorskip("dmm.attribution.trak_scores")


def test_model_output_is_margin_when_featurising_and_logit_when_scoring(tiny):
    model = tiny.build_model(0)
    out = trak_scores.LogitModelOutput()
    x, y = tiny.data.x_train[:5], tiny.data.y_train[:5]
    weights, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    got = torch.stack([out.get_output(model, weights, buffers, x[i], y[i]) for i in range(5)])
    logits = model(x).detach()
    np.testing.assert_allclose(got.detach().numpy(), margins(logits, y), rtol=1e-5, atol=1e-5)
    out.target_class = 7
    got = torch.stack([out.get_output(model, weights, buffers, x[i], y[i]) for i in range(5)])
    torch.testing.assert_close(got.detach(), logits[:, 7])


def test_scores_credit_each_training_example_for_its_own_label_logit(tiny):
    ens = train_ensemble(tiny, [model_key(0, 0)], device="cpu")
    state = ens.model_state(0)
    scores = trak_scores.compute_trak_scores(tiny, [state], proj_dim=64, lambda_reg=1e-3)
    n, p, c = tiny.data.n_train, tiny.data.n_train + tiny.data.n_val, tiny.data.n_classes
    assert scores.shape == (n, p, c) and np.isfinite(scores).all()
    y = tiny.data.y_train.numpy()
    idx = np.arange(n)
    label_logit = scores[:, idx, y]  # [i, x]: example i's score on target x's label logit
    own = label_logit[idx, idx]
    percentile = (label_logit < own[None]).mean(0)
    assert np.median(percentile) > 0.99  # each example is among its own top influencers
    same = (y[:, None] == y[None, :]) & ~np.eye(n, dtype=bool)
    assert label_logit[same].mean() > 10 * abs(label_logit[~same].mean())


def test_trak_arguments_are_checked(tiny):
    state = tiny.build_model(0).state_dict()
    with pytest.raises(DmmError, match="proj_dim"):
        trak_scores.compute_trak_scores(tiny, [state], proj_dim=5000)
    with pytest.raises(DmmError, match="lambda_reg"):
        trak_scores.compute_trak_scores(tiny, [state], proj_dim=16, lambda_reg=0.0)


def test_cli_attribute_trak(tiny, tmp_path, capsys):
    import json

    from dmm.attribution.store import load_attribution
    from dmm.cli import main
    from dmm.fleet import train_fleet
    from tests.conftest import TINY
    from tests.test_attribution_store import synthetic_fleet

    train_fleet(tiny, "original", 2, tmp_path / "orig", device="cpu", progress=False)
    synthetic_fleet(tiny, tmp_path / "dm", models=30)
    out = tmp_path / "trak"
    main(["attribute", "--task", str(TINY), "--backend", "trak", "--fleet",
          str(tmp_path / "orig"), "--datamodel_fleet", str(tmp_path / "dm"), "--proj_dim",
          "32", "--out", str(out), "--device", "cpu"])
    assert "trak (traker)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "trak" and manifest["ensemble"]["models"] == 2
    assert manifest["regularisation"]["proj_dim"] == 32 and manifest["units"]["factor"] != 0
    attr = load_attribution(out, tiny)
    assert attr.basis is None and attr.coef.shape == (1437, 1797, 10)
    with pytest.raises(SystemExit):
        main(["attribute", "--task", str(TINY), "--backend", "trak", "--fleet",
              str(tmp_path / "dm"), "--out", str(tmp_path / "bad")])
    assert "kept no weights" in capsys.readouterr().err and not (tmp_path / "bad").exists()
