"""``cardcube catalog build|serve|find``: thin shells over :mod:`catalog`."""

from __future__ import annotations

import argparse
import json
import sys

from cardcube.cli import add_endpoint_option, add_store_timeout_option, sigterm_stops_serving, storage_options
from cardcube.query import TIME_HELP
from cardcube.spec import CUBE_SPECS


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the ``cardcube`` parser."""
    parser = sub.add_parser("catalog", help="the cube's static STAC catalog: build, serve, find",
                            description="The static STAC catalog written next to the cube.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    build = verbs.add_parser("build", help="regenerate the catalog from the ledger",
                             description="Regenerate every document of the STAC catalog of every cube collection "
                             "(or the given ones) from its latest ledger version, whatever is there now: a catalog "
                             "deleted or damaged by hand, or not written by 'ingest --no-catalog'.")
    build.add_argument("--cube", required=True, help="cube root: folder or s3:// URL")
    add_endpoint_option(build)
    build.add_argument("--collection", action="append", choices=sorted(CUBE_SPECS),
                       help="cube collection to rebuild (repeatable; default: all found)")
    build.set_defaults(func=_build)

    serve = verbs.add_parser("serve", help="serve the catalog and the Zarr data over HTTP, with CORS",
                             description="Serve the cube root read-only over HTTP for STAC browsers and Zarr "
                             "readers (CORS: any origin; byte ranges). Root: /catalog.json.")
    serve.add_argument("--cube", required=True, help="cube root: folder or s3:// URL")
    add_endpoint_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_store_timeout_option(serve)
    serve.set_defaults(func=_serve)

    find = verbs.add_parser("find", help="the tiles a bbox and time range need, from the catalog",
                            description="Print, as JSON lines, the cube tiles that intersect a bbox and time "
                            "range, read from the static catalog.")
    find.add_argument("--cube", required=True, help="cube root: folder or s3:// URL")
    add_endpoint_option(find)
    find.add_argument("--collection", default="s2", choices=sorted(CUBE_SPECS), help="cube collection (s2)")
    find.add_argument("--bbox", type=_bbox, help="minx,miny,maxx,maxy (in --crs)")
    find.add_argument("--crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326)")
    find.add_argument("--time", help=TIME_HELP)
    find.set_defaults(func=_find)


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"bbox {text!r} needs four numbers: minx,miny,maxx,maxy "
                                         "(--bbox=-1,50,1,51 when the first is negative)")
    return parts[0], parts[1], parts[2], parts[3]


def _store(args: argparse.Namespace, *, read_only: bool = False):
    """The store of ``--cube`` (the cube's folder or URL, or its ``catalog.json``), reached through
    ``--endpoint-url`` if given."""
    from cardcube.storage import open_store
    from cube.layout import cube_root

    return open_store(cube_root(args.cube), storage_options=storage_options(args), read_only=read_only)


def _build(args: argparse.Namespace) -> int:
    from cardcube.errors import CubeNotFoundError
    from catalog.write import rebuild_catalog
    from cube.ledger import no_cube_hint

    store = _store(args)
    done = rebuild_catalog(store, collections=tuple(args.collection) if args.collection else None)
    if not done:
        raise CubeNotFoundError(f"no cube collection with a committed version at {args.cube}" + no_cube_hint(store))
    for name, version in done.items():
        print(f"{name}: catalog of version {version}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from catalog.serve import serve

    with sigterm_stops_serving("catalog serve"):
        serve(args.cube, host=args.host, port=args.port, storage_options=storage_options(args),
              store_timeout=args.store_timeout,
              announce=lambda url: print(f"serving {args.cube} at {url}catalog.json (Ctrl-C to stop)", flush=True))
    return 0


def _find(args: argparse.Namespace) -> int:
    from cardcube.errors import CorruptDocumentError
    from catalog.route import find_tiles
    from catalog.write import catalog_is_current, published_version
    from cube.ledger import committed_versions, read_version

    store = _store(args, read_only=True)
    refs = find_tiles(store, args.collection, bbox=args.bbox, crs=args.crs, time=args.time)
    for ref in refs:
        print(json.dumps(ref.to_dict()))
    published, committed = published_version(store, args.collection), committed_versions(store, args.collection)
    behind = published is not None and committed and committed[-1] > published  # an ingest --no-catalog since
    try:
        behind = behind and not catalog_is_current(store, read_version(store, args.collection))  # not a rejection
    except CorruptDocumentError as exc:  # the tiles found are printed: the damage is a note, for verify
        print(f"{exc}; check the cube with cardcube verify", file=sys.stderr)
    if behind:
        print(f"the catalog describes version {published} of the {args.collection} cube, which is at version "
              f"{committed[-1]}: its newer dates and tiles are not searched; run cardcube catalog build",
              file=sys.stderr)
    if not refs:  # an empty search is no error, but a silent one looks like a broken command
        asked = [f"bbox {','.join(map(str, args.bbox))} ({args.crs})" if args.bbox else "",
                 f"time range {args.time}" if args.time else ""]
        print(f"no tile of the {args.collection} cube matches the {' and the '.join(filter(None, asked)) or 'search'}",
              file=sys.stderr)
    return 0
