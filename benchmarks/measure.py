"""Measuring one cell (pattern x layout x tier): repetitions, wall time, counts, peak memory, summaries.

Each repetition is cold (see :mod:`benchmarks.storage`) and timed with ``perf_counter`` around the
public call alone. Peak memory is the rise of this process's peak resident set (``VmHWM``, reset before
each repetition through ``/proc/self/clear_refs``) above its resident set at the start; glibc keeps a
fixed 128 KiB mmap threshold and is trimmed before each repetition, so memory freed by an earlier cell
is returned to the OS rather than silently reused. Where ``/proc`` is not Linux's, memory is not reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.storage import Access

M_MMAP_THRESHOLD = -3


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def fix_allocator() -> None:
    """A fixed mmap threshold: large buffers go back to the OS when freed (Linux/glibc only)."""
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.mb``: the peak RSS rise during the block, in MB of 10^6 bytes as the
    bytes read beside it (None if unknown)."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _status_kb("VmRSS")
        except OSError:
            self._start = None
        self.mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_kb("VmHWM")
        if self._start is not None and peak is not None:
            self.mb = max(peak - self._start, 0) * 1024 / 1e6  # /proc's kB are KiB; MB as the bytes read are


@dataclass
class Rep:
    """One repetition: seconds, counts (by request kind, bytes, who counted), peak MB and the answer."""

    seconds: float
    counts: dict[str, Any]
    peak_mb: float | None
    result: dict[str, Any]


@dataclass
class Cell:
    """All repetitions of one pattern x layout x tier, and the bytes the answer needs."""

    pattern: str
    layout: str
    tier: str
    needed_bytes: int | None
    reps: list[Rep] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> list[float]:
        return [r.seconds for r in self.reps]

    def summary(self) -> dict[str, Any]:
        """Median/p95 latency, median counts, read amplification, max peak memory."""
        if not self.reps:
            return {"n": 0, "error": self.error}
        secs = sorted(self.seconds)
        med = lambda key: statistics.median(r.counts[key] for r in self.reps)  # noqa: E731
        out = {
            "n": len(secs), "median_s": statistics.median(secs), "p95_s": percentile(secs, 95),
            "min_s": secs[0], "max_s": secs[-1],
            **{k: med(k) for k in ("GET", "HEAD", "LIST", "PUT", "other", "requests", "bytes_read", "bytes_written")},
            "counted_by": self.reps[0].counts["counted_by"],
            **{k: med(k) for k in ("data_gets", "objects_read", "ledger_gets", "array_meta_gets")
               if k in self.reps[0].counts},
            "needed_bytes": self.needed_bytes,
            "peak_mb": max((r.peak_mb for r in self.reps if r.peak_mb is not None), default=None),
            "checksum": self.reps[0].result.get("checksum"),
            "error": self.error,
        }
        out["read_amplification"] = (out["bytes_read"] / self.needed_bytes) if self.needed_bytes else None
        written = [r.result.get("bytes_written_store") for r in self.reps]
        new = [r.result.get("bytes_new_data") for r in self.reps]
        if all(v is not None for v in written + new) and sum(new):
            out["write_amplification"] = sum(written) / sum(new)  # cumulative over the repetitions
            out["write_amplification_max"] = max(r.result["write_amplification"] for r in self.reps)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "layout": self.layout, "tier": self.tier, "summary": self.summary(),
                "reps": [asdict(r) for r in self.reps]}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile of ``values`` (numpy's default method)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def repeat(cell: Cell, work: Callable[[Access, int], dict[str, Any]], make_access: Callable[[], Access]) -> Rep:
    """Run and record one cold repetition of ``work`` (given a fresh access and the repetition number). When
    the timed work read a plain folder store, its counts come from :func:`count_again`."""
    access = make_access()
    try:
        with PeakMemory() as mem:
            access.start()
            t0 = time.perf_counter()
            result = work(access, len(cell.reps))
            seconds = time.perf_counter() - t0
            counts = access.finish()
        if access.plain_opened:
            counts = count_again(work, access, len(cell.reps))
    finally:
        with contextlib.suppress(Exception):
            access.close()
    rep = Rep(seconds, counts, mem.mb, result)
    cell.reps.append(rep)
    return rep


def count_again(work: Callable[[Access, int], dict[str, Any]], access: Access, rep: int) -> dict[str, Any]:
    """The counts of ``work`` run again, cold and untimed, through counting stores: the timed pass read the
    plain folder store users get, which a counting wrapper would have sent down a slower read path."""
    twin = access.counted_twin()
    try:
        twin.start()
        work(twin, rep)
        return twin.finish()
    finally:
        with contextlib.suppress(Exception):
            twin.close()


Work = Callable[[Access, int], dict[str, Any]]


def measure_group(group: list[tuple[Cell, Work, Callable[[], Access]]], *, reps: int, min_reps: int,
                  budget_s: float, log: Callable[[str], None] = print) -> None:
    """Measure cells side by side: repetition 1 of every cell, then repetition 2, ... (so background
    load hits all layouts alike). A cell stops repeating once it has ``min_reps`` and has used
    ``budget_s``; a cell whose work raises records the error and stops."""
    spent = {id(cell): 0.0 for cell, _, _ in group}
    for i in range(reps):
        for cell, work, make_access in group:
            if cell.error or (i >= min_reps and spent[id(cell)] >= budget_s):
                continue
            try:
                rep = repeat(cell, work, make_access)
            except Exception as exc:  # a broken reader must not stop the run: the report shows the error
                cell.error = f"{type(exc).__name__}: {exc}"
                log(f"  ! {cell.pattern} / {cell.layout} / {cell.tier}: {cell.error}")
                continue
            spent[id(cell)] += rep.seconds
    for cell, _, _ in group:
        log(describe(cell))


def describe(cell: Cell) -> str:
    """One progress line for a finished cell."""
    s = cell.summary()
    if not s["n"]:
        return f"  {cell.pattern:13} {cell.tier:9} {cell.layout:13} failed: {cell.error}"
    return (f"  {cell.pattern:13} {cell.tier:9} {cell.layout:13} median {s['median_s'] * 1e3:8.0f} ms  "
            f"p95 {s['p95_s'] * 1e3:8.0f} ms  n={s['n']}  requests {s['requests']:6.0f}  "
            f"read {s['bytes_read'] / 1e6:8.2f} MB  peak {s['peak_mb'] or 0:6.0f} MB")
