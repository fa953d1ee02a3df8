"""Query routing: which cube tiles (Zarr groups) a geometry and time range need, from the static catalog only.

:func:`find_tiles` reads the collection document (one GET, which also says which ledger version the
catalog reflects) and the tile items it links to. A reader that routes query after query keeps the parsed
items in an :class:`ItemCache` it passes to each call, so a warm call costs one small GET and no database.
Footprints are tested in each tile's own UTM CRS against the tile's exact square (``proj:bbox``), not against
the looser WGS84 bbox, so a parcel is routed to every tile it overlaps (two for a parcel across the overlap of
neighbouring tiles) and to no other.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyproj
import pystac
from odc.geo.geom import Geometry
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from zarr.abc.store import Store

from cardcube.errors import CorruptDocumentError, CubeNotFoundError, InvalidRequestError
from cardcube.lru import LRUDict
from cardcube.query import TimeLike, check_lonlat, in_crs, in_time_range, parse_time_range, query_geometry
from cardcube.spec import CUBE_SPECS, cube_spec
from cardcube.storage import StoreLike, list_children, open_store, parse_json, read_bytes_many, read_json
from catalog import keys
from catalog.build import ITEM_DIGEST_FIELD, VERSION_FIELD, item_digest
from catalog.io import StoreStacIO, store_base
from cube.ledger import committed_versions, no_collection_error, no_cube_hint
from cube.pass_dates import first_times

CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class TileRef:
    """One cube tile a query needs: where its Zarr group is, what it covers, and the catalog version."""

    collection: str
    tile: str
    item_id: str
    zarr_path: str  # relative to the cube root
    bbox: tuple[float, float, float, float]  # WGS84
    crs: str  # the tile's own CRS (proj:code)
    proj_bbox: tuple[float, float, float, float]  # the tile's square in ``crs``
    start: str  # first date, ISO 8601 UTC
    end: str  # last date
    dates: int
    version: int  # ledger version the catalog reflects
    # every date, sorted (the item's cube:dimensions time values); None in a catalog of a cardcube before them
    times: tuple[np.datetime64, ...] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The reference as JSON takes it (``catalog find`` prints it): the item's own time texts, not the parsed
        ``times``."""
        return {k: v for k, v in asdict(self).items() if k != "times"}

    def __post_init__(self) -> None:  # a damaged time, square or CRS fails where the item is read (its damage)
        self.span  # noqa: B018
        if len(self.proj_bbox) != 4 or not all(isinstance(v, int | float) for v in self.proj_bbox):
            raise ValueError(f"proj:bbox {list(self.proj_bbox)} is no (minx, miny, maxx, maxy)")
        pyproj.CRS.from_user_input(self.crs)

    @property
    def span(self) -> tuple[np.datetime64, np.datetime64]:
        """``start`` and ``end``, parsed."""
        return _as_datetime64(self.start), _as_datetime64(self.end)

    @property
    def footprint(self) -> Geometry:
        """The tile's exact square in its own CRS."""
        return Geometry(box(*self.proj_bbox), self.crs)

    def url(self, root: str) -> str:
        """The Zarr group's URL under cube root ``root`` (a folder, ``s3://`` or ``https://`` URL)."""
        return f"{root.rstrip('/')}/{self.zarr_path}"

    def overlaps(self, lo: np.datetime64 | None, hi: np.datetime64 | None) -> bool:
        """True if a date of the tile is in ``[lo, hi)`` (None: open); where the item lists no dates (an older
        catalog), if the span from its first date to its last meets it."""
        start, end = self.span
        if not ((lo is None or end >= lo) and (hi is None or start < hi)):
            return False
        if self.times is None or lo is None or hi is None:  # an open range meeting the span holds an end date
            return True
        first = bisect.bisect_left(self.times, lo)
        return first < len(self.times) and self.times[first] < hi


