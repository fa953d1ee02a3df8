"""``cardcube timeseries``, ``chip``, ``extract``, ``flag`` and ``serve``: thin shells over
:mod:`cube.timeseries`, :mod:`cube.chips`, :mod:`cube.extract`, :mod:`cube.anomalies` and :mod:`cube.service`."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardcube.cli import (
    add_endpoint_option,
    add_stop_grace_option,
    add_store_timeout_option,
    sigterm_stops_serving,
    storage_options,
)
from cardcube.option_types import number, path_prefix, whole_number
from cardcube.query import TIME_HELP
from cardcube.spec import CUBE_SPECS

if TYPE_CHECKING:
    import pandas as pd


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cube", required=True, help="cube root: a folder or s3://bucket/prefix")
    add_endpoint_option(p)
    p.add_argument("--collection", choices=sorted(CUBE_SPECS), default="s2", help="cube collection (default s2)")
    p.add_argument("--parcels", help="parcel file (GeoPackage, GeoParquet, GeoJSON, shapefile) with a parcel id "
                   "column: a path, or an s3:// (read with --endpoint-url) or https:// URL")
    p.add_argument("--id-column", default="parcel_id", help="parcel id column of --parcels (default parcel_id)")
    _layer_option(p)
    p.add_argument("--time", help=TIME_HELP)
    p.add_argument("--as-of", type=whole_number(at_least=1), default=None,
                   help="read the cube as committed by this version (cardcube versions lists them)")


def _layer_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", help="layer of --parcels, for a file of several (a GeoPackage with a layer per year)")


def _statistics_options(p: argparse.ArgumentParser) -> None:
    """What ``timeseries`` and ``extract`` compute: bands, statistics, parcel pixels and the cloud mask."""
    p.add_argument("--bands", default=None, help="comma-separated bands and indices, e.g. B04,B08,NDVI "
                   "(default: every band but SCL)")
    p.add_argument("--stats", default=None, help="comma-separated statistics: mean, std, min, max, median and any "
                   "percentile pNN (default: mean,std,min,max,p25,median,p75); count and masked are always written")
    p.add_argument("--buffer", type=number("a number of metres"), default=-5.0,
                   help="metres the parcel is grown (> 0) or shrunk (< 0) before its pixels are chosen, -100 to "
                   "100 (default -5: half a 10 m pixel inwards, off the field's edge)")
    p.add_argument("--all-touched", action="store_true", help="every pixel the parcel touches, not centres")
    masks = p.add_mutually_exclusive_group()
    masks.add_argument("--mask", default=None, metavar="CODES", help="comma-separated SCL classes to leave out "
                       "(default: 0,1,3,8,9,10,11: no data, defective, cloud shadows, clouds, cirrus, snow; e.g. "
                       "0,1,2,3,7,8,9,10,11 also leaves out dark areas and unclassified pixels)")
    masks.add_argument("--no-mask", action="store_true", help="do not mask clouds with SCL")


def _statistics_arguments(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`_statistics_options`' options, as the Python API takes them."""
    from cube.stats import STATS

    mask = None if args.no_mask else "default" if args.mask is None else args.mask  # --mask "": an error, not default
    return {"bands": args.bands, "stats": STATS if args.stats is None else args.stats, "buffer": args.buffer,
            "all_touched": args.all_touched, "mask": mask}


TABLE_SUFFIXES = (".parquet", ".csv")  # what timeseries and flag write: Parquet, else CSV
MANY_PARCELS = 500  # parcels above which `timeseries` points to `extract`
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")  # an --out of chip so named is a file's name, no folder


def _local_out(out: str, what: str) -> Path:
    """``--out`` of a command writing local files (``what``), not a URL: ``s3://b/x`` would be a folder ``s3:``."""
    from cardcube.errors import InvalidRequestError

    if "://" in out:
        raise InvalidRequestError(f"--out {out} is a URL: give a local {what} (cardcube extract writes to object "
                                  f"storage)")
    return Path(out)


