"""Attribution artifacts: save/load round trip, refusal of another task or training set,
and the ``dmm attribute`` command (atomic, nothing written on error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dmm.artifacts import write_json
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.store import load, load_attribution, save_attribution
from dmm.cli import main
from dmm.errors import DmmError
from dmm.fleet import FLEET_FORMAT
from dmm.tasks import Task


def small_attribution(task: Task, rank: int = 3, seed: int = 0) -> LinearAttribution:
    rng = np.random.default_rng(seed)
    n, p, c = task.data.n_train, task.data.n_train + task.data.n_val, task.data.n_classes
    return LinearAttribution(rng.normal(size=(p, c)).astype(np.float32),
                             np.full(n, 0.5, dtype=np.float32),
                             rng.normal(size=(rank, p, c)).astype(np.float32),
                             rng.normal(size=(n, rank)).astype(np.float32) * 0.01,
                             scale=0.9, info={"backend": "datamodels", "solver": "ridge"})


def synthetic_fleet(task: Task, out: Path, models: int = 40, kind: str = "datamodel") -> Path:
    """A fleet store whose logits are a planted low-rank linear function of the masks."""
    rng = np.random.default_rng(0)
    n, p, c = task.data.n_train, task.data.n_train + task.data.n_val, task.data.n_classes
    masks = rng.random((models, n)) < 0.5
    beta = rng.normal(size=(n, 2)) @ rng.normal(size=(2, p * c)) * 0.05
    logits = ((masks - 0.5) @ beta + rng.normal(size=(models, p * c))).reshape(models, p, c)
    out.mkdir(parents=True)
    np.save(out / "masks.npy", masks)
    np.save(out / "labels.npy", task.data.y_all.numpy())
    np.save(out / "logits.npy", logits.astype(np.float32))
    write_json(out / "manifest.json", {
        "format": FLEET_FORMAT, **task.identity(), "kind": kind, "models": models, "seed": 0,
        "alpha": 0.5, "forget": None, "shard_size": models, "dtype": "float32",
        "save_weights": False, "n_points": p, "complete": True})
    return out


def test_round_trip_keeps_predictions_and_manifest(digits, tmp_path):
    attr = small_attribution(digits)
    path = save_attribution(attr, tmp_path / "dm", digits)
    back = load_attribution(path, digits)
    z = torch.randn(2, attr.n_points, attr.n_classes)
    torch.testing.assert_close(back.predict(z, [3, 70]), attr.predict(z, [3, 70]))
    assert back.scale == 0.9 and back.info["solver"] == "ridge"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["task"] == "digits" and manifest["fingerprint"] == digits.fingerprint
    assert manifest["factorised"] and manifest["rank"] == 3
    assert isinstance(back.coef, np.memmap)
    assert load is load_attribution


def test_load_refuses_another_task_or_training_set(digits, tiny, tmp_path):
    path = save_attribution(small_attribution(digits), tmp_path / "dm", digits)
    with pytest.raises(DmmError, match="made for task 'digits', not 'tiny'"):
        load_attribution(path, tiny)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["fingerprint"] = "0123456789abcdef"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DmmError, match="another training set"):
        load_attribution(path, digits)
    with pytest.raises(DmmError, match="not an attribution artifact"):
        load_attribution(tmp_path, digits)


def test_save_refuses_existing_output_and_wrong_shapes(digits, tiny, tmp_path):
    attr = small_attribution(digits)
    save_attribution(attr, tmp_path / "dm", digits)
    with pytest.raises(DmmError, match="already exists"):
        save_attribution(attr, tmp_path / "dm", digits)
    save_attribution(attr, tmp_path / "dm", digits, overwrite=True)
    wrong = LinearAttribution(attr.intercept[:10], attr.mask_mean, attr.coef[:, :10],
                              attr.basis)
    with pytest.raises(DmmError, match="does not fit task"):
        save_attribution(wrong, tmp_path / "other", digits)


def test_cli_attribute_fits_and_saves(digits, tmp_path, capsys):
    fleet = synthetic_fleet(digits, tmp_path / "fleet")
    out = tmp_path / "ridge"
    main(["attribute", "--backend", "datamodels", "--solver", "ridge", "--fleet", str(fleet),
          "--out", str(out), "--device", "cpu"])
    assert "LDS" in capsys.readouterr().out
    attr = load_attribution(out, digits)
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("task", "fingerprint", "fleet", "solver", "regularisation", "scale", "lds",
                "scale_fit"):
        assert key in manifest, key
    assert manifest["fleet"]["models"] == 40 and attr.basis is not None


@pytest.mark.parametrize("extra, message", [
    (["--fleet", "{tmp}/missing"], "not a fleet store"),
    (["--fleet", "{tmp}/orig"], "not a datamodel fleet"),
    (["--fleet", "{tmp}/fleet", "--holdout", "1.5"], "holdout"),
    (["--fleet", "{tmp}/fleet", "--calibration_originals", "{tmp}/orig"], "go together"),
])
def test_cli_attribute_errors_write_nothing(digits, tmp_path, capsys, extra, message):
    synthetic_fleet(digits, tmp_path / "fleet")
    synthetic_fleet(digits, tmp_path / "orig", kind="original")
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in extra]
    with pytest.raises(SystemExit) as e:
        main(["attribute", "--backend", "datamodels", "--solver", "ridge", "--out", str(out),
              *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dmm: error:") and message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_cli_refuses_fleet_of_another_training_set(digits, tmp_path, capsys):
    fleet = synthetic_fleet(digits, tmp_path / "fleet")
    manifest = json.loads((fleet / "manifest.json").read_text())
    manifest["fingerprint"] = "ffffffffffffffff"
    (fleet / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit):
        main(["attribute", "--backend", "datamodels", "--fleet", str(fleet), "--out",
              str(tmp_path / "out")])
    assert "another training set" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_update_scale_rewrites_only_the_manifest(digits, tiny, tmp_path):
    from dmm.attribution.store import update_scale

    path = save_attribution(small_attribution(digits), tmp_path / "dm", digits)
    coef_before = (path / "coef.npy").read_bytes()
    update_scale(path, digits, 0.55, {"method": "test"})
    back = load_attribution(path, digits)
    assert back.scale == 0.55 and back.info["scale_fit"] == {"method": "test"}
    assert (path / "coef.npy").read_bytes() == coef_before
    with pytest.raises(DmmError, match="not 'tiny'"):
        update_scale(path, tiny, 1.0, {})
