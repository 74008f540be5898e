"""Running many independent jobs: in this process, or each as a Ray task (DESIGN.md §11).

Work that trains or fine-tunes many models (fleet shards, benchmark runs) is one function
and a list of jobs. :meth:`Executor.map` runs ``fn(job)`` for each and yields ``(index,
result)`` as each finishes. A job writes its output to a store (on a cluster: a shared
filesystem) atomically and returns a small marker, so its result depends neither on where
nor how often it ran; ``str(job)`` names it in errors.

* :class:`LocalExecutor` runs the jobs in this process, one after another (the default);
* :class:`RayExecutor` submits each job as a Ray task with its resource request
  (``gpus_per_task=0.5`` packs two jobs on one GPU), re-runs a job whose worker died up to
  ``max_retries`` times, and ships ``fn`` (with what it binds) once per worker process.

An error inside a job fails :meth:`~Executor.map` with a :class:`JobFailed` naming the job,
on one line. ``ray`` is imported only when a :class:`RayExecutor` first runs; a local
cluster that dmm starts itself listens on 127.0.0.1 only (:func:`start_local_ray`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from dmm.errors import DmmError

J = TypeVar("J")
R = TypeVar("R")

LOOPBACK = "127.0.0.1"
# Read by ray when it is imported: a local cluster then binds 127.0.0.1 only, and sends no
# usage statistics.
RAY_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class JobFailed(DmmError):
    """A job raised an error, or its worker died more than ``max_retries`` times."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Where the jobs of a command run.

    Args:
        kind: local (in this process, one job after another) or ray (each job a Ray task).
        address: ray: the cluster; none starts a local one on this machine (127.0.0.1
            only), auto connects to the one `ray start` runs here, or HOST:PORT.
        cpus_per_task: ray: CPUs each job requests.
        gpus_per_task: ray: GPUs each job requests (0.5 packs two jobs on one GPU).
        max_retries: ray: times a job whose worker died is run again.
    """

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise DmmError(f"unknown executor {self.kind!r} (local or ray)")
        if self.kind == "local" and self.address is not None:
            raise DmmError(f"address {self.address!r} is for the ray executor (--executor ray)")
        if self.cpus_per_task < 0 or self.gpus_per_task < 0 or (
                self.cpus_per_task == 0 and self.gpus_per_task == 0):
            raise DmmError("cpus_per_task and gpus_per_task must be >= 0, one of them > 0, "
                           f"got {self.cpus_per_task} and {self.gpus_per_task}")
        if self.gpus_per_task > 1 and self.gpus_per_task != int(self.gpus_per_task):
            raise DmmError(f"gpus_per_task above 1 must be whole, got {self.gpus_per_task}")
        if self.max_retries < 0:
            raise DmmError(f"max_retries must be >= 0, got {self.max_retries}")

    def fleet_args(self) -> dict[str, Any]:
        """The same, as :func:`dmm.fleet.train_fleet`'s arguments."""
        return {"executor": self.kind, "address": self.address,
                "cpus_per_task": self.cpus_per_task, "gpus_per_task": self.gpus_per_task,
                "max_retries": self.max_retries}

    def build(self) -> Executor:
        """The executor this spec describes."""
        return LocalExecutor() if self.kind == "local" else RayExecutor(self)


class Executor:
    """Runs ``fn`` on many jobs."""

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[tuple[int, R]]:
        """Yield ``(i, fn(jobs[i]))`` for every job, in the order they finish."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """The jobs one after another, in this process."""

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[tuple[int, R]]:
        for i, job in enumerate(jobs):
            try:
                result = fn(job)
            except Exception as e:
                raise JobFailed(f"{job} failed: {_one_line(e)}") from e
            yield i, result


class RayExecutor(Executor):
    """Each job one Ray task, with the spec's resources and retries."""

    def __init__(self, spec: ExecutorSpec):
        self.spec = spec

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[tuple[int, R]]:
        if not jobs:
            return
        ray = connect(self.spec.address)
        remote = ray.remote(_call).options(
            num_cpus=self.spec.cpus_per_task, num_gpus=self.spec.gpus_per_task,
            max_retries=self.spec.max_retries, retry_exceptions=False)
        fn_ref = ray.put(fn)
        pending = {remote.remote([fn_ref], job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    cause = getattr(e, "cause", None)
                    what = _one_line(cause) if isinstance(cause, BaseException) else (
                        f"{type(e).__name__}: {_first_line(e)}")
                    raise JobFailed(f"{jobs[i]} failed: {what}") from None
                yield i, result
        finally:
            for ref in pending:  # an error, an interrupt, or the caller stopped early
                ray.cancel(ref, force=True)


_FNS: OrderedDict[str, Callable[[Any], Any]] = OrderedDict()  # per worker process


def _call(fn_ref: list[Any], job: Any) -> Any:
    """A Ray task: ``fn(job)``, ``fn`` fetched once per worker process."""
    import ray

    key = fn_ref[0].hex()
    if key not in _FNS:
        _FNS[key] = ray.get(fn_ref[0])
        while len(_FNS) > 2:
            _FNS.popitem(last=False)
    return _FNS[key](job)


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to the cluster this process already joined, to
    ``address``, or (None) to a local cluster started here (:func:`start_local_ray`)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return sys.modules["ray"]
    if address is None:
        return start_local_ray()
    ray = _import_ray()
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise DmmError(f"cannot connect to the Ray cluster at {address}: "
                       f"{_first_line(e)}") from None
    return ray


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> Any:
    """Start a Ray cluster on this machine whose every service listens on 127.0.0.1, with
    no dashboard and no usage statistics; returns the ``ray`` module. ``num_gpus`` may
    declare GPUs the machine does not have (for tests of GPU packing)."""
    for k, v in RAY_LOCAL_ENV.items():
        os.environ[k] = v  # before ray is imported: it reads them then
    ray = _import_ray()
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise DmmError("ray was imported before dmm could keep its local cluster on "
                       "127.0.0.1; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing "
                       "ray, or start a cluster yourself and pass its address")
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    if ray.util.get_node_ip_address() != LOOPBACK:
        ray.shutdown()
        raise DmmError("the local Ray node did not bind 127.0.0.1; refusing to use it")
    return ray


def _import_ray() -> Any:
    # Ray would otherwise replace builtins.print in this process with its own on first use
    # of its progress bars.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    try:
        import ray
    except ImportError:
        raise DmmError("the ray executor needs ray: pip install 'dmm[ray]'") from None
    return ray


def _first_line(e: object) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return " ".join(lines[0].split()) if lines else ""


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {_first_line(e)}" if not isinstance(e, DmmError) else (
        " ".join(str(e).split()))
