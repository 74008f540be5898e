"""Tasks: digits split, users' tensors, CIFAR-10 read from torchvision's on-disk format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dmm.errors import DmmError
from dmm.tasks import load_task, task_names
from dmm.tasks.data import load_cifar10


def test_digits_split_is_fixed_and_stratified(digits):
    d = digits.data
    assert (d.n_train, d.n_val, d.n_classes) == (1437, 360, 10)
    assert d.x_train.shape == (1437, 1, 8, 8) and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert load_task("digits").fingerprint == digits.fingerprint
    counts = torch.bincount(d.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of ~180 per class


def test_datasets_yield_index(digits):
    ds = digits.data.train_dataset()
    x, y, i = ds[17]
    assert i == 17 and torch.equal(x, digits.data.x_train[17]) and y == digits.data.y_train[17]


def test_shipped_tasks_parse():
    assert {"digits", "digits_cnn", "cifar10", "tensors"} <= set(task_names())


def test_shipped_configs_are_package_data():
    """The shipped YAML is found through importlib.resources, by name or by path."""
    from importlib import resources

    from dmm.config import CONFIG_DIR, config_names, config_path

    assert CONFIG_DIR == resources.files("dmm.configs")
    assert config_names("bench") == ["cifar10", "digits"]
    assert "_plain-sgd" not in config_names("methods") and "dmm" in config_names("methods")
    assert config_path("tasks", "digits") == CONFIG_DIR / "tasks" / "digits.yaml"
    assert config_path("bench", "some/where.yaml") == Path("some/where.yaml")
    for bad in ("nope", "_plain-sgd", "../tasks/digits"):
        with pytest.raises(DmmError, match="unknown method"):
            config_path("methods", bad)


def test_unknown_task_and_malformed_yaml(tmp_path):
    with pytest.raises(DmmError, match="unknown task 'nope'"):
        load_task("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1\n")
    with pytest.raises(DmmError, match="malformed YAML"):
        load_task(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: {arch: mlp, hiddden: [3]}\n")
    with pytest.raises(DmmError, match="hiddden"):
        load_task(str(typo))


def _tensor_arrays(rng):
    return dict(x_train=rng.normal(size=(30, 5)).astype(np.float32),
                y_train=rng.integers(0, 3, 30), x_val=rng.normal(size=(10, 5)).astype(np.float32),
                y_val=rng.integers(0, 3, 10))


def test_tensors_task_npz_and_pt(tmp_path):
    arrays = _tensor_arrays(np.random.default_rng(0))
    np.savez(tmp_path / "d.npz", **arrays)
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp_path / "d.pt")
    a = load_task("tensors", tmp_path / "d.npz")
    b = load_task("tensors", tmp_path / "d.pt")
    assert a.data.n_train == 30 and a.data.n_classes == int(arrays["y_train"].max() + 1)
    assert a.fingerprint == b.fingerprint
    assert a.build_model(0)(a.data.x_val).shape == (10, a.data.n_classes)


def test_tensors_task_errors(tmp_path):
    with pytest.raises(DmmError, match="needs --data"):
        load_task("tensors")
    arrays = _tensor_arrays(np.random.default_rng(0))
    del arrays["y_val"]
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DmmError, match="lacks y_val"):
        load_task("tensors", tmp_path / "d.npz")


def write_cifar(root, n_per_batch=4, seed=0):
    """A miniature CIFAR-10 in torchvision's exact on-disk format (pickled dicts)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n_per_batch).tolist(),
             b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(n_per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[name] = d
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}))
    return batches


def test_cifar10_reads_torchvision_format(tmp_path):
    batches = write_cifar(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_val.shape == (4, 3, 32, 32)
    assert data.y_train.tolist() == sum((batches[f"data_batch_{i}"][b"labels"]
                                        for i in range(1, 6)), [])
    # Pixel (channel 1, row 2, col 3) of the first image, normalised as documented.
    raw = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)[1, 2, 3] / 255.0
    assert data.x_train[0, 1, 2, 3].item() == pytest.approx((raw - 0.4822) / 0.2435, abs=1e-5)
    task = load_task("cifar10", tmp_path)
    assert task.build_model().eval()(data.x_val).shape == (4, 10)


def test_cifar10_missing_or_malicious(tmp_path):
    with pytest.raises(DmmError, match="needs --data"):
        load_task("cifar10")
    with pytest.raises(DmmError, match="does not exist"):
        load_task("cifar10", tmp_path / "nowhere")
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DmmError, match="refusing to load builtins.print"):
        load_cifar10(tmp_path)


def test_cifar10_fleet_trains_through_the_looped_fallback(tmp_path):
    """ResNet-9 has BatchNorm: the fleet falls back to a loop over the same API, with
    per-model crop/flip augmentation; logits land in the store for every point."""
    from dmm.fleet import train_fleet

    write_cifar(tmp_path / "data", n_per_batch=4)
    task = load_task("cifar10", tmp_path / "data")
    task.spec.recipe.epochs, task.spec.recipe.batch_size = 2, 8
    fleet = train_fleet(task, "original", 2, tmp_path / "fleet", device="cpu", progress=False)
    assert fleet.logits.shape == (2, 24, 10) and np.isfinite(fleet.logits).all()
    ens = fleet.ensemble(task)
    assert not ens.vectorised
    assert not np.allclose(fleet.logits[0], fleet.logits[1])
    np.testing.assert_allclose(ens.predict(task.data.x_all).numpy(), fleet.logits, atol=1e-4)
