"""The commit protocol: why a reader never sees half an ingest, and how a crash is completed.

An ingest of cube collection ``C`` goes through these named steps (``CARDCUBE_KILL_AT=<step>`` kills
the process with SIGKILL at that step; the crash tests use it, nothing else does):

1. ``locked``     - create ``C/_lock.json`` with a create-only write (``If-None-Match: *`` on S3, an
                    exclusive link on a folder). A second ingest finds it and stops with
                    :class:`CubeLockedError`, or waits. A lock left by a killed process (same host,
                    dead pid) or not refreshed for ``stale_after`` seconds is broken and taken over.
2. ``recovered``  - roll forward whatever a crashed predecessor committed but did not finish
                    publishing (array shapes, catalog): idempotent.
3. ``validated``  - every source band read in full and checked (nothing written yet).
4. ``written``    - data chunks written, only at time indices *beyond* the committed extents: new
                    cold blocks and never-used hot slots. No committed byte is ever overwritten.
5. ``committed``  - THE atomic switch: create ``C/_ledger/v{N+1}.json`` with a create-only write. It
                    holds the whole new state. Readers take the newest ledger record and slice every
                    array to the extents it lists, so before this object exists they see version N
                    exactly, and after it, version N+1 complete. A writer that finds the key taken
                    (a broken lock) fails with :class:`CommitConflictError`; its data stays invisible,
                    unless it went on writing after the other writer committed: both started from
                    version N, so they write the same new hot slots, and the late writes land in
                    data the other committed. Only a lock broken while its writer still lives (frozen
                    for ``stale_after``, or a same-named host whose pids differ) allows this.
6. ``published``  - grow the persisted Zarr array shapes to the committed extents (for plain Zarr
                    readers), then update the STAC catalog. Both are derived from the ledger and
                    redone by step 2 of the next run if the process dies here.
7. ``unlocked``   - delete the lock.

A kill before step 5 leaves version N intact plus invisible garbage that the re-run overwrites; a kill
after it leaves version N+1 committed, and the re-run publishes it and finds the scenes already in.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from zarr.abc.store import Store

from cardcube.errors import CommitConflictError, CubeLockedError, StoreError
from cardcube.storage import create_bytes, delete_key, read_json, store_url, write_json
from cube import layout
from cube.ledger import CubeVersion
from ingest.arrays import publish_shapes

log = logging.getLogger(__name__)

STEPS = ("locked", "recovered", "validated", "written", "committed", "published", "unlocked")
@dataclass(frozen=True, slots=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float

    def describe(self) -> str:
        now = time.time()
        return (f"ingest {self.owner[:8]} (pid {self.pid} on {self.host}, started {now - self.started:.0f} s ago, "
                f"last heartbeat {now - self.heartbeat:.0f} s ago)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(info: LockInfo, stale_after: float) -> bool:
    if info.host == socket.gethostname() and not _pid_alive(info.pid):
        return True
    return time.time() - info.heartbeat > stale_after


@contextmanager
def writer_lock(store: Store, collection: str, *, wait: float = 0.0, stale_after: float = 600.0,
                heartbeat: float = 30.0) -> Iterator[LockInfo]:
    """Hold the single-writer lock of ``collection`` for the duration of the block."""
    key = layout.lock_key(collection)
    now = time.time()
    me = LockInfo(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now)
    deadline = now + wait
    while True:
        try:
            write_json(store, key, _as_dict(me), create_only=True)
            break
        except CommitConflictError:
            current = read_json(store, key)
            if current is None:
                continue  # released in between: try again
            info = LockInfo(**current)
            if _is_stale(info, stale_after):
                log.warning("breaking stale lock of %s on %s", info.describe(), store_url(store))
                _delete_if_owner(store, key, info.owner)
                continue
            if time.time() >= deadline:
                raise CubeLockedError(
                    f"the {collection} cube at {store_url(store)} is being written by {info.describe()}; "
                    f"retry when it has finished, or wait for it (--wait SECONDS; Python: wait=). A writer on "
                    f"another host that died is taken for dead {stale_after:.0f} s after its last heartbeat"
                ) from None
            time.sleep(min(1.0, max(0.05, deadline - time.time())))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, key, me, heartbeat, stop), daemon=True)
    beat.start()
    try:
        yield me
    finally:
        stop.set()
        beat.join()
        _delete_if_owner(store, key, me.owner)


def _as_dict(info: LockInfo) -> dict:
    return {f: getattr(info, f) for f in LockInfo.__slots__}


def _heartbeat(store: Store, key: str, me: LockInfo, every: float, stop: threading.Event) -> None:
    """Refresh the lock every ``every`` seconds until ``stop``. A failed refresh is tried again at the next
    beat: a thread that died on one network error would let other hosts break a live writer's lock."""
    while not stop.wait(every):
        try:
            current = read_json(store, key)
            if current is None or current.get("owner") != me.owner:
                return  # our lock was broken; the create-only commit will detect any conflict
            write_json(store, key, {**_as_dict(me), "heartbeat": time.time()})
        except StoreError as exc:
            log.warning("could not refresh the writer lock %s (tried again in %.0f s): %s", key, every, exc)


def _delete_if_owner(store: Store, key: str, owner: str) -> None:
    current = read_json(store, key)
    if current is not None and current.get("owner") == owner:
        delete_key(store, key)


def commit(store: Store, new: CubeVersion) -> None:
    """Make ``new`` visible: the one create-only write of the protocol (step 5)."""
    data = json.dumps(new.to_dict(), indent=1).encode()
    try:
        create_bytes(store, layout.ledger_key(new.collection, new.version), data)
    except CommitConflictError:
        raise CommitConflictError(
            f"version {new.version} of the {new.collection} cube at {store_url(store)} was committed by "
            f"another writer meanwhile; nothing of this run became visible, re-run the ingest"
        ) from None


def publish(store: Store, version: CubeVersion, *, on_catalog: Callable[[Store, CubeVersion], None] | None = None
            ) -> None:
    """Derive the plain-Zarr shapes and the catalog from a committed version (step 6; idempotent)."""
    for state in version.tiles.values():
        publish_shapes(store, version.spec, state)
    if on_catalog is not None:
        on_catalog(store, version)
