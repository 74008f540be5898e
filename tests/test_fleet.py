"""Fleet store: masks per kind, shards, exact resume after a kill, refusal of bad reuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dmm.fleet.train as fleet_mod
from dmm.errors import DmmError
from dmm.fleet import fleet_masks, load_fleet, train_fleet
from tests.conftest import TINY


def test_masks_per_kind():
    f = np.array([1, 4])
    assert fleet_masks("original", 2, 6, 0).all()
    oracle = fleet_masks("oracle", 2, 6, 0, forget=f)
    assert not oracle[:, f].any() and oracle.sum() == 2 * 4
    dm = fleet_masks("datamodel", 400, 200, 0)
    assert abs(dm.mean() - 0.5) < 0.01
    assert not np.array_equal(dm[0], dm[1])
    # Model j's mask does not depend on the fleet size.
    assert np.array_equal(fleet_masks("datamodel", 3, 200, 0)[2], dm[2])


def test_fleet_store_and_load(tiny, tmp_path):
    out = tmp_path / "dm"
    f = train_fleet(tiny, "datamodel", 5, out, shard_size=2, device="cpu", progress=False)
    masks, logits = load_fleet(out, tiny)
    assert masks.shape == (5, 1437) and logits.shape == (5, 1797, 10)
    assert np.array_equal(masks, f.masks) and np.isfinite(logits).all()
    assert not (out.parent / "dm.partial").exists()
    assert f.manifest["task"] == "tiny" and f.manifest["complete"]
    assert (f.labels == tiny.data.y_all.numpy()).all()
    with pytest.raises(DmmError, match="kept no weights"):
        f.ensemble(tiny)
    with pytest.raises(DmmError, match="already exists"):
        train_fleet(tiny, "datamodel", 5, out, shard_size=2, device="cpu", progress=False)
    again = train_fleet(tiny, "datamodel", 5, out, shard_size=2, reuse=True, progress=False)
    assert np.array_equal(np.asarray(again.logits), np.asarray(f.logits))
    with pytest.raises(DmmError, match="other settings"):
        train_fleet(tiny, "datamodel", 5, out, seed=9, shard_size=2, reuse=True, progress=False)


def test_fleet_weights_reload_to_same_logits(tiny, tmp_path):
    f = train_fleet(tiny, "original", 3, tmp_path / "o", shard_size=2, device="cpu",
                    progress=False)
    ens = f.ensemble(tiny, indices=[2, 0])
    np.testing.assert_allclose(ens.predict(tiny.data.x_all).numpy(), f.logits[[2, 0]],
                               atol=1e-5)


def test_interrupted_fleet_resumes_exactly_without_retraining(tiny, tmp_path, monkeypatch):
    ref = train_fleet(tiny, "datamodel", 5, tmp_path / "ref", shard_size=2, device="cpu",
                      progress=False)
    calls = []
    real = fleet_mod.train_ensemble

    def crash_on_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fleet_mod, "train_ensemble", crash_on_second_shard)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_fleet(tiny, "datamodel", 5, out, shard_size=2, device="cpu", progress=False)
    assert not out.exists() and len(list((tmp_path / "run.partial" / "shards").iterdir())) == 1
    calls.clear()
    monkeypatch.setattr(fleet_mod, "train_ensemble",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    done = train_fleet(tiny, "datamodel", 5, out, shard_size=2, device="cpu", progress=False)
    assert len(calls) == 2  # shards 1 and 2 only; shard 0 was kept
    assert np.array_equal(np.asarray(done.logits), np.asarray(ref.logits))
    assert np.array_equal(done.masks, ref.masks)


def test_partial_with_other_settings_is_refused(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(fleet_mod, "train_ensemble", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_fleet(tiny, "datamodel", 4, tmp_path / "x", device="cpu", progress=False)
    with pytest.raises(DmmError, match="other settings"):
        train_fleet(tiny, "datamodel", 4, tmp_path / "x", seed=1, device="cpu", progress=False)


def test_oracle_needs_forget_set(tiny, tmp_path):
    with pytest.raises(DmmError, match="forget set"):
        train_fleet(tiny, "oracle", 2, tmp_path / "o", device="cpu", progress=False)
    with pytest.raises(DmmError, match="out of range"):
        train_fleet(tiny, "oracle", 2, tmp_path / "o", forget=np.array([5000]), device="cpu",
                    progress=False)
    assert not any(tmp_path.iterdir())


def test_killing_the_cli_mid_run_and_rerunning_gives_the_uninterrupted_result(tmp_path):
    """SIGKILL `dmm fleet` once a shard is done; the same command then finishes the fleet
    without retraining that shard, with exactly the logits of an uninterrupted run."""
    cmd = [sys.executable, "-m", "dmm.cli", "fleet", "--task", str(TINY), "--kind", "datamodel",
           "--models", "6", "--shard_size", "2", "--device", "cpu", "--seed", "3"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([*cmd, "--out", str(tmp_path / "ref")], check=True, env=env,
                   capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed.partial" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and not (shards.exists() and any(shards.glob("*.json"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in shards.glob("*.json"))
    assert finished and len(finished) < 3 and not out.exists()
    first_mtime = (shards / finished[0]).stat().st_mtime_ns
    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, capture_output=True)
    assert (out / "shards" / finished[0]).stat().st_mtime_ns == first_mtime  # not retrained
    assert np.array_equal(np.load(out / "logits.npy"), np.load(tmp_path / "ref" / "logits.npy"))
