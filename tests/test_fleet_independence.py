"""Fleets must be independent samples (DESIGN.md section 5): two 100-model digits fleets on
the same mask with different seeds are exchangeable, and the shared-data-order failure mode
is caught by the same check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dmm.training
from dmm.recipe import model_key
from dmm.training import BatchStream, train_ensemble

N = 100


def fleet_margins(task, seed: int) -> np.ndarray:
    keys = [model_key(seed, j) for j in range(N)]
    logits = train_ensemble(task, keys, device="cpu").predict(task.data.x_all)
    y = task.data.y_all
    true = logits.gather(-1, y.expand(N, -1)[..., None])[..., 0]
    other = logits.scatter(-1, y.expand(N, -1)[..., None], float("-inf")).logsumexp(-1)
    return (true - other).numpy()


def standardised_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Median over points of |mean_a - mean_b| / pooled per-point standard deviation."""
    pooled = np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2)
    return float(np.median(np.abs(a.mean(0) - b.mean(0)) / pooled))


class SharedOrderStream(BatchStream):
    """The failure mode: every model of a fleet gets the first model's data order."""

    def __init__(self, counts, keys, *args, **kwargs):
        super().__init__(counts, [keys[0]] * len(keys), *args, **kwargs)


# Independent samples of size N: |mean gap| / sd is about sqrt(2/N) * |Z|, median ~0.1.
THRESHOLD = 0.3


def test_fleets_with_different_seeds_are_exchangeable(digits):
    gap = standardised_gap(fleet_margins(digits, 1), fleet_margins(digits, 2))
    print(f"independent fleets: median standardised gap {gap:.3f}")
    assert gap < THRESHOLD


def test_shared_data_order_fails_the_same_check(digits, monkeypatch):
    monkeypatch.setattr(dmm.training, "BatchStream", SharedOrderStream)
    gap = standardised_gap(fleet_margins(digits, 1), fleet_margins(digits, 2))
    print(f"shared-order fleets: median standardised gap {gap:.3f}")
    assert gap > THRESHOLD


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
