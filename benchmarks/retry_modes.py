"""botocore's adaptive and standard retry modes against a throttling store: ``python -m benchmarks.retry_modes``.

cardcube's S3 client retried in botocore's adaptive mode until 2026-12-07: a client-side token bucket which, once a
throttling error is seen, limits the client's send rate and recovers slowly, where standard mode only backs off each
request (exponential, with jitter). An ingest sends many requests at once through one client, so a few ``SlowDown``
answers may slow all of them. This ingests the same small synthetic S2 region into a fresh prefix of moto's S3
server on loopback, through the proxy of :mod:`cardcube.testing.s3proxy` answering a seeded share of requests with
503 ``SlowDown``, once per retry mode and throttling rate, side by side (the modes alternate within each
repetition); then reads the season of a few parcels back (``parcel_timeseries``) under the same mode and rate. The
mode is set as a user sets it, ``AWS_RETRY_MODE``, with ``AWS_MAX_ATTEMPTS`` at cardcube's 9 tries (8 retries). Each
row: the median wall time, whether every run succeeded, the requests the proxy counted and the errors it injected
(of the median run). ``--out DIR`` keeps the report (``retry-modes.md``) and its figures (``retry-modes.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from unittest import mock

import geopandas as gpd

from benchmarks.extraction import save_report
from benchmarks.options import S3_SERVER, check_extra, check_out, own_s3_settings, repeat_command
from cardcube.option_types import number, whole_number
from cardcube.spec import cube_spec
from cardcube.synth import SynthConfig, generate
from cardcube.synth.stac import read_features, write_features
from cardcube.testing.s3proxy import S3Proxy, start_s3_proxy
from cardcube.testing.s3server import start_s3_server
from cube.timeseries import parcel_timeseries
from ingest.job import ingest

MODES = ("adaptive", "standard")
ATTEMPTS = 9  # AWS_MAX_ATTEMPTS counts the first try, as cardcube's own config (total_max_attempts 9)
BUCKET = "retries"


def retry_mode(mode: str) -> AbstractContextManager:
    """Within the block, botocore's retries as a user sets them: ``AWS_RETRY_MODE=mode``, ``AWS_MAX_ATTEMPTS``."""
    return mock.patch.dict(os.environ, AWS_RETRY_MODE=mode, AWS_MAX_ATTEMPTS=str(ATTEMPTS))


def _timed(proxy: S3Proxy, work: Any) -> dict[str, Any]:
    """One run of ``work()``: its seconds, success (or error) and the proxy's counts."""
    before, start = proxy.snapshot(), time.perf_counter()
    error = None
    try:
        work()
    except Exception as exc:  # a run that gives up is a figure of the table, not the end of the benchmark
        error = f"{type(exc).__name__}: {exc}"[:300]
    sent = proxy.snapshot() - before
    return {"seconds": time.perf_counter() - start, "ok": error is None, "error": error, "requests": sent.total,
            "injected": sent.faults}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of ``runs``: the median seconds, every run's success, the counts of the run nearest the median."""
    seconds = statistics.median(r["seconds"] for r in runs)
    mid = min(runs, key=lambda r: abs(r["seconds"] - seconds))
    return {"seconds": seconds, "runs_s": [r["seconds"] for r in runs], "ok": all(r["ok"] for r in runs),
            "errors": [r["error"] for r in runs if r["error"]], "requests": mid["requests"],
            "injected": mid["injected"]}


