"""Margins, losses and confidences against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmm.evals import confidence, loss, margins


def test_margin_by_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, -1.0]])
    labels = np.array([0, 2])
    expected = [
        2.0 - math.log(math.exp(1.0) + math.exp(0.0)),
        -1.0 - math.log(math.exp(0.0) + math.exp(3.0)),
    ]
    np.testing.assert_allclose(margins(logits, labels), expected, rtol=1e-12)


def test_two_classes_is_a_logit_difference_and_stays_finite():
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0], [-3.0, 4.0]])
    labels = np.array([1, 1, 0])
    np.testing.assert_allclose(margins(logits, labels), [-1000.0, 1000.0, -7.0])
    np.testing.assert_allclose(loss(logits, labels), [1000.0, 0.0, 7.0 + math.log1p(math.exp(-7))])


def test_margin_is_logit_scaled_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)) * 3
    labels = rng.integers(0, 10, size=6)
    p = confidence(logits, labels)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, softmax[np.arange(6), labels], rtol=1e-12)
    np.testing.assert_allclose(margins(logits, labels), np.log(p / (1 - p)), rtol=1e-9)
    np.testing.assert_allclose(loss(logits, labels), -np.log(p), rtol=1e-12)


def test_fleet_batching_and_torch_input():
    rng = np.random.default_rng(1)
    fleet = rng.normal(size=(3, 2, 5, 4))  # [seeds, models, points, classes]
    labels = rng.integers(0, 4, size=5)
    out = margins(torch.from_numpy(fleet), torch.from_numpy(labels))
    assert out.shape == (3, 2, 5)
    np.testing.assert_allclose(out[2, 1], margins(fleet[2, 1], labels))


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((3, 1)), [0, 0, 0], "at least 2 classes"),
        (np.zeros((3, 2)), [0, 2, 0], r"must lie in \[0, 2\)"),
        (np.zeros((3, 2)), [0, 1], "shape"),
        (np.zeros(3), [0], "points, classes"),
        (np.array([[np.nan, 0.0]]), [0], "NaN"),
    ],
)
def test_bad_input(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        margins(logits, labels)
