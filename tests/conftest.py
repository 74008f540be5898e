"""Shared fixtures: the digits task and a tiny, fast variant of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dmm.tasks import Task, load_task

TESTS = Path(__file__).parent
TINY = TESTS / "data" / "tiny.yaml"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits() -> Task:
    return load_task("digits")


@pytest.fixture(scope="session")
def tiny() -> Task:
    """digits data with a 16-unit MLP trained for 2 epochs (task name ``tiny``)."""
    return load_task(str(TINY))
