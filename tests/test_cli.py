"""The CLI: `dmm train` end to end, and bad input -> one line on stderr, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmm.checkpoint import load_checkpoint, read_checkpoint
from dmm.cli import main
from dmm.errors import DmmError
from tests.conftest import TINY


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, err


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "nope", "--out", "{out}"], "unknown task 'nope'"),
    (["fleet", "--task", "nope", "--kind", "original", "--models", "2", "--out", "{out}"],
     "unknown task"),
    (["train", "--task", "cifar10", "--out", "{out}"], "needs --data"),
    (["train", "--task", "cifar10", "--data", "{tmp}/missing", "--out", "{out}"], "does not exist"),
    (["train", "--task", "{tmp}/bad.yaml", "--out", "{out}"], "malformed YAML"),
    (["fleet", "--kind", "original", "--models", "-3", "--out", "{out}"], "positive"),
    (["fleet", "--kind", "original", "--models", "many", "--out", "{out}"], "models"),
    (["fleet", "--kind", "oracle", "--models", "2", "--out", "{out}"], "forget set"),
    (["fleet", "--kind", "bogus", "--models", "2", "--out", "{out}"], "kind"),
    (["train", "--out", "{out}", "--device", "tpu"], "device"),
    (["bench", "--config", "nope", "--out", "{out}"], "unknown bench config 'nope'"),
    (["bench", "--config", "{tmp}/missing.yaml", "--out", "{out}"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("recipe: {epochs: [1\n")
    out = tmp_path / "out" / "thing"
    argv = [a.format(out=out, tmp=tmp_path) for a in argv]
    code, err = run(argv, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("dmm: error:") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "model.ckpt"
    out.write_text("precious")
    code, err = run(["train", "--task", str(TINY), "--out", str(out), "--wandb", "disabled"],
                    capsys)
    assert code == 2 and "already exists" in err[0] and out.read_text() == "precious"
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    code, err = run(["fleet", "--task", str(TINY), "--kind", "original", "--models", "2",
                     "--out", str(fleet_dir)], capsys)
    assert code == 2 and "already exists" in err[0] and not any(fleet_dir.iterdir())


def test_train_writes_a_checkpoint_and_csv_log(tiny, tmp_path, capsys):
    out = tmp_path / "m.ckpt"
    main(["train", "--task", str(TINY), "--out", str(out), "--wandb", "disabled",
          "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "validation accuracy" in printed and str(out) in printed
    ens, meta = load_checkpoint(out, tiny)
    assert meta["task"] == "tiny" and meta["forgotten"] == [] and meta["accuracy"]["val"] > 0.5
    assert list((tmp_path / "logs" / "m").glob("version_*/metrics.csv"))
    acc = (ens.predict(tiny.data.x_val)[0].argmax(-1) == tiny.data.y_val).float().mean().item()
    assert acc == pytest.approx(meta["accuracy"]["val"])


def test_checkpoint_of_another_task_or_architecture_is_refused(tiny, digits, tmp_path):
    out = tmp_path / "m.ckpt"
    main(["train", "--task", str(TINY), "--out", str(out), "--wandb", "disabled",
          "--device", "cpu"])
    with pytest.raises(DmmError, match="made for task 'tiny', not 'digits'"):
        load_checkpoint(out, digits)
    state, meta = read_checkpoint(out)
    assert set(state) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DmmError, match="not a dmm checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")


def test_bench_config_by_name_or_path(monkeypatch, tmp_path):
    """``--config`` names a shipped bench config (default digits) or is a YAML path."""
    import functools

    import dmm.bench.runner as runner
    from dmm.config import CONFIG_DIR

    seen = []

    @functools.wraps(runner.bench)
    def fake_bench(config, **kwargs):
        seen.append(config)
        return tmp_path

    monkeypatch.setattr(runner, "bench", fake_bench)
    mine = tmp_path / "mine.yaml"
    for argv in ([], ["--config", "cifar10"], ["--config", str(mine)]):
        main(["bench", "--quick", *argv])
    assert seen == [CONFIG_DIR / "bench" / "digits.yaml", CONFIG_DIR / "bench" / "cifar10.yaml",
                    mine]
    # The library functions take the same names (their default: digits), from any directory.
    import inspect

    assert all(inspect.signature(f).parameters["config"].default == "digits"
               for f in (runner.prepare, fake_bench.__wrapped__))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "run_bench", lambda cfg, out, **kw: seen.append(cfg))
    assert fake_bench.__wrapped__(quick=True) == Path("runs/bench/digits-quick")
    assert seen[-1].models >= 4


def test_help_for_every_command(capsys):
    from dmm.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "usage:" in text and "<class" not in text, name
