"""Adding a date to a full-territory extraction (``extract --update``) against extracting the territory again.

Run: ``python -m benchmarks.extraction_update [--sizes 10] [--out DIR]``. For each territory size (a synthetic
Sentinel-2 region as in :mod:`benchmarks.extraction`), the cube is ingested with the default chunk layout into
a local folder without the scenes of its last date. Then, in a fresh subprocess (``benchmarks.extraction``'s
``--measure update``, warmed by a 16-parcel extraction): a whole extraction of that version (it also stores the
parcels' label layer), the last date ingested (the cube's next version), and three times, alternately: a copy
of that extraction updated to the new version (``update=True``: only the new date is read) and a whole
extraction of the new version, both with the label layer stored. Medians of the three; warm page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.extraction import REPEATS, in_subprocess, parse_sizes, progress, rerender, save_report
from benchmarks.options import check_out

DEFAULT_SIZES = (10.0,)


def measure(size_km: float, work: Path, *, region: Any = None, repeats: int = REPEATS) -> dict[str, Any]:
    """Generate (unless ``region`` is given) and ingest one territory without its last date; measure the update."""
    from cardcube.synth import SynthConfig, generate
    from cardcube.synth.stac import read_features, write_features
    from ingest.job import ingest

    if region is None:
        progress(f"{size_km:g} km: generating the territory ...")
        region = generate(work / "source", SynthConfig.demo(size_m=size_km * 1000, s1=False))
    features = read_features(region.items, "sentinel-2-l2a")
    last = features[-1]["properties"]["datetime"][:10]
    held = [f for f in features if f["properties"]["datetime"][:10] == last]
    root = Path(region.items).parent
    absolute = [{**f, "assets": {k: {**a, "href": str(root / a["href"])} for k, a in f["assets"].items()}}
                for f in features]  # item files of their own in ``work``: the scenes' hrefs made absolute
    initial = write_features([f for f, g in zip(absolute, features, strict=True) if g not in held],
                             work / "items-initial.json")
    added = write_features([f for f, g in zip(absolute, features, strict=True) if g in held], work / "items-added.json")
    progress(f"{size_km:g} km: ingesting all but its last date ({last}) ...")
    ingest(initial, work / "cube", collection="s2", progress=False, catalog=False)
    figures = in_subprocess("update", cube=work / "cube", parcels=region.parcels, items=added,
                             out=work / "extract", repeats=repeats)
    return {"size_km": size_km, "cores": os.cpu_count(), "added_date": last, "added_scenes": len(held),
            "repeats": repeats, **figures}


def command(results: list[dict[str, Any]]) -> str:
    """The command that repeats the run of ``results`` (its sizes when not the default)."""
    sizes = tuple(r["size_km"] for r in results)
    given = "" if sizes == DEFAULT_SIZES else " --sizes " + ",".join(f"{s:g}" for s in sizes)
    return f"python -m benchmarks.extraction_update{given}"


def report(results: list[dict[str, Any]]) -> str:
    cores, reps = results[0]["cores"], results[0]["repeats"]
    every = "both" if cores == 2 else "all"
    timed = f"medians of {reps} passes, update and whole alternating" if reps > 1 else "one pass each"
    lines = ["# Adding a date to an extraction (`--update`) against extracting again", "",
             f"Machine: {cores} cores. Every figure below comes from one run of `{command(results)}`: a synthetic "
             f"Sentinel-2 territory ingested (default chunk layout, local folder) without the scenes of its last "
             f"date, extracted whole (every parcel, date and band, 8 statistics, threads on {every} cores), the last "
             f"date ingested, then, in the same warm process, that extraction updated to the new version "
             f"(`update=True`, on a copy each pass) and a whole extraction of the new version, both with the label "
             f"layer stored; {timed}; warm page cache.", "",
             "| territory | parcels | dates (before + added) | add one date: `--update` s | whole extraction s | "
             "whole / update | rows written: update / whole | chunks read: update / whole |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        u, w = r["update"], r["whole"]
        lines.append(f"| {r['size_km']:g} x {r['size_km']:g} km | {r['parcels_ok']:,} | {r['dates']} "
                     f"({r['dates_before']} + {r['dates'] - r['dates_before']}) | {u['seconds']:.2f} | "
                     f"{w['seconds']:.2f} | {w['seconds'] / u['seconds']:.1f}x | {u['rows']:,} / {w['rows']:,} | "
                     f"{u['chunks']:,} / {w['chunks']:,} |")
    runs = "; ".join(f"{r['size_km']:g} km: update " + ", ".join(f"{s:.2f}" for s in r["update"]["seconds_runs"])
                     + " s, whole " + ", ".join(f"{s:.2f}" for s in r["whole"]["seconds_runs"]) + " s"
                     for r in results)
    big = results[-1]
    u, w = big["update"], big["whole"]
    lines += ["", f"Every pass: {runs}.", "",
              f"On the {big['size_km']:g} km territory the update read {u['chunks'] / w['chunks']:.0%} of the chunks a "
              f"whole extraction reads (a chunk holds up to {big['time_chunk']} dates and is read whole), wrote "
              f"{u['rows'] / w['rows']:.1%} of its rows, and took {u['seconds'] / w['seconds']:.0%} of its time."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.extraction_update", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES, help="territory sides in km (default 10)")
    p.add_argument("--out", type=Path, default=None, help="folder for extraction-update.md and .json")
    p.add_argument("--from-json", type=Path, default=None,
                   help="re-render extraction-update.md from an extraction-update.json")
    args = p.parse_args(argv)
    if args.from_json is not None:
        return rerender(p, args.from_json, args.out, "extraction-update", report)
    if args.out is not None:
        check_out(p, args.out, names=("extraction-update.md", "extraction-update.json"))
    results = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="cardcube-update-bench-") as tmp:
            results.append(measure(size, Path(tmp)))
        print(json.dumps({k: results[-1][k] for k in ("size_km", "dates", "update", "whole")}), flush=True)
    save_report(args.out, "extraction-update", report, results)
    return results


if __name__ == "__main__":
    main()
