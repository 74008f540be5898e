"""The fleet store with several writers and damaged files: one writer at a time (the
others refused at once, naming the holder, or waiting), stale locks removed, truncated or
altered shards named on open, damaged unmerged shards recomputed on resume."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import dmm.fleet.train as fleet_mod
from dmm.cli import main
from dmm.errors import DmmError
from dmm.fleet import load_fleet, train_fleet
from dmm.fleet.lock import STALE_AFTER
from dmm.fleet.store import FleetWriter
from tests.conftest import TINY

KW = {"shard_size": 2, "device": "cpu", "progress": False}


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_second_writer_is_refused_at_once_and_a_waiting_one_reuses_the_fleet(
        tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "fleet"
    args = ["fleet", "--task", str(TINY), "--kind", "datamodel", "--models", "6",
            "--shard_size", "2", "--device", "cpu", "--seed", "4", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "dmm.cli", *args],
                             env={**os.environ, "PYTHONWARNINGS": "ignore"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "fleet.partial.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline:
        time.sleep(0.02)
    holder = json.loads(lock.read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()

    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and time.perf_counter() - t0 < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dmm: error: ")
    assert f"is being written by pid {first.pid}@{socket.gethostname()}" in err
    assert "--wait" in err and json.loads(lock.read_text()) == holder  # untouched

    calls = []
    monkeypatch.setattr(fleet_mod, "train_ensemble", lambda *a, **k: calls.append(1))
    waited = train_fleet(tiny, "datamodel", 6, out, seed=4, wait=True, **KW)
    assert first.wait() == 0 and calls == []  # it waited, then took the first one's fleet
    assert len(waited) == 6 and waited.manifest["complete"]
    assert np.array_equal(np.asarray(waited.logits), np.load(out / "logits.npy"))
    assert [p.name for p in tmp_path.iterdir()] == ["fleet"]  # no lock, partial, temp
    assert not [p for p in listing(out) if p.startswith(".") or "/." in p or "attempts" in p]


def test_a_stale_lock_is_removed_and_a_live_one_elsewhere_is_trusted(tiny, tmp_path):
    out = tmp_path / "fleet"
    lock = tmp_path / "fleet.partial.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                "started": "earlier"}))
    with pytest.warns(UserWarning, match=f"stale lock .* pid {dead.pid}@"):
        fleet = train_fleet(tiny, "original", 2, out, **KW)
    assert len(fleet) == 2 and not lock.exists()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "now"}))
    with pytest.raises(DmmError, match="being written by pid 1@elsewhere"):
        train_fleet(tiny, "original", 2, tmp_path / "fleet", overwrite=True, **KW)
    assert lock.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "fleet", "fleet.partial.lock"]
    old = time.time() - 2 * STALE_AFTER  # that holder stopped refreshing it long ago
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale lock .* pid 1@elsewhere"):
        train_fleet(tiny, "original", 2, tmp_path / "fleet", overwrite=True, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet"]


@pytest.fixture(scope="module")
def stored(tiny, tmp_path_factory):
    """A complete store of 4 originals in 2 shards, with weights."""
    return train_fleet(tiny, "original", 4, tmp_path_factory.mktemp("s") / "f", **KW).path


def damaged(stored, tmp_path, file, change):
    path = tmp_path / "f"
    shutil.copytree(stored, path)
    change(path / file)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    return path, before


def truncate(n):
    return lambda f: os.truncate(f, f.stat().st_size - n)


def flip(offset_from_end):
    def change(f):
        data = bytearray(f.read_bytes())
        data[-offset_from_end] ^= 0x01
        f.write_bytes(bytes(data))
    return change


@pytest.mark.parametrize("file, change, message", [
    ("logits.npy", truncate(100), r"shard 1 \(models 2-3\) is damaged: logits.npy is "
                                  r"truncated"),
    ("logits.npy", flip(1797 * 10 * 4 * 3), r"shard 0 \(models 0-1\) is damaged: logits.npy "
                                            r"does not match its checksum"),
    ("logits.npy", flip(1), r"shard 1 \(models 2-3\) is damaged: logits.npy does not match"),
    ("weights/00001.safetensors", truncate(1), r"shard 1 \(models 2-3\) is damaged: "
                                               r"00001.safetensors has \d+ bytes, expected"),
    ("masks.npy", flip(1), r"is damaged: masks.npy does not match its checksum"),
], ids=["truncated-logits", "altered-shard-0", "altered-shard-1", "truncated-weights",
        "altered-masks"])
def test_a_truncated_or_altered_shard_is_named_on_open(tiny, stored, tmp_path, file, change,
                                                       message):
    path, before = damaged(stored, tmp_path, file, change)
    with pytest.raises(DmmError, match=message) as e:
        load_fleet(path, tiny)
    assert "\n" not in str(e.value) and f"fleet {path}" in str(e.value)
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    with pytest.raises(DmmError, match=message):  # and so does a cache that would reuse it
        train_fleet(tiny, "original", 4, path, reuse=True, **KW)


def test_altered_weights_are_named_when_the_models_load(tiny, stored, tmp_path):
    path, _ = damaged(stored, tmp_path, "weights/00000.safetensors", flip(5))
    fleet = load_fleet(path, tiny)  # sizes are right: the logits are usable
    assert fleet.ensemble(tiny, indices=[3]) is not None  # shard 1 is intact
    with pytest.raises(DmmError, match=r"shard 0 \(models 0-1\) is damaged: 00000.safetensors"):
        fleet.ensemble(tiny)


def test_the_cli_names_a_damaged_shard_in_one_line_and_writes_nothing(stored, tmp_path):
    path, before = damaged(stored, tmp_path, "logits.npy", truncate(8))
    r = subprocess.run([sys.executable, "-m", "dmm.cli", "attribute", "--task", str(TINY),
                        "--backend", "datamodels", "--fleet", str(path), "--out",
                        str(tmp_path / "attr")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("dmm: error: fleet ") and "shard 1 (models 2-3)" in r.stderr
    assert "mmap" not in r.stderr and not (tmp_path / "attr").exists()
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before


def test_a_damaged_unmerged_shard_is_recomputed_on_resume(tiny, stored, tmp_path, monkeypatch):
    real = FleetWriter.merge

    def stop(self, s, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(FleetWriter, "merge", stop)
    with pytest.raises(KeyboardInterrupt):
        train_fleet(tiny, "original", 4, tmp_path / "f", **KW)
    shard = tmp_path / "f.partial" / "shards" / "00000.npy"
    flip(3)(shard)  # its own file, not merged yet, is damaged
    monkeypatch.setattr(FleetWriter, "merge", real)
    calls = []
    train = fleet_mod.train_ensemble
    monkeypatch.setattr(fleet_mod, "train_ensemble",
                        lambda *a, **k: (calls.append(1), train(*a, **k))[1])
    fleet = train_fleet(tiny, "original", 4, tmp_path / "f", **KW)
    assert len(calls) == 2  # shard 0 again, and shard 1
    for name in ("logits.npy", "masks.npy", "manifest.json", "weights/00000.safetensors"):
        assert (fleet.path / name).read_bytes() == (stored / name).read_bytes(), name