def _table_out(out: str, inputs: dict[str, str | None], *, sidecar: str = "") -> Path:
    """``--out`` of a command writing one table, checked before any work: a file name ending .parquet or .csv,
    and neither it nor its ``sidecar`` (a suffix: ``.json``) one of the command's ``inputs`` (option: path), which
    the output would replace; an existing file only if it is an earlier output (its sidecar beside it), an existing
    sidecar only if it is a record cardcube wrote (:func:`_is_output_record`)."""
    from cardcube.errors import InvalidRequestError

    path = _local_out(out, "file name ending .parquet or .csv")
    if path.is_dir():
        raise InvalidRequestError(f"--out {out} is a folder: give a file name ending .parquet or .csv")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InvalidRequestError(f"--out {out}: give a file name ending .parquet or .csv (the formats written)")
    if file := next((p for p in path.parents if p.exists() and not p.is_dir()), None):  # else found by the write
        raise InvalidRequestError(f"--out {out}: {file} is a file, no folder to write in: give another name")
    if sidecar and Path(f"{path}{sidecar}").is_dir():  # found only by the write, after all the work
        raise InvalidRequestError(f"--out {out}: {path.name}{sidecar}, where the record of the parameters goes, is a "
                                  "folder: give another name, or move the folder")
    if sidecar and Path(f"{path}{sidecar}").is_file() and not _is_output_record(Path(f"{path}{sidecar}")):
        raise InvalidRequestError(f"--out {out}: {path.name}{sidecar}, where the record of the parameters goes, "
                                  "exists and is no record cardcube wrote (of timeseries or flag), which would be "
                                  "replaced: give another name, or move that file")
    if sidecar and path.is_file() and not Path(f"{path}{sidecar}").is_file():
        raise InvalidRequestError(f"--out {out} exists, and is no earlier output of cardcube (none has its "
                                  f"{path.name}{sidecar} beside it), which would be replaced: give a new name, or "
                                  f"delete it first")
    written = {path.resolve(), Path(f"{path}{sidecar}").resolve()}
    for option, given in inputs.items():
        if not given or "://" in given:
            continue
        source = Path(given).resolve()
        if source in written:
            raise InvalidRequestError(f"--out {out} would overwrite the input {option} {given}: give another name")
        if source.is_dir() and path.resolve().is_relative_to(source):  # an extraction's folder: its files are read
            raise InvalidRequestError(f"--out {out} is inside the input {option} {given}, whose files it would "
                                      "replace or join: give a name outside it")
    return path


OUTPUT_RECORDS = ({"cube", "collection", "cube_version"}, {"rules", "inputs"})  # what every record of timeseries,
# of flag has held: a file of OUT.json's name holding neither is the user's


