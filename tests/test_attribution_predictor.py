"""The Predictor interface: DM-Direct from a linear attribution, factorised or not,
forget-set forms, points, and predicting for F without the full beta matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmm.attribution.linear import LinearAttribution
from dmm.attribution.predictor import forget_masks
from dmm.errors import DmmError

N, P, C, R = 30, 40, 3, 7  # train examples, points (30 train + 10 val), classes, rank


def factorised(seed: int = 0, scale: float = 0.8) -> LinearAttribution:
    rng = np.random.default_rng(seed)
    return LinearAttribution(
        intercept=rng.normal(size=(P, C)).astype(np.float32),
        mask_mean=np.full(N, 0.5, dtype=np.float32),
        coef=rng.normal(size=(R, P, C)).astype(np.float32),
        basis=rng.normal(size=(N, R)).astype(np.float32),
        scale=scale,
    )


def expanded(attr: LinearAttribution) -> LinearAttribution:
    full = np.einsum("nr,rpc->npc", attr.basis, attr.coef).astype(np.float32)
    return LinearAttribution(attr.intercept, attr.mask_mean, full, None, attr.scale)


class RowSpy:
    """An array stand-in that records which rows are read."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.read = a, a.shape, set()

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        self.read.update(np.arange(len(self.a))[key].reshape(-1).tolist())
        return self.a[key]


def test_dm_direct_is_original_minus_scaled_forget_sum():
    attr = factorised()
    beta = torch.from_numpy(np.einsum("nr,rpc->npc", attr.basis, attr.coef))
    z = torch.randn(4, P, C)
    forget = np.array([2, 5, 11])
    h = attr.predict(z, forget)
    torch.testing.assert_close(h, z - 0.8 * beta[forget].sum(0), atol=1e-4, rtol=1e-4)


def test_factorised_and_full_matrix_agree():
    attr = factorised()
    full = expanded(attr)
    masks = torch.rand(5, N) < 0.3
    masks[:, 0] = True
    z = torch.randn(5, P, C)
    pts = np.array([0, 7, 35, 39])
    torch.testing.assert_close(attr.predict(z, masks), full.predict(z, masks), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(attr.predict(z[:, pts], masks, pts),
                               full.predict(z, masks, pts), atol=1e-4, rtol=1e-4)
    sub = torch.rand(6, N) < 0.5
    torch.testing.assert_close(attr.predict_subset(sub), full.predict_subset(sub), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(attr.rows([3, 4], pts), full.rows([3, 4], pts), atol=1e-4,
                               rtol=1e-4)


def test_prediction_reads_only_the_forget_rows():
    full = expanded(factorised())
    spy = RowSpy(np.asarray(full.coef))
    lazy = LinearAttribution(full.intercept, full.mask_mean, spy, None, full.scale)
    forget = [1, 9, 17, 25]
    z = torch.randn(2, P, C)
    torch.testing.assert_close(lazy.predict(z, forget), full.predict(z, forget))
    assert spy.read == set(forget)


def test_forget_forms_are_equivalent():
    attr = factorised()
    z = torch.randn(2, P, C)
    idx = np.array([4, 8])
    mask = np.zeros(N, dtype=bool)
    mask[idx] = True
    ref = attr.predict(z, idx)
    for form in (mask, np.stack([mask, mask]), [idx, idx], torch.from_numpy(idx), idx.tolist()):
        torch.testing.assert_close(attr.predict(z, form), ref)
    one = attr.predict(z[0], idx)
    assert one.shape == (P, C)
    torch.testing.assert_close(one, ref[0])
    per_model = attr.predict(z, [np.array([4]), np.array([8])])
    torch.testing.assert_close(per_model[0], attr.predict(z[0], [4]))


@pytest.mark.parametrize("forget, message", [
    (np.array([N]), "out of range"),
    (np.array([-1]), "negative"),
    (np.array([], dtype=np.int64), "empty"),
    (np.zeros(N, dtype=bool), "empty"),
    (np.zeros((3, N), dtype=bool), r"\[2, 30\]"),
    ([np.array([1])], "1 forget sets for 2 models"),
])
def test_bad_forget_sets_are_refused(forget, message):
    with pytest.raises(DmmError, match=message):
        factorised().predict(torch.randn(2, P, C), forget)


def test_bad_points_and_logits_are_refused():
    attr = factorised()
    with pytest.raises(DmmError, match="points must be integer"):
        attr.predict(torch.randn(2, P, C), [1], points=[P])
    with pytest.raises(DmmError, match="cover 5 points"):
        attr.predict(torch.randn(2, 5, C), [1], points=[1, 2])
    with pytest.raises(DmmError, match="classes"):
        attr.predict(torch.randn(2, P, C + 1), [1])


def test_forget_masks_broadcasts_one_set_to_all_models():
    m = forget_masks(np.array([0, 3]), 3, 5)
    assert m.shape == (3, 5) and m.sum() == 6 and m[:, [0, 3]].all()


def test_shape_checks():
    attr = factorised()
    with pytest.raises(DmmError, match="coef must be"):
        LinearAttribution(attr.intercept, attr.mask_mean, attr.coef[:, :5], attr.basis)
    with pytest.raises(DmmError, match="weights must be"):
        attr.apply(torch.ones(2, N + 1))
