"""The ledger's size and the time to open a cube's latest version: ``python -m benchmarks.ledger_size``.

Builds a synthetic Sentinel-2 history in a scratch folder, a version per date over every tile (daily appends),
each scene recorded as a real ingest records it (11 band files on S3 and their sha256), and commits its last
``--versions`` versions with :func:`ingest.commit.commit`, each from the head read back, as an ingest does. It
reports the bytes of the latest record and of the whole ledger, and the time to open the latest version (the
ledger listed, the record read, every tile's footprint made: what every query does first) from the folder, and
from moto's S3 server (a client already connected) behind the loopback proxy of :mod:`cardcube.testing.s3proxy`
adding ``--latency-ms`` to each request (the requests and bytes it counted). ``python benchmarks/ledger_size.py``
with ``PYTHONPATH=TREE`` of another checkout measures that code (before 2026-12-06, when each record held every
scene whole: 19.0 MB for 10 x 490).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.options import S3_SERVER, check_extra, own_s3_settings
from cardcube.grid import TILES_TABLE
from cardcube.option_types import number, whole_number
from cardcube.spec import cube_spec
from cardcube.storage import open_store
from cube.ledger import Acquisition, CubeVersion, SceneRecord, TileState, data_footprint, read_version
from ingest.commit import commit

FIRST, EVERY = dt.datetime(2024, 1, 1, 10, 50, 31), dt.timedelta(hours=17)  # the dates of a history: 500 in 2024
BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL")


def scene_record(tile: str, time_: str, scene_id: str, version: int) -> SceneRecord:
    """A whole tile's scene as ingest records one read from CDSE's S3: its band files and their checksums."""
    day = f"{time_[:10].replace('-', '')}T{time_[11:19].replace(':', '')}"
    folder = f"s3://eodata/Sentinel-2/MSI/L2A/{time_[:4]}/{time_[5:7]}/{time_[8:10]}/{scene_id}.SAFE/GRANULE/" \
             f"L2A_T{tile}_A0{day[:8]}/IMG_DATA"
    res = {b: 10 if b in ("B02", "B03", "B04", "B08") else 20 for b in BANDS}
    return SceneRecord(scene_id, tile, time_, version,
                       checksums={b: "sha256:" + hashlib.sha256(f"{scene_id}{b}".encode()).hexdigest() for b in BANDS},
                       windows={10: (0, 0, 10980, 10980), 20: (0, 0, 5490, 5490)}, collection="sentinel-2-l2a",
                       sources={b: f"{folder}/R{res[b]}m/T{tile}_{day}_{b}_{res[b]}m.jp2" for b in BANDS},
                       processing_baseline=5.1)


def tile_ids() -> list[str]:
    """The tiles of the histories: those of UTM zone 31, latitude band U (the demo's, 31UFU, among them)."""
    with gzip.open(TILES_TABLE, "rt") as names:
        return [line.split(",")[0] for line in names if line.startswith("31U")]


def history_size(text: str) -> tuple[int, int]:
    """A history's ``TILESxDATES`` (argparse type): tiles of :func:`tile_ids`, dates within a year."""
    tiles, _, dates = text.partition("x")
    if not (tiles.isdigit() and dates.isdigit() and 1 <= int(tiles) <= len(tile_ids()) and 1 <= int(dates) <= 500):
        raise argparse.ArgumentTypeError(f"expected TILESxDATES, 1 to {len(tile_ids())} tiles and 1 to 500 dates "
                                         f"(e.g. 10x49), got {text!r}")
    return int(tiles), int(dates)


def build(root: Path, tiles: int, dates: int, versions: int) -> None:
    """The history of ``tiles`` x ``dates`` in a cube folder at ``root``, its last ``versions`` versions committed."""
    store = open_store(str(root))
    version = CubeVersion.empty(cube_spec("s2"))
    states = {t: TileState(t) for t in tile_ids()[:tiles]}
    scenes: dict[str, SceneRecord] = {}
    for d in range(dates):
        at = FIRST + d * EVERY
        when = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        added = []
        for tile in states:
            sid = f"S2A_MSIL2A_{at:%Y%m%dT%H%M%S}_N0510_R051_T{tile}_{at:%Y%m%d}T142512"
            states[tile] = TileState(tile, (*states[tile].cold, Acquisition(when, sid, "sentinel-2a", 51, "descending",
                                                                            12.5)))
            scenes[sid] = scene_record(tile, when, sid, version.version + 1)
            added.append(sid)
        version = version.next(tiles=dict(states), scenes=dict(scenes), added=tuple(added), rejected=())
        if d >= dates - versions:
            commit(store, version)
            version = read_version(store, "s2")  # as an ingest starts: from the head it reads
            scenes = dict(version.scenes)


def open_latest(store: Any) -> float:
    """Seconds to open the latest version as a query does: the ledger listed and read, every tile's footprint."""
    start = time.perf_counter()
    version = read_version(store, "s2")
    for tile in version.tiles:
        data_footprint(version, tile)
    return time.perf_counter() - start


def measure(sizes: Sequence[tuple[int, int]], *, versions: int, latency_ms: float, repeats: int) -> list[dict]:
    from cardcube.testing.s3proxy import start_s3_proxy
    from cardcube.testing.s3server import start_s3_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp, start_s3_server(buckets=["ledger"]) as server, \
            start_s3_proxy(server.endpoint_url, latency_s=latency_ms / 1000) as proxy:
        for tiles, dates in sizes:
            root = Path(tmp) / f"{tiles}x{dates}"
            build(root, tiles, dates, min(versions, dates))
            files = sorted(p for p in (root / "s2" / "_ledger").iterdir())
            records = [p for p in files if p.name.startswith("v")]
            open_latest(open_store(str(root)))  # the tile grid's table loaded, as in a process that has read before
            local = statistics.median(open_latest(open_store(str(root))) for _ in range(repeats))
            prefix = uuid.uuid4().hex
            for p in files:
                server.client().put_object(Bucket="ledger", Key=f"{prefix}/s2/_ledger/{p.name}", Body=p.read_bytes())
            url = f"s3://ledger/{prefix}"
            runs = []
            store = open_store(url, storage_options=proxy.storage_options())
            open_latest(store)  # its client connected, as a service's is: what each look-up of the latest costs
            for _ in range(repeats):
                before = proxy.snapshot()
                runs.append((open_latest(store), proxy.snapshot() - before))
            seconds, sent = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
            rows.append({"tiles": tiles, "dates": dates, "scenes": tiles * dates, "versions": len(records),
                         "latest_record_bytes": records[-1].stat().st_size,
                         "ledger_bytes": sum(p.stat().st_size for p in files), "ledger_objects": len(files),
                         "open_local_s": local, "open_s3_s": seconds, "open_s3_requests": sent.total,
                         "open_s3_bytes": sent.response_bytes})
    return rows


def table(rows: Sequence[dict], latency_ms: float) -> str:
    lines = [f"| tiles x dates | latest record | ledger of its versions (objects) | open: folder | open: S3 + "
             f"{latency_ms:g} ms (requests, bytes read) |", "|---|---|---|---|---|"]
    lines += [f"| {r['tiles']} x {r['dates']} | {r['latest_record_bytes'] / 1e6:.3f} MB | "
              f"{r['ledger_bytes'] / 1e6:.2f} MB of {r['versions']} versions ({r['ledger_objects']}) | "
              f"{r['open_local_s'] * 1000:.0f} ms | {r['open_s3_s'] * 1000:.0f} ms ({r['open_s3_requests']}, "
              f"{r['open_s3_bytes'] / 1e6:.3f} MB) |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_size", description=__doc__.split("\n")[0])
    parser.add_argument("sizes", nargs="*", type=history_size, default=[(1, 49), (10, 49), (10, 490)],
                        help="TILESxDATES of each history (default: 1x49 10x49 10x490; the demo is 1 x 49)")
    parser.add_argument("--versions", type=whole_number(at_least=1), default=20,
                        help="versions committed, the last of each history (default 20)")
    parser.add_argument("--latency-ms", type=number("milliseconds", at_least=0), default=20.0,
                        help="latency the proxy adds to each S3 request (default 20)")
    parser.add_argument("--repeats", type=whole_number(at_least=1), default=3,
                        help="opens of each, the median reported (default 3)")
    args = parser.parse_args(argv)
    check_extra(parser, *S3_SERVER)
    with own_s3_settings():
        rows = measure(args.sizes, versions=args.versions, latency_ms=args.latency_ms, repeats=args.repeats)
    print(f"One run of `{command(args)}` on {dt.date.today().isoformat()}, {os.cpu_count()} CPUs; the median of "
          f"{args.repeats} opens each.\n")
    print(table(rows, args.latency_ms))
    return rows


def command(args: argparse.Namespace) -> str:
    """The command that repeats a run of ``args`` (the README says every report states its own; this one printed a
    table alone)."""
    sizes = " ".join(f"{t}x{d}" for t, d in args.sizes)
    return (f"python -m benchmarks.ledger_size {sizes} --versions {args.versions} --latency-ms {args.latency_ms:g} "
            f"--repeats {args.repeats}")


if __name__ == "__main__":
    main()
