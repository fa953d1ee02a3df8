"""Ingest throughput and write amplification: an initial load, and a season of one-date appends.

Run: ``python -m benchmarks.ingest_throughput [--size-km 10] [--collection s2] [--out DIR|FILE.json]``.
Prints scenes/min, MB/s of source read, bytes written and write amplification (bytes written / compressed
bytes of the new data) for (1) loading the whole season at once and (2) appending it one acquisition at a
time into a fresh cube, cumulative over the season. Targets (issue 4): <= 1.5x initial, <= 3x cumulative.
Then the appended cube's stored size against the initial load's, before and after ``expire`` drops the
versions of the season and the hot-buffer copies only they read. Single passes, timed in one process, with
the process's CPU time (all its threads) beside each wall time and the load average at the end: on a shared
machine the wall time moves with the others' load (a 4 km initial load took 4.7 s on 2026-12-01, and 38 to 57 s
on 2026-12-07 at a load average near 12 for 10.3 to 10.7 s of CPU), the CPU time far less. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from benchmarks.options import check_out, write_whole
from cardcube.option_types import number
from cardcube.spec import cube_spec
from cardcube.synth import SynthConfig, generate
from cardcube.synth.stac import read_features, write_features
from ingest.expire import expire
from ingest.job import ingest


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cpu() -> float:
    """CPU seconds of this process so far, every thread's, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(size_km: float, collection: str, work: Path) -> dict:
    """Generate a region of ``size_km`` in ``work``, load it at once and date by date; the figures."""
    _progress(f"generating a {size_km:g} x {size_km:g} km region ...")
    region = generate(work / "source", SynthConfig.demo(size_m=size_km * 1000))
    feats = read_features(region.items, cube_spec(collection).source_collection)
    _progress(f"initial load of {len(feats)} scenes ...")
    t0, c0 = time.perf_counter(), _cpu()
    initial = ingest(region.items, work / "initial", collection=collection, progress=False, catalog=False)
    initial_s, initial_cpu = time.perf_counter() - t0, _cpu() - c0

    written = new = 0
    appends_s = appends_cpu = 0.0
    for i, feature in enumerate(feats):
        one = write_features([feature], region.items.parent / f"append-{i:03d}.json")
        t0, c0 = time.perf_counter(), _cpu()
        r = ingest(one, work / "appended", collection=collection, progress=False, catalog=False)
        appends_s, appends_cpu = appends_s + time.perf_counter() - t0, appends_cpu + _cpu() - c0
        written += r.bytes_written
        new += r.bytes_new_data
        if (i + 1) % 10 == 0 or i + 1 == len(feats):
            _progress(f"appended {i + 1} of {len(feats)} scenes one by one ({appends_s:.0f} s)")
    stored_before = _stored_bytes(work / "appended")
    t0 = time.perf_counter()
    # the data alone against the initial load's: a merge of the details objects (one per append) would commit a
    # version naming a new one, those merged staying with the version before until it expires in turn
    expired = expire(work / "appended", collection, older_than=timedelta(0), merge_over=None)
    expire_s = time.perf_counter() - t0
    mb = initial.source_bytes / 1e6
    return {
        "collection": collection, "size_km": size_km, "scenes": len(feats), "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "initial": {"seconds": initial_s, "cpu_seconds": initial_cpu,
                    "scenes_per_min": len(feats) / initial_s * 60, "source_MB": mb,
                    "MB_per_s": mb / initial_s, "written_MB": initial.bytes_written / 1e6,
                    "write_amplification": initial.write_amplification},
        "appends": {"seconds": appends_s, "cpu_seconds": appends_cpu, "scenes_per_min": len(feats) / appends_s * 60,
                    "written_MB": written / 1e6, "new_data_MB": new / 1e6, "write_amplification": written / new},
        "expire": {"seconds": expire_s, "versions_expired": len(expired.expired),
                   "initial_stored_MB": _stored_bytes(work / "initial") / 1e6,
                   "appended_stored_MB_before": stored_before / 1e6,
                   "appended_stored_MB_after": _stored_bytes(work / "appended") / 1e6},
    }


