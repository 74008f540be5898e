"""The README's promises: its Python example and its "Your own model" walkthrough run as
written, and its two commands are the ones CI and users run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next section."""
    return re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M).group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    setup = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && "
    assert first_block[0] == setup + ".venv/bin/dmm bench --config configs/bench/digits.yaml"
    assert first_block[1] == setup + ".venv/bin/pytest -q"
    assert first_block[1] in (ROOT / ".ci" / "run").read_text()


def test_python_example_runs_as_written(tmp_path):
    (code,) = blocks(section("Python"), "python")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["floor", "do-nothing", "dmm"]
    assert "of one retraining" in lines[-1]
    assert (tmp_path / "runs" / "example" / "datamodels" / "manifest.json").is_file()


def test_your_own_model_walkthrough_runs_as_written(tmp_path, monkeypatch):
    """The section's files are written as shown (each block names its file in its first
    line); its ``dmm`` lines run in this process (``dmm.cli.main``: the CLI without the
    interpreter's start-up), with the working directory on the import path as the
    section's ``export PYTHONPATH=$PWD`` puts it; its other lines run in bash."""
    from dmm import attribution
    from dmm.checkpoint import load_checkpoint
    from dmm.cli import main
    from dmm.tasks import load_task

    text = section("Your own model")
    (module,), (task_yaml,), (commands,) = (blocks(text, k) for k in ("python", "yaml", "bash"))
    for block in (module, task_yaml):
        (tmp_path / block.splitlines()[0].removeprefix("# ")).write_text(block)
    monkeypatch.chdir(tmp_path)
    lines = [line.split("#")[0].strip() for line in commands.strip().splitlines()]
    assert lines[0] == "export PYTHONPATH=$PWD"
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = []
    for line in lines[1:]:
        argv = shlex.split(line)
        if argv[0] == "dmm":
            try:
                main(argv[1:])
            except SystemExit as e:  # the CLI exits 0 after --help only; errors exit 2
                raise AssertionError(f"{line}: exit {e.code}") from None
            ran.append(argv[1])
        else:
            subprocess.run(["bash", "-c", line], check=True)
    assert ran == ["train", "fleet", "attribute", "unlearn"]

    task = load_task("my_task.yaml")
    assert type(task.build_model(0)).__name__ == "SmallNet" and task.data.n_train == 300
    runs = tmp_path / "runs" / "mine"
    report = json.loads((runs / "unlearned.json").read_text())  # beside the checkpoint
    forget = [3, 14, 15, 92]
    assert report["method"] == "dmm" and report["forgotten"] == forget
    original, _ = load_checkpoint(runs / "model.ckpt", task)
    unlearned, meta = load_checkpoint(runs / "unlearned.ckpt", task)
    assert meta["forgotten"] == forget and meta["history"][0]["method"] == "dmm"
    # DMM moved the forget points' logits towards the datamodels' prediction of a model
    # retrained without them.
    predictor = attribution.load(runs / "attribution", task)
    x = task.data.x_all
    before = original.predict(x)
    target = predictor.predict(before, forget, forget).numpy()
    gap = [float(np.mean((m.predict(x)[:, forget].numpy() - target) ** 2))
           for m in (original, unlearned)]
    assert gap[1] < gap[0] / 2, gap
