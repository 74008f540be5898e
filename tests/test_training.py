"""Per-model batch streams, augmentation and Lightning training of ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmm.recipe import make_optimizer, model_key
from dmm.training import BatchStream, ZipStream, crop_flip, train_ensemble


def test_each_model_sees_its_own_subset_once_per_epoch_in_its_own_order():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 50)) < 0.5
    s = BatchStream(masks.astype(np.int64), keys=[11, 12, 13], epochs=2, batch_size=8)
    assert s.steps_per_epoch == -(-masks.sum(1).max() // 8)
    for e in range(2):
        steps = [s[e * s.steps_per_epoch + t] for t in range(s.steps_per_epoch)]
        idx = torch.cat([b["idx"] for b in steps], 1)
        w = torch.cat([b["weight"] for b in steps], 1)
        for k in range(3):
            seen = idx[k][w[k] > 0].numpy()
            assert sorted(seen) == list(np.flatnonzero(masks[k]))  # each example exactly once
    # Orders differ between models and epochs, and depend only on the key.
    a = BatchStream(np.ones((2, 40), dtype=np.int64), [1, 2], 2, 40)
    assert not torch.equal(a[0]["idx"][0], a[0]["idx"][1])
    assert not torch.equal(a[0]["idx"][0], a[1]["idx"][0])
    b = BatchStream(np.ones((1, 40), dtype=np.int64), [2], 2, 40)
    assert torch.equal(a[1]["idx"][1], b[1]["idx"][0])


def test_fixed_step_budget_streams_through_successive_permutations_of_each_subset():
    rng = np.random.default_rng(1)
    masks = rng.random((2, 30)) < 0.5
    s = BatchStream(masks.astype(np.int64), keys=[7, 8], epochs=3, batch_size=4,
                    steps_per_epoch=5)
    assert len(s) == 15 and all((s[t]["weight"] == 1).all() for t in range(15))
    for k in range(2):
        stream = torch.cat([s[t]["idx"][k] for t in range(15)]).numpy()
        m = int(masks[k].sum())
        for p in range(len(stream) // m):  # every complete pass is one permutation
            assert sorted(stream[p * m : (p + 1) * m]) == list(np.flatnonzero(masks[k]))
        assert set(stream) <= set(np.flatnonzero(masks[k]))


def test_counts_upweight_examples():
    counts = np.zeros((1, 10), dtype=np.int64)
    counts[0, 3], counts[0, 5] = 3, 1
    s = BatchStream(counts, [0], epochs=1, batch_size=4)
    assert sorted(s[0]["idx"][0].tolist()) == [3, 3, 3, 5]


def test_zip_stream_cycles_the_shorter_stream():
    long = BatchStream(np.ones((1, 20), dtype=np.int64), [0], 1, 4)
    short = BatchStream(np.ones((1, 4), dtype=np.int64), [1], 1, 4)
    z = ZipStream(retain=long, forget=short)
    assert len(z) == 5 and torch.equal(z[3]["forget"]["idx"], short[0]["idx"])


def test_crop_flip_matches_manual_crop():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    aug = torch.tensor([[0, 8, 0], [4, 4, 1]])
    out = crop_flip(x, aug)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    torch.testing.assert_close(out[0], padded[0, :, 0:32, 8:40])
    torch.testing.assert_close(out[1], padded[1, :, 4:36, 4:36].flip(-1))


def test_fleet_models_equal_models_trained_alone(tiny):
    """A model's result depends on its key only, not on the models trained beside it."""
    keys = [model_key(0, j) for j in range(3)]
    together = train_ensemble(tiny, keys, device="cpu").predict(tiny.data.x_val)
    alone = train_ensemble(tiny, keys[1:2], device="cpu").predict(tiny.data.x_val)
    torch.testing.assert_close(together[1:2], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(together[0], together[1], atol=1e-2)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimisers_update_a_model_alone_as_in_a_stack_bit_for_bit(name):
    """A model's weights must not depend on the fleet it trains in (fused SGD fails this:
    its tail elements round differently)."""
    shapes = [(64, 128), (128,), (128, 10), (10,)]  # the MLP's; 7 models: SIMD tails
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(7, *s, generator=gen) for s in shapes]
    grads = [[torch.randn(7, *s, generator=gen) for s in shapes] for _ in range(30)]

    def train(rows: slice) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(x[rows].clone()) for x in init]
        opt = make_optimizer(params, name, lr=1e-2, momentum=0.9, weight_decay=5e-4)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g[rows].clone()
            opt.step()
        return [p.detach() for p in params]

    stacked, alone = train(slice(0, 7)), train(slice(3, 4))
    assert all(torch.equal(s[3:4], a) for s, a in zip(stacked, alone, strict=True))
