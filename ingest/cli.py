"""``cardcube ingest``: a thin shell over :func:`ingest.job.ingest`."""

from __future__ import annotations

import argparse
import json

from cardcube.spec import CUBE_SPECS, ChunkLayout


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cardcube ingest`` to the ``cardcube`` parser."""
    p = sub.add_parser(
        "ingest", help="add CARD scenes to a time-first Zarr cube",
        description="Add the scenes of SOURCE (a STAC ItemCollection/catalog JSON, or a folder) to the cube at "
        "--cube as one new version. Scenes already in the cube are skipped; bad scenes are rejected with a "
        "reason. Exit status 0 if every scene is in the cube, 1 if some were rejected, 2 on error.",
    )
    p.add_argument("source", help="items.json / catalog.json / folder of scenes")
    p.add_argument("--cube", required=True, help="cube root: a folder or s3://bucket/prefix")
    p.add_argument("--collection", choices=sorted(CUBE_SPECS), default="s2", help="cube collection (default s2)")
    p.add_argument("--chunks", type=ChunkLayout.parse, default=None,
                   help="chunk layout of a new cube, e.g. time=16,space=128,shard_space=1024")
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler: threads (default), processes, sync, or a tcp://host:port address")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for another ingest's lock")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (Ceph, MinIO); default $AWS_ENDPOINT_URL")
    p.add_argument("--no-catalog", action="store_true", help="do not update the STAC catalog")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ingest.job import ingest

    storage_options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    result = ingest(args.source, args.cube, collection=args.collection, chunks=args.chunks,
                    storage_options=storage_options, scheduler=args.scheduler, progress=not args.quiet,
                    wait=args.wait, catalog=not args.no_catalog)
    if args.json:
        print(json.dumps({"version": result.version, "added": list(result.added), "skipped": list(result.skipped),
                          "rejected": [r.to_dict() for r in result.rejected], "compacted": result.compacted,
                          "bytes_written": result.bytes_written, "bytes_new_data": result.bytes_new_data,
                          "write_amplification": result.write_amplification, "seconds": result.seconds}))
    else:
        print(result.summary())
    return 0 if result.ok else 1
