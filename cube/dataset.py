"""``open_cube()``: a lazy, dask-backed xarray Dataset over the committed cube tiles.

The Dataset is assembled from the ledger version being read (latest, or ``as_of``): each band's
time-first ("cold") array sliced to the committed length, joined with the live hot-buffer slots, sorted
by time. Dask chunks are the Zarr inner chunks, so computing a small region reads exactly the chunks
that intersect it. Bands stored at 20 m are repeated 2x2 onto the 10 m grid when the Dataset is at
10 m (nearest neighbour, exact: no values are invented); at 20 m, 10 m bands are 2x2 means. Each band of a
tile is read by :mod:`cube.band_reader`; here, which tiles and dates a query reads, and the Dataset they make.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import dask
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor: ds.odc.geobox, .odc.reproject)
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from dask.base import tokenize
from odc.geo.geom import Geometry
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from zarr.abc.store import Store

from cardcube.errors import (
    AreaOutsideCubeError,
    CorruptDocumentError,
    DateNotFoundError,
    InvalidRequestError,
    NoAcquisitionWarning,
)
from cardcube.grid import TileGrid, tile_ids
from cardcube.query import TimeSelection, in_crs, in_time_range, in_time_selection, parse_time_selection, query_geometry
from cardcube.spec import BandSpec, CubeSpec
from cardcube.storage import StoreLike, open_store, store_endpoint, store_url
from catalog.route import ItemCache, select_tiles, tile_refs
from cube import layout
from cube.band_reader import TileWindow, band_array, band_attrs, dates_and_arrays, time_order
from cube.coordinates import ACQUISITION_COORDS
from cube.indices import bands_for, check_bands
from cube.ledger import (
    Acquisition,
    CubeVersion,
    TileState,
    acquisition_columns,
    data_footprint,
    held_share,
    read_version,
    scene_area,
)
from cube.manifest import AbsentShards
from cube.mosaic import mosaic
from cube.pass_dates import PASS_GAP, first_times
from cube.tile_arrays import ArrayCache

log = logging.getLogger(__name__)


READ_THREADS = 16  # dask threads for an interactive read: requests in flight, not cores (little to decode)


@cache
def _read_pool(pid: int) -> ThreadPoolExecutor:
    """The threads of the process's interactive reads, shared. Given only a number of threads, dask's threaded
    scheduler keeps a pool of them for each thread that computes, for as long as that thread lives: the REST
    service, answering from 40 threads, held 40 pools, 500 idle threads after a load test. One per process
    (``pid``): a forked child inherits the pool without its threads, and would wait on it for ever."""
    return ThreadPoolExecutor(READ_THREADS, thread_name_prefix="cardcube-read")


def compute_reads(*collections: Any) -> tuple[Any, ...]:
    """``dask.compute`` for the small reads of an interactive query (a parcel's season, a chip). With dask's
    default local scheduler, on ``READ_THREADS`` threads shared by every such read of the process, so that on S3
    the window's chunks are fetched at once rather than a core's worth per round trip; a scheduler the user
    configured is used as it is. The reads' tasks never compute in turn, so sharing the threads cannot deadlock."""
    if dask.config.get("scheduler", None) is None:
        return dask.compute(*collections, scheduler="threads", pool=_read_pool(os.getpid()))
    return dask.compute(*collections)


def _windows(version: CubeVersion, area, crs, resolution: int, tiles: Sequence[str] | str | None,
             time: tuple | frozenset = (None, None), *, order: str = "area") -> list[TileWindow]:
    """Tile windows covering the query. A tile is read alone when it holds the area's data alone: its square holds
    the area and, for every date (within ``time``) on which another tile of its UTM zone has data in the area, it
    has that pass too, with data over all of the other's there (:func:`holds_passes`). Else a mosaic of the tiles
    with data in the area, the one holding most of it first. A tile's square is no measure of its data: tiles
    ingested for part of an area, scenes dropped by a cloud filter, Sentinel-1 pieces. No area given: the area is
    where the tiles hold data (the union of their footprints), so every tile's data is in the Dataset. ``order``
    ``"given"``: a mosaic of ``tiles`` with data in the area, in their order, whatever the area; ``"first"``: the
    same, or the first alone where it holds the area's data on every pass the others have there (see
    :func:`read_cube`)."""
    names = sorted(version.tiles) if tiles is None else tile_ids(tiles)
    unknown = [t for t in names if t not in version.tiles]
    if unknown:
        raise InvalidRequestError(f"the {version.collection} cube has no tile {', '.join(unknown)}; "
                                  f"tiles: {', '.join(sorted(version.tiles))}")
    if area[0] is None and area[1] is None and names:
        area, crs = (None, _held(version, names)), None
    out: list[tuple[TileWindow, bool, BaseGeometry, float]] = []
    for name in names:
        grid = TileGrid.from_id(name)
        full = grid.geobox(resolution)
        geom = in_crs(query_geometry(*area, crs, default_crs=grid.crs), grid.crs)
        tile_poly = box(*full.boundingbox)
        if geom.is_empty or not geom.intersects(tile_poly):
            continue
        inside = tile_poly.contains(geom)
        minx, miny, maxx, maxy = geom.intersection(tile_poly).bounds
        a = full.affine
        c0, c1 = math.floor((minx - a.c) / a.a), math.ceil((maxx - a.c) / a.a)
        r0, r1 = math.floor((a.f - maxy) / -a.e), math.ceil((a.f - miny) / -a.e)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(max(r1, r0 + 1), full.shape[0]), min(max(c1, c0 + 1), full.shape[1])
        share = held_share(data_footprint(version, name), geom)
        out.append((TileWindow(name, full[r0:r1, c0:c1]), inside, geom, share))
    if order != "area" and (ordered := [o for o in out if o[3] > 0]):
        first = ordered[0]
        if order == "first" and first[1] and all(holds_passes(version, first[0].tile, o[0].tile, first[2], time)
                                                 for o in ordered[1:]):
            return [first[0]]  # as the mosaic would be: the others hold nothing it has not
        return [w for w, *_ in ordered]
    with_data = sorted((o for o in out if o[3] > 0), key=lambda o: -o[3])  # stable: by name among equals
    if not with_data:  # nodata only: open_cube says so
        return [w for w, *_ in out]
    whole = [o for o in with_data if o[1]]
    if not whole:
        return [w for w, *_ in with_data]
    best, crs_best = whole[0], TileGrid.from_id(whole[0][0].tile).crs
    if best[3] < 1 and (others := [o[0].tile for o in with_data if TileGrid.from_id(o[0].tile).crs != crs_best]):
        # 32ULD's square holds 31UGU's data near the zone edge: that data was left out without a word
        raise InvalidRequestError(f"the area holds data of tiles of different UTM zones ({best[0].tile}; "
                                  f"{', '.join(others)}), which make no mosaic: query each zone separately "
                                  f"(tiles='{best[0].tile}' or tiles='{others[0]}', or a bbox within one zone)")
    zone = [o for o in with_data if o is not best and TileGrid.from_id(o[0].tile).crs == crs_best]
    if all(holds_passes(version, best[0].tile, o[0].tile, best[2], time) for o in zone):
        return [best[0]]
    return [best[0], *(w for w, *_ in zone)]


def pass_key(a: Acquisition) -> tuple:
    """What the dates of one pass share on every tile: platform, relative orbit and orbit direction (their times
    differ by up to :data:`PASS_GAP`, each tile's product its own sensing time)."""
    return (a.platform, a.relative_orbit, a.orbit_state)


def holds_passes(version: CubeVersion, tile: str, other: str, area: BaseGeometry, time: tuple | frozenset) -> bool:
    """Whether ``tile`` has every date (within ``time``) on which ``other`` (of the same UTM zone) has data in
    ``area``, the same pass (platform, relative orbit, orbit direction, within
    :data:`~cardcube.spec.PASS_GAP_S`), with data over all of the other's in the area: then reading ``tile`` alone
    misses nothing of ``other``'s."""
    return not bool(lacks_passes(passes_lacking(version, tile, other, time), np.array([area], dtype=object))[0])


def passes_lacking(version: CubeVersion, tile: str, other: str, time: tuple | frozenset) -> BaseGeometry:
    """Where ``other`` (of the same UTM zone as ``tile``) has data (within ``time``) on a pass ``tile`` has no
    data of there: the union of its scenes' areas (:func:`cube.ledger.scene_area`) less those of ``tile``'s scenes
    of the same pass holding every slice ``other``'s date holds (see :func:`holds_passes`); empty when ``tile``
    holds all ``other`` holds. An area holds more than the data (a window's box, a polygon's margin), so a date of
    ``tile`` lacking a slice of ``other``'s (a slice refused there) takes nothing away: where its box or margin lies
    over that slice's data, ``other``'s pixels were never read. A pass ``tile`` holds at a time beyond ``time`` is
    not lacking: read alone, its date is ``tile``'s own time (a pass across midnight, ``other``'s time within the
    range and its own the day after, was read from both at ``other``'s time, and again from ``tile`` alone in the
    range of the day after). Exact times (a frozenset) name a pass by any of its times (:func:`pass_selection`):
    ``tile`` holding it at a time not named lacks it, and the read across the tiles gives it."""
    mine: dict[tuple, list[tuple[np.datetime64, tuple[int, frozenset[str]], BaseGeometry]]] = {}
    for a in time_order(version.tiles[tile], time if isinstance(time, frozenset) else (None, None))[0]:
        mine.setdefault(pass_key(a), []).append((a.datetime64, _slices(version, a.scene_id),
                                                 scene_area(version, tile, a.scene_id)))
    parts = []
    for a in time_order(version.tiles[other], time)[0]:
        theirs, (n, items) = scene_area(version, other, a.scene_id), _slices(version, a.scene_id)
        same = [area for t, (held, held_items), area in mine.get(pass_key(a), [])
                if abs(t - a.datetime64) <= PASS_GAP and held >= n and items <= held_items]
        parts.append(theirs.difference(shapely.union_all(same)) if same else theirs)
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _slices(version: CubeVersion, scene_id: str) -> tuple[int, frozenset[str]]:
    """How many slices of its pass a date holds (:mod:`ingest.passes`), and the split STAC items they are pieces of
    (the same on every tile; a tile's own products are named by tile, and each has its own sensing time)."""
    record = version.scenes[scene_id]
    return 1 + len(record.parts), frozenset(record.items)


def lacks_passes(lacking: BaseGeometry, areas: np.ndarray) -> np.ndarray:
    """For each of ``areas``, whether it meets ``lacking`` (:func:`passes_lacking`): over a surface for an area,
    at all for a point or a line."""
    if lacking.is_empty:
        return np.zeros(len(areas), dtype=bool)
    common = shapely.intersection(lacking, areas)
    return np.where(shapely.area(areas) > 0, shapely.area(common) > 0, ~shapely.is_empty(common))


def _held(version: CubeVersion, tiles: Sequence[str]) -> Geometry:
    """Where ``tiles`` hold data in ``version``: the union of their footprints, in the first tile's CRS (a tile
    without scenes adds nothing; none with any: an empty area, so no window)."""
    crs = TileGrid.from_id(tiles[0]).crs
    parts = [in_crs(Geometry(data_footprint(version, t), TileGrid.from_id(t).crs), crs) for t in tiles]
    return Geometry(shapely.union_all([p for p in parts if not p.is_empty]), crs)


def _route(store: Store, version: CubeVersion, *, bbox, geometry, crs, items: ItemCache | None) -> list[str] | None:
    """Tiles whose footprint meets the query, from the static STAC catalog (no database; parsed items kept in
    ``items``).

    Tiles are never removed, so the tiles of an earlier version (``as_of``) are those of the catalog that
    this version's ledger record holds. Tiles the catalog does not list yet (an ingest run without it)
    stay candidates, as every tile of a cube written without a catalog (None).
    """
    if bbox is None and geometry is None:
        return None
    # without crs, a bbox or plain geometry is in "the tile CRS" (the collection's tiles'); a Geometry keeps its own
    tile_crs = TileGrid.from_id(next(iter(sorted(version.tiles)))).crs if version.tiles else "EPSG:4326"
    try:
        refs = tile_refs(store, version.collection, cache=items)
    except FileNotFoundError:
        return None
    except CorruptDocumentError as exc:  # the catalog routes, the ledger holds the truth: every tile a candidate
        log.warning("%s; reading without it", exc)
        return None
    found = select_tiles(refs, bbox=bbox, geometry=geometry, crs=crs, default_crs=tile_crs)
    unlisted = set(version.tiles) - {r.tile for r in refs}
    return sorted({r.tile for r in found if r.tile in version.tiles} | unlisted)


def _acquisition_coords(acqs: Sequence[Acquisition]) -> dict[str, Any]:
    """The per-date coordinates, with the CF attributes their arrays in the store hold (``cloud_cover``'s units)."""
    return {name: ("time", values, dict(ACQUISITION_COORDS[name][2]) if name in ACQUISITION_COORDS else {})
            for name, values in acquisition_columns(acqs).items()}


def pass_selection(version: CubeVersion, tiles: Sequence[str], time: tuple | frozenset) -> tuple | frozenset:
    """``time`` (of :func:`parse_time_selection`) for ``tiles`` read together: a pass is selected on each of them, at
    that tile's own time, where the date :func:`cube.mosaic.pass_times` makes of it (its earliest time, as the
    mosaic and a time series give it) lies within a range, or where one of its times is one of a set of exact
    times (:func:`first_times` groups them: no other date of a tile holding two of one pass, a pass chained over
    tiles whole). A pass's tiles carry their own sensing times, seconds apart: a time series' time of a mosaic date
    selected that date on one tile alone, and the other tile's pixels of it came out as masked; and a pass whose
    tiles' times lie across a range's start (one before midnight, the other after) was read as a date before that
    start, in the ranges on both sides of it (and unlike a Dataset of the mosaic narrowed by the range). ``time``
    itself where it selects every pass whole already."""
    if (isinstance(time, tuple) and time == (None, None)) or len(tiles) < 2:
        return time
    acqs = [version.tiles[tile].acquisitions for tile in tiles]
    times = [np.array([a.datetime64 for a in tile], dtype="datetime64[ns]") for tile in acqs]
    joined = first_times(times, [[pass_key(a) for a in tile] for tile in acqs])  # each date's mosaic date
    picked = [in_time_selection(t, time) for t in times]
    named = picked if isinstance(time, frozenset) else [in_time_selection(j, time) for j in joined]
    asked = {first for j, p in zip(joined, named, strict=True) for first in j[p].tolist()}
    kept = {t for ts, j in zip(times, joined, strict=True) for t, first in zip(ts.tolist(), j.tolist(), strict=True)
            if first in asked}
    held = {t for ts, p in zip(times, picked, strict=True) for t in ts[p].tolist()}
    return time if kept == held else frozenset(np.datetime64(t, "ns") for t in kept)


def dated_elsewhere(version: CubeVersion, tiles: Sequence[str], time: TimeSelection) -> str:
    """Why a read of ``tiles`` together (a mosaic) has no date of acquisitions they hold within the range ``time``:
    each is of a pass whose date, its earliest time on them (:func:`pass_selection`), lies outside the range; as a
    sentence naming them and those dates ("" where there are none, where the read has a date within the range, its
    parcels' rows: nothing is missing then, the pass is a date of the range beside it; or ``time`` is exact
    times)."""
    selection = parse_time_selection(time)
    if len(tiles) < 2 or isinstance(selection, frozenset):
        return ""
    acqs = [version.tiles[tile].acquisitions for tile in tiles]
    joined = first_times([np.array([a.datetime64 for a in tile], dtype="datetime64[ns]") for tile in acqs],
                     [[pass_key(a) for a in tile] for tile in acqs])
    if any(in_time_range(dates, selection).any() for dates in joined):  # a month's range: each parcel a note
        return ""
    outside = sorted({(a.time, f"{pd.Timestamp(first):%Y-%m-%dT%H:%M:%SZ}")
                      for tile, dates in zip(acqs, joined, strict=True) for a, first in zip(tile, dates, strict=True)
                      if in_time_range(np.array([a.datetime64]), selection)[0]
                      and not in_time_range(np.array([first]), selection)[0]})
    if not outside:
        return ""
    listed = "; ".join(f"{t}, of the pass dated {first}" for t, first in outside)
    return (f"tile(s) {'+'.join(tiles)}, read together, hold acquisitions within the time range {time} of passes "
            f"dated outside it (a pass's date is its earliest time on them), which give no date: {listed}; ask for "
            f"the pass's date")


def tile_dates(state: TileState, time: TimeSelection = None) -> list[Acquisition]:
    """The acquisitions of a tile (at one version) that ``time`` selects, in time order."""
    return time_order(state, parse_time_selection(time))[0]


def as_read(ds: xr.Dataset, *, as_of: int | CubeVersion | None, time: TimeSelection) -> tuple[xr.Dataset, str]:
    """A Dataset of :func:`open_cube` passed in place of a cube location (``parcel_timeseries``, ``chip``): the
    dates ``time`` selects, as :func:`open_cube` selects them from the cube, and the message for a ``time``
    selecting none of them ("" otherwise). An ``as_of`` other than the version the Dataset was read at is an
    error: it would be ignored without a word."""
    wanted = as_of.version if isinstance(as_of, CubeVersion) else as_of
    held = ds.attrs.get("cardcube:version")
    if isinstance(as_of, CubeVersion):  # the same number of another cube or collection is no other version of the same
        read = (ds.attrs.get("cardcube:collection"), ds.attrs.get("cardcube:cube"))
        given = (as_of.collection, as_of.cube or read[1])
        if None not in read and given != read:
            raise InvalidRequestError(f"the Dataset was read from the {read[0]} cube at {read[1]}, and as_of is a "
                                      f"version of the {given[0]} cube at {given[1]}: pass a version of the "
                                      "Dataset's cube, or none")
    if wanted is not None and held is not None and wanted != held:
        raise InvalidRequestError(f"the Dataset was read at version {held} of the cube, not {wanted}: open it with "
                                  f"open_cube(..., as_of={wanted}), or pass the cube's location")
    if time is None:
        return ds, ""
    times = ds["time"].values
    keep = in_time_selection(times, parse_time_selection(time))
    if keep.any():
        return ds.isel(time=np.flatnonzero(keep)), ""
    dates = pd.DatetimeIndex(times)
    return ds.isel(time=[]), f"no date of the Dataset falls within the time range {time}" + (
        f"; its dates run from {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}" if len(dates) else "")


def date_span(version: CubeVersion) -> str:
    """The dates ``version`` holds, for a message: "version 3 of the s2 cube holds dates from ... to ..."."""
    name = f"version {version.version} of the {version.collection} cube"
    if version.time_range is None:
        return f"{name} holds no acquisition"
    first, last = (t[:10] for t in version.time_range)
    return f"{name} holds dates from {first} to {last}"


def check_acquisitions(version: CubeVersion, time: TimeSelection) -> None:
    """:class:`DateNotFoundError` naming the cube's dates when no acquisition of ``version`` falls within
    ``time``: an empty answer would look like missing data."""
    if not any(tile_dates(state, time) for state in version.tiles.values()):
        within = "" if time is None else f" within the time range {time}"  # none at all: "range None" said nothing
        raise DateNotFoundError(f"no acquisition{within}: {date_span(version)}")


def _tile_dataset(store: Store, version: CubeVersion, window: TileWindow, bands: Sequence[BandSpec],
                  resolution: int, time: tuple, *, decode: bool, token: str, whole: bool,
                  cache: ArrayCache | None) -> xr.Dataset:
    sorted_acqs, kinds, order, arrays = dates_and_arrays(store, version, window.tile, bands, time, cache)
    absent = AbsentShards(1024) if cache is None else cache.absent  # this query's lookups, or a reader's
    data_vars = {
        b.name: (("time", "y", "x"), band_array(store, version, window, b, kinds, order, arrays, resolution,
                                                 decode=decode, token=token, whole=whole, absent=absent, cache=cache),
                 band_attrs(b, decode=decode))
        for b in bands
    }
    ds = xr.Dataset(data_vars, coords=_acquisition_coords(sorted_acqs))
    ds = ds.assign_coords(y=window.geobox.coordinates["y"].values, x=window.geobox.coordinates["x"].values)
    ds["y"].attrs.update(units="metre", standard_name="projection_y_coordinate")
    ds["x"].attrs.update(units="metre", standard_name="projection_x_coordinate")
    ds = ds.rio.write_crs(window.geobox.crs.to_wkt()).rio.write_transform(window.geobox.affine)
    return ds.assign_coords(tile=("time", np.full(len(order), window.tile, dtype=object)))


def _bounds_text(footprint: BaseGeometry, tile_crs: Any, crs: Any) -> str:
    """The bounds of a tile's data in its CRS, and in ``crs`` (the query's) where that is another: an area asked
    for in lon/lat is compared with the data in lon/lat, not only in the tile's metres."""
    text = f"({', '.join(f'{v:.0f}' for v in footprint.bounds)}) in {tile_crs}"
    data = Geometry(footprint, tile_crs)
    if crs is None or data.crs == crs:
        return text
    theirs = data.to_crs(crs).boundingbox
    digits = 5 if theirs.crs.geographic else 0
    return f"{text}, ({', '.join(f'{v:.{digits}f}' for v in theirs)}) in {crs}"


def open_cube(
    cube: StoreLike,
    collection: str = "s2",
    *,
    bbox: tuple[float, float, float, float] | None = None,
    geometry: BaseGeometry | Mapping | None = None,
    crs: Any = None,
    time: TimeSelection = None,
    bands: Sequence[str] | str | None = None,
    as_of: int | CubeVersion | None = None,
    resolution: int | None = None,
    decode: bool = True,
    tiles: Sequence[str] | str | None = None,
    chunks: str = "storage",
    storage_options: Mapping[str, Any] | None = None,
    cache: ArrayCache | None = None,
    item_cache: ItemCache | None = None,
) -> xr.Dataset:
    """A lazy Dataset of the ``collection`` cube at ``cube`` (a folder, ``s3://`` URL, zarr Store, or the
    cube's ``catalog.json``); the tiles a query needs are found through the STAC catalog.

    ``bbox``/``geometry`` (in ``crs``, default the tile CRS; use ``crs="EPSG:4326"`` for lon/lat; a GeoDataFrame
    of parcels as ``geometry`` is the union of its polygons, in its own CRS, a ``crs`` naming another refused;
    neither: every tile's data, the union of their footprints) and
    ``time`` (``(start, end)``, ``"start/end"`` or a frozenset of acquisition times) restrict what is read;
    ``bands`` (stored bands, in any case: ``b04``; a list or ``"B04,B08"``) default to all.
    ``as_of`` reads the cube as committed by that version (a number, or the ``CubeVersion`` a caller has
    read already, which saves reading the ledger again). ``decode`` turns stored integers into
    physical values (float32, NaN for nodata); the SCL layer stays integer codes. ``tiles`` (ids, or one string
    ``"31UFU,31UGU"``) reads those tiles only, in place of routing through the catalog: an area reaching beyond
    them is cut to them (the Dataset is then narrower than the area asked for). The Dataset's attrs
    record the collection, the version read and the cube location. ``chunks="storage"`` gives one dask
    chunk per Zarr chunk (for lazy work on large areas); ``"window"`` one per band and time chunk over the
    whole query area, read by one Zarr call that fetches its chunks concurrently (far fewer dask tasks,
    for windows that fit in memory). ``cache``: arrays and shard indexes kept across queries by a
    long-running reader (:class:`cube.tile_arrays.ArrayCache`), so a query fetches chunks only; ``item_cache``:
    the catalog's tile items kept by a caller that routes query after query (:class:`catalog.route.ItemCache`), so
    routing reads the collection document only.
    """
    store = open_store(layout.cube_root(cube), storage_options=storage_options, read_only=True)
    version = read_version(store, collection, as_of)
    ds = read_cube(store, version, bbox=bbox, geometry=geometry, crs=crs, time=time, bands=bands,
                   resolution=resolution, decode=decode, tiles=tiles, chunks=chunks, cache=cache, item_cache=item_cache)
    if not ds.sizes["time"]:
        warnings.warn(_no_dates(version, ds.attrs["cardcube:tiles"].split(","), time), NoAcquisitionWarning,
                      stacklevel=2)
    return ds


def read_cube(
    store: Store,
    version: CubeVersion,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    geometry: BaseGeometry | Mapping | None = None,
    crs: Any = None,
    time: TimeSelection = None,
    bands: Sequence[str] | str | None = None,
    resolution: int | None = None,
    decode: bool = True,
    tiles: Sequence[str] | str | None = None,
    chunks: str = "storage",
    cache: ArrayCache | None = None,
    item_cache: ItemCache | None = None,
    order: str = "area",
) -> xr.Dataset:
    """:func:`open_cube` of the ``store`` and ``version`` a reader holds already, without its warning of a Dataset of
    no dates: the readers built on it (time series, chips, extraction) say that their own way. ``order``: of the
    ``tiles`` given, ``"area"`` reads those the area chooses (the one holding most of it first, or it alone);
    ``"given"`` a mosaic of them in their order (a pixel the first has data at is the first's), each with data in
    the area, so that a parcel's pixels are those of the tiles :func:`cube.timeseries.assign_tiles` gives it,
    whatever parcels are read with it; ``"first"`` the same, but the first alone where it holds the area's data on
    every pass the others have there (the pixels of the mosaic, from one tile's reads)."""
    if chunks not in ("storage", "window"):
        raise InvalidRequestError(f"chunks must be 'storage' or 'window', not {chunks!r}")
    collection = version.collection
    spec: CubeSpec = version.spec
    names = list(spec.band_names) if bands is None else _stored(bands, spec)
    band_specs = [spec.band(n) for n in names]
    res = resolution or min(b.resolution for b in band_specs)
    if not isinstance(res, numbers.Real) or isinstance(res, bool):  # "10" was "10 m is not one of [10, 20]"
        raise InvalidRequestError(f"resolution {res!r} is no number of metres: give one of the cube's "
                                  f"{list(spec.resolutions)}, e.g. resolution={spec.resolutions[0]}")
    if res not in spec.resolutions:
        raise InvalidRequestError(f"resolution {res} m is not one of the cube's {list(spec.resolutions)}")
    res = int(res)  # 10.0 (a float the caller computed) was a TypeError deep in the window's slicing
    if tiles is None:
        tiles = _route(store, version, bbox=bbox, geometry=geometry, crs=crs, items=item_cache)
    elif not tile_ids(tiles):  # "" or []: was "the area ? does not intersect any tile", as if routed to none
        raise InvalidRequestError(f"no tile given (tiles={tiles!r}); the {collection} cube's tiles: "
                                  f"{', '.join(sorted(version.tiles))} (tiles=None routes the area through the "
                                  f"catalog)")
    if order not in ("area", "given", "first"):
        raise InvalidRequestError(f"order must be 'area', 'given' or 'first', not {order!r}")
    windows = _windows(version, (bbox, geometry), crs, res, tiles, parse_time_selection(time), order=order)
    if not windows:
        # the area's bounds in any form it came (a GeoJSON dict, a GeoDataFrame: they were "the area ?", no hint)
        asked = query_geometry(bbox, geometry, crs, default_crs=None)
        bounds = tuple(bbox) if bbox is not None else asked.geom.bounds if asked and not asked.geom.is_empty else None
        area = "(" + ", ".join(str(float(v)) for v in bounds) + ")" if bounds else "?"  # no np.float64(...)
        said = crs or (asked.crs if asked is not None and asked.crs is not None else None)
        minx, miny, maxx, maxy = map(float, bounds or (np.nan,) * 4)
        lonlat = said is None and -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90  # metres of a tile are not
        raise AreaOutsideCubeError(f"the area {area} (in {said or 'the tile CRS'}) does not intersect any tile of the "
                                   f"{collection} cube (tiles: {', '.join(sorted(version.tiles))})"
                                   + ("; lon/lat? say so with crs='EPSG:4326'" if lonlat else ""))
    footprints = {w.tile: data_footprint(version, w.tile) for w in windows}
    if not any(footprints[w.tile].intersects(box(*w.geobox.boundingbox)) for w in windows):
        held = "; ".join(f"tile {t} has data over {_bounds_text(f, TileGrid.from_id(t).crs, crs)}"
                         for t, f in footprints.items() if not f.is_empty)
        raise AreaOutsideCubeError(f"the area holds no data of the {collection} cube: it lies within tile(s) "
                                   f"{', '.join(footprints)}, beside the scenes ingested ({held or 'none'}); a "
                                   f"Dataset of it would be nodata only")
    token = _dask_token(store, version)
    selection = pass_selection(version, [w.tile for w in windows], parse_time_selection(time))
    parts = [_tile_dataset(store, version, w, band_specs, res, selection, decode=decode, token=token,
                           whole=chunks == "window", cache=cache)
             for w in windows]
    ds = parts[0] if len(parts) == 1 else mosaic(parts, band_specs, whole=chunks == "window")
    for b in band_specs if decode else ():
        if not b.is_flag:  # NaN is the decoded nodata: rioxarray's nodata, and the fill of a netCDF or Zarr copy
            ds[b.name].encoding["_FillValue"] = np.float32(np.nan)
    ds.attrs.update({"cardcube:collection": collection, "cardcube:version": version.version,
                     "cardcube:cube": store_url(store), "cardcube:tiles": ",".join(w.tile for w in windows),
                     "title": spec.title})
    return ds


def _dask_token(store: Store, version: CubeVersion) -> str:
    """What names a Dataset's dask arrays: the same for the same data alone, as dask computes a key once and takes
    two graphs' arrays of one name for one array. The cube's location and version number named alike one bucket's
    path on two S3 endpoints (production and staging) and a cube made anew at the same place: the arrays of one
    Dataset were read for the other's (a persisted Dataset's pixels for a new one's, in a graph of both). The
    endpoint and the commit time of the version's data (:attr:`CubeVersion.data_tag`) tell them apart."""
    return tokenize(store_url(store), store_endpoint(store), version.data_tag)[:16]


def _no_dates(version: CubeVersion, tiles: Sequence[str], time: TimeSelection) -> str:
    """Why a Dataset of ``tiles`` has no date: none of the cube within ``time``, or none of these tiles (the
    cube's other tiles have some): a Dataset of no date would otherwise look like a cube without data."""
    within = "" if time is None else f" within the time range {time}"
    if elsewhere := dated_elsewhere(version, tiles, time):
        return f"{elsewhere}; the Dataset has no dates"
    if any(tile_dates(state, time) for state in version.tiles.values()):
        return f"no acquisition of tile(s) {', '.join(tiles)}{within}, though other tiles of the cube have some " \
               f"({date_span(version)}): the Dataset has no dates"
    return f"no acquisition{within}: {date_span(version)}; the Dataset has no dates"


def _stored(bands: Sequence[str] | str, spec: CubeSpec) -> list[str]:
    """The stored bands ``bands`` name, in any case (``b04`` is B04), as :func:`cube.indices.check_bands` reads
    them; an index is refused with how to add it, as the Dataset holds stored bands only."""
    names = check_bands(bands, spec.band_names)
    if derived := [b for b in names if b not in spec.band_names]:
        raise InvalidRequestError(f"{', '.join(derived)}: an index, not a stored band; open its bands "
                                  f"({', '.join(bands_for(derived))}) and add it with "
                                  f"ds.cardcube.indices({', '.join(map(repr, derived))})")
    return names


def pass_dates(version: CubeVersion) -> np.ndarray:
    """The distinct dates of ``version`` over all its tiles, a pass over several tiles once
    (:func:`cube.mosaic.pass_times`): what a user counts as the cube's acquisitions."""
    states = [version.tiles[t] for t in sorted(version.tiles)]
    times = [np.array([a.datetime64 for a in s.acquisitions], dtype="datetime64[ns]") for s in states]
    keys = [[pass_key(a) for a in s.acquisitions] for s in states]
    return np.unique(np.concatenate([np.empty(0, "datetime64[ns]"), *first_times(times, keys)]))
