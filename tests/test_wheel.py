"""The distribution: the sdist holds the sources, the wheel built from it holds every
module and shipped config, and the installed wheel works from any directory.

One module fixture builds the sdist (setuptools' PEP 517 hooks, no network), builds the
wheel from the unpacked sdist, and installs it with ``pip --no-deps --no-index`` into a
fresh virtual environment whose only link to this one is a ``.pth`` line naming this
environment's site-packages, so the dependencies (torch...) are reused, never
downloaded, while dmm itself comes from the wheel alone: no editable install, no source
tree on the path, a temporary working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# Source folder -> where its files land in the wheel (pyproject.toml's package-dir).
MAPPED = {"dmm": "dmm", "baselines": "dmm/baselines", "evals": "dmm/evals",
          "configs": "dmm/configs"}


def _run(argv: list, cwd: Path, timeout: int = 300, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, f"{argv}: {done.stderr[-3000:]}"
    return done


def _build(hook: str, source: Path, out: Path) -> Path:
    out.mkdir(exist_ok=True)
    _run([sys.executable, "-c", f"import sys; from setuptools import build_meta as b; "
          f"b.{hook}(sys.argv[1])", out], cwd=source)
    (built,) = out.iterdir()
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, the fresh environment's bin/, an empty working directory, its env vars)."""
    tmp = tmp_path_factory.mktemp("wheel")
    sdist = _build("build_sdist", ROOT, tmp / "sdist")
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp / "unpacked", **safe)
    (source,) = (tmp / "unpacked").iterdir()
    wheel = _build("build_wheel", source, tmp / "dist")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp).stdout.strip())
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "_dmm_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
          "--no-index", wheel], cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return wheel, venv / "bin", work, env


def test_wheel_holds_every_module_and_shipped_config(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("dmm/tasks/", "dmm/attribution/", "dmm/unlearning/", "dmm/bench/",
                   "dmm/fleet/", "dmm/studies/", "dmm/baselines/", "dmm/evals/"):
        assert f"{folder}__init__.py" in names, folder
    for config in ("tasks/digits.yaml", "methods/dmm.yaml", "methods/_plain-sgd.yaml",
                   "bench/digits.yaml"):
        assert f"dmm/configs/{config}" in names, config
    expected = {f"{MAPPED[folder]}/{p.relative_to(ROOT / folder).as_posix()}"
                for folder in MAPPED for p in (ROOT / folder).rglob("*")
                if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts}
    assert expected - names == set()


def test_installed_wheel_runs_from_any_directory(installed):
    _, bin_, work, env = installed
    where = _run([bin_ / "python", "-c", "import dmm, dmm.config; "
                  "print(dmm.__file__); print(dmm.config.CONFIG_DIR)"], work, env=env)
    for line in where.stdout.split():
        assert Path(line).is_relative_to(bin_.parent) and not Path(line).is_relative_to(ROOT)

    tasks = _run([bin_ / "dmm", "tasks"], work, env=env).stdout
    assert {line.split()[0] for line in tasks.splitlines()} >= {"digits", "digits_cnn",
                                                               "cifar10", "tensors"}
    # Every shipped method and bench config parses from the installed package data.
    _run([bin_ / "python", "-c", "from dmm.bench.config import load_bench_config\n"
          "from dmm.config import config_names, config_path\n"
          "from dmm.unlearning.configs import method_config\n"
          "for n in config_names('methods'): method_config(n)\n"
          "for n in config_names('bench'): load_bench_config(config_path('bench', n), "
          "quick=True)"], work, env=env)

    # A digits model trained elsewhere (here: freshly initialised), imported, unlearned.
    _run([bin_ / "python", "-c", "import torch; from dmm.tasks import load_task; "
          "torch.save(load_task('digits').build_model(0).state_dict(), 'weights.pt')"],
         work, env=env)
    _run([bin_ / "dmm", "import", "--task", "digits", "--weights", "weights.pt", "--out",
          "model.ckpt"], work, env=env)
    (work / "forget.txt").write_text("0\n5\n9\n")
    printed = _run([bin_ / "dmm", "unlearn", "--checkpoint", "model.ckpt", "--forget",
                    "forget.txt", "--method", "gd", "--set", "epochs=1", "--device", "cpu",
                    "--out", "unlearned.ckpt"], work, env=env).stdout
    assert "gd: forgot 3 examples" in printed
    assert (work / "unlearned.ckpt").is_file() and (work / "unlearned.json").is_file()
