"""`dmm import`: a state dict trained elsewhere (torch.save or safetensors) becomes a dmm
checkpoint that `dmm unlearn` accepts; a pickle holding code, missing keys, wrong shapes
and another number of classes are refused (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from dmm.checkpoint import load_checkpoint
from dmm.cli import main
from tests.conftest import TINY


class CreatesAFile:
    """A pickle that would create ``path`` when unpickled (code, not weights)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return exc.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def trained(tiny):
    """A tiny-task model "trained elsewhere": its state dict."""
    model = tiny.build_model(7)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    return model.state_dict()


def test_state_dicts_from_torch_save_and_safetensors_are_imported(trained, tiny, tmp_path,
                                                                   capsys):
    torch.save(trained, tmp_path / "model.pt")
    save_file(trained, str(tmp_path / "model.safetensors"))
    for weights in ("model.pt", "model.safetensors"):
        out = tmp_path / f"{weights}.ckpt"
        main(["import", "--task", str(TINY), "--weights", str(tmp_path / weights),
              "--out", str(out)])
        assert f"wrote {out}" in capsys.readouterr().out
        model, meta = load_checkpoint(out, tiny)
        assert meta["forgotten"] == [] and meta["history"] == []
        assert meta["imported_from"] == str(tmp_path / weights) and meta["task"] == "tiny"
        state = model.model_state(0)
        assert all(torch.equal(state[k], v) for k, v in trained.items())
        assert 0 <= meta["accuracy"]["val"] <= 1

    # dmm unlearn accepts the imported checkpoint.
    (tmp_path / "forget.txt").write_text("1\n2\n")
    main(["unlearn", "--checkpoint", str(tmp_path / "model.pt.ckpt"), "--task", str(TINY),
          "--forget", str(tmp_path / "forget.txt"), "--method", "gd", "--set", "epochs=1",
          "--device", "cpu", "--out", str(tmp_path / "unlearned.ckpt")])
    report = json.loads((tmp_path / "unlearned.json").read_text())
    assert report["forgotten"] == [1, 2]
    assert load_checkpoint(tmp_path / "unlearned.ckpt", tiny)[1]["history"][0]["method"] == "gd"


def _bad_files(trained, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({**trained, "extra": CreatesAFile(marker)}, tmp_path / "code.pt")
    for protocol in (2, 4):  # a plain pickle, not written by torch.save
        with open(tmp_path / f"pickle{protocol}.pt", "wb") as f:
            pickle.dump({"extra": CreatesAFile(marker)}, f, protocol=protocol)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    missing = {k: v for k, v in trained.items() if k != "3.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    save_file({"model." + k: v for k, v in trained.items()},
              str(tmp_path / "prefixed.safetensors"))
    torch.save({**trained, "1.weight": torch.zeros(16, 65)}, tmp_path / "shapes.pt")
    classes = {**trained, "3.weight": torch.zeros(5, 16), "3.bias": torch.zeros(5)}
    save_file(classes, str(tmp_path / "classes.safetensors"))
    torch.save({**trained, "3.bias": torch.full((10,), float("nan"))}, tmp_path / "nan.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    return marker


@pytest.mark.parametrize("weights, message", [
    ("code.pt", "holds code or objects (io.open), not only tensors: refused, nothing in it "
                "was run"),
    ("pickle2.pt", "holds code or objects (io.open)"),
    ("pickle4.pt", "is not a torch.save file of tensors (torch's weights-only loader "
                   "stopped: Unsupported operand"),
    ("module.pt", "holds code or objects (torch.nn.modules.linear.Linear)"),
    ("missing.pt", "lacks 1 of the 4 tensors of the model of task 'tiny' "
                   "(dmm.tasks.models.MLP): 3.bias"),
    ("prefixed.safetensors", "its names carry the prefix 'model.'"),
    ("shapes.pt", "1.weight has shape [16, 65], the model of task 'tiny' "
                  "(dmm.tasks.models.MLP) needs [16, 64]"),
    ("classes.safetensors", "3.weight has shape [5, 16], the model of task 'tiny' "
                            "(dmm.tasks.models.MLP) needs [10, 16] (weights for 5 classes? "
                            "the task has 10) (2 tensors do not fit)"),
    ("nan.pt", "NaN or infinite values in 3.bias"),
    ("junk.pt", "is not a torch.save file of tensors"),
    ("junk.safetensors", "is not a safetensors file"),
    ("absent.pt", "does not exist"),
])
def test_bad_weights_are_refused_with_one_line_and_nothing_written(trained, tmp_path, capsys,
                                                                    weights, message):
    marker = _bad_files(trained, tmp_path)
    out = tmp_path / "out" / "model.ckpt"
    code, err = run(["import", "--task", TINY, "--weights", tmp_path / weights, "--out", out],
                    capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("dmm: error: "), err
    assert message in err[0], err[0]
    assert not (tmp_path / "out").exists() and not marker.exists()


def test_output_rules(trained, tmp_path, capsys):
    torch.save(trained, tmp_path / "model.pt")
    (tmp_path / "taken.ckpt").write_text("precious")
    code, err = run(["import", "--task", TINY, "--weights", tmp_path / "model.pt",
                     "--out", tmp_path / "taken.ckpt"], capsys)
    assert code == 2 and "already exists" in err[0]
    assert (tmp_path / "taken.ckpt").read_text() == "precious"
    code, err = run(["import", "--task", TINY, "--weights", tmp_path / "model.pt",
                     "--out", tmp_path / "model.pt", "--overwrite"], capsys)
    assert code == 2 and "must differ from the weights file" in err[0]


def test_import_is_in_the_help(capsys):
    for argv in (["--help"], ["import", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "import" in text and "<class" not in text
    assert "--weights WEIGHTS" in text and "(required, type: Path)" in text