def _is_output_record(path: Path) -> bool:
    """Whether the file ``path`` is the JSON record :func:`_write_table` wrote beside a table (of ``timeseries`` or
    ``flag``): one of another tool, or the user's, of the same name is not replaced."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and any(keys <= doc.keys() for keys in OUTPUT_RECORDS)


def _write_table(frame: pd.DataFrame, path: Path, record: dict[str, Any]) -> None:
    """``frame`` as Parquet (portable: Spark reads its times) or CSV, by the suffix :func:`_table_out` checked;
    CSV times in UTC with their ``Z``, as the REST service and the chips' tags write them. ``record`` goes beside
    it as JSON (``OUT.json``), with the table's size and SHA-256 (:func:`cube.flag_files.statistics_parameters`
    trusts a record of its table alone). Each is written whole or not at all: a run stopped halfway (Ctrl-C, a full
    disk) leaves an earlier run's output and record as they were, not a truncated table that still parses; stopped
    between the two renames, a new record beside the old table, which its digest tells."""
    from cardcube.query import TIME_FORMAT
    from cardcube.storage import replacing
    from cube.extraction_files import PORTABLE_PARQUET
    from cube.flag_files import table_digest

    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as table, replacing(f"{path}.json") as sidecar:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(table, **PORTABLE_PARQUET)
        else:
            frame.to_csv(table, index=False, date_format=TIME_FORMAT)
        record = {**record, "table": table_digest(table)}
        with open(sidecar, "w") as out:  # in pieces: made whole first, the record of a register of 300,000 parcels
            out.writelines(json.JSONEncoder(indent=2, default=str).iterencode(record))  # (53 MB) took 300 MB more
            out.write("\n")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cardcube timeseries``, ``chip``, ``extract``, ``layers``, ``flag`` and ``serve`` to the ``cardcube``
    parser."""
    p = sub.add_parser("timeseries", help="parcel statistics per date and band (CSV or Parquet)",
                       description="Statistics (count, mean, std, min, max, p25, median, p75, SCL class counts) "
                       "per parcel, acquisition and band, read directly from the cube's chunks.")
    _common(p)
    p.add_argument("ids", nargs="*", help="parcel ids from --parcels (default: all of them)")
    p.add_argument("--point", nargs=2, type=float, metavar=("LON", "LAT"), help="the parcel containing this point")
    _statistics_options(p)
    add_store_timeout_option(p, served=False)
    p.add_argument("--out", required=True, help="output .csv or .parquet, with OUT.json beside it recording the "
                   "query (an earlier output is replaced; another file of either name is refused)")
    p.set_defaults(func=_timeseries)

    c = sub.add_parser("chip", help="PNG/GeoTIFF chips and a season contact sheet of a parcel or point",
                       description="Write an image chip around a parcel (id from --parcels) or a lon/lat point: "
                       "one PNG per date (or a contact sheet of the season) with the parcel outline.")
    _common(c)
    c.add_argument("id", nargs="*", help="parcel id from --parcels (one: the chips of one parcel)")
    c.add_argument("--point", nargs=2, type=float, metavar=("LON", "LAT"),
                   help="a lon/lat point: with --parcels the chip of the parcel containing it, else a chip centred on "
                   "it (a cross marks it)")
    c.add_argument("--size", type=whole_number(at_least=1), default=128, help="chip size in pixels (default 128)")
    c.add_argument("--scale", type=whole_number(at_least=1), default=None,
                   help="PNG pixels per cube pixel (default 4, 3 for a --sheet's panels; less "
                   "for chips over 1024 px: at most 4096 px a side)")
    c.add_argument("--bands", default=None, help="three bands (RGB) or one band/index, e.g. NDVI (default: true colour "
                   "B04,B03,B02 for s2, VH_VV for s1)")
    form = c.add_mutually_exclusive_group()  # a contact sheet is a PNG
    form.add_argument("--sheet", action="store_true", help="write one contact sheet of all dates (a PNG)")
    form.add_argument("--geotiff", action="store_true", help="write GeoTIFFs instead of PNGs, one per date")
    add_store_timeout_option(c, served=False)
    c.add_argument("--out", required=True, help="output folder: ID_COLLECTION_BANDS_TIME.png (.tif) per date, "
                   "ID_COLLECTION_BANDS_season.png for --sheet (e.g. NL-000042_s2_B04-B03-B02_season.png; "
                   "point_LON_LAT_... for a --point without --parcels); a file of the same name is replaced")
    c.set_defaults(func=_chip)

    e = sub.add_parser("extract", help="statistics of every parcel, date and band of a territory (Parquet)",
                       description="Full-territory extraction: the parcel_timeseries statistics of every parcel in "
                       "--parcels, every date and band, in one pass over the cube, written as Parquet under --out "
                       "(timeseries/tile=*/...parquet) with parcels.parquet giving each parcel's status. An "
                       "interrupted run resumes when run again.")
    e.add_argument("--parcels", required=True, help="parcel file (GeoPackage, GeoParquet, GeoJSON, shapefile): a path, "
                   "or an s3:// (read with --endpoint-url) or https:// URL")
    e.add_argument("--cube", required=True, help="cube root: a folder or s3://bucket/prefix")
    e.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    e.add_argument("--layers", default=None, metavar="DIR",
                   help="where to keep the parcels' label layers, reused by later runs (folder or s3://...; default "
                   "beside the cube, which must then be writable)")
    add_endpoint_option(e)
    e.add_argument("--collection", choices=sorted(CUBE_SPECS), default="s2", help="cube collection (default s2)")
    e.add_argument("--time", help=TIME_HELP)
    e.add_argument("--as-of", type=whole_number(at_least=1), default=None,
                   help="read the cube as committed by this version (cardcube versions lists them)")
    _statistics_options(e)
    e.add_argument("--block", type=int, default=None, help="work unit side in 10 m pixels (default: shard side)")
    e.add_argument("--time-block", type=int, default=None,
                   help="dates a work unit reads at once (default: the cube's time chunk); fewer use less memory, "
                   "but below the time chunk each chunk is decoded again for every run of dates it holds")
    e.add_argument("--scheduler", default=None,
                   help="dask scheduler: threads (default), processes, sync, or a tcp://host:port address")
    e.add_argument("--id-column", default="parcel_id", help="parcel id column (default parcel_id)")
    _layer_option(e)
    add_stop_grace_option(e, tasks="work units", then="those still running then, on a dask cluster's workers, "
                          "may write their files after the command has ended (it says so)")
    e.add_argument("--update", action="store_true",
                   help="--out holds a complete extraction of an earlier cube version: add the new dates only")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_extract, on_stop="the same command resumes it, the files written kept (with --as-of "
                   "the version it read, should the cube gain one meanwhile: the manifest names it)")

    g = sub.add_parser("layers", help="list the parcels' label layers extract keeps, and delete the unused ones",
                       description="List the label layers cardcube extract keeps (one per tile and parcel file: an "
                       "amended parcel file leaves a new one), when each was made and last read by a run; with "
                       "--prune, delete those no run made or read for longer than the age given.")
    g.add_argument("store", metavar="URL", help="the cube (layers are kept beside it by default) or the --layers "
                   "location of the extractions: a folder or s3://bucket/prefix")
    g.add_argument("--prune", metavar="AGE", default=None,
                   help="delete the layers unused for longer than this: 30d, 12h, 30m, 45s, or 0 (all); keep it "
                   "longer than any extraction takes")
    g.add_argument("--dry-run", action="store_true", help="with --prune: report what would go, delete nothing")
    add_endpoint_option(g)
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=_layers)

    f = sub.add_parser("flag", help="flag parcels whose NDVI does not fit their declaration",
                       description="Anomaly markers from parcel statistics (an extraction folder, or a file written by "
                       "cardcube timeseries): crop_mismatch (the NDVI profile fits another crop's far better), "
                       "bare_soil and no_mowing (declared grassland). Writes one row per parcel, flagged first.")
    f.add_argument("--timeseries", required=True, help="extraction folder or s3://bucket/prefix (cardcube extract "
                   "--out), or a .parquet/.csv file of cardcube timeseries")
    f.add_argument("--s1", help="Sentinel-1 statistics of the same parcels (folder, s3:// URL or file, with VH): the "
                   "mowing marker then uses radar, which sees the cuts made under clouds")
    add_endpoint_option(f)
    f.add_argument("--parcels", required=True, help="parcel file with the declarations (a path, or an s3:// or "
                   "https:// URL)")
    f.add_argument("--crop-column", default="crop_code", help="declared crop column (default crop_code)")
    f.add_argument("--grassland", default="", help="comma-separated grassland crop codes, e.g. 265,266 (without "
                   "them, bare_soil and no_mowing are not checked)")
    f.add_argument("--id-column", default="parcel_id", help="parcel id column (default parcel_id)")
    _layer_option(f)
    f.add_argument("--rules", help="JSON file of marker thresholds to change (fields of MarkerRules, e.g. "
                   '{"bare_ndvi": 0.25, "season": ["04-15", "10-15"]}); the others keep their defaults')
    f.add_argument("--out", required=True, help="output .csv or .parquet; beside it, OUT.json records the rules "
                   "and inputs, so the flags can be reproduced (an earlier output is replaced; another file of that "
                   "name, the table's or OUT.json's, is refused)")
    f.add_argument("--batch-size", type=whole_number(at_least=1), default=None, metavar="PARCELS",
                   help="parcels judged at a time (default 500): memory holds their statistics, the others wait in a "
                   "temporary folder (TMPDIR); the flags are the same whatever the size")
    f.set_defaults(func=_flag)

    s = sub.add_parser("serve", help="the REST service: parcel time series and chips over HTTP",
                       description="Serve parcel time series (JSON, CSV, Parquet) and image chips (PNG) read from "
                       "the cube by chunk, for parcel ids of --parcels or posted GeoJSON; see /docs once running.")
    s.add_argument("--cube", required=True, help="cube root: a folder or s3://bucket/prefix")
    add_endpoint_option(s)
    s.add_argument("--parcels", help="parcel file whose parcel ids the URLs name (GeoPackage, GeoParquet, GeoJSON, "
                   "shapefile; a path, or an s3:// (read with --endpoint-url) or https:// URL); without it, the "
                   "service answers posted geometries only")
    s.add_argument("--id-column", default="parcel_id", help="parcel id column of --parcels (default parcel_id)")
    _layer_option(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    s.add_argument("--root-path", type=path_prefix, default="", metavar="PREFIX",
                   help="path prefix under which a reverse proxy serves it, stripping it (e.g. /cardcube): "
                   "/docs then loads the OpenAPI document from PREFIX/openapi.json")
    s.add_argument("--allow-origin", action="append", metavar="ORIGIN", dest="origins",
                   help="a web origin whose pages may read the answers (CORS), e.g. https://dashboard.example.org; "
                   "repeat for several, 'none' for none (default: any). Behind a firewall, name the dashboards")
    s.add_argument("--refresh", type=number("a number of seconds", at_least=0), default=5.0,
                   help="seconds between lookups of the cube's latest version (default 5; 0: every request)")
    s.add_argument("--array-cache", type=whole_number(), default=1024, metavar="N",
                   help="opened arrays kept between requests, with their shard indexes (default 1024; 0: none, "
                   "each request reads the arrays' metadata and shard indexes again)")
    add_store_timeout_option(s)
    s.add_argument("--reads", type=whole_number(at_least=1), default=4, metavar="N",
                   help="requests reading the cube at once, time series and images (default 4: memory is bounded by "
                   "N times a request's); the others wait their turn, and at most 2N POSTs are held at once")
    s.add_argument("--read-wait", type=number("a number of seconds", at_least=0), default=10.0, metavar="SECONDS",
                   help="how long a request waits for its turn to read before a 503 Busy with Retry-After (default "
                   "10)")
    s.add_argument("--body-wait", type=number("a number of seconds", above=0), default=60.0, metavar="SECONDS",
                   help="how long a POST body may take to arrive whole before a 408 (default 60)")
    s.add_argument("--access-log", action="store_true",
                   help="a line per request on stderr: client address (a trusted proxy's X-Forwarded-For, see "
                   "FORWARDED_ALLOW_IPS), request and status; the service's errors are logged there in any case")
    s.set_defaults(func=_serve)


def _registry(args: argparse.Namespace):
    """The parcels of ``--parcels`` (a file or a URL, read with the cube's ``--endpoint-url``), or None."""
    if args.parcels is None:
        return None
    from cube.parcels import as_parcels, read_parcels

    frame = read_parcels(args.parcels, id_column=args.id_column, layer=args.layer,
                         storage_options=storage_options(args))
    return as_parcels(frame, id_column=args.id_column, errors="collect")  # an empty geometry stops its parcel only


def _target(args: argparse.Namespace, ids: list[str]):
    """What ``timeseries`` (``args.command``; every parcel of ``--parcels`` by default, ``--point`` within them)
    or ``chip`` (one parcel, or a point with or without parcels) measures, and the parcels: checked before any
    file is read."""
    from shapely.geometry import Point

    from cardcube.errors import InvalidRequestError

    one = args.command == "chip"
    if args.point and ids:
        raise InvalidRequestError(f"give parcel ids or --point, not both: --point picks the parcel containing it "
                                  f"(got {', '.join(ids)})")
    if args.parcels is None and args.point and not one:
        raise InvalidRequestError("--point picks the parcel containing it: give --parcels too")
    if args.parcels is None and not args.point:
        raise InvalidRequestError("give --parcels with a parcel id, or --point LON LAT" if one else
                                  "give --parcels, with parcel ids or none for all of them")
    if one and not ids and not args.point:
        raise InvalidRequestError(f"give a parcel id of {args.parcels} or --point LON LAT: a chip shows one parcel")
    registry = _registry(args)
    if args.point:
        return Point(*args.point), registry
    return (ids if ids else registry), registry


def _timeseries(args: argparse.Namespace) -> int:
    from cardcube.errors import NoAcquisitionWarning, ParcelsWithoutStatisticsWarning
    from cardcube.storage import canonical_url, listed_lines, open_store
    from cube.layout import cube_root
    from cube.parcels import ParcelSet
    from cube.timeseries import parcel_timeseries

    out = _table_out(args.out, {"--parcels": args.parcels}, sidecar=".json")  # before the work
    where, registry = _target(args, args.ids)
    many = len(where) if isinstance(where, list | ParcelSet) else 1
    if many > MANY_PARCELS:  # one request, held in memory whole, without a word until its end
        print(f"note: {many} parcels, read as one request (no progress shown until it ends); for a territory, "
              f"cardcube extract --parcels {args.parcels} --cube {args.cube} --out DIR is the job: by chunk, with "
              f"bounded memory and a progress bar, resumable", file=sys.stderr)
    store = open_store(cube_root(args.cube), storage_options=storage_options(args), read_only=True,
                       timeout=args.store_timeout)
    with warnings.catch_warnings(record=True) as caught:  # the parcels without statistics are listed below
        warnings.simplefilter("ignore", ParcelsWithoutStatisticsWarning)
        warnings.simplefilter("always", NoAcquisitionWarning)
        frame = parcel_timeseries(store, where, collection=args.collection, registry=registry,
                                  time=args.time, as_of=args.as_of, **_statistics_arguments(args))
    status = frame.attrs["parcel_status"]  # a record per parcel: 300,000 read from a frame's text column took 2 s
    cube = canonical_url(store)
    record = {"cube": cube, "collection": frame.attrs["collection"], "cube_version": frame.attrs["cube_version"],
              "time": args.time, **_statistics_arguments(args), "bands": frame.attrs["bands"],  # as read: B04 once
              "mask": frame.attrs["mask"],  # the SCL classes left out, as resolved
              "stats": frame.attrs["stats"], "units": frame.attrs["units"], "parcels": frame.attrs["parcel_status"],
              "notes": [str(w.message) for w in caught]}
    table = frame.copy(deep=False)  # each parcel's status is the record's: in a Parquet file's metadata, pandas and
    table.attrs = {k: v for k, v in frame.attrs.items() if k != "parcel_status"}  # pyarrow stored it three times
    _write_table(table, out, record)  # (193 MB for 41,040 rows of a register of 300,000: no reader opened it)
    print(f"{len(frame)} rows for {sum(s['status'] == 'ok' for s in status)} parcel(s) from cube version "
          f"{frame.attrs['cube_version']} -> {out} (every parcel's status and the parameters: {out}.json)")
    unmeasured = [s for s in status if s["status"] != "ok"]
    noted = [s for s in status if s["status"] == "ok" and s["reason"]]
    for line in [  # a register's 47,500 parcels beyond the cube were as many lines
            *listed_lines([f"  no statistics: parcel {s['parcel_id']}: {s['reason']}" for s in unmeasured],
                          f"parcel(s) without statistics ({out}.json gives each one's reason)"),
            *listed_lines([f"  parcel {s['parcel_id']}: {s['reason']}" for s in noted],
                          f"parcel(s) with a note ({out}.json gives each one's)")]:
        print(line)
    for warning in caught:  # e.g. no acquisition within --time, naming the cube's dates
        print(f"note: {warning.message}", file=sys.stderr)
    if frame.empty and not any(issubclass(w.category, NoAcquisitionWarning) for w in caught):
        print("the cube holds no acquisition", file=sys.stderr)
    return 1 if frame.empty else 0


def _chip(args: argparse.Namespace) -> int:
    import pandas as pd

    from cardcube.errors import InvalidRequestError
    from cardcube.storage import listed_names, open_store
    from cube.chips import MAX_IMAGE_SIZE, SHEET_SCALE, check_chip_size, check_image_size, check_sheet, chip
    from cube.layout import cube_root
    from cube.ledger import read_version

    out = _local_out(args.out, "folder for the chips")
    if file := next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None):
        raise InvalidRequestError(f"--out {args.out}: {file} is a file: give a folder for the chips (made if "
                                  f"missing)")
    if out.suffix.lower() in IMAGE_SUFFIXES and not out.exists():
        raise InvalidRequestError(f"--out {args.out} is the name of a file: chip writes a folder of chips, a file per "
                                  f"date (named by parcel, bands and time); give a folder")
    if args.geotiff and args.scale is not None:  # a GeoTIFF at the cube's pixels, drawn no larger: --scale was lost
        raise InvalidRequestError(f"--scale {args.scale} enlarges PNGs; a --geotiff chip holds the cube's pixels on "
                                  f"their grid, unscaled: leave --scale out (a GIS enlarges it)")
    scale = args.scale if args.scale is not None else max(1, min(4, MAX_IMAGE_SIZE // args.size))
    if args.sheet:  # panels drawn at SHEET_SCALE unless told; the sheet's own size is checked before drawing
        scale = args.scale if args.scale is not None else min(scale, SHEET_SCALE)
    check_chip_size(args.size) if args.geotiff else check_image_size(args.size, scale)  # before reading
    if len(args.id) > 1:  # argparse said "unrecognized arguments" under the top-level usage
        raise InvalidRequestError(f"chip writes the chips of one parcel, {len(args.id)} ids given "
                                  f"({listed_names(args.id, most=3)}): run it once per parcel")
    where, registry = _target(args, args.id)
    store = open_store(cube_root(args.cube), storage_options=storage_options(args), read_only=True,
                       timeout=args.store_timeout)
    version = read_version(store, args.collection, args.as_of)
    if args.sheet:
        check_sheet(version, args.time, args.size, scale=scale)  # before reading: it read every date first (8 s)
    result = chip(store, where, collection=args.collection, size=args.size, time=args.time,
                  bands=args.bands, registry=registry, as_of=version)
    name = _chip_name(result.parcel_id, args.point, args.collection, result.bands)
    paths = [out / f"{name}_season.png"] if args.sheet else [
        out / f"{name}_{pd.Timestamp(when):%Y%m%dT%H%M%S}.{'tif' if args.geotiff else 'png'}" for when in result.times]
    if folder := next((path for path in paths if path.is_dir()), None):  # the write found it, chips written before
        raise InvalidRequestError(f"--out {args.out}: {folder.name}, the name of a chip, is a folder there: move it, "
                                  "or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    if args.sheet:
        result.contact_sheet(scale=scale).write(paths[0])
        print(f"contact sheet of {len(result.times)} dates -> {paths[0]}")
        return 0
    for t, path in enumerate(paths):
        result.to_geotiff(str(path), t) if args.geotiff else result.to_png(str(path), t, scale=scale)
    print(f"{len(result.times)} chip(s) -> {out}")
    return 0


def _chip_name(parcel_id: Any, point: Sequence[float] | None, collection: str, bands: Sequence[str]) -> str:
    """The start of a chip's file names: the parcel id (or the point), the collection and the bands, so chips of
    other parcels, points, bands or of S1 written beside them overwrite nothing. Characters a file name cannot
    hold become ``_``, leading dots go (``../up`` hid a file), and an id so changed or long (cut) is followed by a
    digest of it to keep it apart: "NL/1" is NL_1_ and 12 hex digits, not NL_1, the name of parcel "NL_1"'s chips,
    which it replaced."""
    subject = str(parcel_id) if parcel_id is not None else "point_{:.6f}_{:.6f}".format(*point) if point else "point"
    safe = re.sub(r"[^\w.-]", "_", subject).lstrip(".") or "_"
    if parcel_id is not None and (safe != subject or len(safe) > 100):
        safe = f"{safe[:80]}_{hashlib.sha256(subject.encode()).hexdigest()[:12]}"
    subject = safe
    return f"{subject}_{collection}_{'-'.join(bands)}"


def _extract(args: argparse.Namespace) -> int:
    from cube.extract import extract

    result = extract(args.parcels, args.cube, args.out, collection=args.collection, time=args.time,
                     as_of=args.as_of, block=args.block, time_block=args.time_block, scheduler=args.scheduler,
                     id_column=args.id_column, layer=args.layer, layers=args.layers, progress=not args.quiet,
                     update=args.update, stop_grace=args.stop_grace,
                     storage_options=storage_options(args), out_storage_options=storage_options(args),
                     **_statistics_arguments(args))
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    for failure in [] if args.json else result.failures:
        print(f"  failed: {failure}")
    if not result.status["ok"]:
        crs = ("; none lies in the cube's data: is the CRS the parcel file says that of its coordinates? (each one's "
               "reason says where it lies)") if result.status["outside"] == result.parcels else ""
        print(f"no parcel could be measured: {result.out}/parcels.parquet gives each one's reason{crs}",
              file=sys.stderr)
    elif result.parcels > result.status["ok"] and not args.json:
        print(f"  {result.parcels - result.status['ok']} parcel(s) without statistics: {result.out}/parcels.parquet "
              f"gives each one's status and reason")
    return 0 if result.status["ok"] and not result.failures else 1


def _layers(args: argparse.Namespace) -> int:
    from cardcube.errors import CubeNotFoundError, InvalidRequestError
    from cardcube.option_types import parse_age
    from cardcube.storage import list_children, open_store, refuse_file, store_url
    from cube.layout import PARCELS_DIR
    from cube.parcel_layer import prune_layers, stored_layers

    if args.dry_run and args.prune is None:
        raise InvalidRequestError("--dry-run goes with --prune AGE: listing deletes nothing anyway")
    unused_for = None if args.prune is None else parse_age(args.prune)  # before any store is opened
    refuse_file(args.store, "the layers' location", made=False)  # a folder of no layers would be "0"
    try:
        store = open_store(args.store, storage_options=storage_options(args), read_only=True)
    except CubeNotFoundError:  # not "no cube": the URL may be the extractions' --layers location
        raise InvalidRequestError(f"nothing at {args.store}: the folder does not exist (give the cube, or the "
                                  "--layers location of cardcube extract)") from None
    if store_url(store).startswith("s3://") and not list_children(store, ""):  # a prefix exists by its objects
        raise InvalidRequestError(f"nothing at {store_url(store)}: no object under that prefix (give the cube, or "
                                  "the --layers location of cardcube extract)")
    if store_url(store).rstrip("/").endswith(f"/{PARCELS_DIR}") and PARCELS_DIR not in list_children(store, ""):
        raise InvalidRequestError(f"{args.store} is the folder of the layers themselves, which would list none: give "
                                  "the folder holding it (the cube, or the --layers location of cardcube extract)")
    if unused_for is not None:
        result = prune_layers(store, unused_for=unused_for, dry_run=args.dry_run)
        print(json.dumps(result.to_dict()) if args.json else result.summary())
        for layer in [] if args.json else result.deleted:
            print(f"  {'would delete' if args.dry_run else 'deleted'} {layer.prefix} "
                  f"(last used {layer.last_use:%Y-%m-%d %H:%M} UTC)")
        return 0
    layers = stored_layers(store)
    if args.json:
        print(json.dumps([layer.to_dict() for layer in layers]))
        return 0
    print(f"label layers at {store_url(store)}: {len(layers)}")
    for layer in layers:
        made = f"{layer.parcels} parcels, made {layer.created:%Y-%m-%d %H:%M}" if layer.created else (
            f"{layer.parcels} parcels" if layer.complete else "incomplete (a build that did not finish)")
        used = f"last used {layer.last_use:%Y-%m-%d %H:%M} UTC" if layer.last_use else "use not recorded"
        print(f"  {layer.prefix}: {made}, {used}")
    return 0


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys each appear once (json keeps the last of a repeated one without a word)."""
    from cardcube.errors import InvalidRequestError

    if twice := sorted({k for k, _ in pairs if sum(k == other for other, _ in pairs) > 1}):
        raise InvalidRequestError(f"{', '.join(twice)} given more than once: which value is meant?")
    return dict(pairs)


def _flag(args: argparse.Namespace) -> int:
    from cardcube.errors import InvalidRequestError
    from cube.anomalies import MARKERS, MarkerRules, code_list, declarations
    from cube.flag_files import describe_statistics, flag_files, table_digest
    from cube.parcels import read_parcels

    out = _table_out(args.out, {"--timeseries": args.timeseries, "--s1": args.s1, "--parcels": args.parcels,
                                "--rules": args.rules}, sidecar=".json")
    rules = MarkerRules()
    if args.rules:
        try:
            rules = MarkerRules.from_dict(json.loads(Path(args.rules).read_text(encoding="utf-8-sig"),  # Notepad's BOM
                                                     object_pairs_hook=_once_each))
        except (OSError, ValueError) as exc:
            raise InvalidRequestError(f"cannot read the marker rules {args.rules}: {exc}") from None
    options = storage_options(args)
    if args.id_column == args.crop_column:
        raise InvalidRequestError(f"--id-column and --crop-column both name the column {args.crop_column!r}: a "
                                  f"parcel's id and its declared crop are two columns")
    parcels = read_parcels(args.parcels, id_column=args.id_column, layer=args.layer, storage_options=options)
    if args.crop_column not in parcels.columns:
        raise InvalidRequestError(f"{args.parcels} has no column {args.crop_column!r}; columns: "
                                  f"{', '.join(map(str, parcels.columns))}")
    declared = declarations(parcels.set_index(args.id_column)[args.crop_column])
    grassland = code_list(args.grassland, known=declared.unique())
    with warnings.catch_warnings(record=True) as caught:  # what was not judged, as a line each
        warnings.simplefilter("always", UserWarning)
        flags = flag_files(args.timeseries, declared, s1=args.s1, grassland=grassland, rules=rules,
                           storage_options=options, geometries=parcels.set_index(args.id_column).geometry,
                           batch_size=args.batch_size)
    if not grassland:  # once the flags are made: not a line before an error about the statistics
        print("no --grassland codes: the bare_soil and no_mowing markers are not checked", file=sys.stderr)
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    inputs = {name: describe_statistics(path, storage_options=options) if path else None
              for name, path in (("timeseries", args.timeseries), ("s1", args.s1))}
    inputs["parcels"] = args.parcels if "://" in args.parcels else str(Path(args.parcels).resolve())
    # the declarations judged: a register corrected under the same name gives other flags
    inputs["parcels_sha256"] = None if "://" in args.parcels else table_digest(args.parcels)["sha256"]
    record = {"rules": flags.attrs["rules"], "grassland": grassland, "crop_column": args.crop_column,
              "id_column": args.id_column, "layer": args.layer, "endpoint_url": args.endpoint_url,
              "inputs": inputs, "notes": [str(w.message) for w in caught]}
    _write_table(flags, out, record)
    counts = ", ".join(f"{int(flags[m].sum()):,} {m}" for m in MARKERS)
    print(f"{int(flags.flagged.sum()):,} of {len(flags):,} parcels flagged ({counts}) -> {out} (rules and inputs: "
          f"{out}.json)")
    for row in flags[flags.flagged].head(10).itertuples():
        print(f"  {row.parcel_id}: {row.reasons}")
    unjudged = flags[flags.not_judged != ""]
    if len(unjudged):
        print(f"{len(unjudged)} parcels have markers the data could not judge (column not_judged), e.g. "
              f"{unjudged.parcel_id.iloc[0]}: {unjudged.not_judged.iloc[0]}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cube.service import serve

    with sigterm_stops_serving("serve"):
        serve(args.cube, parcels=args.parcels, host=args.host, port=args.port, refresh=args.refresh,
              array_cache=args.array_cache, store_timeout=args.store_timeout, origins=args.origins or ("*",),
              reads=args.reads, read_wait=args.read_wait, body_wait=args.body_wait,
              id_column=args.id_column, layer=args.layer, storage_options=storage_options(args),
              root_path=args.root_path, access_log=args.access_log,
              announce=lambda url: print(f"serving {args.cube} on {url} (API docs at {url}docs); Ctrl-C stops",
                                         flush=True))
    return 0