def measure(rates: Sequence[float], *, size_km: float = 1.0, repeats: int = 2, parcels: int = 5, seed: int = 0,
            scenes: int | None = None, modes: Sequence[str] = MODES, work: Path) -> dict[str, Any]:
    """Per throttling rate and retry mode, the ingest's and the parcel read's median runs (see the module), as
    ``rows``; the ``scenes`` ingested (the region's first ``scenes``, or all)."""
    region = generate(work / "source", SynthConfig.tiny(size_m=(size_km * 1000, size_km * 1000), seed=seed))
    features = read_features(region.items, cube_spec("s2").source_collection)[:scenes]
    items = write_features(features, region.items.parent / "ingested.json")
    chosen = gpd.read_parquet(region.parcels).head(parcels)
    runs: dict[tuple[float, str, str], list[dict]] = {}
    with start_s3_server(buckets=[BUCKET]) as server, start_s3_proxy(server.endpoint_url) as proxy:
        options = proxy.storage_options(skip_instance_cache=True)  # a new client, and mode, every store
        # untimed: the process's one-off start-up costs (imports, thread pools) are no mode's
        ingest(items, f"s3://{BUCKET}/warm-up", collection="s2", storage_options=options, progress=False,
               catalog=False)
        parcel_timeseries(f"s3://{BUCKET}/warm-up", chosen, bands=["B04", "B08"], storage_options=options)
        for rep in range(repeats):
            for rate in rates:
                for mode in modes if rep % 2 == 0 else modes[::-1]:  # neither mode always first
                    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
                    proxy.fail_randomly(rate, seed=seed + rep)
                    with retry_mode(mode):
                        ran = _timed(proxy, lambda u=url: ingest(items, u, collection="s2",
                                                                 storage_options=options, progress=False,
                                                                 catalog=False))
                        runs.setdefault((rate, mode, "ingest"), []).append(ran)
                        if ran["ok"]:
                            read = _timed(proxy, lambda u=url: parcel_timeseries(u, chosen, bands=["B04", "B08"],
                                                                                 storage_options=options))
                            runs.setdefault((rate, mode, "read"), []).append(read)
                    proxy.clear_faults()
    rows = [{"rate": rate, "mode": mode, "step": step, **_median_run(rs)} for (rate, mode, step), rs in runs.items()]
    return {"scenes": len(features), "rows": rows}


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate and step: adaptive's median seconds over standard's."""
    by = {(r["rate"], r["step"], r["mode"]): r for r in rows}
    out = []
    for (rate, step, mode), row in by.items():
        other = by.get((rate, step, "standard"))
        if mode == "adaptive" and other is not None:
            out.append({"rate": rate, "step": step, "adaptive_over_standard": row["seconds"] / other["seconds"]})
    return out


def table(rows: Sequence[dict[str, Any]]) -> str:
    ratio = {(r["rate"], r["step"]): r["adaptive_over_standard"] for r in ratios(rows)}
    lines = ["| throttled | step | mode | time (median) | runs | all succeeded | requests | injected SlowDown | "
             "adaptive / standard |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["step"] != "ingest", r["rate"], r["mode"])):
        shown = f"{ratio[(r['rate'], r['step'])]:.2f}x" if r["mode"] == "adaptive" and (r["rate"], r["step"]) in ratio \
            else ""
        lines.append(f"| {r['rate']:.0%} | {r['step']} | {r['mode']} | {r['seconds']:.1f} s | "
                     f"{', '.join(f'{s:.1f}' for s in r['runs_s'])} | {'yes' if r['ok'] else 'no'} | {r['requests']} | "
                     f"{r['injected']} | {shown} |")
    return "\n".join(lines)


DEFAULTS = {"rates": "0,0.02,0.1", "size_km": 1.0, "repeats": 2, "parcels": 5}


def command(results: dict[str, Any]) -> str:
    """The command that repeats the run of ``results`` (its settings when not the defaults)."""
    given = {"rates": ",".join(f"{r:g}" for r in results["rates"]), "size_km": results["size_km"],
             "repeats": results["repeats"], "parcels": results["parcels"]}
    flags = {"rates": "--rates", "size_km": "--size-km", "repeats": "--repeats", "parcels": "--parcels"}
    return repeat_command("benchmarks.retry_modes", given, flags, DEFAULTS)


def report(results: dict[str, Any]) -> str:
    env = results["environment"]
    return "\n".join([
        "# botocore's adaptive and standard retry modes against a throttling store", "",
        f"Machine: {env['cpus']} CPUs ({env['system']} {env['machine']}, Python {env['python']}); load average "
        f"{results['load_average']:.1f} at the end. Every figure below comes from one run of `{command(results)}` on "
        f"{results['date']}: an ingest of a {results['size_km']:g} x {results['size_km']:g} km synthetic S2 region "
        f"({results['scenes']} scenes) into a fresh prefix of moto's S3 server on loopback, through a proxy answering "
        f"each request with 503 SlowDown at the rate given (seeded), then `parcel_timeseries` of "
        f"{results['parcels']} parcels (B04, B08) from that cube at the same rate. The retry mode is set as a user "
        f"sets it, `AWS_RETRY_MODE`, with `AWS_MAX_ATTEMPTS={ATTEMPTS}` (cardcube's 8 retries); s3fs's own retries "
        f"are on top, as always. {results['repeats']} repetitions, the modes alternating; time: the median; "
        f"requests and injected errors: of the run nearest the median.", "", table(results["rows"]), "",
        *([f"Errors: {'; '.join(dict.fromkeys(e for r in results['rows'] for e in r['errors']))}", ""]
          if any(r["errors"] for r in results["rows"]) else [])]) + "\n"


def _rates(text: str) -> tuple[float, ...]:
    one = number("a share of requests", at_least=0)
    values = tuple(one(v.strip()) for v in text.split(",") if v.strip())
    if not values or any(v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected shares below 1, comma-separated (e.g. 0,0.1), got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retry_modes", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for retry-modes.md and .json")
    parser.add_argument("--rates", type=_rates, default=_rates(DEFAULTS["rates"]),
                        help=f"shares of requests answered SlowDown, comma-separated (default {DEFAULTS['rates']})")
    parser.add_argument("--size-km", type=number("a side in km", at_least=0.4), default=DEFAULTS["size_km"],
                        help=f"side of the synthetic region (default {DEFAULTS['size_km']:g})")
    parser.add_argument("--repeats", type=whole_number(at_least=1), default=DEFAULTS["repeats"],
                        help=f"runs per mode and rate, the median reported (default {DEFAULTS['repeats']})")
    parser.add_argument("--parcels", type=whole_number(at_least=1), default=DEFAULTS["parcels"],
                        help=f"parcels read back (default {DEFAULTS['parcels']})")
    args = parser.parse_args(argv)
    if args.out is not None:  # before the run: a bad folder found after it lost every figure
        check_out(parser, args.out, names=("retry-modes.md", "retry-modes.json"))
    check_extra(parser, *S3_SERVER)
    from benchmarks.harness import environment

    started = time.perf_counter()
    with own_s3_settings(), tempfile.TemporaryDirectory(prefix="cardcube-retry-bench-") as tmp:
        measured = measure(args.rates, size_km=args.size_km, repeats=args.repeats, parcels=args.parcels,
                           work=Path(tmp))
    results = {"rates": list(args.rates), "size_km": args.size_km, "repeats": args.repeats, "parcels": args.parcels,
               **measured, "ratios": ratios(measured["rows"]), "load_average": os.getloadavg()[0],
               "elapsed_s": time.perf_counter() - started, "date": dt.date.today().isoformat(),
               "environment": environment()}
    save_report(args.out, "retry-modes", report, results)
    return results


if __name__ == "__main__":
    main()
