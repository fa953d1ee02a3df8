"""The commit protocol: why a reader never sees half an ingest, and how a crash is completed.

An ingest of cube collection ``C`` goes through these named steps (``CARDCUBE_KILL_AT=<step>`` kills
the process with SIGKILL at that step; the crash tests use it, nothing else does):

1. ``locked``     - create ``C/_lock.json`` with a create-only write (``If-None-Match: *`` on S3, an
                    exclusive link on a folder). A second ingest finds it and stops with
                    :class:`CubeLockedError`, or waits. A lock left by a killed process (same host,
                    boot and pid namespace, dead pid; on an object store only :data:`SETTLE` seconds after
                    its lease, as uploads it sent may still land) or not refreshed for
                    ``stale_after`` seconds (the holder's, if longer) is taken over: replaced by the new
                    holder's only if it is still the lock that was read (``If-Match`` on S3, a locked
                    rename on a folder), so of two writers that find it stale one gets it.
                    The holder checks a :class:`Fence` before every write and delete, and stops with
                    :class:`LockLostError` once its lock is gone or its lease (a refresh within half
                    of ``stale_after``; on an object store, three heartbeats) has lapsed: a writer that
                    was frozen, not dead, when its lock was broken wakes up to find it so, instead of
                    writing where the new holder did.
2. ``recovered``  - roll forward whatever a crashed predecessor committed but did not finish
                    publishing (array shapes, catalog): idempotent.
3. ``validated``  - every source band read in full and checked (nothing written yet).
4. ``written``    - data chunks written, only at time indices *beyond* the committed extents: new
                    cold blocks and never-used hot slots. No committed byte is ever overwritten.
   ``details``    - the details object of the scenes version N+1 is the first to record (their band files
                    and checksums, :mod:`cube.scene_details`) created, like data: no record names it yet.
5. ``committed``  - THE atomic switch: create ``C/_ledger/v{N+1}.json`` with a create-only write. It
                    holds the whole new state (naming the details objects of its scenes). Readers take
                    the newest ledger record and slice every array to the extents it lists, so before
                    this object exists they see version N
                    exactly, and after it, version N+1 complete. A writer that finds the key taken
                    (a broken lock) fails with :class:`CommitConflictError`; its data stays invisible.
                    Two writers that start from version N write the same new hot slots, so a late
                    write of the one whose lock was broken would land in data the other committed:
                    the fence (step 1) stops it first. What it cannot stop is a freeze of
                    ``stale_after`` seconds between a fence check and the write it guards.
6. ``published``  - grow the persisted Zarr array shapes to the committed extents (for plain Zarr
                    readers), then update the STAC catalog. Both are derived from the ledger and
                    redone by step 2 of the next run if the process dies here.
7. ``unlocked``   - delete the lock. A run stopped early deletes it too, once the shard writes it started have
                    ended (``stop_grace``, :func:`cardcube.parallel.run_tasks`): dask's threads and a cluster's
                    workers carry a started write on, and it would land where the next writer writes. Writes
                    still running after the grace leave the lock in place, to go stale.

A kill before step 5 leaves version N intact plus invisible garbage, which the next run clears from every time
block it is about to write (:func:`ingest.arrays.clear_blocks`: it writes only the shards its own scenes touch,
and the others would read as part of its dates); a kill after it leaves version N+1 committed, and the re-run
publishes it and finds the scenes already in.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from zarr.abc.store import Store

from cardcube.checkpoints import checkpoint
from cardcube.compare_and_swap import Tagged, delete_if_unchanged, read_tagged, replace_bytes
from cardcube.errors import (
    CommitConflictError,
    CorruptDocumentError,
    CubeLockedError,
    InvalidRequestError,
    LockLostError,
    StoreError,
    TasksStillRunningError,
)
from cardcube.io_loop import pending_io
from cardcube.parallel import STOP_GRACE
from cardcube.storage import (
    CONDITIONAL_WRITES,
    create_bytes,
    json_bytes,
    local_file,
    parse_json,
    read_bytes,
    read_json,
    store_url,
    write_json,
)
from cube import layout
from cube.ledger import CubeVersion
from ingest.arrays import publish_shapes

log = logging.getLogger(__name__)

STALE_AFTER = 600.0  # seconds without a heartbeat after which a lock is taken for dead
SETTLE = 60.0  # seconds within which a write whose process has ended has landed or failed (an S3 PUT fully sent)

STEPS = ("locked", "recovered", "validated", "written", "details", "committed", "published", "unlocked")


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds a writer lock (its JSON object). ``stale_after`` is the holder's own: a writer given a
    shorter one still waits that long before it takes the lock for dead. ``command`` names the kind of writer
    (``ingest``, ``expire``), for the operator looking for it; a lock written before it was recorded says
    ``writer``. ``remote_workers``: the holder's writes run on a dask cluster's workers, which outlive its
    process, so its lock is not taken for dead when the process is (only ``stale_after`` after its heartbeat).
    ``pid_namespace``: where ``pid`` names the holder (:func:`pid_namespace`); None in a lock of a cardcube before
    2026-12-05, or of a system that does not tell it. ``settles``: the holder left writes running when it ended
    (past its stop grace), which may land until this time (epoch seconds): not taken for dead before, whatever its
    process. ``lease``: how long after its last heartbeat it may still write (its fence lets it write while a
    refresh is that recent; None in a lock of a cardcube before 2026-12-05, whose lease was half ``stale_after``)."""

    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float
    stale_after: float = STALE_AFTER
    command: str = "writer"
    remote_workers: bool = False
    pid_namespace: str | None = None
    settles: float | None = None
    lease: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> LockInfo:
        return cls(**{f: d[f] for f in cls.__slots__ if f in d})

    def writes_until(self) -> float:
        """The latest moment (epoch seconds) its holder can have sent a write: its lease from its last heartbeat
        (a holder whose refreshes fail stops writing then)."""
        return self.heartbeat + (self.lease if self.lease is not None else self.stale_after / 2)

    def settled(self, *, in_flight: bool) -> float:
        """When the writes of its holder, if its process has ended, have all landed or failed: at once in a local
        folder (a dead process's write lands with it or not at all), :data:`SETTLE` seconds after the last it can
        have sent on an object store (its gateway may complete an upload sent whole); and not before writes it left
        running when it stopped (``settles``) have settled."""
        return max(self.writes_until() + SETTLE if in_flight else 0, self.settles or 0)

    def ended_here(self) -> bool:
        """Whether its holder's process is known to have ended: a process of this host and pid namespace (told by
        its lock), whose writes did not run on a cluster (its workers outlive it), and whose pid is gone."""
        return (not self.remote_workers and self.host == socket.gethostname() and self.pid_namespace is not None
                and self.pid_namespace == pid_namespace() and not pid_alive(self.pid))

    def describe(self) -> str:
        now = time.time()
        return (f"{self.command} {self.owner[:8]} (pid {self.pid} on {self.host}, started "
                f"{now - self.started:.0f} s ago, last heartbeat {now - self.heartbeat:.0f} s ago)")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs in this process's pid namespace (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_namespace() -> str | None:
    """This process's pid namespace in this boot of its machine (``<boot id> pid:[<inode>]``): the processes whose
    pids :func:`pid_alive` can tell. None where Linux's ``/proc`` does not say. A host name does not tell it: the
    containers of a pod, or on the host network, share their host's name, each with its own pids, and a live
    writer's pid in one is no process (or another one) in the next; a reboot starts the pids anew."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _is_stale(info: LockInfo, stale_after: float, *, in_flight: bool) -> bool:
    """Whether the lock ``info`` is taken for dead: its holder's process is gone (told only where its pid is one of
    this process's pid namespace, and its writes did not run on a cluster), or its heartbeat is older than the
    longer of ``stale_after`` and the holder's. A lock that does not say its pid namespace (a cardcube before
    2026-12-05) waits for its heartbeat: until then, another pid namespace's live writer lost its lock at once.
    ``in_flight``: the store may still complete writes of a process that has ended (an object store): its lock is
    then taken for dead once they have settled (:meth:`LockInfo.settled`), not at once (until 2026-12-05 such late
    uploads of a SIGKILLed ingest landed in the hot slots the next one had just committed)."""
    if time.time() >= info.settled(in_flight=in_flight) and info.ended_here():
        return True
    return time.time() - info.heartbeat > max(stale_after, info.stale_after)


@dataclass(slots=True)
class _Lease:
    """When this process last proved it holds the lock (took it, or wrote a refresh), on both clocks: the
    monotonic one runs on while the process is stopped, the wall one also across a suspended machine."""

    limit: float
    mono: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)

    def renew(self, mono: float, wall: float) -> None:
        self.mono, self.wall = mono, wall

    def age(self) -> float:
        return max(time.monotonic() - self.mono, time.time() - self.wall)

    def lapsed(self) -> bool:
        return self.age() > self.limit


@dataclass(frozen=True, slots=True)
class Fence:
    """What a writer checks right before each write or delete under the writer lock: that the lock is
    still its own.

    A lock whose heartbeat is ``stale_after`` old is broken by the next writer, which then writes at the
    same places (both start from the same version). A holder that was only frozen (a stopped process, a
    suspended machine, a long cut from the store) must not write when it wakes. So it checks its lease
    here (a refresh written within half of ``stale_after``: nobody breaks the lock sooner) and reads the
    lock to find its own owner id there. A copy in a worker process has no lease and reads the lock only.
    What remains is a freeze of ``stale_after`` between this check and the write it guards; only fencing
    tokens checked by the store itself would close that, and object stores have none across objects.
    ``command``: the writer's (:func:`writer_lock`'s), which its errors tell to run again.
    """

    store: Store
    key: str
    owner: str
    stale_after: float
    lease: _Lease | None = None
    command: str = "ingest"

    def __reduce__(self) -> tuple:  # the lease is this process's clock: a copy elsewhere reads the store only
        return Fence, (self.store, self.key, self.owner, self.stale_after, None, self.command)

    def check(self) -> None:
        """Raise :class:`LockLostError` unless this writer still holds the lock."""
        if self.lease is not None and self.lease.lapsed():
            self._lost(f"its lock was last refreshed {self.lease.age():.0f} s ago")
        current = read_json(self.store, self.key)
        if current is None:
            self._lost("nobody holds its lock now")
        if current.get("owner") != self.owner:
            self._lost(f"its lock is now held by {current.get('command', 'writer')} {str(current.get('owner'))[:8]} "
                       f"(pid {current.get('pid')} on {current.get('host')})")

    def _lost(self, why: str) -> NoReturn:
        raise LockLostError(
            f"this writer no longer holds the writer lock {self.key} at {store_url(self.store)}: {why}. Another "
            f"writer takes a lock without a heartbeat for {self.stale_after:.0f} s for dead (was this process "
            f"stopped, suspended or cut off from the store?) and may have written since, so this run stopped "
            f"before its next write or delete; what it did not commit stays invisible; re-run it")


def _held_lock(store: Store, key: str, data: bytes) -> LockInfo:
    """The lock held, read from ``key`` as ``data``; one that is no lock cardcube wrote (no JSON, an object without
    its fields, a heartbeat that is no time: edited by hand, cut short, a foreign tool's) is a
    :class:`CorruptDocumentError` saying how to be rid of it, not a ``TypeError`` traceback."""
    try:
        doc = parse_json(store, key, data)
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        if missing := [f for f in ("owner", "host", "pid", "started", "heartbeat") if f not in doc]:
            raise TypeError(f"no {', '.join(missing)}")
        info = LockInfo.from_dict(doc)
        if not all(type(v) in (int, float) for v in (info.pid, info.started, info.heartbeat, info.stale_after)):
            raise TypeError("pid, started, heartbeat and stale_after must be numbers")
    except (TypeError, CorruptDocumentError) as exc:
        raise CorruptDocumentError(f"{key} in {store_url(store)} is no writer lock of cardcube ({exc}): if no ingest "
                                   "or expire runs on this cube, delete it and run the command again") from None
    return info


@contextmanager
def writer_lock(store: Store, collection: str, *, wait: float = 0.0, stale_after: float = STALE_AFTER,
                heartbeat: float | None = None, command: str = "ingest", remote_workers: bool = False,
                stop_grace: float = STOP_GRACE) -> Iterator[Fence]:
    """Hold the single-writer lock of ``collection`` for the duration of the block; the :class:`Fence`
    it yields is to be checked before each write. The lock is refreshed every ``heartbeat`` seconds
    (default: ``stale_after`` / 20, at most 30 s); ``command`` says who holds it to writers that find it;
    ``remote_workers``: see :class:`LockInfo`.

    The lock is deleted when the block ends, however it ends, but not while writes of this writer may still land:
    a block that ends with an error first waits up to ``stop_grace`` seconds for the store operations still running
    in this process (one whose caller was interrupted goes on), and one that ends with (or while unwinding from)
    :class:`TasksStillRunningError` leaves the lock for others to take for dead ``stale_after`` after its last
    heartbeat (the fence then stops the writes that have not begun)."""
    key = layout.lock_key(collection)
    every = heartbeat if heartbeat is not None else min(30.0, stale_after / 20)
    if not 0 < every < stale_after / 2:
        raise InvalidRequestError(f"the heartbeat ({every} s) must be positive and shorter than half of "
                                  f"stale_after ({stale_after} s)")
    owner = uuid.uuid4().hex
    deadline = time.time() + wait
    in_flight = local_file(store, key) is None  # an object store: a dead writer's uploads may still land
    # on one, the next writer waits out this lease after a kill: three beats (a refresh failing after its retries
    # and the next one in time), not minutes
    limit = min(stale_after / 2, 3 * every) if in_flight else stale_after / 2
    while True:
        lease = _Lease(limit)  # from before the write: the lease never outlasts the lock
        now = time.time()  # each attempt's own: after a wait, an older heartbeat would look stale at once
        me = LockInfo(owner, socket.gethostname(), os.getpid(), now, now, stale_after, command, remote_workers,
                      pid_namespace(), lease=limit)
        try:
            write_json(store, key, _as_dict(me), create_only=True)
            break
        except CommitConflictError:
            found = read_tagged(store, key)
            if found is None:
                continue  # released in between: try again
            info = _held_lock(store, key, found.data)
            if info.owner == owner:  # its own: the store's answer to the write was lost, and it was retried
                break
            if _is_stale(info, stale_after, in_flight=in_flight):
                log.warning("breaking stale lock of %s on %s", info.describe(), store_url(store))
                try:  # the lock as it was read, not whatever is there now: another writer may have broken it first
                    replace_bytes(store, key, json_bytes(_as_dict(me)), expected=found)
                except CommitConflictError:
                    continue
                break
            if time.time() >= deadline:
                waited = f"waited {wait:g} s; " if wait else ""
                raise CubeLockedError(
                    f"the {collection} cube at {store_url(store)} is being written by {info.describe()}; {waited}"
                    f"retry when it has finished, or wait {'longer ' if wait else ''}for it (--wait SECONDS; Python: "
                    f"wait=). "
                    f"{_taken_for_dead(info, stale_after, in_flight=in_flight)}"
                ) from None
            time.sleep(min(1.0, max(0.05, deadline - time.time())))
    if in_flight:
        try:
            _refuse_unconditional(store, key, json_bytes(_as_dict(me)))
        except BaseException:  # refused, or the store failing the check: the lock taken is let go of
            _let_go(store, key, me, stale_after)
            raise
    fence = Fence(store, key, me.owner, stale_after, lease, command)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(fence, me, every, stop), daemon=True)
    beat.start()
    keep = ""
    try:
        yield fence
    except BaseException as exc:
        if TasksStillRunningError.in_chain(exc):
            keep = "its tasks"
        else:  # a write this process was waiting for when it was stopped goes on in zarr's I/O loop: let it land
            stop.set()
            if left := pending_io(stop_grace, what="the store operations this writer was stopped in"):
                keep = "store operations of this process" if left < 0 else f"{left} store operation(s) of this process"
        raise
    finally:
        stop.set()
        beat.join()
        if keep:
            if not remote_workers:  # this process may end before they do (cardcube.cli.run): a write it sent lands
                _mark_settling(store, key, me)  # a moment later still, as a gateway completes a PUT received whole
            log.warning("the writer lock %s at %s is left in place, as writes of this run may still land (%s): no "
                        "other writer starts until it is taken for dead%s (or delete it once they have ended)", key,
                        store_url(store), keep, f", {stale_after:.0f} s after its last heartbeat" if remote_workers
                        else f": in this pid namespace of this host once this process has ended and {SETTLE:.0f} s "
                             f"have passed, elsewhere {stale_after:.0f} s after its last heartbeat")
        else:
            _let_go(store, key, me, stale_after)


def _taken_for_dead(info: LockInfo, stale_after: float, *, in_flight: bool) -> str:
    after = max(stale_after, info.stale_after)
    if info.remote_workers:
        return (f"Its writes ran on dask workers, which outlive it: it is taken for dead {after:.0f} s after its last "
                f"heartbeat, even once its process has ended")
    if info.pid_namespace is None:
        return (f"Its lock does not say in which pid namespace its pid {info.pid} is (a cardcube before 2026-12-05, "
                f"or a system without Linux's /proc): "
                f"it is taken for dead {after:.0f} s after its last heartbeat, even once its process has ended "
                f"(delete it by hand once it has)")
    left = info.settled(in_flight=in_flight) - time.time()
    if info.settles is not None and left > 0:
        return (f"It was stopped leaving writes running, which may land for {left:.0f} s more: on this host it is "
                f"taken for dead then, once its process has ended; elsewhere {after:.0f} s after its last heartbeat")
    if left > 0 and info.ended_here():
        return (f"Its process has ended, but uploads it sent may still land (the store may complete them after it "
                f"has ended): it is taken for dead in {left:.0f} s")
    return (f"A writer on another host, or in another pid namespace of this one (another container), that died is "
            f"taken for dead {after:.0f} s after its last heartbeat")


def _mark_settling(store: Store, key: str, me: LockInfo) -> None:
    """Record in ``me``'s lock (if still its) that writes it leaves running may land for :data:`SETTLE` seconds
    more: until 2026-12-05 the next writer on this host broke it as soon as this process had ended."""
    now = time.time()
    try:
        if (found := _own_lock(store, key, me.owner)) is not None:
            replace_bytes(store, key, json_bytes({**_as_dict(me), "heartbeat": now, "settles": now + SETTLE}),
                          expected=found)
    except (StoreError, CommitConflictError) as exc:  # the lock as it was: taken for dead once this process has ended
        log.warning("could not record in the writer lock %s that writes may still land: %s", key, exc)


def _own_lock(store: Store, key: str, owner: str) -> Tagged | None:
    """The lock at ``key`` as read (to be replaced only if unchanged: :func:`replace_bytes`), if ``owner``'s."""
    found = read_tagged(store, key)
    return found if found is not None and parse_json(store, key, found.data).get("owner") == owner else None


def _as_dict(info: LockInfo) -> dict:
    return {f: getattr(info, f) for f in LockInfo.__slots__}


def _heartbeat(fence: Fence, me: LockInfo, every: float, stop: threading.Event) -> None:
    """Refresh the lock every ``every`` seconds until ``stop``. A failed refresh is tried again at the next
    beat: a thread that died on one network error would let other hosts break a live writer's lock. Once
    the lease has lapsed (the process was frozen) or the lock is another's, it stops for good. A refresh replaces
    only the lock it read as its own (:func:`replace_bytes`): one written after a writer that took the lock over
    had replaced it would have overwritten that writer's."""
    lease = fence.lease
    assert lease is not None
    while not stop.wait(every):
        mono, wall = time.monotonic(), time.time()  # before the checks: a freeze after them cannot renew the lease
        try:
            found = _own_lock(fence.store, fence.key, fence.owner)
            if found is None or lease.lapsed():
                return  # lost: the fence stops the writer at its next write
            replace_bytes(fence.store, fence.key, json_bytes({**_as_dict(me), "heartbeat": wall}), expected=found)
            lease.renew(mono, wall)
        except CommitConflictError:
            continue  # changed since read (taken over, or this refresh's own PUT retried): the next beat tells whose
        except StoreError as exc:
            log.warning("could not refresh the writer lock %s (tried again in %.0f s): %s", fence.key, every, exc)


def _refuse_unconditional(store: Store, key: str, data: bytes) -> None:
    """:class:`StoreError` if the object store ignores ``If-None-Match`` (an S3
    look-alike, an older gateway): its create-only writes replace what is there, so a second writer took the lock as
    its own and the ledger record of its version replaced another's, without a word. A second create of the lock,
    holding ``data``, its bytes (nothing changes if it goes through), must be refused: one PUT a run."""
    try:
        create_bytes(store, key, data)
    except CommitConflictError:
        return
    raise StoreError(f"the store at {store_url(store)} ignores If-None-Match: a create-only write of {key} replaced "
                     f"the object there where it was to be refused (412), so two writers would both take the lock and "
                     f"one's version replace the other's; {CONDITIONAL_WRITES}")


def _let_go(store: Store, key: str, me: LockInfo, stale_after: float) -> None:
    """Delete this writer's lock at the block's end; a store failing that (after its retries) is a warning, not the
    run's error: the run's outcome stands (a version it committed, or the error it stops with, which a failure here
    replaced: "cannot delete s2/_lock.json", exit 2, after a commit), and the lock left is taken for dead as a
    killed writer's is."""
    try:
        _delete_if_owner(store, key, me.owner)
    except StoreError as exc:
        log.warning("the writer lock %s at %s could not be let go of (%s): it stays until taken for dead (on this "
                    "host within minutes of this process's end, elsewhere %.0f s after its last heartbeat), or delete "
                    "it once this process has ended", key, store_url(store), exc, stale_after)


def _delete_if_owner(store: Store, key: str, owner: str) -> None:
    """Let go of ``owner``'s lock: delete it only as it was read (:func:`delete_if_unchanged`). A writer that took it
    over meanwhile (it took this one for dead) keeps its own: until 2026-12-05 it was deleted."""
    if (found := _own_lock(store, key, owner)) is not None:
        try:
            delete_if_unchanged(store, key, expected=found)
        except CommitConflictError:
            log.warning("the writer lock %s at %s was taken over by another writer before this one let go of it",
                        key, store_url(store))


UNCOMMITTED = {  # what a writer (its lock's command) refused at its commit left, and what to run again
    "ingest": ("nothing of this run became visible", "re-run the ingest"),
    "expire": ("its merge of the ledger's details objects did not become visible (the versions it expired stay "
               "expired, their data left for the next run to delete)", "re-run cardcube expire, which merges them "
               "anew"),
}


def commit(store: Store, new: CubeVersion, fence: Fence | None = None) -> None:
    """Make ``new`` visible: the one create-only write of the protocol (step 5), after checking ``fence``. The
    details object of the scenes it records first (:mod:`cube.scene_details`) is created before it, as data is:
    named by its bytes' digest, it is no other writer's, and one left by a run killed before its record is
    invisible (``cardcube expire`` deletes it). A refusal says what of the writer's run (``fence.command``: an
    ingest's, or an expire's merge) did not become visible, and what to run again."""
    left, rerun = UNCOMMITTED.get(fence.command if fence is not None else "ingest", UNCOMMITTED["ingest"])
    details, data = new.documents()
    if details is not None:
        if fence is not None:
            fence.check()
        _create_own(store, layout.details_key(new.collection, details[0]), details[1], rerun)
    checkpoint("details")
    if fence is not None:
        fence.check()
    key = layout.ledger_key(new.collection, new.version)
    try:
        create_bytes(store, key, data)
    except CommitConflictError:
        if read_bytes(store, key) == data:  # its own: the store's answer to the write was lost, and it was retried
            return
        raise CommitConflictError(
            f"version {new.version} of the {new.collection} cube at {store_url(store)} was committed by "
            f"another writer meanwhile; {left}, {rerun}"
        ) from None


def _create_own(store: Store, key: str, data: bytes, rerun: str) -> None:
    """Create ``key`` holding ``data``; one there already holding them (this run's write retried, or a run killed
    after writing the same) is as good. ``rerun``: what the error tells to run again once it is deleted."""
    try:
        create_bytes(store, key, data)
    except CommitConflictError:
        if read_bytes(store, key) != data:
            raise CommitConflictError(f"{key} in {store_url(store)} holds other bytes than its name's digest says: "
                                      f"delete it (no version names it), and {rerun}") from None


def publish(store: Store, version: CubeVersion, *, on_catalog: Callable[[Store, CubeVersion], None] | None = None,
            fence: Fence) -> None:
    """Derive the plain-Zarr shapes and the catalog from a committed version (step 6; idempotent), after
    checking ``fence``."""
    fence.check()
    for state in version.tiles.values():
        publish_shapes(store, version.spec, state)
    if on_catalog is not None:
        on_catalog(store, version)
