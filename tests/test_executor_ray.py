"""The ray executor on one local two-CPU cluster (declaring one GPU it does not have):
loopback only; fleets and bench tables identical to local ones; a killed worker's shard
retried, a killed driver's fleet resumed; errors named on one line; half-GPU shards packed
two to a GPU."""

from __future__ import annotations

import builtins
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dmm.bench.protocol as P
import dmm.evals.ulira_harness
from dmm.cli import main
from dmm.executor import RAY_LOCAL_ENV, start_local_ray
from dmm.fleet import train_fleet
from dmm.tasks import load_task
from tests.conftest import TINY

SPEC = ["--task", str(TINY), "--kind", "original", "--models", "8", "--shard_size", "2",
        "--device", "cpu", "--seed", "3"]  # 4 shards
MARKER = re.compile(r"^\d+\.json$")


@pytest.fixture(scope="module")
def ray():
    ray = start_local_ray(num_cpus=2, num_gpus=1)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "fleet"
    main(["fleet", *SPEC, "--out", str(out)])
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Byte for byte, but for where and how long each shard ran (``run`` of its marker)."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        if f.parent.name == "shards":
            x, y = (json.loads((root / f).read_text()) for root in (a, b))
            assert x.pop("run") and y.pop("run") and x == y, f
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f


def markers(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if MARKER.match(p.name)) if root.exists() else []


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def listening_addresses(pids: set[int]) -> set[str]:
    """The addresses that processes ``pids`` listen on (TCP, from /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    out = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                raw = bytes.fromhex(f[1].split(":")[0])
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                out.add(socket.inet_ntop(family, raw))
    return out


def test_the_local_cluster_listens_on_loopback_only(ray):
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert all(os.environ[k] == v for k, v in RAY_LOCAL_ENV.items())
    addresses = listening_addresses(_descendants(os.getpid()))
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses
    assert ray.cluster_resources()["CPU"] == 2 and ray.cluster_resources()["GPU"] == 1


def test_a_fleet_through_ray_is_the_local_fleet(ray, reference, tmp_path):
    out = tmp_path / "fleet"
    main(["fleet", *SPEC, "--out", str(out), "--executor", "ray"])
    assert_same_store(reference, out)
    pids = {json.loads(p.read_text())["run"]["pid"] for p in markers(out / "shards")}
    assert os.getpid() not in pids  # every shard ran in a worker


def test_a_killed_worker_is_retried_and_the_fleet_is_the_same(ray, reference, tmp_path):
    out = tmp_path / "fleet"
    attempts = tmp_path / "fleet.partial" / "attempts" / "00001.jsonl"
    killed: list[int] = []

    def kill_shard_1() -> None:
        deadline = time.time() + 300
        while not killed and time.time() < deadline:
            try:
                pid = json.loads(attempts.read_text().splitlines()[0])["pid"]
            except (OSError, IndexError, ValueError):
                time.sleep(0.005)
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_shard_1)
    killer.start()
    main(["fleet", *SPEC, "--out", str(out), "--executor", "ray", "--max_retries", "2"])
    killer.join()
    run = json.loads((out / "shards" / "00001.json").read_text())["run"]
    assert killed and run["attempts"] == 2 and run["pid"] != killed[0]  # it ran twice
    assert_same_store(reference, out)


def test_killing_the_driver_and_rerunning_resumes_without_recomputing(ray, reference,
                                                                      tmp_path, capsys):
    out = tmp_path / "fleet"
    cmd = ["fleet", *SPEC, "--out", str(out), "--executor", "ray", "--address",
           ray.get_runtime_context().gcs_address]
    driver = subprocess.Popen([sys.executable, "-m", "dmm.cli", *cmd],
                              env={**os.environ, "PYTHONWARNINGS": "ignore"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "fleet.partial" / "shards"
    deadline = time.time() + 300
    while not markers(shards) and time.time() < deadline:
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in markers(shards)}
    assert 0 < len(finished) < 4 and not out.exists()
    assert (tmp_path / "fleet.partial.lock").exists()  # the dead driver's
    capsys.readouterr()
    main(cmd)
    assert "removing the stale lock" in capsys.readouterr().err
    for name, mtime in finished.items():
        assert (out / "shards" / name).stat().st_mtime_ns == mtime  # not recomputed
    assert_same_store(reference, out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the failure is training on a missing GPU")
def test_an_error_in_a_task_fails_the_command_on_one_line_naming_the_shard(ray, tmp_path,
                                                                           capsys):
    with pytest.raises(SystemExit) as e:
        main(["fleet", *SPEC, "--out", str(tmp_path / "f"), "--executor", "ray", "--device",
              "cuda"])  # no GPU here: training fails inside every task
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err, err
    assert re.match(r"dmm: error: fleet \S+/f: shard \d \(models \d-\d\) failed: \w+", err[-1])
    assert not (tmp_path / "f.partial.lock").exists() and not (tmp_path / "f").exists()
    assert builtins.print.__module__ == "builtins"  # ray's error reports left print alone


def test_half_gpu_shards_run_two_at_a_time_on_one_gpu(ray, tmp_path):
    # shards of a few seconds: a second worker starting late (0.3 s in CI) still overlaps
    (tmp_path / "slow.yaml").write_text(TINY.read_text().replace("epochs: 2", "epochs: 40"))
    task = load_task(str(tmp_path / "slow.yaml"))
    spans = {}
    for gpus in (0.5, 1.0):
        out = tmp_path / f"gpus{gpus}"
        train_fleet(task, "original", 4, out, shard_size=2, device="cpu", executor="ray",
                    gpus_per_task=gpus, progress=False)
        runs = [json.loads(p.read_text())["run"] for p in markers(out / "shards")]
        spans[gpus] = sorted((r["started"], r["finished"]) for r in runs)
    (a0, a1), (b0, b1) = spans[0.5]
    assert b0 < a1, spans  # both ran at once on the one GPU
    (a0, a1), (b0, b1) = spans[1.0]
    assert a1 <= b0, spans  # a whole GPU each: one after the other


BENCH = f"""task: {TINY}
models: 4
shard_size: 8
attribution: {{models: 32, calibration_sizes: [10], calibration_models: 4, backends: [ridge]}}
forget_sets: {{random_sizes: [10], pc_sizes: [10], pc_top_bottom: 0, classes: [],
              evaluate: [random_10]}}
