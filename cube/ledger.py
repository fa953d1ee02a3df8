"""The ledger: what a cube collection holds at each committed version.

Each successful ingest creates one record ``_ledger/vNNNNNNNN.json`` (see :mod:`cube.layout`), written
once and never changed. A record holds the *whole* state a reader needs, so reading a version is one GET:
per tile, which dates sit in the time-first ("cold") arrays and which in hot-buffer slots, the
acquisition metadata of every date, and every ingested scene with where it went. Each scene's source files and
their checksums (its details) are kept once, in a details object the records name (:mod:`cube.scene_details`,
read when asked for; records of format ``cardcube-ledger/1``, before 2026-12-06, hold them inline).
Data chunks are never overwritten once a version refers to them, so any unexpired version can be
read exactly as it was ("as of").
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from zarr.abc.store import Store

from cardcube.errors import (
    CorruptDocumentError,
    CubeNotFoundError,
    InvalidRequestError,
    StoreUnavailableError,
    VersionNotFoundError,
)
from cardcube.grid import TileGrid
from cardcube.spec import CUBE_SPECS, CubeSpec, cube_spec
from cardcube.storage import (
    StoreLike,
    key_exists,
    list_keys,
    local_file,
    open_store,
    read_json,
    store_at,
    store_url,
)
from cube import layout
from cube.scene_details import FIELDS, DetailsReader, StoredField, details_document, details_of, stored_in

FORMAT = "cardcube-ledger/2"  # the records this cardcube writes: scene details in details objects
MAX_VERSION = 2 ** 63 - 1  # the last version number: an int64, as extractions' cube_version column stores it
READ_FORMATS = ("cardcube-ledger/1", FORMAT)  # and those it reads: format 1 holds every scene's details inline


@dataclass(frozen=True, slots=True)
class Acquisition:
    """One date of a tile: when, from which scene, and its acquisition metadata."""

    time: str  # ISO 8601, UTC, e.g. "2024-03-15T10:50:31Z"
    scene_id: str
    platform: str
    relative_orbit: int
    orbit_state: str
    cloud_cover: float | None = None

    @property
    def datetime64(self) -> np.datetime64:
        return np.datetime64(self.time.rstrip("Z"), "ns")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Acquisition:
        return cls(**d)


def acquisition_columns(acqs: Sequence[Acquisition]) -> dict[str, np.ndarray]:
    """The dates ``acqs`` as columns: ``time`` (datetime64[ns]) and each acquisition field, typed as a tile's
    per-date coordinate arrays store them (NaN for an unknown cloud cover). One layout for the writer of those
    arrays and the readers that rebuild them from the ledger."""
    return {
        "time": np.array([a.datetime64 for a in acqs], dtype="datetime64[ns]"),
        "scene_id": np.array([a.scene_id for a in acqs], dtype=object),
        "platform": np.array([a.platform for a in acqs], dtype=object),
        "relative_orbit": np.array([a.relative_orbit for a in acqs], dtype="int16"),
        "orbit_state": np.array([a.orbit_state for a in acqs], dtype=object),
        "cloud_cover": np.array([np.nan if a.cloud_cover is None else a.cloud_cover for a in acqs], dtype="float32"),
    }


@dataclass(frozen=True, slots=True)
class HotSlot:
    """A date held in the hot buffer at index ``slot`` of the hot arrays."""

    slot: int
    acquisition: Acquisition

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, **self.acquisition.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HotSlot:
        d = dict(d)
        return cls(slot=d.pop("slot"), acquisition=Acquisition.from_dict(d))


@dataclass(frozen=True, slots=True)
class TileState:
    """One cube tile at one version.

    ``cold`` lists the dates of the time-first arrays in index order (always whole time blocks);
    ``hot`` the live hot-buffer slots; ``hot_slots_used`` how many slots the hot arrays have ever had
    (slots are never reused, so an older version's slots stay intact).
    """

    tile: str
    cold: tuple[Acquisition, ...] = ()
    hot: tuple[HotSlot, ...] = ()
    hot_slots_used: int = 0

    @property
    def acquisitions(self) -> tuple[Acquisition, ...]:
        """Every date of the tile, sorted by time."""
        return tuple(sorted((*self.cold, *(h.acquisition for h in self.hot)), key=lambda a: a.time))

    def length(self, hot: bool) -> int:
        """How many dates the tile's cold arrays (``hot=False``) or hot arrays hold along time at this version."""
        return self.hot_slots_used if hot else len(self.cold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tile": self.tile,
            "cold": [a.to_dict() for a in self.cold],
            "hot": [h.to_dict() for h in self.hot],
            "hot_slots_used": self.hot_slots_used,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TileState:
        return cls(
            tile=d["tile"],
            cold=tuple(Acquisition.from_dict(a) for a in d["cold"]),
            hot=tuple(HotSlot.from_dict(h) for h in d["hot"]),
            hot_slots_used=d["hot_slots_used"],
        )


@dataclass(frozen=True, slots=True)
class ScenePart:
    """One slice of a pass mosaicked into a date, or one product of a Sentinel-2 acquisition holding part of the tile
    (:mod:`ingest.passes`): its tile piece's scene id, the STAC item (a slice's), its time, and where its pixels
    came from (as :class:`SceneRecord` says it of a scene)."""

    scene_id: str
    item: str
    time: str
    checksums: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)
    warped: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scene_id": self.scene_id, "item": self.item, "time": self.time, "checksums": dict(self.checksums),
                "sources": dict(self.sources), **_done_to(self.converted, self.warped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScenePart:
        return cls(**d)


def _done_to(converted: dict[str, str], warped: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``converted`` and ``warped`` as a record stores them: only when something was done, so the records of
    scenes taken as they were stay as they always were."""
    d: dict[str, Any] = {}
    if converted:
        d["converted"] = dict(converted)
    if warped:
        d["warped"] = {band: dict(how) for band, how in warped.items()}
    return d


@dataclass(frozen=True, slots=True)
class SceneRecord:
    """A scene the cube holds: where it went, and where it came from (an inspector's audit trail): the STAC
    collection and the file of each band it was read from, with their checksums, and the processing
    baseline that decided its values (Sentinel-2 L2A from 04.00 carries an offset of -1000); per band, why it was
    converted from linear power to dB (``converted``) and how it was resampled onto the tile grid (``warped``:
    method, source CRS and transform; :mod:`ingest.warp`), both empty for a scene taken as it was; ``item``: the
    STAC item of no tile this scene is one tile's piece of (:mod:`ingest.split`), empty for an item of one tile;
    ``parts``: every slice of a pass mosaicked into this date, or every product of a Sentinel-2 acquisition each
    holding part of the tile (a datastrip boundary crosses it), in time order (:mod:`ingest.passes`; the first is
    the scene itself), empty for a date of one scene; ``footprint``: of a resampled scene, the polygon in its window
    that its valid pixels can reach (:func:`ingest.warp.data_polygon`; of a pass, the union of its slices'), as
    :func:`footprint_record` writes it, None for a scene taken as it was and in records older than this field (its
    window's box is its area then: :func:`scene_area`)."""

    scene_id: str
    tile: str
    time: str
    version: int  # the version that wrote its pixels: added it, or read it again (repair)
    checksums: dict[str, str] = field(default_factory=dict)  # band -> "sha256:..." of its file
    windows: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)  # res -> row, col, h, w
    collection: str = ""  # the source STAC collection ("" in records older than this field)
    sources: dict[str, str] = field(default_factory=dict)  # band -> href of the file read
    processing_baseline: float | None = None
    converted: dict[str, str] = field(default_factory=dict)  # band -> why it was taken as linear power
    warped: dict[str, dict[str, Any]] = field(default_factory=dict)  # band -> resampling, crs, transform, scale
    item: str = ""  # the STAC item this scene is one tile's piece of (an item of no tile, split with warp)
    parts: tuple[ScenePart, ...] = ()  # the slices of a pass, products of a split tile, in this date (ingest.passes)
    footprint: dict[str, Any] | None = None  # GeoJSON-like, in the tile's CRS: where in its window it holds data

    @property
    def piece_ids(self) -> tuple[str, ...]:
        """The scene ids this record holds: its own, and its parts' (the slices of its pass)."""
        return (self.scene_id, *(p.scene_id for p in self.parts))

    @property
    def items(self) -> tuple[str, ...]:
        """The split STAC items this record holds a piece of: its own item and its parts'."""
        return tuple(dict.fromkeys(i for i in (self.item, *(p.item for p in self.parts)) if i))

    def to_dict(self) -> dict[str, Any]:
        d = {"scene_id": self.scene_id, "tile": self.tile, "time": self.time, "version": self.version,
             "checksums": dict(self.checksums), "windows": {str(k): list(v) for k, v in self.windows.items()},
             "collection": self.collection, "sources": dict(self.sources),
             "processing_baseline": self.processing_baseline, **_done_to(self.converted, self.warped)}
        if self.item:
            d["item"] = self.item
        if self.parts:
            d["parts"] = [p.to_dict() for p in self.parts]
        if self.footprint is not None:
            d["footprint"] = self.footprint
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], details: DetailsReader | None = None) -> SceneRecord:
        """A record as :meth:`to_dict` writes it, or (``details``: the reader of its details objects) as a record of
        format 2 does: its :data:`~cube.scene_details.FIELDS` and its parts' read from the details object it names."""
        d = dict(d)
        d["windows"] = {int(k): tuple(v) for k, v in d.get("windows", {}).items()}
        if details is None:
            d["parts"] = tuple(ScenePart.from_dict(p) for p in d.get("parts", ()))
            return cls(**d)
        name, sid = d.pop("details"), d["scene_id"]
        d["parts"] = tuple(ScenePart(**p, **{f: StoredField(details, name, (sid, "parts", i, f)) for f in FIELDS})
                           for i, p in enumerate(d.get("parts", ())))
        return cls(**d, **{f: StoredField(details, name, (sid, f)) for f in FIELDS})

    def to_record(self, details: str) -> dict[str, Any]:
        """As a record of format 2 keeps it: :meth:`to_dict` less the fields the details object ``details`` holds
        (not read here: a version carrying a scene over writes its record without reading its details)."""
        d = {"scene_id": self.scene_id, "tile": self.tile, "time": self.time, "version": self.version,
             "windows": {str(k): list(v) for k, v in self.windows.items()}, "collection": self.collection,
             "processing_baseline": self.processing_baseline}
        if self.item:
            d["item"] = self.item
        if self.parts:
            d["parts"] = [{"scene_id": p.scene_id, "item": p.item, "time": p.time} for p in self.parts]
        if self.footprint is not None:
            d["footprint"] = self.footprint
        return {**d, "details": details}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A scene an ingest refused, and why; ``tile`` and ``time``: the acquisition its source said it is of, so that
    a rejection whose acquisition went in from another product is no longer outstanding
    (:func:`ingest.plan.outstanding_rejections`; "" in records older than these fields, and for an item of no
    tile)."""

    scene_id: str
    kind: str
    reason: str
    tile: str = ""
    time: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"scene_id": self.scene_id, "kind": self.kind, "reason": self.reason}
        return d | {k: v for k, v in (("tile", self.tile), ("time", self.time)) if v}  # as before, where unknown

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rejection:
        return cls(**d)


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakref: tests count the records a reader holds
class CubeVersion:
    """The full state of one cube collection after one commit: ``added`` the scenes this commit brought,
    ``rejected`` every scene refused by it or an earlier ingest and not in the cube since, ``repaired`` the dates
    it read again from their files and wrote anew (``ingest(..., repair=True)``): hot dates into new slots, and the
    dates of cold blocks whose lost or damaged shards it mended in place; ``data_from``: of a version that changed no
    data (it only recorded rejections), the number and commit time of the version whose data it reads
    (:attr:`data_tag`), None for one that did and in records older than this field."""

    collection: str
    version: int
    spec: CubeSpec
    tiles: dict[str, TileState]
    scenes: dict[str, SceneRecord]
    added: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    created: str = ""
    manifests_since: int = 0  # the first version whose ingest wrote block manifests (0: none known to have)
    repaired: tuple[str, ...] = ()
    data_from: tuple[int, str] | None = None
    # where it was read from (store_url; "" for one made in memory): as_of given it reads no other cube (read_version)
    cube: str = field(default="", compare=False, repr=False)
    # tile -> data_footprint, made once per version object (the REST service keeps one across its requests)
    footprints: dict[str, BaseGeometry] = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def empty(cls, spec: CubeSpec) -> CubeVersion:
        return cls(collection=spec.name, version=0, spec=spec, tiles={}, scenes={})

    def next(self, *, tiles: dict[str, TileState], scenes: dict[str, SceneRecord], added: tuple[str, ...],
             rejected: tuple[Rejection, ...], repaired: tuple[str, ...] = ()) -> CubeVersion:
        """The state that follows this one (version + 1), stamped with the current time."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        same = self.version > 0 and not added and not repaired and tiles == self.tiles and scenes == self.scenes
        return replace(self, version=self.version + 1, tiles=tiles, scenes=scenes, added=added,
                       rejected=rejected, created=now, manifests_since=self.manifests_since or self.version + 1,
                       repaired=repaired, data_from=self.data_tag if same else None)

    @property
    def data_tag(self) -> tuple[int, str]:
        """The number and commit time of the version whose data (dates, scenes, shards) this one reads: its own, or
        that of an earlier one where this one only recorded rejections. What a REST answer read from it depends on
        (its ETag), so that a client does not download an answer again for a rejection."""
        return self.data_from or (self.version, self.created)

    @property
    def time_range(self) -> tuple[str, str] | None:
        times = [a.time for t in self.tiles.values() for a in t.acquisitions]
        return (min(times), max(times)) if times else None

    def to_dict(self) -> dict[str, Any]:
        """The whole state as one document, every scene's details inline (format 1, which :meth:`from_dict` reads);
        its ledger record is :meth:`documents`'."""
        return {**self._state(READ_FORMATS[0]), "scenes": {k: v.to_dict() for k, v in sorted(self.scenes.items())}}

    def _state(self, format_: str) -> dict[str, Any]:
        """The document of ``format_`` of this version but its scenes."""
        return {
            "format": format_,
            "collection": self.collection,
            "version": self.version,
            "created": self.created,
            "manifests_since": self.manifests_since,
            "spec": self.spec.to_dict(),
            "added": list(self.added),
            **({"repaired": list(self.repaired)} if self.repaired else {}),
            **({"data_from": {"version": self.data_from[0], "created": self.data_from[1]}} if self.data_from else {}),
            "rejected": [r.to_dict() for r in self.rejected],
            "tiles": {k: v.to_dict() for k, v in sorted(self.tiles.items())},
        }

    def documents(self) -> tuple[tuple[str, bytes] | None, bytes]:
        """What committing this version writes (format 2): the details object of the scenes whose details no earlier
        record names (its name and bytes; None if there are none), and the bytes of the ledger record."""
        stored = {sid: stored_in(r) for sid, r in self.scenes.items()}
        new = {sid: details_of(r) for sid, r in self.scenes.items() if stored[sid] is None}
        details = details_document(self.collection, self.version, new) if new else None
        scenes = {sid: r.to_record(stored[sid] or details[0]) for sid, r in sorted(self.scenes.items())}
        return details, json.dumps({**self._state(FORMAT), "scenes": scenes}, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any], details: DetailsReader | None = None) -> CubeVersion:
        """A version as :meth:`to_dict` writes it (format 1, every scene whole), or as its ledger record of format 2
        does (:meth:`documents`), its scenes' details read by ``details`` when asked for."""
        if d.get("format") not in READ_FORMATS:
            raise CorruptDocumentError(f"ledger record of version {d.get('version')}: unsupported format "
                                       f"{d.get('format')!r}, expected one of {', '.join(READ_FORMATS)}")
        if d["format"] != READ_FORMATS[0] and details is None:
            raise InvalidRequestError(f"a ledger record of format {d['format']} needs the reader of its details")
        stored = details if d["format"] != READ_FORMATS[0] else None
        return cls(
            collection=d["collection"],
            version=d["version"],
            spec=CubeSpec.from_dict(d["spec"]),
            tiles={k: TileState.from_dict(v) for k, v in d["tiles"].items()},
            scenes={k: SceneRecord.from_dict(v, stored) for k, v in d["scenes"].items()},
            added=tuple(d["added"]),
            rejected=tuple(Rejection.from_dict(r) for r in d["rejected"]),
            created=d.get("created", ""),
            manifests_since=d.get("manifests_since", 0),
            repaired=tuple(d.get("repaired", ())),
            data_from=(d["data_from"]["version"], d["data_from"]["created"]) if d.get("data_from") else None,
        )


def data_footprint(version: CubeVersion, tile: str) -> BaseGeometry:
    """Where ``tile`` holds data in ``version``, in the tile's CRS: the union of its scenes' areas
    (:func:`scene_area`; empty without scenes). A tile is a 110 km square; the scenes ingested may cover a part of
    it. A scene recorded without its window counts as the whole tile. Made once per ``version`` object: the union
    of hundreds of warped scenes' polygons takes tens of milliseconds, and every query asks it of every tile."""
    if (known := version.footprints.get(tile)) is not None:
        return known
    areas = {scene_area(version, tile, a.scene_id) for a in version.tiles[tile].acquisitions}
    version.footprints[tile] = union = shapely.union_all(sorted(areas, key=lambda a: (a.bounds, a.wkb)))
    return union


def held_share(data: BaseGeometry, geometry: BaseGeometry) -> float:
    """The share of ``geometry``'s area that ``data`` (a footprint) holds; of a point or a line, 1 where they meet,
    else 0. How tiles are ranked for a query, a chip or a parcel."""
    if not geometry.area:
        return float(data.intersects(geometry))
    return data.intersection(geometry).area / geometry.area


def scene_extent(version: CubeVersion, tile: str, scene_id: str) -> tuple[float, float, float, float]:
    """The bounds (in the tile's CRS) of the window a scene of ``tile`` was written to (a scene recorded without
    its window: the whole tile). Where that date has data is :func:`scene_area`, within it."""
    return _extent(TileGrid.from_id(tile), version.scenes[scene_id].windows)


def scene_area(version: CubeVersion, tile: str, scene_id: str) -> BaseGeometry:
    """Where a scene of ``tile`` holds data, in the tile's CRS (:func:`data_area` of its record)."""
    record = version.scenes[scene_id]
    return data_area(TileGrid.from_id(tile), record.windows,
                     None if record.footprint is None else shape(record.footprint))


def data_area(grid: TileGrid, windows: dict[int, tuple[int, int, int, int]], footprint: BaseGeometry | None
              ) -> BaseGeometry:
    """Where a scene written to ``windows`` of ``grid``'s tile holds data: the box of its window (the whole tile
    without one), within ``footprint`` when it has one (a resampled scene's: its nodata collar inside the box left
    out, :func:`ingest.warp.data_polygon`)."""
    area = box(*_extent(grid, windows))
    return area if footprint is None else area.intersection(footprint)


def footprint_record(footprint: BaseGeometry) -> dict[str, Any]:
    """``footprint`` (a polygon in a tile's CRS) as a :class:`SceneRecord` keeps it: GeoJSON-like (in the tile's
    metres, not lon/lat), its coordinates to the millimetre."""
    return json.loads(shapely.to_geojson(shapely.set_precision(footprint, 0.001)))


def _extent(grid: TileGrid, windows: dict[int, tuple[int, int, int, int]]) -> tuple[float, float, float, float]:
    """The bounds of ``windows`` (the finest one's) on ``grid``; the whole tile without windows."""
    if not windows:
        return grid.bounds
    res = min(windows)
    return grid.window_bounds(windows[res], res)


def commit_time(version: CubeVersion) -> datetime | None:
    """When ``version`` was committed, as its record says (an aware time); None if it records none readable, or one
    of no zone (a record edited by hand): expire could not tell how old it is, and verify names the record."""
    from catalog.build import parse_time  # here: the catalog's modules import the ledger's

    try:
        created = parse_time(version.created)
    except (ValueError, AttributeError, TypeError):
        return None
    return created if created.tzinfo is not None else None


def committed_versions(store: Store, collection: str) -> list[int]:
    """Every committed version number of ``collection``, ascending (one LIST request)."""
    keys = list_keys(store, layout.ledger_prefix(collection))
    return sorted(v for v in map(layout.version_of_key, keys) if v is not None)


def enclosing_cube(store: Store) -> str:
    """For a location inside a cube (what its STAC catalog points at: a collection or tile item document, a tile's
    ``cube.zarr``), "; ..." naming the cube's own location, else "": such a location held no cube, without a word
    of where the cube was."""
    parts = store_url(store).rstrip("/").split("/")
    for i in range(len(parts) - 1, 0, -1):
        root = "/".join(parts[:i])
        if parts[i] not in CUBE_SPECS or root.rstrip("/").endswith(":") or not root:  # <root>/<collection>/...
            continue
        candidate = store_at(store, root)
        with contextlib.suppress(OSError):  # a hint only: the error it adds to stands as it is
            if candidate is not None and committed_versions(candidate, parts[i]):
                return (f"; it lies inside the cube at {root} (its {parts[i]} collection): give that location, the "
                        f"folder of its catalog.json")
    return ""


def no_cube_hint(store: Store) -> str:
    """What a location holding no cube is instead, for the error: a place inside a cube (:func:`enclosing_cube`:
    a collection's document, a tile's), or a local file; else ""."""
    if inside := enclosing_cube(store):
        return inside
    path = local_file(store, "")
    return "; it is a file: a cube is a folder (that of its catalog.json) or an s3:// prefix" if (
        path is not None and path.is_file()) else ""


def no_collection_error(store: Store, collection: str) -> CubeNotFoundError:
    """The error for ``collection`` without a committed version at ``store``: naming the collections the cube there
    holds (a cube of s2 alone asked for s1 said only "no 's1' cube", as if there were none), else no cube and what
    the location is instead (:func:`no_cube_hint`)."""
    if held := [other for other in CUBE_SPECS if other != collection and committed_versions(store, other)]:
        return CubeNotFoundError(f"the cube at {store_url(store)} holds no {collection!r} collection (no committed "
                                 f"version); it holds {', '.join(held)}")
    return CubeNotFoundError(f"no {collection!r} cube at {store_url(store)}: no committed version"
                             + no_cube_hint(store))


def read_version(store: StoreLike, collection: str, version: int | CubeVersion | None = None, *,
                 storage_options: Mapping[str, Any] | None = None) -> CubeVersion:
    """The state at ``version`` (default: the latest) of the cube at ``store``: its Store, or its folder or URL as
    ``open_cube`` takes it (opened read-only, with ``storage_options``). Raises if there is no such version or cube.
    A ``CubeVersion`` already read is returned as it is: a caller that read the ledger passes it on
    instead of reading it again (on S3, a request and a round trip)."""
    cube_spec(collection)  # "S2" or "sentinel-2-l2a" is no collection of any cube: say so, not "no cube here"
    store = open_store(layout.cube_root(store), storage_options=storage_options, read_only=True)
    if isinstance(version, CubeVersion):
        if version.collection != collection:
            raise InvalidRequestError(f"version {version.version} is of the {version.collection} cube, "
                                      f"not of {collection}")
        return _of_this_cube(store, version)
    if version is None:
        versions = committed_versions(store, collection)
        if not versions:
            raise no_collection_error(store, collection)
        version = versions[-1]
    if not isinstance(version, int | np.integer) or isinstance(version, bool):
        raise InvalidRequestError(f"version (as_of) {version!r} is no version number: give an int, e.g. as_of=2 "
                                  f"(cardcube versions lists them)")
    version = int(version)
    # none beyond an int64 is committed (extractions store cube_version so): its key may be longer than a file name
    # or an S3 key, which the store refuses as if it failed
    record = read_json(store, layout.ledger_key(collection, version)) if 0 < version <= MAX_VERSION else None
    if record is None:
        versions = committed_versions(store, collection)
        if not versions:
            raise no_collection_error(store, collection)
        if version in versions:  # listed, and answered 404: a store whose reads lag behind its listings (a replica)
            raise StoreUnavailableError(f"the store lists {layout.ledger_key(collection, version)} of the "
                                        f"{collection} cube at {store_url(store)} but answered 404 for it: it does not "
                                        f"serve the objects it lists yet (a replica behind); try again shortly, and "
                                        f"if it goes on, check the cube with cardcube verify")
        raise VersionNotFoundError(f"{collection} cube at {store_url(store)} has no version {version}: "
                                   f"{_which_versions(version, versions)}")
    key = layout.ledger_key(collection, version)
    if not isinstance(record, dict) or record.get("format") not in READ_FORMATS:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        newer = isinstance(found, str) and found.startswith("cardcube-ledger/")
        raise CorruptDocumentError(f"{key} in {store_url(store)} has ledger format {found!r}, not "
                                   f"{' or '.join(READ_FORMATS)}: " + ("written by a newer cardcube, upgrade this one "
                                                                       "to read it" if newer else
                                                                       "written by another cardcube version?"))
    try:
        named = {s["details"] for s in record["scenes"].values() if "details" in s}
        return replace(CubeVersion.from_dict(record, DetailsReader(store, collection, named)), cube=store_url(store))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if unknown := re.search(r"unexpected keyword argument '(\w+)'", str(exc)):  # a field added since
            raise CorruptDocumentError(f"{key} in {store_url(store)} holds a field this cardcube does not know "
                                       f"({unknown.group(1)!r}): written by a newer cardcube, upgrade this one to "
                                       f"read it (if none wrote it, the record is damaged)") from None
        raise CorruptDocumentError(f"{key} in {store_url(store)} is damaged ({type(exc).__name__}: {exc}): not a "
                                   "ledger record cardcube wrote; restore it from a backup") from None


def _of_this_cube(store: Store, version: CubeVersion) -> CubeVersion:
    """``version`` (a ``CubeVersion`` given as ``as_of``) if it is of the cube at ``store``: read from there, or one
    whose record there was committed at the same time (the cube copied, or named by another path); else an
    :class:`InvalidRequestError`. Another cube's version (another history, or the cube built again) would read this
    cube's arrays by its own blocks and hot slots: other dates' pixels under its dates, without a word."""
    here = store_url(store)
    if version.cube == here:
        return version
    key = layout.ledger_key(version.collection, version.version)
    record = read_json(store, key) if 0 < version.version <= MAX_VERSION else None
    created = record.get("created") if isinstance(record, dict) else None
    if created is not None and created == version.created and record.get("collection") == version.collection:
        return version
    source = f"the cube at {version.cube}" if version.cube else "no cube (made in memory)"
    held = (f"which has no version {version.version}" if record is None else
            f"whose version {version.version} was committed at {created}, that one at {version.created}")
    raise InvalidRequestError(f"version {version.version} of the {version.collection} cube (as_of) was read from "
                              f"{source}, not from the cube at {here} ({held}): it would read this cube's data by "
                              f"another history's; give as_of={version.version} (a number) to read this cube's "
                              "version, or a version read from it")


def read_versions(store: Store, collection: str, versions: Sequence[int] | None = None) -> Iterator[CubeVersion]:
    """The committed ``versions`` of ``collection`` (default: every one), oldest first, read one at a time as they are
    asked for; a version expired meanwhile is left out, and none at all is :func:`no_collection_error`. A caller that
    keeps only what it needs of each holds one record at a time: a record of 10 tiles x 490 dates is some 10 MB in
    memory (:func:`version_history` holds them all)."""
    found = False
    for number in committed_versions(store, collection) if versions is None else versions:
        try:
            version = read_version(store, collection, number)
        except VersionNotFoundError:
            continue
        found = True
        yield version
    if not found:
        raise no_collection_error(store, collection)


def version_history(store: Store, collection: str, versions: Sequence[int] | None = None) -> list[CubeVersion]:
    """The committed ``versions`` of ``collection`` (default: every one), oldest first; a version expired
    meanwhile is left out. One read per version, of a record that holds the whole cube state but its scenes' band
    files and checksums (read when asked for), every one held: on a long history, ask for the newest few, or go
    through :func:`read_versions`."""
    return list(read_versions(store, collection, versions))


def _which_versions(wanted: int, versions: Sequence[int]) -> str:
    """Why ``wanted`` is not among the committed ``versions`` (ascending), and which there are."""
    kept = (f"version {versions[0]} is the only one kept" if len(versions) == 1
            else f"versions {versions[0]} to {versions[-1]} are kept")
    if 1 <= wanted < versions[0]:
        return f"it was expired (cardcube expire); {kept}"
    if wanted > versions[-1]:
        return f"the latest is {versions[-1]}"
    if wanted >= 1:  # versions are numbered without gaps, and expire deletes the oldest only
        return ("its ledger record is missing between kept versions: lost, or expired by a cardcube of before "
                "2026-12-04 (check the cube with cardcube verify)")
    return f"it was never committed; {kept}"


def confirm_committed(store: Store, version: CubeVersion, missing: Sequence[str] = ()) -> None:
    """Raise :class:`VersionNotFoundError` if ``version``'s record is gone: expired while it was being read.

    :func:`ingest.expire.expire` deletes a version's record before any data only that version read, so a
    reader that found a hot-buffer shard missing calls this *after* its read: if the record is still there,
    nothing had been deleted yet and the shard is an area with no data (read as fill, rightly); if it is
    gone, the fill may stand for deleted data, and the read must not be returned. ``missing``: the shards
    found missing, named in the error. (:func:`cube.manifest.confirm_absent` also tells lost shards.)"""
    if not key_exists(store, layout.ledger_key(version.collection, version.version)):
        raise VersionNotFoundError(
            f"version {version.version} of the {version.collection} cube at {store_url(store)} was expired while "
            f"it was being read ({', '.join(missing[:2]) or 'its hot-buffer data'} deleted): read the latest "
            "version, or one kept longer")


def check_listed_through(store: Store, collection: str, newest: int) -> None:
    """:class:`StoreUnavailableError` if the record of version ``newest + 1`` exists though the ledger's listing ended
    at ``newest`` (0: it listed none): a store whose listings lag behind its writes (a replica, a multi-site gateway).
    A writer that went on from ``newest`` took a committed version's data for a crashed run's leftovers: an ingest
    onto a cube whose one record was not listed yet took it for a new cube, cleared and wrote over its shards (version
    1 then read as lost), and failed at its commit. One HEAD, before a writer writes or deletes anything."""
    key = layout.ledger_key(collection, newest + 1)
    if key_exists(store, key):
        raise StoreUnavailableError(
            f"the store holds {key} of the {collection} cube at {store_url(store)}, but its listing of the ledger "
            f"{f'ended at version {newest}' if newest else 'held no version'}: its listings lag behind its writes (a "
            f"replica behind); nothing was written: try again shortly")


def head_or_empty(store: Store, spec: CubeSpec) -> CubeVersion:
    """The latest committed state, or an empty version 0 for a new cube."""
    try:
        return read_version(store, spec.name)
    except CubeNotFoundError:
        return CubeVersion.empty(spec)
