"""Creating a new tile's groups and arrays on S3: ``python -m benchmarks.tile_creation``.

A first ingest into a tile creates its Zarr hierarchy (75 objects for an S2 tile) before any pixel is written.
This times :func:`ingest.arrays.ensure_tile` on a moto server behind the loopback proxy of
:mod:`cardcube.testing.s3proxy`, which adds ``--latency-ms`` to each request (a remote object store's round
trip) and counts requests by kind. It prints a report stating the command that repeats it; ``--out DIR`` keeps
it (``tile-creation.md``) and its figures (``tile-creation.json``). ``PYTHONPATH=TREE`` from another checkout
measures that code instead (the figures of 2026-12-03: 860 requests and 8.6 s behind 20 ms before, 96 and 1.0 s
after).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.extraction import save_report
from benchmarks.options import S3_SERVER, check_extra, check_out, milliseconds, own_s3_settings, repeat_command
from cardcube.grid import TileGrid
from cardcube.option_types import whole_number
from cardcube.spec import cube_spec
from cardcube.storage import open_store
from cardcube.testing.s3proxy import start_s3_proxy
from cardcube.testing.s3server import start_s3_server
from ingest.arrays import ensure_tile


def measure(latencies_ms: Sequence[float], *, collection: str = "s2", tile: str = "31UFU",
            repeats: int = 3) -> list[dict]:
    """For each latency: the best of ``repeats`` times to create the tile anew, and the requests by kind and most at
    once of that run."""
    rows = []
    with start_s3_server(buckets=["tiles"]) as server:
        for latency in latencies_ms:
            with start_s3_proxy(server.endpoint_url, latency_s=latency / 1000) as proxy:
                runs = []
                for _ in range(repeats):
                    store = open_store(f"s3://tiles/{uuid.uuid4().hex}", storage_options=proxy.storage_options())
                    before, start = proxy.snapshot(), time.perf_counter()
                    ensure_tile(store, cube_spec(collection), TileGrid.from_id(tile), committed=False)
                    runs.append((time.perf_counter() - start, proxy.snapshot() - before))
            seconds, sent = min(runs, key=lambda run: run[0])  # the counts of the run whose time is reported
            rows.append({"latency_ms": latency, "seconds": seconds, "requests": sent.total,
                         "by_kind": dict(sorted(sent.requests.items())), "peak_in_flight": sent.peak_in_flight})
    return rows


def table(rows: Sequence[dict]) -> str:
    lines = ["| latency per request | time (best) | requests | by kind | most at once |", "|---|---|---|---|---|"]
    lines += [f"| {r['latency_ms']:g} ms | {r['seconds']:.2f} s | {r['requests']} | "
              f"{', '.join(f'{k} {n}' for k, n in r['by_kind'].items())} | {r['peak_in_flight']} |" for r in rows]
    return "\n".join(lines)


DEFAULTS = {"latency_ms": "0,20", "collection": "s2", "repeats": 3}


def command(results: dict[str, Any]) -> str:
    """The command that repeats the run of ``results`` (its settings when not the defaults)."""
    given = {"latency_ms": ",".join(f"{r['latency_ms']:g}" for r in results["rows"]),
             "collection": results["collection"], "repeats": results["repeats"]}
    flags = {"latency_ms": "--latency-ms", "collection": "--collection", "repeats": "--repeats"}
    return repeat_command("benchmarks.tile_creation", given, flags, DEFAULTS)


def report(results: dict[str, Any]) -> str:
    env, reps = results["environment"], results["repeats"]
    best = f"the best of {reps} creations, each of a new tile" if reps > 1 else "one creation"
    return "\n".join([
        "# Creating a new tile's groups and arrays on S3", "",
        f"Machine: {env['cpus']} CPUs ({env['system']} {env['machine']}, Python {env['python']}). Every figure "
        f"below comes from one run of `{command(results)}` on {results['date']}: `ingest.arrays.ensure_tile` "
        f"creating the {results['collection']} hierarchy of tile {results['tile']} in a bucket of moto's S3 server "
        f"on loopback, through a proxy adding the latency to each request and counting requests by kind; time: "
        f"{best}.", "", table(results["rows"])]) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tile_creation", description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=milliseconds, default=milliseconds(DEFAULTS["latency_ms"]),
                        help=f"latencies added to each request, comma-separated (default {DEFAULTS['latency_ms']})")
    parser.add_argument("--collection", default=DEFAULTS["collection"], choices=["s2", "s1"])
    parser.add_argument("--repeats", type=whole_number(at_least=1), default=DEFAULTS["repeats"],
                        help=f"creations per latency, the best reported (default {DEFAULTS['repeats']})")
    parser.add_argument("--out", type=Path, default=None, help="folder for tile-creation.md and .json")
    args = parser.parse_args(argv)
    check_extra(parser, *S3_SERVER)
    if args.out is not None:
        check_out(parser, args.out, names=("tile-creation.md", "tile-creation.json"))
    from benchmarks.harness import environment

    tile = "31UFU"
    with own_s3_settings():
        rows = measure(args.latency_ms, collection=args.collection, tile=tile, repeats=args.repeats)
    results = {"collection": args.collection, "tile": tile, "repeats": args.repeats, "rows": rows,
               "date": dt.date.today().isoformat(), "environment": environment()}
    save_report(args.out, "tile-creation", report, results)
    return results


if __name__ == "__main__":
    main()
