"""Full-territory extraction vs exactextract scene by scene over the source COGs (issue 7).

Run: ``python -m benchmarks.extraction [--sizes 5,10] [--scenes 4] [--out DIR]`` (``--from-json FILE``
re-renders the report of an earlier run). For each territory size
(a synthetic Sentinel-2 region, ingested with the default chunk layout into a local folder), on the same
machine and in one run, each measurement in a fresh subprocess so that its peak memory is its own:

1. **cardcube**: :func:`cube.extract.extract` of every parcel, date and band (10 bands, SCL cloud mask,
   SCL class counts, 8 statistics), threads on all cores, in a process warmed by a 16-parcel extraction
   (imports, compiled kernels: what exactextract's workers get too), timed three times (each run
   rasterising the label layer anew), then three more runs in that process that find it stored; in
   processes of their own, once with small blocks (memory), and once with count, mean, std, min and max
   only (what the percentiles cost).
2. **read+decompress**, the floor of any extraction from this cube, two ways, threads on all cores:
   *raw*: every stored chunk of every band read (one read per shard file) and decompressed with numcodecs,
   no Zarr library, no array assembly -- the physical limit; *zarr*: the same chunks through
   zarr-python (``Array[...]`` over each shard's stored chunks), what any Zarr reader pays today.
3. **exactextract**: the approach in use today, scene by scene: for each of ``--scenes`` scenes, the ten
   band COGs and every parcel through ``exactextract.exact_extract`` with the same statistics
   (count, mean, stdev, min, max, quantiles 0.25/0.5/0.75), in three set-ups: its default strategy
   (``feature-sequential``) in one process, its faster ``raster-sequential`` strategy in one process, and
   ``raster-sequential`` with one process per core (scenes are independent: the fair use of the machine).
   Its rate is per scene, so a few scenes measure it; the season total is that rate times the dates.
   exactextract gets no cloud mask (it would need a second pass over SCL), so it does slightly less work.

Bytes read are the process's own ``read()`` bytes (``psutil`` ``read_chars``, the same meter for all),
plus the store's own count for cardcube. Peak memory is the subprocess's peak RSS (cardcube's: of its timed
runs, before the passes under ``tracemalloc`` and through a counting store that only measure). All inputs are in
the page cache (warm), for every contender alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.options import check_extra, check_out, read_json, write_whole
from cardcube.option_types import whole_number

T = TypeVar("T")
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
EXACTEXTRACT_OPS = ("count", "mean", "stdev", "min", "max", "quantile(q=0.25)", "median", "quantile(q=0.75)")
NO_PERCENTILES = ("count", "mean", "std", "min", "max")  # the one-pass statistics: what percentiles cost
REPEATS = 3  # timed passes of each measurement (this machine's run-to-run noise is about 15 %): medians reported
STORED_REPEATS = 3  # runs that find the label layer stored, in the same warm process: their median is reported
SMALL_BLOCK = 256  # px: smaller than both territories, to show memory set by the block, not the territory
PHASES = ("read", "statistics", "write")  # an extraction's phases, as ExtractResult.phase_seconds names them
FULL_TILE = {"parcels": 500_000, "dates": 140, "cores": 16}  # a 100 x 100 km S2 tile, one year, S2A+S2B


def _io_read() -> int:
    import psutil

    return psutil.Process().io_counters().read_chars


def process_peak_mb() -> float:
    """This process's peak RSS since exec, in MB of 10^6 bytes, as the bytes read beside it (``VmHWM``, whose kB are
    KiB; ``ru_maxrss``, of ``getrusage`` or ``wait4``, holds the RSS of the process that started it, which it was a
    copy of until exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def _measure_cardcube(cube: str, parcels: str, out: str, *, block: int | None, count: bool,
                      stats: tuple[str, ...] | None = None, repeats: int = 0, traced: bool = False) -> dict[str, Any]:
    """One extraction in a warm process: a small extraction first loads the modules and the compiled
    kernels, as exactextract's workers are warmed on other scenes. The timed run reads the plain folder;
    ``repeats`` more runs in the same process find the label layer stored (their median and minimum: the
    steady state of a long extraction). With ``count``, one more run through a counting store gives
    requests and store bytes. ``stats``: a subset of the statistics (default all eight). With ``traced``,
    one more run under ``tracemalloc`` gives the peak of the allocations Python and numpy make (the working
    set, without the libraries' own pools and the allocator's retained pages that RSS also counts). Its peak RSS
    (``peak_rss_mb``) is taken before those two runs: tracemalloc's own records, and zarr's generic read path a
    counting store takes, are no part of an extraction as users run it."""
    import geopandas as gpd

    from cardcube.counting_store import CountingStore
    from cardcube.storage import open_store
    from cube.extract import extract
    from cube.stats import STATS

    stats = stats or STATS
    t0 = time.perf_counter()
    extract(gpd.read_parquet(parcels).iloc[:16], cube, f"{out}-warmup", block=block, stats=stats, progress=False)
    warmup = time.perf_counter() - t0
    runs = []
    for i in range(REPEATS):  # each run rasterises the parcels' label layer anew, as a first run does
        shutil.rmtree(Path(cube) / "_parcels", ignore_errors=True)
        io0, t0 = _io_read(), time.perf_counter()
        result = extract(parcels, cube, f"{out}-{i}", block=block, stats=stats, progress=False)
        runs.append((time.perf_counter() - t0, _io_read() - io0, result))
    seconds, bytes_read, result = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
    figures = {"seconds": seconds, "seconds_runs": [r[0] for r in runs], "bytes_read": bytes_read,
               "warmup_seconds": warmup, "parcels_ok": result.status["ok"], "rows": result.rows,
               "units": result.units, "chunks": result.chunks, "phase_seconds": dict(result.phase_seconds),
               "phase_cpu_seconds": dict(result.phase_cpu_seconds),
               "decoded_once": True}  # neighbouring units' shared chunks decoded once (cube.shared_chunks, 2026-12-06)
    again = []
    for i in range(repeats):
        t0 = time.perf_counter()
        extract(parcels, cube, f"{out}-again{i}", block=block, stats=stats, progress=False)
        again.append(time.perf_counter() - t0)
    if again:
        figures.update(stored_seconds=statistics.median(again), stored_seconds_min=min(again))
    figures["peak_rss_mb"] = process_peak_mb()  # the extraction's own, before the passes that only measure
    if traced:
        import tracemalloc

        tracemalloc.start()
        extract(parcels, cube, f"{out}-traced", block=block, stats=stats, progress=False)
        figures["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    if count:
        store = CountingStore(open_store(cube, read_only=True))
        extract(parcels, store, f"{out}-counted", block=block, progress=False)
        figures.update(store_bytes_read=store.counts.bytes_read, store_requests=sum(store.counts.requests.values()))
    return figures


def _measure_update(cube: str, parcels: str, items: str, out: str, repeats: int = REPEATS) -> dict[str, Any]:
    """What ``update=True`` costs against extracting again, side by side in one warm process (warmed as
    :func:`_measure_cardcube`): a whole extraction of the cube as it is (it also stores the label layer), then
    the scenes of ``items`` ingested (the cube's next version), then ``repeats`` times, alternately: a copy of
    that extraction updated to the new version, and a whole extraction of the new version (the label layer
    stored for both). Medians and every time; rows, files and chunks of each."""
    import geopandas as gpd

    from cube.extract import extract
    from ingest.job import ingest

    extract(gpd.read_parquet(parcels).iloc[:16], cube, f"{out}-warmup", progress=False)
    dates_before = _dates(cube)
    t0 = time.perf_counter()
    before = extract(parcels, cube, f"{out}-before", progress=False)
    first = time.perf_counter() - t0
    ingest(items, cube, collection="s2", progress=False, catalog=False)
    runs: dict[str, list[tuple[float, Any]]] = {"update": [], "whole": []}
    for i in range(repeats):
        shutil.copytree(f"{out}-before", f"{out}-update{i}")
        t0 = time.perf_counter()
        result = extract(parcels, cube, f"{out}-update{i}", update=True, progress=False)
        runs["update"].append((time.perf_counter() - t0, result))
        t0 = time.perf_counter()
        result = extract(parcels, cube, f"{out}-whole{i}", progress=False)
        runs["whole"].append((time.perf_counter() - t0, result))
    figures: dict[str, Any] = {"dates_before": dates_before, "dates": _dates(cube), "parcels_ok": before.status["ok"],
                               "time_chunk": _time_chunk(cube), "load_average": os.getloadavg()[0],
                               "first": {"seconds": first, "version": before.version, "rows": before.rows}}
    for key, done in runs.items():
        seconds, result = sorted(done, key=lambda r: r[0])[len(done) // 2]  # the median run
        figures[key] = {"seconds": seconds, "seconds_runs": [r[0] for r in done], "version": result.version,
                        "rows": result.rows, "units": result.units, "chunks": result.chunks,
                        "parcels_ok": result.status["ok"]}
    return figures


def _band_shards(cube: str) -> list[tuple[Path, dict[str, Any], list[Path]]]:
    """Every sharded 3-d band array of the cube folder (cold and hot), its metadata and its shard files."""
    out = []
    for meta_path in sorted(Path(cube).rglob("zarr.json")):
        meta = json.loads(meta_path.read_text())
        codecs = meta.get("codecs") or [{}]
        if meta.get("node_type") != "array" or len(meta["shape"]) != 3 or codecs[0].get("name") != "sharding_indexed":
            continue
        files = sorted(p for p in (meta_path.parent / "c").rglob("*") if p.is_file())
        if files:
            out.append((meta_path.parent, meta, files))
    return out


def _timed(run: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """``run()`` ``REPEATS`` times: its last result, and the median (``seconds``) and every time of the passes."""
    passes = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        result = run()
        passes.append(time.perf_counter() - t0)
    return result, {"seconds": statistics.median(passes), "seconds_runs": passes}


def _measure_read_raw(cube: str) -> dict[str, Any]:
    """Read every shard file once and decompress each stored inner chunk (numcodecs Blosc, after its crc32c),
    threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numcodecs
    import numpy as np

    jobs = []
    for _, meta, files in _band_shards(cube):
        shard = meta["codecs"][0]["configuration"]
        inner = shard["chunk_shape"]
        (blosc,) = [c["configuration"] for c in shard["codecs"] if c["name"] == "blosc"]
        codec = numcodecs.Blosc(cname=blosc["cname"], clevel=blosc["clevel"], blocksize=blosc["blocksize"],
                                shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc["shuffle"]])
        # each chunk's crc32c first, where it has one (ingest's since 2026-12-07): checked, as every reader does
        codecs = [numcodecs.CRC32C(), codec] if shard["codecs"][-1]["name"] == "crc32c" else [codec]
        n = int(np.prod([s // c for s, c in zip(meta["chunk_grid"]["configuration"]["chunk_shape"], inner,
                                                strict=True)]))
        jobs += [(f, codecs, n) for f in files]

    def chunk(codecs: list[Any], data: bytes) -> bytes:
        for codec in codecs:
            data = codec.decode(data)
        return data

    def decode(job: tuple[Path, list[Any], int]) -> tuple[int, int]:
        path, codecs, n = job
        blob = path.read_bytes()
        index = np.frombuffer(blob, dtype="<u8", count=2 * n, offset=len(blob) - 16 * n - 4).reshape(n, 2)
        sizes = [len(chunk(codecs, blob[o:o + k])) for o, k in index if o != 2**64 - 1]
        return sum(sizes), len(sizes)

    io0, cpu0 = _io_read(), time.process_time()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        done, times = _timed(lambda: list(pool.map(decode, jobs)))
    return {**times, "bytes_read": (_io_read() - io0) / REPEATS, "decoded_bytes": sum(d[0] for d in done),
            "chunks": sum(d[1] for d in done), "shards": len(jobs),
            "cpu_seconds": (time.process_time() - cpu0) / REPEATS}  # the threads' CPU, summed: as cardcube's phases


def _measure_read_zarr(cube: str) -> dict[str, Any]:
    """The same stored chunks through zarr-python: per shard, ``Array[...]`` over the box of its stored
    inner chunks (so no fill-value chunk is made up), threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import zarr

    jobs = []
    for folder, meta, files in _band_shards(cube):
        array = zarr.open_array(str(folder), mode="r")
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        inner = meta["codecs"][0]["configuration"]["chunk_shape"]
        grid = [s // c for s, c in zip(shard, inner, strict=True)]
        n = int(np.prod(grid))
        for f in files:
            blob_index = np.fromfile(f, dtype="<u8", count=2 * n, offset=f.stat().st_size - 16 * n - 4)
            present = np.argwhere(blob_index.reshape(*grid, 2)[..., 0] != 2**64 - 1)
            coords = [int(c) for c in f.relative_to(folder / "c").parts]
            lo = [c * s + p * i for c, s, p, i in zip(coords, shard, present.min(0), inner, strict=True)]
            hi = [min(c * s + (p + 1) * i, d) for c, s, p, i, d in
                  zip(coords, shard, present.max(0), inner, array.shape, strict=True)]
            jobs.append((array, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))))

    io0 = _io_read()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        nbytes, times = _timed(lambda: sum(pool.map(lambda job: job[0][job[1]].nbytes, jobs)))
    return {**times, "bytes_read": (_io_read() - io0) / REPEATS, "decoded_bytes": nbytes, "shards": len(jobs),
            "dates": _dates(cube)}


def _dates(cube: str) -> int:
    from cube.dataset import open_cube

    return open_cube(cube, "s2", bands=["B04"]).sizes["time"]


def _time_chunk(cube: str) -> int:
    """Dates per chunk of the cube's layout."""
    from cardcube.storage import open_store
    from cube.ledger import read_version

    return read_version(open_store(cube, read_only=True), "s2").spec.chunks.time


def _exactextract_scene(paths: list[str], parcels: str, strategy: str) -> dict[str, Any]:
    """One scene's ten bands, every parcel: this process's time, bytes read and peak RSS."""
    import geopandas as gpd
    from exactextract import exact_extract

    gdf = gpd.read_parquet(parcels)
    io0, t0 = _io_read(), time.perf_counter()
    frame = exact_extract(paths, gdf, list(EXACTEXTRACT_OPS), include_cols=["parcel_id"], output="pandas",
                          strategy=strategy)
    return {"seconds": time.perf_counter() - t0, "bytes_read": _io_read() - io0, "rows": len(frame),
            "parcels": len(gdf), "peak_rss_mb": process_peak_mb()}


def _measure_exactextract(items: str, parcels: str, scenes: int, strategy: str, processes: int) -> dict[str, Any]:
    """``scenes`` scenes spread over the season, on ``processes`` worker processes (wall time: the median of
    ``REPEATS`` passes)."""
    from concurrent.futures import ProcessPoolExecutor

    features = json.loads(Path(items).read_text())["features"]
    s2 = sorted((f for f in features if f["collection"] == "sentinel-2-l2a"), key=lambda f: f["properties"]["datetime"])
    step = max(1, len(s2) // scenes)
    chosen = s2[::step][:scenes]
    base = Path(items).parent
    jobs = [[str((base / f["assets"][b]["href"]).resolve()) for b in S2_BANDS] for f in chosen]
    warm = [[str((base / f["assets"][b]["href"]).resolve()) for b in S2_BANDS] for f in s2 if f not in chosen]
    with ProcessPoolExecutor(processes) as pool:  # warm up on other scenes: imports, not GDAL's block cache
        list(pool.map(_exactextract_scene, warm[:processes], [parcels] * processes, [strategy] * processes))
        # workers warm (imports done), as cardcube's threads are
        done, times = _timed(lambda: list(pool.map(_exactextract_scene, jobs, [parcels] * len(jobs),
                                                   [strategy] * len(jobs))))
    return {**times, "bytes_read": sum(d["bytes_read"] for d in done), "scenes": len(chosen),
            "parcels": done[0]["parcels"], "rows": sum(d["rows"] for d in done), "strategy": strategy,
            "processes": processes, "worker_peak_rss_mb": max(d["peak_rss_mb"] for d in done)}


def result_line(figures: dict[str, Any]) -> str:
    """A measurement's figures as the JSON line its subprocess prints, with the process's peak RSS unless the
    measurement took its own (before passes that only measure)."""
    return json.dumps({"peak_rss_mb": process_peak_mb(), **figures})


def progress(text: str) -> None:
    """One line on stderr, at once: a run takes minutes, and the report comes at its end."""
    print(text, file=sys.stderr, flush=True)


def in_subprocess(what: str, **kwargs: str) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its JSON result, with its peak RSS."""
    args = [sys.executable, "-m", "benchmarks.extraction", "--measure", what]
    for key, value in kwargs.items():
        args += [f"--{key}", str(value)]
    shown = ", ".join(f"{k}={kwargs[k]}" for k in ("block", "stats", "strategy", "processes") if k in kwargs)
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    progress(f"  {what}{f' ({shown})' if shown else ''}: {time.perf_counter() - t0:.0f} s")
    return json.loads(done.stdout.strip().splitlines()[-1])


EXACTEXTRACT_SETUPS = (  # key, strategy, processes (None: one per core)
    ("default", "feature-sequential", 1),
    ("raster_sequential", "raster-sequential", 1),
    ("all_cores", "raster-sequential", None),
)


def run_size(size_km: float, scenes: int, work: Path, cores: int) -> dict[str, Any]:
    """Generate, ingest and measure one territory."""
    from cardcube.synth import SynthConfig, generate
    from ingest.job import ingest

    progress(f"{size_km:g} km: generating and ingesting the territory ...")
    region = generate(work / "source", SynthConfig.demo(size_m=size_km * 1000, s1=False))
    cube = work / "cube"
    ingest(region.items, cube, collection="s2", progress=False, catalog=False)
    ours = in_subprocess("cardcube", cube=cube, parcels=region.parcels, out=work / "extract", count=1,
                          repeats=STORED_REPEATS)
    small = in_subprocess("cardcube", cube=cube, parcels=region.parcels, out=work / "extract-small",
                           block=SMALL_BLOCK, traced=1)
    moments = in_subprocess("cardcube", cube=cube, parcels=region.parcels, out=work / "extract-moments",
                             stats=",".join(NO_PERCENTILES), repeats=STORED_REPEATS)
    floors = {"raw": in_subprocess("read-raw", cube=cube), "zarr": in_subprocess("read-zarr", cube=cube)}
    theirs = {key: in_subprocess("exactextract", items=region.items, parcels=region.parcels, strategy=strategy,
                                  processes=procs or cores, scenes=max(scenes, 2 * (procs or cores)))
              for key, strategy, procs in EXACTEXTRACT_SETUPS}
    dates = floors["zarr"]["dates"]
    rates = {"cardcube": ours["parcels_ok"] * dates / ours["seconds"]}
    rates.update({f"exactextract_{k}": e["parcels"] * e["scenes"] / e["seconds"] for k, e in theirs.items()})
    return {
        "size_km": size_km, "parcels": theirs["default"]["parcels"], "parcels_ok": ours["parcels_ok"], "dates": dates,
        "bands": len(S2_BANDS), "cores": cores, "cardcube": ours,
        "cardcube_small_blocks": small, "cardcube_no_percentiles": moments,
        "read_decompress": floors, "exactextract": theirs, "parcel_dates_per_s": rates,
        "speedup_vs_exactextract": {k: rates["cardcube"] / rates[f"exactextract_{k}"] for k in theirs},
        "times_read_decompress": {k: ours["seconds"] / f["seconds"] for k, f in floors.items()},
    }


def full_tile_estimate(result: dict[str, Any]) -> dict[str, float]:
    """What the rates imply for a full tile on a bigger machine, scaling linearly with cores (an
    assumption: extraction units are independent, but 16 cores also need the I/O bandwidth to match)."""
    work = FULL_TILE["parcels"] * FULL_TILE["dates"]
    rates = result["parcel_dates_per_s"]
    per_core = {"cardcube": rates["cardcube"] / result["cores"],
                "exactextract": rates["exactextract_all_cores"] / result["cores"]}
    return {f"{k}_hours": work / (rate * FULL_TILE["cores"]) / 3600 for k, rate in per_core.items()}


def _medians(results: list[dict[str, Any]]) -> str:
    """How the times were taken: medians of repeated passes (runs since 2026-12-01), or single passes."""
    runs = results[0].get("cardcube", {}).get("seconds_runs")
    if not runs:
        return "Times are single passes."
    return (f"Times are medians of {len(runs)} passes (each contender alike; this machine's run-to-run noise is "
            f"about 15 %).")


NOISE = 0.15  # this machine's run-to-run noise, relative


def _noise(without: float, with_: float) -> str:
    """A note when a run without some work came out slower than the run with it: within this machine's noise, or
    beyond it (then the two times say nothing of what the work costs)."""
    if without < with_:
        return ""
    slower = without / with_ - 1
    if slower <= NOISE:
        return (f" (slower without them: {100 * slower:.0f} %, within this machine's run-to-run noise of "
                f"about {100 * NOISE:.0f} %)")
    return (f" (slower without them: {100 * slower:.0f} %, beyond this machine's run-to-run noise of about "
            f"{100 * NOISE:.0f} %: these two runs do not measure what the percentiles cost)")


def _stored(r: dict[str, Any], run: str = "cardcube") -> float:
    """Seconds of ``run`` with the label layer stored: the median of its repeats in one warm process (the
    run of 2026-11-25: cardcube once, in a process of its own)."""
    older = r.get("cardcube_layer_stored", {}).get("seconds", float("nan")) if run == "cardcube" else float("nan")
    return r.get(run, {}).get("stored_seconds", older)


DEFAULT_SIZES, DEFAULT_SCENES = (5.0, 10.0), 4


def command(results: list[dict[str, Any]]) -> str:
    """The command that repeats the run of ``results``: its sizes and exactextract's scenes when not the defaults
    (the scenes timed in one process are ``--scenes``)."""
    args = ["python -m benchmarks.extraction"]
    sizes = tuple(r["size_km"] for r in results)
    if sizes != DEFAULT_SIZES:
        args.append("--sizes " + ",".join(f"{s:g}" for s in sizes))
    scenes = results[0]["exactextract"]["default"]["scenes"]
    if scenes != DEFAULT_SCENES:
        args.append(f"--scenes {scenes}")
    return " ".join(args)


def report(results: list[dict[str, Any]]) -> str:
    cores = results[0]["cores"]
    lines = ["# Full-territory extraction vs exactextract per scene", "",
             f"Machine: {cores} cores. S2 cube with the default chunk layout on a local folder; {len(S2_BANDS)} "
             "bands, SCL cloud mask, 8 statistics per parcel, date and band. Every figure below comes from one "
             f"run of `{command(results)}`; every contender reads warm (page-cached) files. "
             f"{_medians(results)}", "",
             "## Throughput", "",
             "exactextract in three set-ups, each timed on its own scenes of the season: its default strategy "
             "(feature-sequential) in one process, its raster-sequential strategy in one process, and "
             f"raster-sequential in {cores} processes (one scene each at a time: the fair use of the machine, "
             "and the baseline of the targets).", "",
             "cardcube's time includes rasterising the parcels into the tile's label layer (each run anew); the "
             f"next column is the median of {STORED_REPEATS} more runs in the same process that find the layer "
             "stored (new dates of the same parcels; also the steady state of a warm process).", "",
             "| territory | parcels | dates | cardcube s | cardcube s, layer stored | cardcube parcel-dates/s | "
             "exactextract parcel-dates/s: default / raster-seq / all cores | speedup: default / raster-seq / "
             "**all cores** |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rate, up = r["parcel_dates_per_s"], r["speedup_vs_exactextract"]
        lines.append(
            f"| {r['size_km']:g} x {r['size_km']:g} km | {r['parcels_ok']} | {r['dates']} | "
            f"{r['cardcube']['seconds']:.2f} | {_stored(r):.2f} | "
            f"{rate['cardcube']:,.0f} | "
            f"{rate['exactextract_default']:,.0f} / {rate['exactextract_raster_sequential']:,.0f} / "
            f"{rate['exactextract_all_cores']:,.0f} | {up['default']:.0f}x / {up['raster_sequential']:.1f}x / "
            f"**{up['all_cores']:.1f}x** |")
    lines += ["", "## Against the floor: reading and decompressing the same chunks", "",
              "*raw*: each shard file read once, each stored chunk decompressed with numcodecs, nothing else "
              "(the physical limit); *zarr*: the same chunks through zarr-python. cardcube reads with "
              "`cube.shard_reader` (the needed byte ranges of each shard, decoded in the calling thread), "
              "and spends the rest of its time in the statistics and the Parquet output (next section).", "",
              "The last column is cardcube computing only count, mean, std, min and max (no percentiles), layer "
              "stored, measured as the column before it: what ordering the values costs.", "",
              "| territory | chunks decoded | decoded MB | raw s | zarr s | cardcube s (layer stored) | cardcube / raw "
              "(layer stored) | cardcube / zarr | cardcube without percentiles, layer stored s (/ raw) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        raw, z, ratio = r["read_decompress"]["raw"], r["read_decompress"]["zarr"], r["times_read_decompress"]
        stored, moments = _stored(r), _stored(r, "cardcube_no_percentiles")
        lines.append(f"| {r['size_km']:g} x {r['size_km']:g} km | {raw['chunks']} | {raw['decoded_bytes'] / 1e6:.0f} "
                     f"| {raw['seconds']:.2f} | {z['seconds']:.2f} | {r['cardcube']['seconds']:.2f} ({stored:.2f}) | "
                     f"{ratio['raw']:.1f}x ({stored / raw['seconds']:.1f}x) | {ratio['zarr']:.1f}x | "
                     f"{moments:.2f} ({moments / raw['seconds']:.1f}x) |")
    lines += ["", "## Where cardcube's time goes", "",
              "Worker time by phase, summed over the work units (threads on all cores, so the sum exceeds the "
              "wall time): *read* is fetching and decompressing the window's chunks, *statistics* grouping "
              "pixels, the cloud mask and the compiled statistics kernel, *write* encoding Parquet. The CPU "
              "columns are the threads' CPU time in each phase (thread_time): the worker time without the waits "
              "for a core, the GIL or the store. Process start is the warm-up extraction of 16 parcels (imports, "
              "kernels loaded from numba's cache), paid once per worker process and left out of the timed run.", "",
              "| territory | wall s | worker s: read / statistics / write | of which CPU s | process start s | "
              "store requests | store MB read | chunks read (raw floor: every stored chunk) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["cardcube"]
        phases, cpu = c.get("phase_seconds", {}), c.get("phase_cpu_seconds", {})
        lines.append(f"| {r['size_km']:g} x {r['size_km']:g} km | {c['seconds']:.2f} | "
                     f"{' / '.join(f'{phases.get(k, math.nan):.2f}' for k in PHASES)} | "
                     f"{' / '.join(f'{cpu[k]:.2f}' for k in PHASES) if cpu else 'not measured'} | "
                     f"{c.get('warmup_seconds', float('nan')):.2f} | "
                     f"{c.get('store_requests', 0):,} | {c.get('store_bytes_read', 0) / 1e6:.0f} | "
                     f"{c['chunks']:,} ({r['read_decompress']['raw']['chunks']:,}) |")
    lines += _read_against_raw(results)
    lines += ["", "## Memory and bytes read", "",
              "| territory | peak RSS MB: cardcube / cardcube, 256 px blocks / raw read / exactextract worker | "
              "cardcube with 256 px blocks s | bytes read per date: cardcube / exactextract |",
              "|---|---|---|---|"]
    for r in results:
        c, small, e = r["cardcube"], r["cardcube_small_blocks"], r["exactextract"]["all_cores"]
        lines.append(
            f"| {r['size_km']:g} x {r['size_km']:g} km | {c['peak_rss_mb']:.0f} / {small['peak_rss_mb']:.0f} / "
            f"{r['read_decompress']['raw']['peak_rss_mb']:.0f} / {e['worker_peak_rss_mb']:.0f} | "
            f"{small['seconds']:.2f} | {c['bytes_read'] / r['dates'] / 1e6:.1f} / "
            f"{e['bytes_read'] / e['scenes'] / 1e6:.1f} MB |")
    big = results[-1]
    est = full_tile_estimate(big)
    raw_s = big["read_decompress"]["raw"]["seconds"]
    ceiling = big["parcels_ok"] * big["dates"] / raw_s / big["parcel_dates_per_s"]["exactextract_all_cores"]
    phases = big["cardcube"].get("phase_cpu_seconds") or big["cardcube"].get("phase_seconds", {})
    compute = (phases.get("statistics", math.nan) + phases.get("write", math.nan)) / big["cores"]
    moments_s = _stored(big, "cardcube_no_percentiles")
    small_lo, small_hi = (r["cardcube_small_blocks"]["peak_rss_mb"] for r in (results[0], big))
    traced_lo, traced_hi = (r["cardcube_small_blocks"].get("traced_peak_mb", float("nan")) for r in (results[0], big))
    area = (big["size_km"] / results[0]["size_km"]) ** 2
    best = big["speedup_vs_exactextract"]["all_cores"]
    lines += ["", "## Targets", "",
              f"- At least 100x exactextract's throughput: **{best:.1f}x** against exactextract on all cores "
              f"({big['speedup_vs_exactextract']['raster_sequential']:.1f}x against one exactextract process, "
              f"{big['speedup_vs_exactextract']['default']:.0f}x against its default strategy), "
              f"{big['size_km']:g} km territory: {'met' if best >= 100 else 'not met'}.",
              f"- Within 2x of reading and decompressing the same chunks: "
              f"**{big['times_read_decompress']['raw']:.1f}x** the raw floor, "
              f"{big['times_read_decompress']['zarr']:.1f}x zarr-python's: "
              f"{'met' if big['times_read_decompress']['raw'] <= 2 else 'not met'}.", "",
              f"**What the targets ask.** An extraction as fast as the raw read floor would be {ceiling:.0f}x "
              f"exactextract on all cores, so 100x asks for finishing within {ceiling / 100:.1f}x of the floor: "
              f"the two targets are nearly one. cardcube's statistics and Parquet encoding alone, "
              f"{'their CPU time ' if big['cardcube'].get('phase_cpu_seconds') else ''}spread over the "
              f"{big['cores']} cores, take {compute:.2f} s, {compute / raw_s:.1f}x the raw floor, "
              f"before any byte is read. The percentiles are not most of it: without them the extraction (layer "
              f"stored) takes {moments_s:.2f} s against {_stored(big):.2f} s with them"
              f"{_noise(moments_s, _stored(big))}, still {moments_s / raw_s:.1f}x the floor. The rest is "
              f"per-value work that decompression does not do: every band value gathered through its parcel's "
              f"pixel index and checked against the cloud mask, summed, compared, counted per SCL class, and "
              f"{_rows(big['cardcube']['rows'])} rows of statistics encoded; blosc only streams bytes.",
              "",
              f"**Full Sentinel-2 tile** (100 x 100 km, {FULL_TILE['parcels']:,} parcels, {FULL_TILE['dates']} "
              f"dates in a year, {FULL_TILE['cores']} cores, rates per core of the {big['size_km']:g} km run scaled "
              f"linearly): cardcube about {est['cardcube_hours'] * 60:.0f} min, exactextract per scene "
              f"(raster-sequential, all cores) about {est['exactextract_hours'] * 60:.0f} min.", "",
              "**Memory.** A work unit holds one block (default: one shard, 1024 x 1024 px) for one time chunk, "
              "one group of bands at a time, so peak memory is set by the block and the number of threads, not "
              "by the territory. Territories smaller than a block use less (the default-block column grows "
              + (f"until the territory reaches 1024 px); with {SMALL_BLOCK} px blocks, smaller than both "
                 f"territories, the peak RSS goes from {small_lo:.0f} to {small_hi:.0f} MB "
                 f"({small_hi / small_lo - 1:+.0%}) for {area:.0f}x the area and the parcels, and the peak of the "
                 f"allocations Python and numpy make (tracemalloc: the working set, without the libraries' pools "
                 f"and the pages the allocator keeps) from {traced_lo:.0f} to {traced_hi:.0f} MB "
                 f"({traced_hi / traced_lo - 1:+.0%})." if len(results) > 1 else
                 "until the territory reaches 1024 px); one territory was measured, so this run shows no growth.")]
    return "\n".join(lines) + "\n"


def _read_against_raw(results: list[dict[str, Any]]) -> list[str]:
    """The read phase's CPU time against the raw floor's (its threads' CPU, summed alike: its wall time is that
    spread over the cores), and where the chunks it reads beyond the stored ones come from (decoded twice before
    2026-12-06's shared chunks); nothing for a run that did not measure the floor's CPU (before 2026-12-06)."""
    if not all("cpu_seconds" in r["read_decompress"]["raw"] and r["cardcube"].get("phase_cpu_seconds")
               for r in results):
        return []
    figures = "; ".join(
        f"{r['size_km']:g} km: {r['cardcube']['phase_cpu_seconds']['read']:.2f} s against "
        f"{r['read_decompress']['raw']['cpu_seconds']:.2f} s "
        f"({r['cardcube']['phase_cpu_seconds']['read'] / r['read_decompress']['raw']['cpu_seconds']:.1f}x), "
        f"{r['cardcube']['chunks'] / r['read_decompress']['raw']['chunks'] - 1:.0%} more chunks" for r in results)
    stretched = ("a work unit's window is its block stretched right and down by its parcels that cross the block's "
                 "edges, a few pixels that cost a whole row and column of chunks")
    if all(r["cardcube"].get("decoded_once") for r in results):
        return ["", f"The read phase's CPU time against the raw floor's (its threads' CPU summed, as the phases'): "
                    f"{figures}. The chunks beyond the stored ones are read twice but decoded once: {stretched}, "
                    "which the neighbouring unit reads too; the first of the two to decode a chunk keeps it for the "
                    "other (`cube.shared_chunks`). The rest is copying each decoded chunk into the window and "
                    "reading the shards (pread)."]
    return ["", f"The read phase's CPU time against the raw floor's (its threads' CPU summed, as the phases'): "
                f"{figures}. The chunks beyond the stored ones are decoded twice: {stretched}, which the "
                "neighbouring unit decodes too. The rest is copying each decoded chunk into the window and reading the "
                "shards (pread)."]


def _rows(n: float) -> str:
    """``1.6 million`` from a million on, else the count itself (``33,140``: 0.0 million said nothing)."""
    return f"{n / 1e6:.1f} million" if n >= 1e6 else f"{n:,.0f}"


def save_report(out: Path | None, stem: str, render: Callable[[Any], str], results: Any) -> str:
    """Print the report ``render`` makes of ``results``; with ``out``, keep the figures first, as
    ``<stem>.json`` (nothing after the run may cost them), then the report beside them as ``<stem>.md``. The
    report's text."""
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_whole(out / f"{stem}.json", json.dumps(results, indent=1))
        progress(f"figures: {out / f'{stem}.json'}")
    text = render(results)
    print(text)
    if out:
        write_whole(out / f"{stem}.md", text)
        progress(f"report: {out / f'{stem}.md'}")
    else:
        progress(f"{stem}.md not saved: pass --out DIR to keep the report and its JSON")
    return text


def rerender(parser: argparse.ArgumentParser, path: Path, out: Path | None, stem: str,
             render: Callable[[Any], str]) -> Any:
    """``--from-json``: a saved run's results read back, their report printed and written as ``<stem>.md``
    beside them (or in ``out``); the results returned."""
    results = read_json(parser, path)
    if out is not None:
        check_out(parser, out, names=(f"{stem}.md",))
        out.mkdir(parents=True, exist_ok=True)
    text = render(results)
    write_whole((out or path.parent) / f"{stem}.md", text)
    print(text)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.extraction", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                   help="territory sides in km, comma-separated (default 5,10)")
    p.add_argument("--scenes", type=whole_number(at_least=2), default=DEFAULT_SCENES,
                   help="scenes timed for exactextract (default 4, at least 2; on all cores, at least 2 per "
                   "process)")
    p.add_argument("--out", type=Path, default=None, help="folder for extraction.md and extraction.json")
    p.add_argument("--from-json", type=Path, default=None, help="re-render extraction.md from an extraction.json")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    for hidden in ("cube", "parcels", "items", "strategy", "stats"):
        p.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    p.add_argument("--block", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--traced", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:  # inside the measuring subprocess
        if args.measure == "cardcube":
            out = _measure_cardcube(args.cube, args.parcels, str(args.out), block=args.block,
                                    count=bool(args.count),
                                    stats=tuple(args.stats.split(",")) if args.stats else None,
                                    repeats=args.repeats, traced=bool(args.traced))
        elif args.measure == "update":
            out = _measure_update(args.cube, args.parcels, args.items, str(args.out), args.repeats or REPEATS)
        elif args.measure == "read-raw":
            out = _measure_read_raw(args.cube)
        elif args.measure == "read-zarr":
            out = _measure_read_zarr(args.cube)
        else:
            out = _measure_exactextract(args.items, args.parcels, args.scenes, args.strategy, args.processes)
        print(result_line(out))
        return
    if args.from_json:
        rerender(p, args.from_json, args.out, "extraction", report)
        return
    check_extra(p, "exactextract")
    if args.out is not None:
        check_out(p, args.out, names=("extraction.md", "extraction.json"))
    results = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="cardcube-extract-bench-") as tmp:
            results.append(run_size(size, args.scenes, Path(tmp), os.cpu_count() or 1))
        print(json.dumps(results[-1]["parcel_dates_per_s"]), json.dumps(results[-1]["speedup_vs_exactextract"]),
              json.dumps(results[-1]["times_read_decompress"]), flush=True)
    save_report(args.out, "extraction", report, results)


def parse_sizes(text: str) -> tuple[float, ...]:
    """``"5,10"`` -> (5.0, 10.0): territory sides in km, each at least 0.4 (argparse reports the error)."""
    try:
        sizes = tuple(float(s.strip().lower().removesuffix("km")) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: territory sides in km, comma-separated (e.g. 5,10)") from None
    if not sizes or min(sizes) < 0.4:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one side, each at least 0.4 km")
    return sizes


if __name__ == "__main__":
    main()
