"""The REST service under concurrent load on S3: what ``--reads`` (requests reading the cube at once) costs and buys.

Run: ``python -m benchmarks.service_load [--reads 1,4,16] [--clients 1,8] [--requests 3] [--parcels 40]
[--latency 20] [--bandwidth 100] [--out DIR]``. A synthetic Sentinel-2 region (by default the tests' tiny one,
2 x 2 km) is ingested with the default chunk layout, uploaded to moto's S3 server and read through the
benchmarks' proxy adding ``--latency`` ms per request (:mod:`benchmarks.storage`), as :mod:`benchmarks.service`.
For each ``--reads`` value one ``cardcube serve --reads N --read-wait 600`` process (the console command and
uvicorn, over TCP) is started and warmed with one request; then, for each ``--clients`` C, C client threads each
POST ``--requests`` time series of ``--parcels`` parcels (every band; the parcel batches taken in turn from the
region's parcels), while a probe asks ``GET /collections/s2`` (which reads nothing) every 0.25 s and the server's
resident memory is sampled every 50 ms. Figures: answers per second over the load's wall time, each POST's
seconds (median and slowest), the probe's slowest answer, the server's peak resident memory above its level
before the load, and the answers other than 200 (with a wait of 600 s none is expected: the turns queue).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.extraction import progress, rerender, save_report
from benchmarks.options import S3_SERVER, add_s3_options, check_extra, check_out, own_s3_settings, repeat_command
from cardcube.option_types import whole_number

Log = Callable[[str], None]
DEFAULTS = {"reads": (1, 4, 16), "clients": (1, 8), "requests": 3, "parcels": 40, "latency_ms": 20.0,
            "bandwidth_mbps": 100.0}
PROBE_EVERY_S = 0.25
SAMPLE_EVERY_S = 0.05


def _batches(region: Any, size: int) -> list[dict[str, Any]]:
    """The region's parcels as GeoJSON FeatureCollections of ``size`` parcels each (WGS84, by id)."""
    import json

    import geopandas as gpd

    parcels = gpd.read_parquet(region.parcels).sort_values("parcel_id").to_crs("EPSG:4326")
    parcels = parcels[["parcel_id", "geometry"]]
    return [json.loads(parcels.iloc[i:i + size].to_json()) for i in range(0, len(parcels) - size + 1, size)]


class _Sampler:
    """Samples a process's resident memory, and the answer time of a route that reads nothing, in the background."""

    def __init__(self, pid: int, probe: Callable[[], float]) -> None:
        import psutil

        self._process, self._probe = psutil.Process(pid), probe
        self.peak_rss, self.probe_s = 0, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._ask, daemon=True)]

    def __enter__(self) -> _Sampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def _ask(self) -> None:
        while not self._stop.wait(PROBE_EVERY_S):
            self.probe_s.append(self._probe())


def _load(server: Any, batches: list[dict[str, Any]], clients: int, requests: int) -> dict[str, Any]:
    """``clients`` threads POSTing ``requests`` batches each; the figures of :mod:`benchmarks.service_load`."""
    import httpx
    import psutil

    def probe() -> float:
        t0 = time.perf_counter()
        server.http.get("/collections/s2", timeout=600)
        return time.perf_counter() - t0

    def client(k: int) -> list[tuple[float, int, int]]:
        done = []
        with httpx.Client(base_url=server.base, timeout=900) as http:
            for i in range(requests):
                body = batches[(k * requests + i) % len(batches)]
                t0 = time.perf_counter()
                r = http.post("/collections/s2/timeseries", json=body, params={"format": "parquet"})
                done.append((time.perf_counter() - t0, r.status_code, len(r.content)))
        return done

    idle = psutil.Process(server.proc.pid).memory_info().rss
    with _Sampler(server.proc.pid, probe) as sampler:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = [a for done in pool.map(client, range(clients)) for a in done]
        wall = time.perf_counter() - t0
    seconds = [s for s, status, _ in answers if status == 200]
    return {"clients": clients, "requests": len(answers), "wall_s": wall, "answers_per_s": len(seconds) / wall,
            "median_s": statistics.median(seconds) if seconds else None, "slowest_s": max(seconds, default=None),
            "not_200": sorted(status for _, status, _ in answers if status != 200),
            "bytes": sum(n for *_, n in answers), "probe_slowest_s": max(sampler.probe_s, default=None),
            "probes": len(sampler.probe_s), "idle_rss_mb": idle / 1e6,
            "peak_rss_above_idle_mb": max(0, sampler.peak_rss - idle) / 1e6}


