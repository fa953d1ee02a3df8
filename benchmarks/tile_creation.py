"""Creating a new tile's groups and arrays on S3: ``python -m benchmarks.tile_creation``.

A first ingest into a tile creates its Zarr hierarchy (75 objects for an S2 tile) before any pixel is written.
This times :func:`ingest.arrays.ensure_tile` on a moto server behind the loopback proxy of
:mod:`cardcube.testing.s3proxy`, which adds ``--latency-ms`` to each request (a remote object store's round
trip) and counts requests by kind. ``PYTHONPATH=TREE`` from another checkout measures that code instead (the
figures of 2026-12-03: 860 requests and 8.6 s behind 20 ms before, 96 and 1.0 s after).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence

from cardcube.grid import TileGrid
from cardcube.spec import cube_spec
from cardcube.storage import open_store
from cardcube.testing.s3proxy import start_s3_proxy
from cardcube.testing.s3server import start_s3_server
from ingest.arrays import ensure_tile


def measure(latencies_ms: Sequence[float], *, collection: str = "s2", tile: str = "31UFU",
            repeats: int = 3) -> list[dict]:
    """For each latency: the best of ``repeats`` times to create the tile anew, and its requests by kind."""
    rows = []
    with start_s3_server(buckets=["tiles"]) as server:
        for latency in latencies_ms:
            with start_s3_proxy(server.endpoint_url, latency_s=latency / 1000) as proxy:
                times = []
                for _ in range(repeats):
                    store = open_store(f"s3://tiles/{uuid.uuid4().hex}", storage_options=proxy.storage_options())
                    before, start = proxy.snapshot(), time.perf_counter()
                    ensure_tile(store, cube_spec(collection), TileGrid.from_id(tile), committed=False)
                    times.append(time.perf_counter() - start)
                    sent = proxy.snapshot() - before
            rows.append({"latency_ms": latency, "seconds": min(times), "requests": sent.total,
                         "by_kind": dict(sorted(sent.requests.items())), "peak_in_flight": sent.peak_in_flight})
    return rows


def table(rows: Sequence[dict]) -> str:
    lines = ["| latency per request | time (best) | requests | by kind | most at once |", "|---|---|---|---|---|"]
    lines += [f"| {r['latency_ms']:g} ms | {r['seconds']:.2f} s | {r['requests']} | "
              f"{', '.join(f'{k} {n}' for k, n in r['by_kind'].items())} | {r['peak_in_flight']} |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tile_creation", description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", default="0,20", help="latencies added to each request, comma-separated")
    parser.add_argument("--collection", default="s2", choices=["s2", "s1"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    latencies = [float(v) for v in args.latency_ms.split(",")]
    print(table(measure(latencies, collection=args.collection, repeats=args.repeats)))


if __name__ == "__main__":
    main()
