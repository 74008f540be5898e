"""`dmm unlearn` on checkpoints: the report, composable deletion requests, and bad input
(one line on stderr, exit 2, nothing written, the input checkpoint untouched)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dmm.attribution.store import save_attribution
from dmm.checkpoint import load_checkpoint, read_checkpoint
from dmm.cli import main
from tests.conftest import TINY
from tests.test_attribution_store import small_attribution


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    """A tiny checkpoint and a (random, small) attribution artifact for its task."""
    root = tmp_path_factory.mktemp("unlearn")
    ckpt = root / "model.ckpt"
    main(["train", "--task", str(TINY), "--out", str(ckpt), "--wandb", "disabled",
          "--device", "cpu"])
    attr = save_attribution(small_attribution(tiny), root / "attr", tiny)
    return root, ckpt, attr


def unlearn_argv(ckpt: Path, forget: Path, out: Path, attr: Path, *extra: str) -> list[str]:
    return ["unlearn", "--checkpoint", str(ckpt), "--forget", str(forget), "--out", str(out),
            "--task", str(TINY), "--method", "dmm", "--attribution", str(attr),
            "--device", "cpu", "--set", "epochs=1", "batch_size=64", *extra]


def test_report_and_successive_requests_forget_the_union(setup, tiny, tmp_path, capsys):
    _, ckpt, attr = setup
    first, second = tmp_path / "f1.txt", tmp_path / "f2.json"
    first.write_text("3\n10\n42\n")
    second.write_text(json.dumps([42, 7]))
    main(unlearn_argv(ckpt, first, tmp_path / "u1.ckpt", attr))
    report = json.loads((tmp_path / "u1.json").read_text())
    assert report["method"] == "dmm" and report["hyperparameters"]["epochs"] == 1
    assert report["forget_request"] == [3, 10, 42] and report["forgotten"] == [3, 10, 42]
    retraining = tiny.recipe.examples(tiny.data.n_train)  # tiny trains 2 epochs only
    assert report["compute_fraction_of_retraining"] == pytest.approx(
        report["examples_processed"] / retraining)
    assert 0 < report["examples_processed"] < 0.2 * retraining
    assert report["seconds"] > 0 and not report["diverged"]
    assert set(report["accuracy_before"]) == {"forget", "retain", "validation"}
    assert "forgot 3 examples (3 in total)" in capsys.readouterr().out

    main(unlearn_argv(tmp_path / "u1.ckpt", second, tmp_path / "u2.ckpt", attr))
    model, meta = load_checkpoint(tmp_path / "u2.ckpt", tiny)
    assert meta["forgotten"] == [3, 7, 10, 42]
    assert [h["forget_request"] for h in meta["history"]] == [[3, 10, 42], [7, 42]]
    report = json.loads((tmp_path / "u2.json").read_text())
    # 42 was already forgotten: the new request only deletes 7; accuracies use the union.
    assert report["forgotten"] == [3, 7, 10, 42]
    before, _ = read_checkpoint(tmp_path / "u1.ckpt")
    after, _ = read_checkpoint(tmp_path / "u2.ckpt")
    assert any(not (before[k] == after[k]).all() for k in before)


def test_duplicates_are_removed_with_a_warning(setup, tmp_path, capsys):
    _, ckpt, attr = setup
    forget = tmp_path / "dup.csv"
    forget.write_text("5,5,6\n")
    main(unlearn_argv(ckpt, forget, tmp_path / "u.ckpt", attr))
    err = capsys.readouterr().err
    assert "1 duplicate indices removed" in err
    assert json.loads((tmp_path / "u.json").read_text())["forget_request"] == [5, 6]


def _other_arch_checkpoint(root: Path) -> Path:
    other = root / "other" / "tiny.yaml"  # same task name and data, another width
    other.parent.mkdir(exist_ok=True)
    other.write_text(TINY.read_text().replace("hidden: [16]", "hidden: [8]"))
    out = root / "other" / "model.ckpt"
    if not out.exists():
        main(["train", "--task", str(other), "--out", str(out), "--wandb", "disabled",
              "--device", "cpu"])
    return out


@pytest.mark.parametrize("case, message", [
    ("out_of_range", "out of range for 1437 training examples"),
    ("negative", "negative index (-1)"),
    ("non_integer", "must hold integer indices"),
    ("not_a_number", "cannot read indices"),
    ("empty", "is empty"),
    ("other_task", "made for task 'digits', not 'tiny'"),
    ("other_arch", "model, task 'tiny' uses"),
    ("other_training_set", "another training set of task 'tiny'"),
    ("out_is_input", "must differ from the input checkpoint"),
    ("out_exists", "already exists"),
    ("no_attribution", "--attribution DIR"),
    ("unknown_method", "unknown method"),
])
def test_bad_input_exits_2_writes_nothing(setup, case, message, tmp_path, capsys):
    root, ckpt, attr = setup
    forget = tmp_path / "forget.txt"
    forget.write_text({"out_of_range": "1 1437\n", "negative": "-1 4\n",
                       "non_integer": "1.5 3\n", "not_a_number": "one two\n",
                       "empty": "\n"}.get(case, "1 2 3\n"))
    out = tmp_path / "out" / "u.ckpt"
    out.parent.mkdir()
    argv = unlearn_argv(ckpt, forget, out, attr)
    if case == "other_task":
        digits_ckpt = tmp_path / "digits.ckpt"
        main(["train", "--task", "digits", "--out", str(digits_ckpt), "--wandb", "disabled",
              "--device", "cpu"])
        argv[argv.index("--checkpoint") + 1] = str(digits_ckpt)
    if case == "other_arch":
        argv[argv.index("--checkpoint") + 1] = str(_other_arch_checkpoint(root))
    if case == "other_training_set":
        manifest = json.loads((attr / "manifest.json").read_text())
        moved = tmp_path / "attr"
        shutil.copytree(attr, moved)
        manifest["fingerprint"] = "0123456789abcdef"
        (moved / "manifest.json").write_text(json.dumps(manifest))
        argv[argv.index("--attribution") + 1] = str(moved)
    if case == "out_is_input":
        argv[argv.index("--out") + 1] = str(ckpt)
    if case == "out_exists":
        out.write_text("precious")
    if case == "no_attribution":
        i = argv.index("--attribution")
        del argv[i:i + 2]
    if case == "unknown_method":
        argv[argv.index("--method") + 1] = "forget-harder"
    ckpt_bytes = ckpt.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("dmm: error:") and message in err[0], err
    written = sorted(p.name for p in out.parent.iterdir())
    assert written == (["u.ckpt"] if case == "out_exists" else []), written
    if case == "out_exists":
        assert out.read_text() == "precious"
    assert ckpt.read_bytes() == ckpt_bytes
    assert not any(p.suffix == ".json" for p in ckpt.parent.iterdir() if p.stem == "model")