class ItemCache(LRUDict):
    """Parsed tile items (:class:`TileRef`) by store, item key and the sha256 of the item's bytes its collection's
    link gives (:data:`~catalog.build.ITEM_DIGEST_FIELD`), kept by their owner from one routing call to the next, so
    a new version reads the items it changed alone (until 2026-12-06 it read them all); a catalog without digests
    (written before) keys them by its version (its number and when it was committed). An entry never goes stale:
    other bytes are another key, as a new version is, and so is a version of a cube wiped and built again at the
    same place (until 2026-12-05 its items were those of the old cube's version of that number); an entry kept from
    an earlier version routes to the collection's (:attr:`TileRef.version`). Safe to share between threads."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        super().__init__(size)


def _store_token(store: Store) -> Hashable:
    base = store_base(store)
    return ("id", id(store)) if base.startswith("memory://") else base


def _as_datetime64(value: str) -> np.datetime64:
    """A catalog datetime (ISO 8601, UTC) as datetime64[ns]."""
    return np.datetime64(value.strip().removesuffix("Z"), "ns")


def _tile_ref(doc: dict[str, Any], collection: str, item_key: str, io: StoreStacIO, *, version: int) -> TileRef:
    """The item ``doc`` as routing reads it; ``version``: the collection's (an item written before 2026-12-06 names
    it too, unread)."""
    props = doc["properties"]
    tile = props["cardcube:tile"]
    # relative to the item, or absolute (valid STAC, as item links may be); one outside the cube is refused
    zarr_path = io.key(pystac.utils.make_absolute_href(doc["assets"]["data"]["href"], io.href(item_key)))
    values = props.get("cube:dimensions", {}).get("time", {}).get("values")
    times = None if values is None else tuple(sorted(_as_datetime64(v) for v in values))
    return TileRef(
        collection=collection, tile=tile, item_id=doc["id"], zarr_path=zarr_path,
        bbox=tuple(doc["bbox"]), crs=props["proj:code"], proj_bbox=tuple(props["proj:bbox"]),
        start=props["start_datetime"], end=props["end_datetime"], dates=props["cardcube:dates"],
        version=version, times=times,
    )


def tile_refs(store: StoreLike, collection: str, *, cache: ItemCache | None = None) -> list[TileRef]:
    """Every tile of ``collection`` as the catalog lists it; items found in ``cache`` are not read again, and
    those read (all requested at once) are added to it (None: every item is read)."""
    cube_spec(collection)  # "S1" or the STAC id: "unknown cube collection", as open_cube says, before any read
    store = open_store(store, read_only=True)
    io = StoreStacIO(store)
    coll_key = keys.collection_key(collection)
    doc = read_json(store, coll_key)
    if doc is None:
        list_children(store, "")  # a missing bucket says so (a key of one reads as None)
        if not committed_versions(store, collection):  # catalog build would fail too: "no cube collection"
            if not any(committed_versions(store, c) for c in CUBE_SPECS if c != collection):
                raise CubeNotFoundError(f"no cube at {io.base}: no committed version of {' or '.join(CUBE_SPECS)}"
                                        + no_cube_hint(store))
            raise no_collection_error(store, collection)
        raise CubeNotFoundError(f"no catalog of the {collection!r} cube at {io.base} ({coll_key} is missing; "
                                f"'cardcube catalog build' writes it from the ledger)")
    if not isinstance(doc, dict) or doc.get("type") != "Collection":  # "{}" listed no tile: "no tile matches"
        what = f"type {doc.get('type')!r}" if isinstance(doc, dict) else f"JSON is a {type(doc).__name__}"
        raise CorruptDocumentError(f"{coll_key} in {io.base} is no STAC collection (its {what}): 'cardcube catalog "
                                   f"build' writes it anew")
    # the version of every item (an item names none: it is rewritten only when its tile changes); a rebuilt cube
    # numbers its versions anew: when it was committed, too, keys the cache
    number, updated = doc.get(VERSION_FIELD), doc.get("updated")
    if isinstance(number, str) and number.isascii() and number.isdigit():  # "1", as an edit by hand may leave it
        number = int(number)
    if type(number) is not int or not isinstance(updated, str | None):  # a list, say, is no key of the cache
        raise CorruptDocumentError(f"{coll_key} in {io.base} has a {VERSION_FIELD} that is no whole number or an "
                                   "updated that is no time: 'cardcube catalog build' writes it anew")
    version = number, updated
    token = _store_token(store)
    try:  # relative to the collection, or absolute (valid STAC too, as a publisher normalising links writes them)
        links = {io.key(pystac.utils.make_absolute_href(link["href"], io.href(coll_key))): link.get(ITEM_DIGEST_FIELD)
                 for link in doc.get("links", []) if isinstance(link, dict) and link.get("rel") == "item"}
    except (KeyError, TypeError) as exc:
        raise CorruptDocumentError(f"{coll_key} in {io.base} has an item link without an href ({exc!r}): "
                                   "'cardcube catalog build' writes it anew") from None
    # an item is cached by its bytes' digest where its link gives it (an item a new version left as it was is not read
    # again), else by the catalog's version (a catalog written before 2026-12-06)
    entries = {key: (token, key, ("sha256", digest) if isinstance(digest, str) else version)
               for key, digest in links.items()}
    refs = {key: None if cache is None else cache.get(entry) for key, entry in entries.items()}
    for key, ref in refs.items():
        if ref is not None and ref.version != number:  # kept from an earlier version: it routes to this one
            refs[key] = cache[entries[key]] = dataclasses.replace(ref, version=number)
    unread = [key for key, ref in refs.items() if ref is None]
    for item_key, data in zip(unread, read_bytes_many(store, unread), strict=True):  # all at once
        item = parse_json(store, item_key, data)
        if item is None:
            raise CubeNotFoundError(f"catalog item {item_key} linked from {coll_key} is missing in {io.base}: "
                                    "'cardcube catalog build' writes it anew")
        try:
            refs[item_key] = _tile_ref(item, collection, item_key, io, version=number)
        except (AttributeError, KeyError, TypeError, ValueError, pyproj.exceptions.CRSError) as exc:
            raise CorruptDocumentError(f"catalog item {item_key} in {io.base} lacks what routing reads "
                                       f"({type(exc).__name__}: {exc}): 'cardcube catalog build' writes it anew"
                                       ) from None
        digest = entries[item_key][2]
        # one rewritten since its collection was read (a writer at work) is not kept under a digest it no longer has
        if cache is not None and (digest == version or digest == ("sha256", item_digest(data))):
            cache[entries[item_key]] = refs[item_key]
    return sorted(refs.values(), key=lambda r: r.tile)


def find_tiles(store_or_url: StoreLike, collection: str, *, bbox: tuple[float, float, float, float] | None = None,
               geometry: Any = None, crs: Any = None, time: TimeLike = None,
               cache: ItemCache | None = None) -> list[TileRef]:
    """The tiles of ``collection`` that intersect ``bbox`` or ``geometry`` and hold a date in ``time``: a tile's item
    lists each of its dates, so a range between two of them does not find it (the item of a catalog written
    before that gives its first and last date only, and a range between them finds it). A pass over several of the
    tiles found, its products seconds apart from tile to tile, is a date of each of them at its earliest time too, as
    a read across them gives it (its time in a time series): that time finds them all.

    ``geometry`` is a shapely geometry, a GeoJSON mapping or an ``odc.geo`` Geometry; ``bbox`` is
    ``(minx, miny, maxx, maxy)``; both are in ``crs`` (default WGS84, or the Geometry's own CRS). Without
    either, every tile matches. ``time`` is a date, a ``"start/end"`` interval (ends inclusive, ``..`` open)
    or a ``(start, end)`` pair. Tiles come sorted by id; touching a tile's edge only does not count.
    ``cache``: the parsed items a caller routing many queries keeps (see :func:`tile_refs`).
    """
    query, span = _query(bbox, geometry, crs, time)  # a bad query fails before any read
    return _select(tile_refs(store_or_url, collection, cache=cache), query, span)


def select_tiles(refs: list[TileRef], *, bbox: tuple[float, float, float, float] | None = None, geometry: Any = None,
                 crs: Any = None, time: TimeLike = None, default_crs: Any = "EPSG:4326") -> list[TileRef]:
    """The ones of ``refs`` (from :func:`tile_refs`) that :func:`find_tiles` would return for the query;
    ``default_crs`` is the CRS of a bbox or plain geometry without ``crs`` (an ``odc.geo`` Geometry keeps its own)."""
    return _select(refs, *_query(bbox, geometry, crs, time, default_crs=default_crs))


def _query(bbox: Any, geometry: Any, crs: Any, time: TimeLike, *, default_crs: Any = "EPSG:4326"
           ) -> tuple[Geometry | None, tuple[np.datetime64 | None, np.datetime64 | None]]:
    """The query's area and ``[start, end)``; coordinates in a geographic CRS must be lon/lat, since a box in
    metres read as degrees would route to no tile without a word."""
    query = query_geometry(bbox, geometry, crs, default_crs=default_crs)
    if query is not None and (query.geom is None or query.geom.is_empty):  # its bounds are NaN: 'not lon/lat'
        raise InvalidRequestError("the geometry is empty (no feature, no coordinates): give the area to search")
    if query is not None and query.crs.geographic:
        check_lonlat(query.boundingbox, query.crs, what="coordinates",
                     advice="name their CRS (crs= in Python, --crs on the command line, e.g. EPSG:32631)")
    return query, parse_time_range(time)


def _select(refs: list[TileRef], query: Geometry | None, span: tuple[np.datetime64 | None, np.datetime64 | None]
            ) -> list[TileRef]:
    """The ones of ``refs`` whose square meets ``query`` and that hold a date in ``span``: a time of their own, or the
    first time of a pass they hold on the tiles found (:func:`_pass_firsts`)."""
    lo, hi = span
    projected: dict[str, BaseGeometry] = {}
    found = []
    for ref in refs:
        if query is not None:
            square = box(*ref.proj_bbox)
            if ref.crs not in projected:
                projected[ref.crs] = in_crs(query, ref.crs)
            geom = projected[ref.crs]
            if not square.intersects(geom) or square.touches(geom):
                continue
        found.append(ref)
    if lo is None and hi is None:
        return found
    firsts = _pass_firsts(found)
    return [ref for ref in found if ref.overlaps(lo, hi) or in_time_range(firsts[ref.tile], (lo, hi)).any()]


def _pass_firsts(refs: list[TileRef]) -> dict[str, np.ndarray]:
    """Each tile's dates as the first time of their pass on ``refs`` (:func:`~cube.pass_dates.first_times`; the items
    give no platform or orbit, and no two passes come within its gap of each other over neighbouring tiles). A pass's
    products carry their own sensing times, seconds apart from tile to tile, and a read across the tiles takes the
    pass as one date, at its earliest time (``open_cube(time=...)`` of that time reads it on every tile): a search by
    that time found the first tile alone. An item without its dates (an older catalog) has none."""
    listed = [ref for ref in refs if ref.times is not None]
    times = [np.array(ref.times, dtype="datetime64[ns]") for ref in listed]
    firsts = first_times(times, [[None] * len(t) for t in times])
    return {ref.tile: first for ref, first in zip(listed, firsts, strict=True)} | {
        ref.tile: np.empty(0, "datetime64[ns]") for ref in refs if ref.times is None}
