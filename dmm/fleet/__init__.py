"""Fleets: many models of one task, each on its own subset mask, with every model's
logits on all points.

* :mod:`~dmm.fleet.store`: the on-disk store (format, manifest, shards, checksums) and
  reading it (:func:`load_fleet`, :class:`Fleet`);
* :mod:`~dmm.fleet.lock`: one writer per store;
* :mod:`~dmm.fleet.train`: training one, shard by shard (each shard a job of an executor,
  :mod:`dmm.executor`), resumable (:func:`train_fleet`);
* :mod:`~dmm.fleet.cache`: fleets kept by name under one folder and reused
  (:class:`FleetCache`), as the benchmark and the scripts use them.
"""

from dmm.fleet.cache import FleetCache
from dmm.fleet.store import FLEET_FORMAT, KINDS, Fleet, Kind, load_fleet, shard_summary
from dmm.fleet.train import fleet_masks, train_fleet

__all__ = ["FLEET_FORMAT", "KINDS", "Fleet", "FleetCache", "Kind", "fleet_masks", "load_fleet",
           "shard_summary", "train_fleet"]