def run(reads: tuple[int, ...], clients: tuple[int, ...], requests: int, parcels: int, latency_ms: float,
        bandwidth_mbps: float | None, work: Path, *, region: Any = None, log: Log = progress) -> dict[str, Any]:
    """Generate (unless ``region`` is given), ingest, upload and serve one region; load it at every setting."""
    from benchmarks.harness import environment
    from benchmarks.storage import BenchStorage, Tier, quiet_s3
    from cardcube.synth import SynthConfig, generate
    from cardcube.testing.served import ServedCommand
    from ingest.job import ingest

    started = time.perf_counter()
    if region is None:
        log("generating a 2 x 2 km region ...")
        region = generate(work / "source", SynthConfig.tiny(s1=False))
    log("ingesting it (S2, default chunk layout) ...")
    ingest(region.items, work / "cube", collection="s2", progress=False, catalog=False)
    batches = _batches(region, parcels)
    if not batches:
        raise ValueError(f"the region holds fewer than {parcels} parcels (--parcels)")
    tier = Tier.of_latency(latency_ms, bandwidth_mbps=bandwidth_mbps)
    cells = []
    with BenchStorage() as storage, quiet_s3():
        url = storage.upload(work / "cube", "cube")
        storage.use(tier)
        env = storage.server.environment(storage.proxy.endpoint_url)
        for n in reads:
            log(f"cardcube serve --reads {n} on {tier.describe()} ...")
            server = ServedCommand(["serve", "--cube", url, "--refresh", "3600", "--reads", str(n),
                                    "--read-wait", "600"], env=env, timeout=120)
            try:
                server.http.post("/collections/s2/timeseries", json=batches[0], timeout=900).raise_for_status()
                for c in clients:
                    log(f"  {c} client(s) x {requests} POST(s) of {parcels} parcels ...")
                    cells.append({"reads": n, **_load(server, batches, c, requests)})
            finally:
                server.close()
    return {"reads": list(reads), "clients": list(clients), "requests": requests, "parcels": parcels,
            "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
            "tier": {"name": tier.name, "latency_ms": latency_ms, "bandwidth_mbps": bandwidth_mbps,
                     "description": tier.describe()},
            "cells": cells, "environment": environment(), "elapsed_s": time.perf_counter() - started}


def command(results: dict[str, Any]) -> str:
    """The command that repeats the run of ``results`` (its settings when not the defaults)."""
    given = {"reads": tuple(results["reads"]), "clients": tuple(results["clients"]), "requests": results["requests"],
             "parcels": results["parcels"], "latency_ms": results["tier"]["latency_ms"],
             "bandwidth_mbps": results["tier"]["bandwidth_mbps"] or 0.0}
    flags = {"reads": "--reads", "clients": "--clients", "requests": "--requests", "parcels": "--parcels",
             "latency_ms": "--latency", "bandwidth_mbps": "--bandwidth"}
    return repeat_command("benchmarks.service_load", given, flags, DEFAULTS)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(results: dict[str, Any]) -> str:
    tier = results["tier"]
    lines = ["# The REST service under concurrent load on S3", "",
             f"Machine: {results['cores']} cores. Every figure below comes from one run of `{command(results)}`: the "
             f"tests' tiny synthetic Sentinel-2 region (2 x 2 km) in a bucket of moto's S3 server on loopback, read "
             f"through a proxy adding {tier['description'].removeprefix('S3 + ')}. For each `--reads N` one `cardcube "
             f"serve --reads N --read-wait 600` process served the load after one warm-up request: C clients each "
             f"POSTing {results['requests']} time series of {results['parcels']} parcels (every band, Parquet), "
             f"while a probe asked `GET /collections/s2` (which reads nothing) every {PROBE_EVERY_S:g} s and the "
             f"server's resident memory was sampled every {SAMPLE_EVERY_S * 1000:.0f} ms.", "",
             "| reads at once | clients | answers/s | s per POST: median / slowest | probe's slowest s | "
             "server peak RSS above its idle MB | answers other than 200 |", "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        lines.append(f"| {c['reads']} | {c['clients']} | {c['answers_per_s']:.2f} | {_s(c['median_s'])} / "
                     f"{_s(c['slowest_s'])} | {_s(c['probe_slowest_s'])} | {c['peak_rss_above_idle_mb']:.0f} | "
                     f"{', '.join(map(str, c['not_200'])) or 'none'} |")
    most = max(results["clients"])
    loaded = [c for c in results["cells"] if c["clients"] == most]
    best = max(loaded, key=lambda c: c["answers_per_s"])
    memory = ", ".join(f"{c['peak_rss_above_idle_mb']:.0f} MB with {c['reads']}" for c in loaded)
    probes = [c["probe_slowest_s"] for c in loaded if c["probe_slowest_s"] is not None]
    lines += ["", f"With {most} clients, `--reads {best['reads']}` answered the most ({best['answers_per_s']:.2f} a "
              f"second); the server's memory above its idle level peaked at {memory} turn(s) at once. The probe "
              "(a route that reads nothing, asked meanwhile) answered within "
              f"{max(probes, default=0):.2f} s at worst: requests waiting their turn hold no thread."]
    return "\n".join(lines) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers >= 1, comma-separated")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.service_load", description=__doc__.splitlines()[0])
    p.add_argument("--reads", type=_ints, default=DEFAULTS["reads"], help="--reads of each server (default 1,4,16)")
    p.add_argument("--clients", type=_ints, default=DEFAULTS["clients"], help="concurrent clients (default 1,8)")
    p.add_argument("--requests", type=whole_number(at_least=1), default=DEFAULTS["requests"],
                   help="POSTs per client (default 3)")
    p.add_argument("--parcels", type=whole_number(at_least=1), default=DEFAULTS["parcels"],
                   help="parcels per POST (default 40)")
    add_s3_options(p, latency_ms=DEFAULTS["latency_ms"], bandwidth_mbps=DEFAULTS["bandwidth_mbps"])
    args = p.parse_args(argv)
    if args.from_json is not None:
        return rerender(p, args.from_json, args.out, "service-load", report)
    check_extra(p, *S3_SERVER, "httpx")
    if args.out is not None:
        check_out(p, args.out, names=("service-load.md", "service-load.json"))
    with tempfile.TemporaryDirectory(prefix="cardcube-service-load-") as tmp, own_s3_settings():
        results = run(args.reads, args.clients, args.requests, args.parcels, args.latency, args.bandwidth or None,
                      Path(tmp))
    save_report(args.out, "service-load", report, results)
    return results


if __name__ == "__main__":
    main()
