"""Peak memory of the full-territory extraction as the territory grows past the work-unit block (issue 7).

Run: ``python -m benchmarks.extraction_memory [--sizes 10,20,30] [--work DIR] [--out DIR]``. For each
territory size (a synthetic Sentinel-2 region ingested with the default chunk layout into a local folder,
kept in ``--work`` and reused when there), cardcube's extraction of every parcel, date and band runs in a
fresh subprocess (``benchmarks.extraction``'s measurement: a warm-up, three timed runs) with the default
block (one shard, 1024 px) and with 256 px blocks; its peak RSS is reported. ``benchmarks.extraction``
measures speed against exactextract on territories smaller than one default block; this one shows what
memory does once the work units are whole blocks. Timings here are secondary (no side-by-side contender).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from itertools import pairwise
from pathlib import Path
from typing import Any

from benchmarks.extraction import SMALL_BLOCK, in_subprocess, parse_sizes, progress, save_report
from benchmarks.options import check_out

BLOCKS = (None, SMALL_BLOCK)  # the default block (the cube's shard side), and small blocks


def measure(size_km: float, work: Path) -> dict[str, Any]:
    """Generate and ingest one territory unless ``work`` holds it, then measure both block sizes."""
    from cardcube.synth import SynthConfig, generate
    from ingest.job import ingest

    source, cube = work / "source", work / "cube"
    if not (cube / "s2").exists():
        progress(f"{size_km:g} km: generating and ingesting the territory into {work} ...")
        region = generate(source, SynthConfig.demo(size_m=size_km * 1000, s1=False))
        ingest(region.items, cube, collection="s2", progress=False, catalog=False)
    for old in work.glob("extract-*"):  # an extraction found complete would only be resumed: no measurement
        shutil.rmtree(old)
    runs = {}
    for block in BLOCKS:
        kwargs = {"block": block} if block else {}
        r = in_subprocess("cardcube", cube=cube, parcels=source / "parcels.parquet",
                           out=work / f"extract-{block or 'default'}", **kwargs)
        runs[str(block or "default")] = {k: r[k] for k in ("peak_rss_mb", "seconds", "parcels_ok", "units", "chunks")}
    return {"size_km": size_km, "cores": os.cpu_count(), "runs": runs}


DEFAULT_SIZES = (10.0, 20.0, 30.0)


def command(results: list[dict[str, Any]]) -> str:
    """The command that repeats the run of ``results`` (``--work`` keeps the territories between runs)."""
    sizes = tuple(r["size_km"] for r in results)
    given = "" if sizes == DEFAULT_SIZES else " --sizes " + ",".join(f"{s:g}" for s in sizes)
    return f"python -m benchmarks.extraction_memory --work DIR{given}"


def report(results: list[dict[str, Any]]) -> str:
    cores = results[0].get("cores", 2)  # runs before 2026-12-02 did not record it: they ran on 2 cores
    every = "both" if cores == 2 else "all"
    lines = ["# Extraction memory as the territory grows", "",
             f"Machine: {cores} cores. `{command(results)}`: cardcube's extraction of every parcel, "
             f"date and band (S2, default chunk layout, local folder, threads on {every} cores), each run in a fresh "
             "process; peak RSS of that process. Seconds: median of 3 runs, each rasterising the label layer anew.",
             "", "| territory | parcels | units (default / 256 px) | peak RSS MB, default block (1024 px) | "
             "peak RSS MB, 256 px blocks | seconds, default / 256 px |", "|---|---|---|---|---|---|"]
    for r in results:
        d, s = r["runs"]["default"], r["runs"][str(SMALL_BLOCK)]
        lines.append(f"| {r['size_km']:g} x {r['size_km']:g} km | {d['parcels_ok']:,} | {d['units']} / {s['units']} | "
                     f"{d['peak_rss_mb']:.0f} | {s['peak_rss_mb']:.0f} | {d['seconds']:.1f} / {s['seconds']:.1f} |")

    def growth(a: dict[str, Any], b: dict[str, Any]) -> str:
        area = (b["size_km"] / a["size_km"]) ** 2
        up = {k: b["runs"][k]["peak_rss_mb"] / a["runs"][k]["peak_rss_mb"] for k in ("default", str(SMALL_BLOCK))}
        return (f"from {a['size_km']:g} to {b['size_km']:g} km ({area:.1f}x the area and the parcels) the peak grows "
                f"{up['default']:.2f}x with the default block and {up[str(SMALL_BLOCK)]:.2f}x with 256 px blocks")

    steps = "; ".join(growth(a, b) for a, b in pairwise(results))
    lines += ["", f"{steps[0].upper()}{steps[1:]}. A work unit holds one block of one time chunk for one group of "
              f"bands, so the peak is set by the block and the threads once a territory's units are whole blocks (a "
              f"10 km territory straddling shard edges has only parts of blocks); what still grows is per parcel "
              f"(the parcel table, the label layer's index, the status table)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.extraction_memory", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                   help="territory sides in km, at least two (default 10,20,30)")
    p.add_argument("--work", type=Path, required=True, help="folder for the regions and cubes (reused if there)")
    p.add_argument("--out", type=Path, default=None, help="folder for extraction-memory.md and .json")
    args = p.parse_args(argv)
    if len(args.sizes) < 2:  # the report is the growth of the peak from one size to the next
        p.error(f"--sizes {','.join(f'{s:g}' for s in args.sizes)}: give at least two territory sides, to compare "
                f"the peak memory of one with the next")
    if args.out is not None:
        check_out(p, args.out, names=("extraction-memory.md", "extraction-memory.json"))
    results = []
    for size in args.sizes:
        results.append(measure(size, args.work / f"{size:g}km"))
        print(json.dumps(results[-1]), flush=True)
    save_report(args.out, "extraction-memory", report, results)


if __name__ == "__main__":
    main()
