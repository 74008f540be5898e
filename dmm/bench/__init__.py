"""The benchmark harness: every method, many forget sets, KLoM against the noise floor."""

from dmm.bench.config import BenchConfig, load_bench_config
from dmm.bench.runner import Bench, run_bench

__all__ = ["Bench", "BenchConfig", "load_bench_config", "run_bench"]
