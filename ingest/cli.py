"""``cardcube ingest``: a thin shell over :func:`ingest.job.ingest`."""

from __future__ import annotations

import argparse
import json

from cardcube.cli import add_endpoint_option, add_stop_grace_option, storage_options
from cardcube.option_types import number, whole_number
from cardcube.spec import CUBE_SPECS, ChunkLayout
from ingest.commit import STALE_AFTER


def _chunks(text: str) -> ChunkLayout:
    try:
        return ChunkLayout.parse(text)
    except ValueError as exc:  # argparse would print only "invalid parse value"
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tiles(text: str) -> tuple[str, ...]:
    tiles = tuple(t for t in (t.strip() for t in text.split(",")) if t)
    if not tiles:
        raise argparse.ArgumentTypeError(f"expected MGRS tile ids separated by commas, got {text!r}")
    return tiles


def _add_cube_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cube", required=True, help="cube root: a folder or s3://bucket/prefix")
    p.add_argument("--collection", choices=sorted(CUBE_SPECS), default="s2", help="cube collection (default s2)")


def _add_lock_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=number("a number of seconds", at_least=0), default=0.0, metavar="SECONDS",
                   help="seconds to wait for another writer's lock (default 0: fail at once)")
    # at least a second: shorter, a lease would lapse on one slow S3 round trip
    p.add_argument("--stale-after", type=number("a number of seconds", at_least=1), default=STALE_AFTER,
                   metavar="SECONDS",
                   help="take another writer's lock for dead after this long without its heartbeat, and break "
                   f"it (default {STALE_AFTER:.0f}); give every writer of a cube the same value")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cardcube ingest`` to the ``cardcube`` parser."""
    p = sub.add_parser(
        "ingest", help="add CARD scenes to a time-first Zarr cube",
        description="Add the scenes of SOURCE (a STAC ItemCollection/catalog JSON, or a folder) to the cube at "
        "--cube as one new version. Assets are matched to bands whether keyed by band (B04, Planetary Computer), "
        "common name (red, Earth Search; its COG before the -jp2 twin) or band and resolution (B04_10m, "
        "CDSE; the native resolution). Scenes already in the cube are skipped; bad scenes are rejected with a "
        "reason. With --repair, SOURCE may be left out (see --repair). Exit status 0 if every scene is in the cube, "
        "1 if some were rejected, 2 on error.",
    )
    p.add_argument("source", nargs="?", default=None,
                   help="items.json / catalog.json / folder of scenes (left out with --repair alone: see there)")
    _add_cube_options(p)
    p.add_argument("--source-collection", metavar="ID", default=None,
                   help="the collection id to take from SOURCE (default: the cube's, sentinel-2-l2a for s2 and "
                   "sentinel-1-card-bs for s1), e.g. sentinel-2-c1-l2a for Earth Search's collection 1")
    p.add_argument("--linear-power", action="store_true",
                   help="backscatter whose STAC asset names no unit is linear power (gamma0 as a power ratio): store "
                   "10 log10 of it, values <= 0 as nodata. An asset's unit ('dB', 'linear') or a known provider "
                   "convention (Planetary Computer's sentinel-1-rtc is linear) decides without this option; "
                   "the ledger records each conversion")
    p.add_argument("--warp", action="store_true",
                   help="resample scenes that are not on their MGRS tile's pixel grid (another CRS or UTM zone, "
                   "origin or pixel size) onto it: nearest for SCL, bilinear for the others (average from finer "
                   "pixels), backscatter in linear power; a backscatter item naming no MGRS tile (a whole GRD "
                   "footprint, Planetary Computer's sentinel-1-rtc) becomes one scene per tile its geometry overlaps, "
                   "<item>_T<tile>. Without it such scenes are rejected; with it a scene that misses its tile, or "
                   "has no valid pixel on it, still is. The ledger records the method per band")
    p.add_argument("--tiles", type=_tiles, default=None, metavar="31UFU,...",
                   help="only scenes on these MGRS tiles go in (of an item split with --warp, only these tiles); "
                   "the others are left out, neither added nor rejected")
    p.add_argument("--repair", action="store_true",
                   help="read the dates among SOURCE's scenes that the cube holds again from their files, which "
                   "must be the bytes the ledger records (sha256): hot-buffer dates are written anew; the lost or "
                   "damaged shards of a cold block whose dates are all offered are written again, each only if it "
                   "gets the values ingest wrote there (its manifest's crc32). The way past a lost or damaged shard "
                   "without a backup (a hot one stops every compaction of its tile). The coordinate and per-date "
                   "arrays (x, y, time, scene_id, ...) found lost or wrong, as verify finds them, are written again "
                   "from the ledger and the tile grid, whatever SOURCE holds. Without SOURCE (scenes archived) only "
                   "those are written; the shards are checked as verify checks them (their indexes), and any lost "
                   "or damaged is named with the scenes of its dates, to offer (exit 2, no version committed). A "
                   "plain ingest writes those of the tiles it writes again too, before its new dates")
    p.add_argument("--chunks", type=_chunks, default=None,
                   help="chunk layout of a new cube, e.g. time=16,space=128,shard_space=1024")
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler: threads (default), processes, sync, or a tcp://host:port address")
    add_stop_grace_option(p, tasks="shard writes", then="writes still running then keep the lock until it goes "
                          "stale (--stale-after)")
    spool = p.add_mutually_exclusive_group()
    spool.add_argument("--spool", default=True, metavar="DIR",
                       help="keep the band files read over the network (https://, s3://), once checked, in a "
                       "folder made in DIR for the writes to read: each is downloaded once, and what is written is "
                       "what was checked (default: the system's temporary folder, with a local scheduler only; "
                       "with --scheduler tcp://..., a volume the workers share). It takes the size of the run's "
                       "checked files and is removed when the run ends")
    spool.add_argument("--no-spool", dest="spool", action="store_false",
                       help="keep nothing: the writes read the network files again, by windows, and compare "
                       "each file's size and ETag with the check's (a file replaced at the source meanwhile stops "
                       "the run)")
    _add_lock_options(p)
    add_endpoint_option(p, note=" (of the cube: an s3:// SOURCE and its assets are read with $AWS_ENDPOINT_URL)")
    p.add_argument("--no-catalog", action="store_true",
                   help="do not update the STAC catalog (reads still find new tiles; 'cardcube catalog build' "
                   "publishes them for STAC clients)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    e = sub.add_parser(
        "expire", help="forget old cube versions and delete the data only they read",
        description="Expire the versions of a cube collection superseded for longer than --older-than, and "
        "delete the data no remaining version reads: hot-buffer dates already copied into time-first blocks, "
        "and what a crashed ingest left behind. The latest version is always kept. Takes the writer lock.",
    )
    _add_cube_options(e)
    e.add_argument("--older-than", default="7d",
                   help="expire versions superseded for longer than this: 7d (default), 12h, 30m, 45s, or 0 (all)")
    e.add_argument("--dry-run", action="store_true", help="report what would go, delete nothing")
    e.add_argument("--merge-details-over", type=whole_number(), default=16, metavar="N",
                   help="when the latest version names more than N details objects of the ledger (one per ingest "
                   "that added scenes, all read by every ingest and catalog build), merge them into one, named by a "
                   "new version reading the same data (default 16)")
    _add_lock_options(e)
    add_endpoint_option(e)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=_run_expire)
    _register_versions(sub)
    _register_verify(sub)


def _register_versions(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "versions", help="a cube's committed versions, and the scenes rejected and not in it since",
        description="List the committed versions of a cube collection (when, scenes added, scenes rejected by "
        "it or an earlier ingest and not in the cube then) and "
        "every scene an ingest rejected that is not in the cube since, with the latest reason: fix those and "
        "offer them again. Rejections are carried from version to version, so expire does not forget them.",
    )
    _add_cube_options(v)
    v.add_argument("--last", type=whole_number(), default=20, metavar="N",
                   help="describe the newest N versions (default 20; 0: all). Each is one read of a ledger record "
                   "that holds the whole cube state")
    add_endpoint_option(v)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_run_versions)


def _run_versions(args: argparse.Namespace) -> int:
    from cardcube.storage import open_store, store_url
    from cube.layout import cube_root
    from cube.ledger import committed_versions, read_versions

    store = open_store(cube_root(args.cube), storage_options=storage_options(args), read_only=True)
    committed = committed_versions(store, args.collection)
    history, rejected = [], ()  # of each version what is said of it: a record held whole is some 10 MB of a large cube
    for v in read_versions(store, args.collection, committed[-args.last:] if args.last else committed):
        history.append({"version": v.version, "created": v.created, "added": list(v.added),
                        "repaired": list(v.repaired), "rejected": [r.scene_id for r in v.rejected]})
        rejected = v.rejected
    if args.json:
        print(json.dumps({"committed": committed, "versions": history, "rejected": [r.to_dict() for r in rejected]}))
        return 0
    shown = "" if len(history) == len(committed) else f", the newest {len(history)} below (--last 0: all)"
    print(f"{args.collection} cube at {store_url(store)}: {len(committed)} version(s){shown}")
    for v in history:
        # hot dates read again and dates of cold blocks mended in place alike (CubeVersion.repaired)
        repaired = f", repaired {len(v['repaired'])} date(s)" if v["repaired"] else ""
        print(f"  version {v['version']}  {v['created']}  added {len(v['added'])} scene(s){repaired}, "
              f"{len(v['rejected'])} rejected and not in the cube")
    print(f"rejected and not in the cube: {len(rejected)} scene(s)")
    for r in rejected:
        print(f"  {r.scene_id} ({r.kind}): {r.reason}")
    return 0


def _register_verify(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "verify", help="check that every shard the cube's versions read is in the store, and sound",
        description="Check a cube collection against the manifests ingest writes for each time block: every shard "
        "they list, for every kept version, is in the store and its index passes its checksum (--deep: every chunk "
        "is read and decompressed, and the values compared with the checksum ingest recorded). A lost object "
        "otherwise reads as an area with no data to a plain Zarr reader. It also checks the ledger: its records, and "
        "the details objects they name (there, sound, and holding the scenes each record names them for, as it "
        "says), and the coordinate and per-date arrays beside the bands (x, y, spatial_ref, time, scene_id, ...), "
        "which plain Zarr readers (xarray, rioxarray) take the grid and the dates from, against the tile grid and the "
        "ledger (`cardcube ingest --repair` writes them again). Reads only. Exits with 1 when a shard, a record, a "
        "details object or a coordinate array is missing or damaged (listed: the first 20, the others counted; "
        "--json names each).",
    )
    _add_cube_options(v)
    v.add_argument("--deep", action="store_true",
                   help="read every shard whole, decompress every chunk, compare the values' checksums")
    add_endpoint_option(v)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from cube.verify import verify

    result = verify(args.cube, args.collection, deep=args.deep, storage_options=storage_options(args),
                    progress=not args.quiet)
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    return 0 if result.ok else 1


def _run(args: argparse.Namespace) -> int:
    from ingest.job import ingest

    result = ingest(args.source, args.cube, collection=args.collection, chunks=args.chunks,
                    storage_options=storage_options(args), scheduler=args.scheduler, progress=not args.quiet,
                    wait=args.wait, catalog=not args.no_catalog, source_collection=args.source_collection,
                    stale_after=args.stale_after, linear_power=args.linear_power, warp=args.warp,
                    tiles=args.tiles, spool=args.spool, stop_grace=args.stop_grace, repair=args.repair)
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    return 0 if result.ok else 1


def _run_expire(args: argparse.Namespace) -> int:
    from cardcube.option_types import parse_age
    from ingest.expire import expire

    result = expire(args.cube, args.collection, older_than=parse_age(args.older_than), dry_run=args.dry_run,
                    wait=args.wait, stale_after=args.stale_after, storage_options=storage_options(args),
                    merge_over=args.merge_details_over)
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    return 0
