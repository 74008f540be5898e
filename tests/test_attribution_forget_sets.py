"""Forget-set generation: sizes, disjointness, no truncation, the margin matrix, PCs and
the ``dmm forget-sets`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dmm.attribution.forget_suite import (
    build_forget_suite,
    class_set,
    margin_matrix,
    principal_projections,
    random_set,
    top_bottom_k,
    top_k,
)
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.store import save_attribution
from dmm.cli import main
from dmm.errors import DmmError
from dmm.forget_sets import read_indices
from tests.conftest import TINY
from tests.test_attribution_store import small_attribution


def test_selectors_give_exact_sizes_and_refuse_to_truncate():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=100)
    assert len(random_set(100, 30, rng)) == 30 and len(np.unique(random_set(100, 30, rng))) == 30
    top = top_k(scores, 10)
    assert set(top) == set(np.argsort(scores)[-10:])
    both = top_bottom_k(scores, 20)
    assert len(both) == 40 and set(np.argsort(scores)[:20]) <= set(both)
    labels = np.arange(100) % 4
    cls = class_set(labels, 2, 25, rng)
    assert len(cls) == 25 and (labels[cls] == 2).all()
    for call, message in [
        (lambda: random_set(100, 101, rng), "only 100"),
        (lambda: top_bottom_k(scores, 51), "only 100"),
        (lambda: class_set(labels, 2, 26, rng), "only 25"),
        (lambda: top_k(scores, 0), "positive"),
    ]:
        with pytest.raises(DmmError, match=message):
            call()


def test_margin_matrix_linearises_the_margin():
    n, p, c = 4, 6, 3
    rng = np.random.default_rng(0)
    beta = rng.normal(size=(n, p, c)).astype(np.float32)
    b = rng.normal(size=(p, c)).astype(np.float32)
    attr = LinearAttribution(b, np.full(n, 0.5, dtype=np.float32), beta)
    labels = np.array([0, 2, 1, 1, 0, 2])
    d = margin_matrix(attr, labels)
    assert d.shape == (n, n)

    def margin(z: torch.Tensor, y: int) -> torch.Tensor:
        others = torch.cat([z[:y], z[y + 1 :]])
        return z[y] - others.logsumexp(0)

    for x in range(n):
        grad = torch.func.grad(margin)(torch.from_numpy(b[x]), int(labels[x])).numpy()
        np.testing.assert_allclose(d[x], beta[:, x] @ grad, rtol=1e-5, atol=1e-6)


def test_principal_projections_find_a_planted_direction():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=200), rng.normal(size=50)
    matrix = 10 * np.outer(u, v) + rng.normal(size=(200, 50))
    proj = principal_projections(matrix, k=2)
    assert abs(np.corrcoef(proj[:, 0], u)[0, 1]) > 0.99
    assert proj[np.abs(proj[:, 0]).argmax(), 0] > 0  # the sign rule
    assert abs(np.corrcoef(proj[:, 0], proj[:, 1])[0, 1]) < 1e-6


def test_suite_sizes_and_classes(digits):
    attr = small_attribution(digits)
    labels = digits.data.y_all.numpy()
    sets, info = build_forget_suite(attr, labels, (10, 50, 150), (10, 50), 50, (3, 8), 50)
    expected = {"random_10": 10, "random_50": 50, "random_150": 150, "pc1_top_10": 10,
                "pc1_top_50": 50, "pc1_top_50_bottom_50": 100, "pc2_top_10": 10,
                "pc2_top_50": 50, "pc2_top_50_bottom_50": 100, "class_3_50": 50,
                "class_8_50": 50}
    assert {k: len(v) for k, v in sets.items()} == expected
    for idx in sets.values():
        assert len(np.unique(idx)) == len(idx) and idx.max() < digits.data.n_train
    assert set(sets["pc1_top_10"]) <= set(sets["pc1_top_50"]) <= set(sets["pc1_top_50_bottom_50"])
    assert (labels[sets["class_8_50"]] == 8).all()
    assert info["sets"]["class_3_50"]["classes"][3] == 50
    with pytest.raises(DmmError, match="never truncated"):
        build_forget_suite(attr, labels, (10,), (10,), 0, (3,), 1000)


def test_cli_forget_sets(digits, tmp_path, capsys):
    path = save_attribution(small_attribution(digits), tmp_path / "attr", digits)
    out = tmp_path / "sets"
    main(["forget-sets", "--task", "digits", "--attribution", str(path), "--out", str(out)])
    assert "11 forget sets" in capsys.readouterr().out
    idx = read_indices(out / "pc1_top_50.txt", digits.data.n_train)
    assert len(idx) == 50
    suite = json.loads((out / "suite.json").read_text())
    assert suite["fingerprint"] == digits.fingerprint and len(suite["sets"]) == 11
    bad = tmp_path / "bad"
    for extra, message in [(["--classes", "[12]"], "out of range"),
                           (["--class_size", "500"], "never truncated")]:
        with pytest.raises(SystemExit):
            main(["forget-sets", "--attribution", str(path), "--out", str(bad), *extra])
        assert message in capsys.readouterr().err and not bad.exists()
    with pytest.raises(SystemExit):
        main(["forget-sets", "--task", str(TINY), "--attribution", str(path), "--out", str(bad)])
    assert "not 'tiny'" in capsys.readouterr().err