def _stored_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


DEFAULTS = {"size_km": 4.0, "collection": "s2"}
TARGETS = {"initial_write_amplification": 1.5, "appends_write_amplification": 3.0}  # at most (issue 4)


def command(size_km: float, collection: str) -> str:
    """The command that repeats a run (its settings when not the defaults; ``--out`` only keeps the figures)."""
    args = ["python -m benchmarks.ingest_throughput"]
    args += [f"--size-km {size_km:g}"] if size_km != DEFAULTS["size_km"] else []
    args += [f"--collection {collection}"] if collection != DEFAULTS["collection"] else []
    return " ".join(args)


def output_path(out: Path, collection: str, size_km: float) -> Path:
    """Where ``--out`` puts the JSON: the file itself if it ends in ``.json``, else
    ``ingest-<collection>-<size>km.json`` in that folder (as ``benchmarks/results/ingest-s2-4km.json``)."""
    return out if out.suffix == ".json" else out / f"ingest-{collection}-{size_km:g}km.json"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=number("a side in km", at_least=0.4), default=DEFAULTS["size_km"],
                   help="side of the synthetic region (default 4 km, at least 0.4)")
    p.add_argument("--collection", choices=("s2", "s1"), default=DEFAULTS["collection"])
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON: a FILE.json, or a folder "
                   "(ingest-<collection>-<size>km.json in it; created if missing)")
    args = p.parse_args(argv)
    out = output_path(args.out, args.collection, args.size_km) if args.out else None
    if out is not None:  # before the run, not after it: a bad folder must not cost the figures
        check_out(p, out.parent, names=(out.name,), given=args.out)
    with tempfile.TemporaryDirectory(prefix="cardcube-ingest-bench-") as tmp:
        result = run(args.size_km, args.collection, Path(tmp))
    from benchmarks.harness import environment

    result = {**result, "command": command(args.size_km, args.collection), "date": dt.date.today().isoformat(),
              "environment": environment(), "targets": TARGETS}
    if out is not None:  # the figures first, then the lines that say them
        out.parent.mkdir(parents=True, exist_ok=True)
        write_whole(out, json.dumps(result, indent=1))
    env = result["environment"]
    print(f"`{result['command']}`, {result['date']}, {env['cpus']} CPUs ({env['system']} {env['machine']}, "
          f"Python {env['python']})")
    i, a = result["initial"], result["appends"]
    print(f"{result['scenes']} {args.collection} scenes, {args.size_km:g} x {args.size_km:g} km; load average "
          f"{result['load_average']:.1f} at the end")
    print(f"initial load : {i['scenes_per_min']:7.1f} scenes/min  {i['MB_per_s']:6.1f} MB/s  "
          f"wrote {i['written_MB']:7.1f} MB  write amplification {i['write_amplification']:.2f}x  "
          f"({i['seconds']:.1f} s, {i['cpu_seconds']:.1f} s of CPU)")
    print(f"1-date appends: {a['scenes_per_min']:7.1f} scenes/min                wrote {a['written_MB']:7.1f} MB  "
          f"write amplification {a['write_amplification']:.2f}x cumulative over the season  "
          f"({a['seconds']:.1f} s, {a['cpu_seconds']:.1f} s of CPU)")
    e = result["expire"]
    print(f"stored        : initial load {e['initial_stored_MB']:.1f} MB; "
          f"appended {e['appended_stored_MB_before']:.1f} MB, "
          f"{e['appended_stored_MB_after']:.1f} MB after expiring {e['versions_expired']} versions "
          f"({e['seconds']:.1f} s)")
    if out is not None:
        print(f"figures: {out}")


if __name__ == "__main__":
    main()