methods:
  dmm: {{grid: {{lr: [1.0e-2], batch_size: [16], forget_share: [0.4], epochs: [1]}}}}
  om: {{grid: {{lr: [1.0e-2], epochs: [1]}}}}
  do-nothing: {{}}
  ga: {{grid: {{lr: [1.0e-3, 1.0e-2], epochs: [1]}}}}
ulira: {{models: 8, targets: 4, max_forget: 5}}
executor: {{kind: ray, cpus_per_task: 1, max_retries: 1}}
"""


def table(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_the_bench_through_ray_gives_the_local_tables(ray, tmp_path, monkeypatch):
    """Everything through Ray first (no run computed in the driver); then, on a copy of
    its fleets, every run again in-process: the same tables."""
    config = tmp_path / "bench.yaml"
    config.write_text(BENCH)
    remote, local = tmp_path / "ray", tmp_path / "local"
    args = ["bench", "--config", str(config), "--wandb", "disabled", "--device", "cpu"]

    def here(*a, **k):
        raise AssertionError("a run computed in the driver")

    with monkeypatch.context() as m:
        m.setattr(P, "_unlearn", here)
        m.setattr(dmm.evals.ulira_harness, "run_ulira", here)
        main([*args, "--out", str(remote)])  # the config's executor: ray
    shutil.copytree(remote / "cache", local / "cache", ignore=lambda d, names: [
        n for n in names if n == "runs" or n.startswith("ulira_oracles")])  # OM's: a run's
    main([*args, "--out", str(local), "--executor", "local"])
    for name in ("results.csv", "grid.csv", "selection.csv"):
        assert table(local / name) == table(remote / name), name
    rows = table(remote / "results.csv")
    assert {r["method"] for r in rows} == {"dmm", "om", "ga", "do-nothing", "noise-floor"}
    assert all(r["ulira_auc"] for r in rows if r["method"] != "noise-floor")
    runs = sorted((local / "cache" / "runs" / "report").rglob("*.npz"))
    assert len(runs) == 4
    for f in runs:
        a, b = np.load(f), np.load(remote / f.relative_to(local))
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
