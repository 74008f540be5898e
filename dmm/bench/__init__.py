"""The benchmark harness: every method, many forget sets, KLoM against the noise floor.

:mod:`~dmm.bench.config` (the YAML schema), :mod:`~dmm.bench.protocol` (the protocol's
steps over a cache), :mod:`~dmm.bench.runner` (running them), :mod:`~dmm.bench.outputs`
(tables, plots, wandb).
"""

from dmm.bench.config import BenchConfig, load_bench_config
from dmm.bench.runner import bench, run_bench

__all__ = ["BenchConfig", "bench", "load_bench_config", "run_bench"]
