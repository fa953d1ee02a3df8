"""One whole benchmark run: region, layouts, tiers, every cell of the matrix, the sweep; the raw results.

Order of work: generate the synthetic region; start the S3 server and proxy; build the cube through
the measured initial ingest and appends; derive the other layouts (:mod:`benchmarks.layouts`) and upload
every copy; measure each read pattern on each tier with all layouts side by side; run the chunk-shape
sweep (:mod:`benchmarks.sweep`). The result is a plain dict (the raw JSON of the report).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rasterio.errors import NotGeoreferencedWarning

from benchmarks import layouts, sweep
from benchmarks.config import BenchConfig
from benchmarks.layouts import LAYOUTS, DataCopy, Layout
from benchmarks.measure import Cell, fix_allocator, measure_group
from benchmarks.patterns import PATTERNS, Pattern, Run, Workload
from benchmarks.storage import BUCKET, Access, BenchStorage, Tier, quiet_s3
from cardcube.synth import SynthConfig, SynthResult, generate

Log = Callable[[str], None]
# How Zarr reads on a folder are measured (the report says so; runs before 2026-12-02 timed the counting store)
FOLDER_ZARR_READS = "timed on the plain store, counted in an untimed pass"
# How the report shows an append cell (runs before 2026-12-07 gave the median of its different appends)
APPEND_ROWS = "one row per append, in order"
# How each S3 repetition's client is made (runs before 2026-12-07 made a botocore session each repetition, timed)
S3_CLIENTS = "a new s3fs filesystem and client per repetition, from the process's one botocore session"


class Places:
    """Where each data copy lives on each tier (a folder path, or its uploaded ``s3://`` URL)."""

    def __init__(self, storage: BenchStorage, copies: dict[str, DataCopy]) -> None:
        self.storage, self.copies = storage, copies
        self.urls = {key: storage.upload(c.files, f"{key}/{layouts.COG_DIR}" if key == "cogs" else key)
                     for key, c in copies.items()}
        self.urls["cogs"] = self.urls["cogs"].removesuffix(f"/{layouts.COG_DIR}")

    def add(self, copy: DataCopy) -> None:
        self.copies[copy.key] = copy
        self.urls[copy.key] = self.storage.upload(copy.files, copy.key)

    def access(self, key: str, tier: Tier) -> Callable[[], Access]:
        """A factory of fresh accesses to copy ``key`` on ``tier`` (one per repetition; on a folder, Zarr is
        read through the plain store and counted in an untimed pass: :func:`benchmarks.measure.count_again`)."""
        copy = self.copies[key]
        if tier.is_s3:
            return lambda: Access(tier, self.urls[key], self.storage)
        return lambda: Access(tier, str(copy.root), self.storage, local=copy.files, counted=False)


def read_cells(pattern: Pattern, tier: Tier, places: Places, workload: Workload, cfg: BenchConfig, *,
               layout_set: tuple[Layout, ...] = LAYOUTS, reps: int | None = None, log: Log = print) -> list[Cell]:
    """Measure ``pattern`` on ``tier`` for every layout that has a reader for it, side by side."""
    group = []
    if not pattern.runs_on(tier):
        return []
    reps = min(reps or cfg.reps, pattern.max_reps or cfg.reps)
    for lay in layout_set:
        reader = pattern.readers.get(lay.reader)
        if reader is None or (pattern.layouts is not None and lay.key not in pattern.layouts):
            continue
        cell = Cell(pattern.key, lay.key, tier.name, pattern.needed(workload))
        work = (lambda r: lambda access, rep: r(Run(workload, access, cfg.threads, rep)))(reader)
        group.append((cell, work, places.access(lay.data, tier)))
    measure_group(group, reps=reps, min_reps=min(cfg.min_reps, reps), budget_s=cfg.cell_budget_s, log=log)
    return [cell for cell, _, _ in group]


def build_cube(cfg: BenchConfig, storage: BenchStorage, region: SynthResult, workload: Workload, work: Path, *,
               measured: bool, log: Log = print) -> tuple[Path, list[Cell]]:
    """The cube every Zarr layout is made from, built as a user builds it: when writes are measured, the
    initial ingest (all but the held-back dates) and then one-date appends are the measured ingest and
    append cells on the folder (ingesting in batches gives the same cube as at once). Appends on an S3
    tier go to a copy of the freshly ingested cube; an S3 ingest tier gets its own measured ingest."""
    cogs = region.out_dir / layouts.COG_DIR
    if not measured:
        layouts.ingest_cube(region.items, work / "cube")
        return work / "cube", []

    def root(tier: Tier) -> str:
        return f"s3://{BUCKET}/writes/{tier.name}" if tier.is_s3 else str(work / "writes" / tier.name)

    def measure(key: str, tier: Tier, base: str, reps: int) -> Cell:
        cell = Cell(key, "tf-sharded", tier.name, None)
        reader = PATTERNS[key].readers["zarr"]
        measure_group([(cell, lambda access, rep: reader(Run(workload, access, cfg.threads, rep)),
                        lambda: Access(tier, base, storage, local=cogs))],
                      reps=reps, min_reps=1, budget_s=float("inf"), log=log)
        if cell.error:
            raise RuntimeError(f"{key} on {tier.name} failed: {cell.error}")
        return cell

    parse = lambda n: Tier.parse(n, bandwidth_mbps=cfg.bandwidth_mbps)  # noqa: E731
    ingest_tiers = [parse(n) for n in dict.fromkeys(("folder", *cfg.ingest_tiers))]
    cells = [measure("ingest", tier, root(tier), 1) for tier in ingest_tiers]
    cube = work / "writes" / "folder" / "rep0"
    bases = {t.name: f"{root(t)}/rep0" for t in ingest_tiers}
    append_tiers = [parse(n) for n in cfg.append_tiers]
    for tier in append_tiers:
        if tier.name not in bases:  # a copy of the initial cube, taken before the folder's appends change it
            bases[tier.name] = storage.upload(cube, f"writes/{tier.name}/copy")
    for tier in append_tiers:  # every held-back date, in order: one of them may compact the hot buffer
        cells.append(measure("append", tier, bases[tier.name], len(workload.append_items)))
    layouts.ingest_cube(region.items, cube)  # completes the season if the folder's appends were not asked for
    return cube, cells


def warm_up(wanted: list[Pattern], places: Places, workload: Workload, cfg: BenchConfig) -> None:
    """One untimed read per layout on the folder, so no cell pays the process's one-off start-up costs
    (lazy imports, GDAL drivers, thread pools); the data is evicted again before every measurement."""
    pattern = next((p for p in wanted if p.kind == "read" and p.available()), None)
    if pattern is None:
        return
    for lay in LAYOUTS:
        reader = pattern.readers.get(lay.reader)
        if reader is not None:
            access = places.access(lay.data, Tier("folder"))()
            reader(Run(workload, access, cfg.threads))
            access.close()


def tiers_of(cfg: BenchConfig) -> list[Tier]:
    return [Tier("folder"), Tier("s3"), *(Tier.of_latency(ms, bandwidth_mbps=cfg.bandwidth_mbps)
                                          for ms in cfg.latencies_ms)]


def checks(cells: list[Cell]) -> dict[str, Any]:
    """Per pattern: do all layouts and tiers give the same answer (checksums within 1e-6 relative)?"""
    out = {}
    for key in dict.fromkeys(c.pattern for c in cells):
        sums = [(c.layout, c.tier, c.reps[0].result) for c in cells if c.pattern == key and c.reps]
        values = [(lay, tier, r.get("checksum")) for lay, tier, r in sums if r.get("checksum") == r.get("checksum")]
        if PATTERNS[key].kind != "read" or not values:
            continue
        ref = values[0][2]
        worst = max(abs(v - ref) / max(abs(ref), 1e-12) for _, _, v in values)
        out[key] = {"reference": ref, "max_relative_difference": worst, "agree": worst < 1e-6,
                    "cells": len(values)}
    return out


def environment() -> dict[str, Any]:
    import rasterio

    pkgs = ("zarr", "numcodecs", "xarray", "dask", "s3fs", "rasterio", "odc-stac", "moto", "numpy")
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "cpus": os.cpu_count(), "gdal": rasterio.__gdal_version__,
            "packages": {p: version(p) for p in pkgs}}


