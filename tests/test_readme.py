"""The README's promises: its Python example runs as written, and its two commands are the
ones CI and users run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    setup = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && "
    assert first_block[0] == setup + ".venv/bin/dmm bench --config configs/bench/digits.yaml"
    assert first_block[1] == setup + ".venv/bin/pytest -q"
    assert first_block[1] in (ROOT / ".ci" / "run").read_text()


def test_python_example_runs_as_written(tmp_path):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["floor", "do-nothing", "dmm"]
    assert "of one retraining" in lines[-1]
    assert (tmp_path / "runs" / "example" / "datamodels" / "manifest.json").is_file()
