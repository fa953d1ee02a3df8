"""The REST service's trial of a posted parcel's buffer (:mod:`cube.geometry_trial`): what it adds to a POST, and
what it stops.

Run: ``python -m benchmarks.buffer_trial [--reps 9] [--out DIR]``. Fields of the synthetic landscape (the demo's
generator, seed 42: outlines as drawn, and densified to a vertex every metre as a finely digitised register has
them) in POSTs of 1, 40 and 1,000 parcels: the buffer of 5 m inwards in this process (what every POST does
where it reads) and the trial of it in a child process (what the service adds before), medians of ``--reps``
warm runs side by side. Then two outlines that fold back within the buffer: the time and peak memory their
buffer takes, unbounded, in a process of its own, and the time the trial takes to refuse them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from benchmarks.extraction import process_peak_mb, progress, rerender, save_report
from benchmarks.options import check_out
from cardcube.errors import RequestTooLargeError
from cardcube.option_types import whole_number
from cube.geometry_trial import LIMIT_MEMORY, LIMIT_SECONDS, TRIED_FROM, check_bufferable

STEM = "buffer-trial"
SIZES = (1, 40, 1000)  # parcels per POST (1,000: the service's limit)


def fields(count: int, *, densify: float | None) -> tuple[list[shapely.Polygon], str]:
    """The ``count`` largest fields of the demo's landscape (UTM 31N), densified to a vertex every ``densify``
    metres; and their CRS."""
    from cardcube.synth import SynthConfig
    from cardcube.synth.parcels import make_landscape
    from cardcube.synth.region import Region

    config = SynthConfig()
    parcels = make_landscape(np.random.default_rng(config.seed), Region.from_config(config),
                             mean_parcel_ha=config.mean_parcel_ha).parcels
    geoms = list(parcels.sort_values("area_ha", ascending=False).geometry[:count])
    return (list(shapely.segmentize(np.asarray(geoms), densify)) if densify else geoms), parcels.crs.to_string()


def folded(kind: str) -> shapely.Polygon:
    """A valid outline that folds back within a buffer of a few metres: a star of 1,000 spikes 450 m long, or a
    1 km square one edge of which has 10,000 teeth 1 m high."""
    if kind == "star":
        angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
        radii = np.where(np.arange(2000) % 2 == 0, 500.0, 50.0)
        return shapely.Polygon(np.c_[650_000 + radii * np.cos(angles), 5_800_000 + radii * np.sin(angles)])
    x = np.linspace(0, 1000, 10_001)
    edge = np.c_[650_000 + x, 5_800_000 + np.where(np.arange(x.size) % 2 == 0, 0.0, 1.0)]
    return shapely.Polygon(np.vstack([edge, [[651_000, 5_801_000], [650_000, 5_801_000]]]))


FOLDED = (("star", -100.0), ("teeth", -5.0))


def _median(run: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_fields(reps: int) -> list[dict[str, Any]]:
    rows = []
    for densify in (None, 1.0):
        for count in SIZES:
            geoms, crs = fields(count, densify=densify)
            ids = [str(i) for i in range(len(geoms))]
            array = np.asarray(geoms)
            check_bufferable(ids, geoms, crs, -5.0)  # warm: the fork server's start, once a process
            rows.append({"parcels": len(geoms), "densified": densify,
                         "vertices": int(shapely.get_num_coordinates(array).sum()),
                         "buffer_s": _median(lambda array=array: shapely.buffer(array, -5.0), reps),
                         "trial_s": _median(lambda ids=ids, geoms=geoms, crs=crs: check_bufferable(
                             ids, geoms, crs, -5.0), reps)})
            progress(f"{rows[-1]}")
    return rows


def measure_folded() -> list[dict[str, Any]]:
    rows = []
    for kind, distance in FOLDED:
        done = subprocess.run([sys.executable, "-m", "benchmarks.buffer_trial", "--unbounded", kind],
                              capture_output=True, text=True, check=True)
        seconds, peak = map(float, done.stdout.split())
        t0 = time.perf_counter()
        try:
            check_bufferable([kind], [folded(kind)], "EPSG:32631", distance)
            refused = ""
        except RequestTooLargeError as exc:
            refused = str(exc).split(" (the limits")[0].split(f"{kind} ", 1)[1]
        rows.append({"outline": kind, "vertices": int(shapely.get_num_coordinates(folded(kind))),
                     "buffer_m": distance, "unbounded_s": seconds, "unbounded_peak_mb": peak,
                     "trial_s": time.perf_counter() - t0, "trial": refused or "allowed"})
        progress(f"{rows[-1]}")
    return rows


def unbounded(kind: str) -> None:
    """In a process of its own: the buffer of ``kind``, its seconds and the peak RSS in MB on stdout."""
    geom, distance = folded(kind), dict(FOLDED)[kind]
    t0 = time.perf_counter()
    shapely.buffer(geom, distance)
    # its own peak: getrusage's ru_maxrss holds the RSS of the driver that started it (itself hundreds of MB)
    print(time.perf_counter() - t0, process_peak_mb())


def render(results: dict[str, Any]) -> str:
    lines = [
        "# The REST service's trial of a posted parcel's buffer",
        "",
        f"Machine: {results['cores']} cores. One run of `python -m benchmarks.buffer_trial`; medians of "
        f"{results['reps']} warm runs. The service tries each POST's buffer in a child process of "
        f"multiprocessing's fork server, stopped at {LIMIT_SECONDS:g} s or {LIMIT_MEMORY // 2**20} MiB, before "
        "it reads (`cube.geometry_trial`); the buffer itself is then done again where the parcels are read.",
        "",
        "## What the trial adds to a POST",
        "",
        "The demo's generator's largest fields (seed 42), as drawn and densified to a vertex a metre; buffer -5 m.",
        "",
        "| parcels | outlines | vertices | buffer in the process ms | trial ms | trial / buffer |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["fields"]:
        tried = r["vertices"] >= results["tried_from"]
        lines.append(f"| {r['parcels']:,} | {'a vertex a metre' if r['densified'] else 'as drawn'} | "
                     f"{r['vertices']:,} | {1000 * r['buffer_s']:.1f} | "
                     + (f"{1000 * r['trial_s']:.1f} | {r['trial_s'] / r['buffer_s']:.1f}x |" if tried else
                        f"not tried (under {results['tried_from']:,} vertices) | |"))
    lines += [
        "",
        "## What it stops",
        "",
        "| outline | vertices | buffer m | unbounded: s / peak RSS MB | trial s | trial's answer |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["folded"]:
        lines.append(f"| {r['outline']} | {r['vertices']:,} | {r['buffer_m']:g} | {r['unbounded_s']:.1f} / "
                     f"{r['unbounded_peak_mb']:.0f} | {r['trial_s']:.1f} | {r['trial']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.buffer_trial", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=whole_number(at_least=1), default=9, help="warm runs per cell (default 9)")
    p.add_argument("--out", type=Path, default=None, help="folder for buffer-trial.md and .json")
    p.add_argument("--from-json", type=Path, default=None, help="re-render the report of this buffer-trial.json")
    p.add_argument("--unbounded", choices=[k for k, _ in FOLDED], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.unbounded:
        return unbounded(args.unbounded)
    if args.from_json:
        rerender(p, args.from_json, args.out, STEM, render)
        return None
    if args.out:
        check_out(p, args.out, names=(f"{STEM}.md", f"{STEM}.json"))
    results = {"cores": os.cpu_count(), "reps": args.reps, "tried_from": TRIED_FROM,
               "fields": measure_fields(args.reps), "folded": measure_folded()}
    save_report(args.out, STEM, render, results)
    return None


if __name__ == "__main__":
    main()
