"""The read phase of extraction work units, old and new code side by side: ``python -m benchmarks.read_phase``.

Builds (or reuses, ``--work DIR``) the synthetic territory of :mod:`benchmarks.kernel`, takes every work unit of
:func:`cube.extract.extract` and reads each unit's bands over each of its runs of dates as its worker does
(:class:`cube.band_reader.BandReader` into buffers reused across runs), timing only the reads by thread CPU time
(this shared machine's wall times vary by 15 % and more with its other users' load). Blosc decodes in the
calling thread, as in extract's worker threads, so the thread's time holds the decompression.

``--old TREE``: a checkout of the code to compare with (e.g. ``git worktree add /tmp/old <commit>``); its
``cube/shard_reader.py`` and ``cube/band_reader.py`` (``cube/dataset.py`` in code before it) are loaded beside the
package's, and each repeat reads every unit with the old ``read_window`` and ``BandReader.read`` (code before the
units shared the chunks they both read: without sharing), then the package's, in turn; medians of ``--repeats`` and
their ratio are reported, and both must read the same values. ``--profile``: cProfile one pass instead.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numcodecs.blosc
import numpy as np

from benchmarks.kernel import prepared_units, territory


def units(cube: Path, parcels: Path, layers: Path) -> tuple[Any, list[tuple[Any, np.ndarray, float]]]:
    """The extraction job and every work unit, largest first, each with its selected window pixels and the
    label layer's resolution: what :meth:`cube.extract_job.ExtractJob._readers` takes."""
    job, prepared = prepared_units(cube, parcels, layers)
    return job, [(unit, selected, resolution) for unit, _, selected, resolution in prepared]


def reads(job: Any, prepared: list[tuple[Any, np.ndarray, float]]) -> Iterator[Callable[[], np.ndarray]]:
    """Each read of every unit, in the order a worker makes them (SCL, then each group's bands, per run of dates),
    into buffers reused across the unit's runs as the worker reuses them."""
    for unit, selected, resolution in prepared:
        readers, _ = job._readers(unit, selected, resolution)
        longest = max(d.stop - d.start for d, _ in unit.times)
        buffers: dict[tuple[Any, ...], np.ndarray] = {}
        for dates, _ in unit.times:
            for slot, name in [("SCL", "SCL"), *((i, n) for _, inputs in job.groups for i, n in enumerate(inputs))]:
                reader = readers[name]
                key = (slot, reader.shape[1:], reader.dtype)
                if key not in buffers:
                    buffers[key] = np.empty((longest, *reader.shape[1:]), dtype=reader.dtype)
                yield lambda r=reader, d=dates, b=buffers[key]: r.read(d, out=b[: d.stop - d.start])


def read_all(job: Any, prepared: list[tuple[Any, np.ndarray, float]], digest: Any = None) -> float:
    """Thread CPU seconds of every unit's reads (``digest``: a hashlib object fed each read's values), as one run:
    no decoded chunk kept from a pass before (:mod:`cube.shared_chunks`)."""
    job.shared.clear()
    spent = 0.0
    for read in reads(job, prepared):
        start = time.thread_time()
        data = read()
        spent += time.thread_time() - start
        if digest is not None:
            digest.update(data.tobytes())
    return spent


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@contextmanager
def code(tree: Path | None) -> Iterator[None]:
    """The read path of ``tree`` (its ``read_window`` and ``BandReader.read``) in place of the package's while in
    the block; the package's with None."""
    from cube import band_reader

    new = band_reader.read_window, band_reader.BandReader.read
    if tree is not None:
        old_reader = _load("old_shard_reader", tree / "cube" / "shard_reader.py")
        old_band_reader = _load("old_band_reader", tree / "cube" / (
            "band_reader.py" if (tree / "cube" / "band_reader.py").exists() else "dataset.py"))
        old_read = old_reader.read_window
        if "sharing" not in inspect.signature(old_read).parameters:  # code before the units shared their chunks
            def old_read(*args: Any, sharing: Any = None, _read: Callable[..., np.ndarray] = old_read,
                         **kwargs: Any) -> np.ndarray:
                return _read(*args, **kwargs)
        band_reader.read_window, band_reader.BandReader.read = old_read, old_band_reader.BandReader.read
    try:
        yield
    finally:
        band_reader.read_window, band_reader.BandReader.read = new


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.read_phase", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cardcube-kernel-bench"),
                        help="folder of the territory (generated once, reused; shared with benchmarks.kernel)")
    parser.add_argument("--size", type=float, default=10.0, help="territory side in km (default 10)")
    parser.add_argument("--old", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--profile", action="store_true", help="cProfile one pass of the package's code instead")
    args = parser.parse_args(argv)
    numcodecs.blosc.use_threads = False  # as in a worker thread: blosc decodes in the caller, counted by thread_time
    cube, parcels = territory(args.work, args.size)
    job, prepared = units(cube, parcels, args.work / "layers")
    print(f"{len(prepared)} units, {sum(len(u.times) for u, _, _ in prepared)} runs of dates", flush=True)
    if args.profile:
        import cProfile
        import pstats

        read_all(job, prepared)
        prof = cProfile.Profile()
        prof.runcall(read_all, job, prepared)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return
    trees = {"new": None} if args.old is None else {"old": args.old, "new": None}
    digests = {}
    for name, tree in trees.items():  # warm, and the values read
        with code(tree):
            digests[name] = hashlib.sha256()
            read_all(job, prepared, digests[name])
    if len({d.hexdigest() for d in digests.values()}) > 1:
        raise SystemExit("the old and the new code read different values")
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            with code(tree):
                times[name].append(read_all(job, prepared))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(", ".join(f"{name} {m:.3f} s" for name, m in medians.items())
          + (f": new/old {medians['new'] / medians['old']:.3f}" if "old" in medians else "")
          + f" (thread CPU in reads, medians of {args.repeats})")


if __name__ == "__main__":
    main()
