"""``python -m benchmarks``: the access-pattern benchmarks; writes ``<out>/<date>/report.md``, plots and JSON.

The default size finishes in under 10 minutes on 2 cores; ``--size large`` (or a side in km) runs the
same at scale. ``--from-json results.json`` re-renders a report from a run's raw results.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks import harness, report
from benchmarks.config import SIZES, BenchConfig, parse_size
from benchmarks.options import S3_SERVER, check_extra, check_out, own_s3_settings, read_json
from benchmarks.patterns import PATTERNS
from benchmarks.storage import Tier
from cardcube.spec import S2_L2A
from cube.indices import check_bands


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def config(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="default", help=f"{', '.join(SIZES)} or a side in km (default: default)")
    p.add_argument("--reps", type=int, default=3, help="cold repetitions per cell (default 3)")
    p.add_argument("--min-reps", type=int, default=None, help="repetitions every cell gets (default min(2, reps))")
    p.add_argument("--budget", type=float, default=5.0, help="seconds after which a cell stops repeating")
    p.add_argument("--threads", type=int, default=8, help="I/O threads for every reader (default 8)")
    p.add_argument("--latency", type=_floats, default=(20.0,), help="ms per request of the latency tiers, > 0 "
                   "(default 20; e.g. 20,50; the s3 tier has none)")
    p.add_argument("--bandwidth", type=float, default=100.0, help="MB/s per response on latency tiers (0: none)")
    p.add_argument("--patterns", type=_names, default=None, help="comma-separated pattern keys (default all)")
    p.add_argument("--bands", type=_names, default=("B04", "B08", "NDVI"),
                   help="what a parcel season asks for (default B04,B08,NDVI; 'all' for every band)")
    p.add_argument("--sweep", type=lambda t: tuple(s for s in t.split(";") if s), default=None,
                   help='chunk shapes "time=16,space=128,shard_space=1024;..." ("" for no sweep)')
    p.add_argument("--ingest-tiers", type=_names, default=None, help="tiers of the initial ingest (default folder)")
    p.add_argument("--append-tiers", type=_names, default=None, help="tiers of the appends (default folder,s3-20ms)")
    p.add_argument("--sweep-tiers", type=_names, default=None, help="tiers of the chunk sweep (default s3-20ms)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="reports go to OUT/DATE/")
    p.add_argument("--date", default=None, help="the report folder's name (default today)")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder, new or empty, kept after the run (default a temporary one, removed)")
    p.add_argument("--from-json", type=Path, default=None, help="re-render the report of this results.json")
    args = p.parse_args(argv)
    args.results = None
    if args.from_json is None:
        check_extra(p, *S3_SERVER, "odc.stac")
    if args.from_json is not None:
        args.results = read_json(p, args.from_json)
        if not (isinstance(args.results, dict) and {"config", "cells"} <= args.results.keys()):
            p.error(f"--from-json {args.from_json}: not the results.json of a `python -m benchmarks` run")
    if args.work is not None and args.work.is_dir() and any(args.work.iterdir()):
        # an earlier run's cubes would turn the measured ingest into a no-op (every scene already committed)
        p.error(f"--work {args.work}: must be new or empty")
    try:
        cfg = BenchConfig(**_settings(args))
    except ValueError as exc:  # bad sizes, shapes, patterns, tiers or bands: one line, before any work
        p.error(str(exc))
    # where the report goes, checked now: a bad folder found after the run lost every figure
    out = args.from_json.parent if args.from_json is not None else cfg.report_dir
    check_out(p, out, names=("results.json", "report.md", *report.FIGURES.values()),
              given=None if args.from_json is not None else args.out)
    return cfg, args


def _settings(args: argparse.Namespace) -> dict:
    """The :class:`BenchConfig` arguments of the command line, checked (ValueError names the bad one)."""
    size, km = parse_size(args.size)
    if args.patterns is not None:
        unknown = [k for k in args.patterns if k not in PATTERNS]
        if unknown:
            raise ValueError(f"--patterns: unknown {', '.join(unknown)}; known: {', '.join(PATTERNS)}")
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads}: every reader needs at least 1 I/O thread")
    if not all(math.isfinite(v) and v > 0 for v in args.latency):
        # 0 made a second plain S3 tier, and the report's round trips of no latency a ZeroDivisionError after the run
        raise ValueError(f"--latency {','.join(f'{v:g}' for v in args.latency)}: give milliseconds > 0 per request "
                         f"(the s3 tier reads without added latency in every run)")
    if not (math.isfinite(args.bandwidth) and args.bandwidth >= 0):
        raise ValueError(f"--bandwidth {args.bandwidth:g}: give MB/s >= 0 (0: no cap)")
    for flag in ("ingest_tiers", "append_tiers", "sweep_tiers"):
        for name in getattr(args, flag) or ():
            Tier.parse(name)
    if args.sweep != () and args.sweep_tiers == ():
        raise ValueError("--sweep-tiers: the chunk sweep needs at least one tier (or --sweep \"\" for no sweep)")
    bands = args.bands if args.bands == ("all",) else tuple(check_bands(args.bands, S2_L2A.band_names,
                                                                        statistics=True))
    kw = dict(size=size, size_km=km, reps=args.reps, min_reps=args.min_reps or min(2, args.reps),
              cell_budget_s=args.budget, threads=args.threads, latencies_ms=args.latency,
              bandwidth_mbps=args.bandwidth or None, patterns=args.patterns, bands=bands, out=args.out)
    if args.sweep is not None:
        kw["sweep"] = args.sweep
    if args.ingest_tiers is not None:
        kw["ingest_tiers"] = args.ingest_tiers
    if args.append_tiers is not None:
        kw["append_tiers"] = args.append_tiers
    if args.sweep_tiers is not None:
        kw["sweep_tiers"] = args.sweep_tiers
    if args.date:
        kw["date"] = args.date
    return kw


class Stopped(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``) during a run, raised where Ctrl-C would be: it killed the run outright, its
    scratch folder (the region, every layout's copy) left in the temporary folder."""


def _stopped(signum: int, frame: object) -> None:
    raise Stopped()


def main(argv: list[str] | None = None) -> Path:
    cfg, args = config(argv)
    if args.from_json is None and (cfg.report_dir / "results.json").exists():
        # a second run of the day, or a --date of a committed report, replaced that run's figures and report
        print(f"python -m benchmarks: error: --out {args.out}: {cfg.report_dir} already holds the report of a run "
              f"(results.json); give another --date or --out (--from-json {cfg.report_dir / 'results.json'} renders "
              f"that report again)", file=sys.stderr)
        raise SystemExit(2)
    if args.from_json:
        results = args.results
        out = args.from_json.parent
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="cardcube-bench-"))
        former = signal.signal(signal.SIGTERM, _stopped)  # unwinds as Ctrl-C: S3 server stopped, scratch removed
        try:
            with own_s3_settings():
                results = harness.run(cfg, work)
        except KeyboardInterrupt as exc:  # a run of minutes stopped: one line, not a traceback from deep in a reader
            print(f"python -m benchmarks: stopped ({'SIGTERM' if isinstance(exc, Stopped) else 'Ctrl-C'}) before the "
                  f"end of the run: no report written to {cfg.report_dir}", file=sys.stderr)
            raise SystemExit(128 + (signal.SIGTERM if isinstance(exc, Stopped) else signal.SIGINT)) from None
        finally:
            signal.signal(signal.SIGTERM, former)
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
        out = cfg.report_dir
    path = report.write(results, out, rendered=args.from_json is not None)
    print()
    print(report.render(results))
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    main()