def run(cfg: BenchConfig, work: Path, *, region: SynthResult | None = None, log: Log = print) -> dict[str, Any]:
    """Run everything ``cfg`` asks for in the scratch folder ``work``; the raw results. ``region``: an
    already generated synthetic region to use instead of generating one of ``cfg.size_km``."""
    work = work.absolute()  # items name their files by absolute paths, and odc-stac needs absolute roots
    fix_allocator()
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, t0: float) -> float:
        phases[name] = time.perf_counter() - t0
        log(f"[{time.perf_counter() - started:6.1f} s] {name} done ({phases[name]:.1f} s)")
        return time.perf_counter()

    t = time.perf_counter()
    if region is None:
        log(f"generating a {cfg.size_km:g} x {cfg.size_km:g} km region ...")
        region = generate(work / "source", SynthConfig.demo(size_m=cfg.size_km * 1000, seed=cfg.seed))
    region = dataclasses.replace(region, out_dir=region.out_dir.absolute())
    t = phase("generate", t)
    workload = Workload.prepare(region, work / "items", appends=cfg.appends, bands=cfg.bands)
    wanted = [PATTERNS[k] for k in (cfg.patterns or PATTERNS)]
    skipped = {p.key: f"needs {p.requires}" for p in wanted if not p.available()}
    tiers = tiers_of(cfg)
    cells: list[Cell] = []
    with BenchStorage() as storage, quiet_s3(), warnings.catch_warnings():
        for category in (NotGeoreferencedWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)  # odc-geo/rasterio noise from the COG readers
        measured = any(p.kind == "write" for p in wanted)
        if measured:
            log("ingest and appends (they build the cube):")
        cube, cells = build_cube(cfg, storage, region, workload, work, measured=measured, log=log)
        t = phase("ingest and appends" if measured else "ingest", t)
        workload = workload.with_chip_grid(cube)
        for p in wanted:
            if p.prepare is not None and p.available():
                p.prepare(workload, cube)
        copies = layouts.derive(region, cube, work)
        t = phase("layouts", t)
        places = Places(storage, copies)
        t = phase("upload", t)
        warm_up(wanted, places, workload, cfg)
        gc.freeze()  # everything so far lives to the end: keep it out of the per-repetition collections
        for pattern in (p for p in wanted if p.kind == "read" and p.available()):
            log(f"{pattern.title}:")
            for tier in tiers:
                cells += read_cells(pattern, tier, places, workload, cfg, log=log)
        t = phase("reads", t)
        sweep_result = sweep.run(cfg, region, workload, places, work, log=log) if cfg.sweep else None
        if cfg.sweep:
            t = phase("sweep", t)
    return {
        "config": cfg.to_dict(),
        "environment": environment(),
        "region": {"size_km": region.config.size_m[0] / 1000, "bbox": list(region.bbox), "tiles": list(region.tiles),
                   "season": [str(region.config.start), str(region.config.end)],
                   "s2_scenes": region.n_s2_scenes, "parcels": region.n_parcels},
        "workload": workload.describe(),
        "layouts": [{"key": lay.key, "title": lay.title, "description": lay.description,
                     **copies[lay.data].to_dict()} for lay in LAYOUTS],
        "tiers": [{"name": t.name, "description": t.describe()} for t in tiers],
        "patterns": [{"key": p.key, "title": p.title, "kind": p.kind, "note": p.note,
                      "skipped": skipped.get(p.key)} for p in wanted],
        "cells": [c.to_dict() for c in cells],
        "checks": checks(cells),
        "method": {"folder_zarr_reads": FOLDER_ZARR_READS, "append_rows": APPEND_ROWS, "s3_clients": S3_CLIENTS},
        "sweep": sweep_result,
        "phases_s": phases,
        "elapsed_s": time.perf_counter() - started,
    }
