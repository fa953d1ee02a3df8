"""The REST service's array cache on S3: each route with and without it, through ``cardcube serve`` over HTTP.

Run: ``python -m benchmarks.service [--size-km 2] [--reps 9] [--latency 20] [--bandwidth 100] [--out DIR]``. A
synthetic Sentinel-2 region (by default the tests' tiny one: 2 x 2 km, May to July 2024) is ingested with the
default chunk layout into a folder and uploaded to moto's S3 server, which is read through the benchmarks'
counting proxy adding ``--latency`` ms per request and capping each response at ``--bandwidth`` MB/s
(:mod:`benchmarks.storage`). Two ``cardcube serve`` processes (the console command and uvicorn, as a user
starts them, reached over TCP) serve it side by side: one as shipped, keeping the arrays it has opened and
the shard indexes it has read (:class:`cube.tile_arrays.ArrayCache`), one with ``--array-cache 0``. Both run
with ``--refresh 3600``, so no lookup of the latest version falls among the timed requests.

Each server is first asked every route once (a warm-up parcel, untimed: imports, the cube version, and for
the cached one its arrays). Then, for each of ``--reps`` parcels (the largest ones wholly inside the region),
each route is asked of both servers in turn, the one asked first alternating. Times are the client's, medians
of the ``--reps`` requests; request counts are the proxy's, per request. The two answers to each request are
compared byte for byte.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.extraction import progress, rerender, save_report
from benchmarks.options import S3_SERVER, add_s3_options, check_extra, check_out, own_s3_settings, repeat_command
from cardcube.option_types import whole_number

Log = Callable[[str], None]
# key, name, title, path under /collections/s2/parcels/{id}/, query (``{date}``: a date of the season)
ROUTES = (
    ("season", "a season", "a parcel's season of B04 (`timeseries?bands=B04`)", "timeseries", {"bands": "B04"}),
    ("chip", "a chip", "a chip of one date (`chip.png?date=...`, 128 px RGB)", "chip.png", {"date": "{date}"}),
    ("sheet", "a season sheet", "a season sheet of every date (`season.png`, 64 px panels)", "season.png", {}),
)
SERVERS = (("on", ()), ("off", ("--array-cache", "0")))  # the service as shipped, and without the cache
DEFAULTS = {"size_km": 2.0, "reps": 9, "latency_ms": 20.0, "bandwidth_mbps": 100.0}
REFRESH = 3600  # s: the latest version is looked up at start and not again during the run


def _parcels(region: Any, n: int) -> list[Any]:
    """The ``n`` largest parcels wholly inside the region (by area, then id: the same ones every run)."""
    import geopandas as gpd
    from shapely.geometry import box

    from cardcube.grid import TileGrid

    parcels = gpd.read_parquet(region.parcels).to_crs(TileGrid.from_id(region.tiles[0]).crs)
    inside = parcels[parcels.within(box(*region.bbox))]
    by_area = inside.assign(area=inside.area).sort_values(["area", "parcel_id"], ascending=[False, True])
    if len(by_area) < n:
        raise ValueError(f"the region holds {len(by_area)} parcels wholly inside it; {n} are needed")
    return [p.item() if hasattr(p, "item") else p for p in by_area.parcel_id.iloc[:n]]


def _ask(server: Any, proxy: Any, pid: Any, route: tuple, date: str) -> dict[str, Any]:
    """One request of ``route`` for parcel ``pid``: the client's seconds, the proxy's counts, the answer."""
    *_, path, query = route
    params = {k: v.format(date=date) for k, v in query.items()}
    before = proxy.snapshot()
    t0 = time.perf_counter()
    r = server.http.get(f"/collections/s2/parcels/{pid}/{path}", params=params)
    seconds = time.perf_counter() - t0
    counted = proxy.snapshot() - before
    if r.status_code != 200:
        raise RuntimeError(f"{path} of parcel {pid}: HTTP {r.status_code}: {r.text[:500]}")
    return {"seconds": seconds, "requests": counted.total, "GET": counted.count("GET"),
            "HEAD": counted.count("HEAD"), "LIST": counted.count("LIST"), "bytes_read": counted.response_bytes,
            "body": r.content}


def run(size_km: float, reps: int, latency_ms: float, bandwidth_mbps: float | None, work: Path, *,
        region: Any = None, log: Log = progress) -> dict[str, Any]:
    """Generate (unless ``region`` is given), ingest, upload and serve one region; measure every route."""
    from benchmarks.harness import environment
    from benchmarks.storage import BenchStorage, Tier, quiet_s3
    from cardcube.synth import SynthConfig, generate
    from cardcube.synth.stac import read_features
    from cardcube.testing.served import ServedCommand
    from ingest.job import ingest

    started = time.perf_counter()
    if region is None:
        log(f"generating a {size_km:g} x {size_km:g} km region ...")
        region = generate(work / "source", SynthConfig.tiny(size_m=(size_km * 1000, size_km * 1000), s1=False))
    dates = sorted({f["properties"]["datetime"][:10] for f in read_features(region.items, "sentinel-2-l2a")})
    log("ingesting it (S2, default chunk layout) ...")
    ingest(region.items, work / "cube", collection="s2", progress=False, catalog=False)
    warm, *measured = _parcels(region, reps + 1)
    tier = Tier.of_latency(latency_ms, bandwidth_mbps=bandwidth_mbps)
    with BenchStorage() as storage, quiet_s3():
        url = storage.upload(work / "cube", "cube")
        storage.use(tier)
        env = storage.server.environment(storage.proxy.endpoint_url)

        def start(extra: tuple[str, ...]) -> Any:
            return ServedCommand(["serve", "--cube", url, "--parcels", region.parcels, "--refresh", str(REFRESH),
                                  *extra], env=env, timeout=120)

        log(f"starting two `cardcube serve` on {tier.describe()} ...")
        with ThreadPoolExecutor(len(SERVERS)) as pool:
            futures = {key: pool.submit(start, extra) for key, extra in SERVERS}
        servers = {key: f.result() for key, f in futures.items() if f.exception() is None}
        try:
            for f in futures.values():  # one did not start: stop the other too (finally), then say why
                if f.exception() is not None:
                    raise f.exception()
            log(f"warm-up (parcel {warm}), then {reps} parcel(s), every route of both servers ...")
            date = dates[len(dates) // 2]
            load = os.getloadavg()[0]  # kept in the JSON: this run's own preparation is in it too
            for route in ROUTES:
                for server in servers.values():
                    _ask(server, storage.proxy, warm, route, date)
            figures = {key: {s: [] for s, _ in SERVERS} for key, *_ in ROUTES}
            identical = {key: True for key, *_ in ROUTES}
            for i, pid in enumerate(measured):
                for route in ROUTES:
                    order = [s for s, _ in SERVERS][:: 1 if i % 2 == 0 else -1]
                    answers = {s: _ask(servers[s], storage.proxy, pid, route, date) for s in order}
                    identical[route[0]] &= answers["on"].pop("body") == answers["off"].pop("body")
                    for s, answer in answers.items():
                        figures[route[0]][s].append(answer)
        finally:
            for server in servers.values():
                server.close()
    routes = {}
    for key, name, title, path, query in ROUTES:
        per = {s: {k: [a[k] for a in figures[key][s]] for k in ("seconds", "requests", "GET", "HEAD", "LIST",
                                                                 "bytes_read")} for s, _ in SERVERS}
        for s in per:
            per[s]["median_s"] = statistics.median(per[s]["seconds"])
            per[s]["median_requests"] = statistics.median(per[s]["requests"])
        routes[key] = {"name": name, "title": title, "path": path, "query": query, "identical": identical[key],
                       "without_cache": per["off"], "with_cache": per["on"],
                       "speedup": per["off"]["median_s"] / per["on"]["median_s"]}
    return {"size_km": size_km, "reps": reps, "cores": os.cpu_count(), "load_average": load,
            "tier": {"name": tier.name, "latency_ms": latency_ms, "bandwidth_mbps": bandwidth_mbps,
                     "description": tier.describe()},
            "dates": len(dates), "chip_date": date, "parcels": [str(p) for p in measured], "warm_up_parcel": str(warm),
            "refresh_s": REFRESH, "routes": routes, "environment": environment(),
            "elapsed_s": time.perf_counter() - started}


def command(results: dict[str, Any]) -> str:
    """The command that repeats the run of ``results`` (its settings when not the defaults)."""
    given = {"size_km": results["size_km"], "reps": results["reps"], "latency_ms": results["tier"]["latency_ms"],
             "bandwidth_mbps": results["tier"]["bandwidth_mbps"] or 0.0}
    flags = {"size_km": "--size-km", "reps": "--reps", "latency_ms": "--latency", "bandwidth_mbps": "--bandwidth"}
    return repeat_command("benchmarks.service", given, flags, DEFAULTS)


def _count(values: list[int]) -> str:
    """Requests per request: one number when every request made as many, else the median and the range."""
    if min(values) == max(values):
        return f"{values[0]}"
    return f"{statistics.median(values):g} ({min(values)}-{max(values)})"


def _saved(route: dict[str, Any]) -> float:
    """S3 requests the cache saves a request of ``route`` (medians)."""
    return route["without_cache"]["median_requests"] - route["with_cache"]["median_requests"]


def _ms(figures: dict[str, Any]) -> str:
    """The median time in ms, with the range of the requests when there were several."""
    times = figures["seconds"]
    spread = f" ({min(times) * 1000:.0f}-{max(times) * 1000:.0f})" if len(times) > 1 else ""
    return f"{figures['median_s'] * 1000:.0f}{spread}"


def report(results: dict[str, Any]) -> str:
    tier, reps = results["tier"], results["reps"]
    lines = ["# The REST service's array cache on S3", "",
             f"Machine: {results['cores']} cores. Every figure below comes from one run of `{command(results)}`: a "
             f"{results['size_km']:g} x {results['size_km']:g} km synthetic Sentinel-2 region ({results['dates']} "
             f"dates, default chunk layout) in a bucket of moto's S3 server on loopback, read through a proxy adding "
             f"{tier['description'].removeprefix('S3 + ')}. Two `cardcube serve` processes (uvicorn, reached over "
             f"HTTP) serve it side by side: one as shipped, keeping the arrays it has opened and the shard indexes "
             f"it has read (`cube.tile_arrays.ArrayCache`), one with `--array-cache 0`; both with `--refresh "
             f"{results['refresh_s']}`, so no lookup of the latest version falls among the timed requests.", "",
             f"Each server was first asked every route once (parcel {results['warm_up_parcel']}, untimed). Then each "
             f"route was asked of both servers in turn for {reps} parcel{'s' if reps > 1 else ''} (the largest wholly "
             f"inside the region), the one asked first alternating. Times are the client's, "
             + (f"medians of the {reps} requests (in brackets, the fastest and the slowest)" if reps > 1 else
                "one request each")
             + "; S3 requests (GET, "
             "HEAD and LIST, as the proxy counted them) and MB read are per request (one number when every request "
             "made as many; else the median and the range).",
             "", "| request | ms without the cache | ms with it | speedup | S3 requests without / with | "
             "MB read without / with | same answer |", "|---|---|---|---|---|---|---|"]
    for r in results["routes"].values():
        off, on = r["without_cache"], r["with_cache"]
        mb = [statistics.median(x["bytes_read"]) / 1e6 for x in (off, on)]
        lines.append(f"| {r['title']} | {_ms(off)} | {_ms(on)} | "
                     f"{r['speedup']:.2f}x | {_count(off['requests'])} / {_count(on['requests'])} | "
                     f"{mb[0]:.2f} / {mb[1]:.2f} | {'yes' if r['identical'] else '**no**'} |")
    saved = [f"{_saved(r):g} fewer for {r['name']}" for r in results["routes"].values()]
    same = all(r["identical"] for r in results["routes"].values())
    lines += ["", "Without the cache, each request fetches its arrays' metadata (`zarr.json`) and the index of every "
              "shard it reads before the chunks it needs; with it, the chunks only, but for the index of a shard no "
              f"earlier request read (medians: {', '.join(saved)}). "
              + ("Both servers gave the same answer, byte for byte, to every request." if same else
                 "**The two servers' answers differed** (the routes marked above).")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.service", description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=DEFAULTS["size_km"],
                   help="side of the synthetic region in km (default 2: the tests' tiny region)")
    p.add_argument("--reps", type=whole_number(at_least=1), default=DEFAULTS["reps"],
                   help="parcels timed per route (default 9)")
    add_s3_options(p, latency_ms=DEFAULTS["latency_ms"], bandwidth_mbps=DEFAULTS["bandwidth_mbps"])
    args = p.parse_args(argv)
    if args.from_json is not None:
        return rerender(p, args.from_json, args.out, "service", report)
    check_extra(p, *S3_SERVER, "httpx")
    if not 0.4 <= args.size_km <= 10:
        p.error(f"--size-km {args.size_km:g}: give a side from 0.4 to 10 km (a tiny cube is what this measures)")
    if args.out is not None:
        check_out(p, args.out, names=("service.md", "service.json"))
    with tempfile.TemporaryDirectory(prefix="cardcube-service-bench-") as tmp, own_s3_settings():
        results = run(args.size_km, args.reps, args.latency, args.bandwidth or None, Path(tmp))
    save_report(args.out, "service", report, results)
    return results


if __name__ == "__main__":
    main()
