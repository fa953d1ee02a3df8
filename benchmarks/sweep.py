"""The chunk-shape sweep: the time-first sharded layout at several (time, space, shard_space) shapes.

Each shape, the default included, is a real cube ingested at once from the same scenes by
:func:`ingest.job.ingest` (so the hot buffer holds what it would hold: with ``time=32`` and 49 dates,
17 dates stay one-per-chunk), uploaded to S3 and read with the time-series and chip patterns, all
shapes side by side. The trade-off: longer time blocks and larger
patches mean fewer requests for a season, but more bytes for a small parcel or a single date.

The recommendation is mechanical, so the report can be re-derived from the JSON: on the slowest S3
tier swept, the geometric mean over the patterns of each shape's median latency relative to the
shipped default; the default is kept unless another shape is more than 10 % faster on that score.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import layouts
from benchmarks.config import BenchConfig
from benchmarks.layouts import Layout
from benchmarks.patterns import PATTERNS, Workload
from benchmarks.storage import Tier
from cardcube.spec import ChunkLayout
from cardcube.synth import SynthResult

if TYPE_CHECKING:
    from benchmarks.harness import Places

PATTERN_KEYS = ("parcel-small", "parcel-large", "chip-1", "chip-10")
KEEP_MARGIN = 0.10  # another shape must beat the default by more than this to replace it


def slug(chunks: ChunkLayout) -> str:
    return f"t{chunks.time}-s{chunks.space}-sh{chunks.shard_space}"


def run(cfg: BenchConfig, region: SynthResult, workload: Workload, places: Places, work: Path, *,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Ingest and upload every shape of ``cfg.sweep``, then read them side by side; figures and recommendation."""
    from benchmarks.harness import read_cells

    tiers = [Tier.parse(n, bandwidth_mbps=cfg.bandwidth_mbps) for n in cfg.sweep_tiers]
    shapes, lays = [], []
    for text in cfg.sweep:
        chunks = ChunkLayout.parse(text)
        key = f"sweep-{slug(chunks)}"
        t0 = time.perf_counter()  # every shape, the default too, ingested the same way: all dates at once
        res = layouts.ingest_cube(region.items, work / key, chunks=chunks, catalog=False)  # reads route by tile
        ingest_s = time.perf_counter() - t0
        os.sync()
        places.add(layouts.data_copy(key, work / key))
        log(f"sweep: ingested {text} in {ingest_s:.1f} s")
        copy = places.copies[key]
        lays.append(Layout(slug(chunks), text, "zarr", key, "time-first sharded"))
        shapes.append({"label": text, "slug": slug(chunks), "chunks": chunks.to_dict(),
                       "default": chunks == ChunkLayout(), "objects": copy.objects, "bytes": copy.bytes,
                       "ingest_s": ingest_s, "write_amplification": res.write_amplification, "cells": []})
    for pk in PATTERN_KEYS:  # all shapes side by side, as the main matrix measures layouts
        log(f"sweep {pk}:")
        for tier in tiers:
            for cell in read_cells(PATTERNS[pk], tier, places, workload, cfg, layout_set=tuple(lays),
                                   reps=cfg.sweep_reps, log=log):
                next(s for s in shapes if s["slug"] == cell.layout)["cells"].append(cell.to_dict())
    return {"tiers": [t.name for t in tiers], "patterns": list(PATTERN_KEYS), "shapes": shapes,
            "recommendation": recommend(shapes, scoring_tier(tiers).name)}


def scoring_tier(tiers: Sequence[Tier]) -> Tier:
    """The tier the shapes are scored on: the slowest swept (the most latency; the last given of equals)."""
    return sorted(tiers, key=lambda t: t.latency_ms)[-1]


def median_of(shape: dict[str, Any], pattern: str, tier: str) -> float | None:
    for c in shape["cells"]:
        if c["pattern"] == pattern and c["tier"] == tier and c["summary"]["n"]:
            return c["summary"]["median_s"]
    return None


def recommend(shapes: list[dict[str, Any]], tier: str) -> dict[str, Any]:
    """Score each shape (geometric mean of latency relative to the default on ``tier``) and pick one."""
    default = next((s for s in shapes if s["default"]), shapes[0])
    scores = {}
    for s in shapes:
        ratios = []
        for p in PATTERN_KEYS:
            mine, ref = median_of(s, p, tier), median_of(default, p, tier)
            if mine and ref:
                ratios.append(mine / ref)
        scores[s["label"]] = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    ranked = sorted((v, k) for k, v in scores.items() if v is not None)
    if not ranked:  # no shape was read on ``tier`` (every cell failed): keep the default, say nothing was scored
        return {"tier": tier, "scores": scores, "best": None, "best_score": None, "choice": default["label"],
                "keeps_default": True, "margin": KEEP_MARGIN}
    best_score, best = ranked[0]
    keep = best == default["label"] or best_score > 1 - KEEP_MARGIN
    return {"tier": tier, "scores": scores, "best": best, "best_score": best_score,
            "choice": default["label"] if keep else best, "keeps_default": keep, "margin": KEEP_MARGIN}
