"""One writer per store: a lock file beside it that names its holder.

``<store>.lock`` holds ``{"pid", "host", "started", "proc_start"}`` of the process that
writes the store. It is created by hard-linking a complete temporary file to that name,
which fails if the name exists (atomic, also on NFS), so a lock file is never half
written. A second writer is refused at once with one line naming the holder, or waits
(``wait=True``). A lock whose holder is gone is stale and removed: on this host, when its
pid is dead (or now belongs to a process started later); on another host (whose processes
cannot be checked from here), when the holder has stopped refreshing the lock's
modification time, which it does every ``HEARTBEAT`` seconds, for ``STALE_AFTER`` seconds.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from dmm.errors import DmmError

HEARTBEAT = 15.0  # seconds between the holder's refreshes of the lock's mtime
STALE_AFTER = 300.0  # a lock of another host not refreshed for this long is stale


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), where /proc has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict) -> bool:
    """Whether the holder (on this host) still runs."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = holder.get("proc_start")
    return start is None or _proc_start(pid) in (None, start)


def _stale(lock: Path, holder: dict, host: str) -> bool:
    if holder.get("host") == host:
        return not _alive(holder)
    try:
        return time.time() - lock.stat().st_mtime > STALE_AFTER
    except FileNotFoundError:
        return False


def _heartbeat(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT):
        try:
            os.utime(lock)
        except OSError:
            return


def describe(holder: dict) -> str:
    """``pid 123@host (since 2026-01-01 12:00:00)``."""
    return f"pid {holder.get('pid')}@{holder.get('host')} (since {holder.get('started')})"


def _read(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _try_create(lock: Path, me: dict) -> bool:
    fd, tmp = tempfile.mkstemp(prefix=f".{lock.name}.", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _break_stale(lock: Path, seen: dict) -> None:
    """Remove ``lock`` if it still holds ``seen`` (a stale holder): moved aside first, so
    that a lock another process took in between is put back, never deleted."""
    aside = lock.with_name(f".{lock.name}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if _read(aside) != seen:
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    os.unlink(aside)


@contextmanager
def store_lock(lock: Path, what: str, wait: bool = False, poll: float = 0.5,
               log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``lock`` while writing ``what``; refuse (or, with ``wait``, wait) while another
    process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "token": uuid.uuid4().hex,
          "started": datetime.now().isoformat(sep=" ", timespec="seconds"),
          "proc_start": _proc_start(os.getpid())}
    told = False
    while not _try_create(lock, me):
        holder = _read(lock)
        if holder is None:
            continue  # released in between
        if _stale(lock, holder, host):
            warnings.warn(f"removing the stale lock {lock} of {describe(holder)}",
                          stacklevel=3)
            _break_stale(lock, holder)
            continue
        if not wait:
            raise DmmError(f"{what} is being written by {describe(holder)}: pass --wait to "
                           f"wait for it (or remove {lock} if that process is gone)")
        if not told and log is not None:
            log(f"waiting for {describe(holder)}, which writes {what}")
            told = True
        time.sleep(poll)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(lock, stop), daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        if (_read(lock) or {}).get("token") == me["token"]:
            lock.unlink()
