"""The coordinate and per-date arrays beside the bands of a tile's Zarr groups: what each holds, and checking them.

Each resolution group, cold (``r10m``) and hot (``hot/r10m``), holds ``x`` and ``y`` (the tile grid's pixel
centres), ``spatial_ref`` (the CRS and GeoTransform, in its attributes), ``time`` and the per-date acquisition
metadata (``scene_id``, ``platform``, ...). cardcube's reads take the grid and the dates from the ledger; a plain
Zarr reader (``xarray.open_zarr``, rioxarray) takes them from these arrays, so one lost or changed (a partial
restore, a lifecycle rule, a migration) costs it the pixels' place or the dates without a word. The writer
(:mod:`ingest.arrays`, :mod:`ingest.job`) and the check here (:func:`coordinate_problems`, run by ``verify``; what
it finds ``ingest --repair`` writes again, :func:`ingest.arrays.rewrite_coordinates`) take the values from the same
functions; the check takes the attributes an earlier cardcube wrote (:data:`_EARLIER_ATTRIBUTES`) as sound too,
and ``--repair`` leaves them. The groups holding them (the tile's own, ``hot``, each resolution group) are checked
too: a plain reader opens a group by its ``zarr.json``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyproj
import pyproj.exceptions
import zarr

from cardcube.grid import TileGrid
from cardcube.storage import in_steps, reading
from cube import layout
from cube.ledger import Acquisition, CubeVersion, acquisition_columns
from cube.tile_arrays import array_of_document, read_documents, sized_view

# Per-date coordinates: name -> (dtype, fill value, CF attributes). An unknown relative orbit is -1, without a CF
# _FillValue saying so: xarray would decode the array to floats with NaN for it, no longer the int16 it is.
ACQUISITION_COORDS: dict[str, tuple[str, object, Mapping[str, str]]] = {
    "scene_id": ("str", "", {"long_name": "source scene identifier"}),
    "platform": ("str", "", {"long_name": "satellite platform"}),
    "relative_orbit": ("int16", -1, {"long_name": "relative orbit number"}),
    "orbit_state": ("str", "", {"long_name": "orbit direction"}),
    "cloud_cover": ("float32", float("nan"), {"long_name": "scene cloud cover (percent)", "units": "percent"}),
}
TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
DATE_ARRAYS = ("time", *ACQUISITION_COORDS)  # one entry a date (a hot slot), in the order the writer stores them
COORDINATE_ARRAYS = ("x", "y", "spatial_ref", *DATE_ARRAYS)
IN_FLIGHT = 64  # chunks read at once: each a few KB


def pixel_centres(tile: TileGrid, resolution: int) -> dict[str, np.ndarray]:
    """The ``x`` and ``y`` arrays of ``tile`` at ``resolution``: its pixels' centres, in the tile's CRS."""
    geobox = tile.geobox(resolution)
    a, (ny, nx) = geobox.affine, geobox.shape
    return {"x": a.c + a.a * (np.arange(nx) + 0.5), "y": a.f + a.e * (np.arange(ny) + 0.5)}


def coordinate_attributes(tile: TileGrid, resolution: int, name: str) -> dict[str, Any]:
    """The attributes of coordinate array ``name`` of ``tile`` at ``resolution``: CF's, rioxarray's and GDAL's."""
    if name in ("x", "y"):
        std = "projection_x_coordinate" if name == "x" else "projection_y_coordinate"
        return {"standard_name": std, "units": "metre", "axis": name.upper()}
    if name == "spatial_ref":
        geobox = tile.geobox(resolution)
        a, crs_wkt = geobox.affine, geobox.crs.to_wkt()
        return {"crs_wkt": crs_wkt, "spatial_ref": crs_wkt,
                "GeoTransform": " ".join(str(v) for v in (a.c, a.a, a.b, a.f, a.d, a.e))}
    if name == "time":
        return {"standard_name": "time", "units": TIME_UNITS, "calendar": "proleptic_gregorian"}
    return dict(ACQUISITION_COORDS[name][2])


class _EarlierAttributes(NamedTuple):
    """The attributes an earlier cardcube gave coordinate or per-date array ``name``, which it wrote from ``since`` to
    the day before ``until`` (the date in CHANGES.md of the change replacing them)."""

    name: str
    since: str
    until: str
    attributes: Mapping[str, Any]


# The attributes of the arrays of :func:`coordinate_attributes` that earlier cardcubes wrote: an array holding them is
# as sound as one holding today's (the same values read, the same CRS and dates), and ``ingest --repair`` leaves it as
# it is (nothing is damaged). A change of :func:`coordinate_attributes` adds a line here with the set it replaces.
_EARLIER_ATTRIBUTES: tuple[_EarlierAttributes, ...] = (
    _EarlierAttributes("cloud_cover", "2026-11-25", "2026-12-07", {"long_name": "scene cloud cover (percent)"}),
)


def coordinate_dtype(name: str) -> np.dtype:
    """The dtype of coordinate array ``name`` (``str``: zarr's variable-length strings)."""
    dtype = {"x": "float64", "y": "float64", "spatial_ref": "int32", "time": "int64"}.get(name)
    return np.dtype(dtype or ACQUISITION_COORDS[name][0])


def date_columns(acqs: Sequence[Acquisition]) -> dict[str, np.ndarray]:
    """The per-date arrays' values for the dates ``acqs``: :func:`cube.ledger.acquisition_columns`, ``time`` in
    seconds (:data:`TIME_UNITS`)."""
    values = acquisition_columns(acqs)
    values["time"] = values["time"].astype("datetime64[s]").astype("int64")
    return values


def add_hot_dates(known: dict[str, dict[int, Acquisition]], version: CubeVersion) -> None:
    """Add the date each hot slot of ``version``'s tiles holds to ``known`` (tile -> slot -> date). Slots are never
    reused, so those of every kept version, read one record at a time, add up to what the hot per-date arrays hold
    (:func:`stored_dates`); a slot no kept version holds (expired) is not known."""
    for tile, state in version.tiles.items():
        known.setdefault(tile, {}).update({h.slot: h.acquisition for h in state.hot})


def stored_dates(latest: CubeVersion, hot_dates: Mapping[str, Mapping[int, Acquisition]], tile: str
                 ) -> dict[bool, dict[int, Acquisition]]:
    """The date each place of ``tile``'s per-date arrays holds, by hot: the cold arrays' are the ``latest`` kept
    version's cold dates; a hot slot's, that the kept versions give it (``hot_dates``, :func:`add_hot_dates`)."""
    return {False: dict(enumerate(latest.tiles[tile].cold)), True: dict(hot_dates.get(tile, {}))}


def is_coordinate_key(key: str) -> bool:
    """Whether store key ``key`` is of a coordinate or per-date array (its ``zarr.json`` or a chunk), or the
    ``zarr.json`` of a group of a tile's Zarr group (:func:`tile_groups`)."""
    parts = key.split("/")
    if layout.ZARR_NAME in parts and parts[-1] == "zarr.json":
        inside = parts[parts.index(layout.ZARR_NAME) + 1:-1]
        if inside in ([], ["hot"]) or (len(inside) == 1 + (inside[:1] == ["hot"]) and _is_resolution(inside[-1])):
            return True
    at = next((i for i, p in enumerate(parts) if _is_resolution(p)), None)
    return (at is not None and layout.ZARR_NAME in parts[:at] and len(parts) > at + 1
            and parts[at + 1] in COORDINATE_ARRAYS)


def _is_resolution(part: str) -> bool:
    """Whether a key's ``part`` names a resolution group (``r10m``)."""
    return part.startswith("r") and part.endswith("m") and part[1:-1].isdigit()


def _loses(name: str) -> str:
    """What a plain reader loses with coordinate array ``name``."""
    if name in ("x", "y"):
        return (f"the pixels' {'eastings' if name == 'x' else 'northings'} (the {name} coordinate, NaN where lost): "
                "the tile's georeferencing")
    if name == "spatial_ref":
        return "the CRS and GeoTransform rioxarray and odc-geo read"
    return "the dates (the time coordinate)" if name == "time" else f"each date's {name}"


@dataclass(frozen=True, slots=True)
class CoordinateProblem:
    """A lost, damaged or wrong part of a coordinate array: ``key`` its ``zarr.json`` (``chunk`` None) or the chunk
    ``chunk``'s store key; the array's tile, resolution, name and hot; what is wrong. Or, with ``group``, the
    ``zarr.json`` of a group of the tile holding them: ``name`` its path in the tile's group (``""`` the tile's own,
    ``hot``, ``r10m``, ``hot/r10m``), ``resolution`` 0 for the first two."""

    key: str
    tile: str
    resolution: int
    name: str
    hot: bool
    chunk: int | None
    problem: str
    group: bool = False


def coordinate_problems(store: Any, latest: CubeVersion, hot_dates: Mapping[str, Mapping[int, Acquisition]], *,
                        tiles: Collection[str] | None = None) -> list[CoordinateProblem]:
    """Each coordinate and per-date array of every tile the ``latest`` kept version holds (of ``tiles`` alone, if
    given; cold and hot) whose metadata is missing, damaged or not the writer's, and each chunk of them missing or
    holding other values than the tile grid and the ledger say (the hot slots' dates ``hot_dates``, as the kept
    versions give them: :func:`add_hot_dates`); all chunks read at once, ``IN_FLIGHT`` at a time. Reads only."""
    spec, problems = latest.spec, []
    reads: list[_ChunkRead] = []
    wanted = sorted(t for t in latest.tiles if tiles is None or t in tiles)
    keys = [(res, name, hot) for res in spec.resolutions for hot in (False, True) for name in COORDINATE_ARRAYS]
    groups = tile_groups(spec.resolutions)
    paths = [layout.array_path(spec.name, t, res, name, hot=hot) for t in wanted for res, name, hot in keys]
    found = read_documents(store, [*(f"{p}/zarr.json" for p in paths),
                                   *(group_key(spec.name, t, res, hot=hot) for t in wanted for res, hot in groups)],
                           "the cube's coordinate arrays")
    docs = iter(found)
    opened = {(t, key): array_of_document(store, path, next(docs)) for t, key, path in zip(
        (t for t in wanted for _ in keys), (k for _ in wanted for k in keys), paths, strict=True)}
    for tile in wanted:
        grid = TileGrid.from_id(tile)
        for res, hot in groups:
            if wrong := _group_problem(next(docs), grid, res, hot=hot):
                path = group_path(res, hot=hot)
                problems.append(CoordinateProblem(group_key(spec.name, tile, res, hot=hot), tile, res or 0, path, hot,
                                                  None, f"{wrong}: {_group_loses(path, res)}", group=True))
    for tile in wanted:
        grid, known, state = TileGrid.from_id(tile), stored_dates(latest, hot_dates, tile), latest.tiles[tile]
        for res, name, hot in sorted(keys):
            array = opened[(tile, (res, name, hot))]
            if isinstance(array, str):
                problems.append(CoordinateProblem(
                    f"{layout.array_path(spec.name, tile, res, name, hot=hot)}/zarr.json", tile, res, name, hot, None,
                    f"{array}: the array's metadata; a plain Zarr reader (xarray.open_zarr, rioxarray) sees no {name} "
                    f"array, and loses {_loses(name)}"))
                continue
            if wrong := _metadata_problem(array, grid, res, name, state.length(hot)):
                problems.append(CoordinateProblem(f"{array.store_path.path}/zarr.json", tile, res, name, hot, None,
                                                  f"{wrong}; a plain Zarr reader loses {_loses(name)}"))
                continue
            if name == "spatial_ref":  # its value is the fill, stored nowhere: what it holds is its attributes
                continue
            if name in ("x", "y"):
                values = pixel_centres(grid, res)[name]
                places = np.arange(len(values))
            else:
                places = np.array(sorted(known[hot]), dtype=np.int64)
                values = date_columns([known[hot][p] for p in places])[name]
            size = array.chunks[0]
            for chunk in np.unique(places // size):
                at = places // size == chunk
                reads.append(_ChunkRead(array, CoordinateProblem("", tile, res, name, hot, int(chunk), ""),
                                        places[at], values[at]))
    for read, what in zip(reads, _check_chunks(store, reads), strict=True):
        if what is not None:
            p = read.where
            problems.append(CoordinateProblem(read.key, p.tile, p.resolution, p.name, p.hot, p.chunk,
                                              f"{what}: a plain Zarr reader (xarray.open_zarr, rioxarray) of "
                                              f"{layout.resolution_group(p.resolution, hot=p.hot)} loses "
                                              f"{_loses(p.name)}; cardcube's own reads, which take them from the "
                                              "ledger, are unaffected"))
    return problems


@dataclass(frozen=True, slots=True)
class _ChunkRead:
    """A chunk of a coordinate array to check: the array, where (the problem's fields), and the values it must hold
    at its places."""

    array: zarr.Array
    where: CoordinateProblem
    places: np.ndarray
    values: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.array.store_path.path}/{self.array.metadata.encode_chunk_key((self.where.chunk,))}"


def _same(got: np.ndarray, wanted: np.ndarray) -> bool:
    """Whether ``got`` (read) holds ``wanted`` (NaN for NaN; strings as text)."""
    if wanted.dtype.kind == "f":
        return bool(np.array_equal(np.asarray(got, dtype=np.float64), wanted.astype(np.float64), equal_nan=True))
    if wanted.dtype.kind == "O":
        return [str(g) for g in got] == list(wanted)
    return bool(np.array_equal(np.asarray(got), wanted))


def _metadata_problem(array: zarr.Array, grid: TileGrid, resolution: int, name: str, length: int) -> str | None:
    """What is wrong with a coordinate array's metadata: its dtype, its shape (``x``, ``y`` the grid's; a per-date
    array shorter than the ``length`` dates the latest version holds there), or its attributes (the CRS, the units
    of the dates), neither the writer's nor an earlier cardcube's (:func:`_attributes_problem`)."""
    if array.dtype != coordinate_dtype(name) and not (name in ACQUISITION_COORDS and array.dtype.kind in "OTU"
                                                      and coordinate_dtype(name).kind in "OTU"):
        return f"damaged: its dtype is {array.dtype}, not {coordinate_dtype(name)}"
    if name in ("x", "y") and array.shape != pixel_centres(grid, resolution)[name].shape:
        return f"damaged: its shape is {array.shape}, not the tile grid's {pixel_centres(grid, resolution)[name].shape}"
    if name not in ("x", "y", "spatial_ref") and array.shape[0] < length:
        return f"damaged: its length is {array.shape[0]}, of the {length} date(s) the latest version holds"
    return _attributes_problem(dict(array.attrs), coordinate_attributes(grid, resolution, name), name)


def _attributes_problem(stored: dict[str, Any], wanted: dict[str, Any], name: str) -> str | None:
    """What is wrong with the ``stored`` attributes of coordinate array ``name``: neither ``wanted`` (those ingest
    writes) nor an earlier cardcube's (:data:`_EARLIER_ATTRIBUTES`), and then what differs from ``wanted``."""
    differences = _attribute_differences(stored, wanted)
    earlier = [dict(e.attributes) for e in _EARLIER_ATTRIBUTES if e.name == name]
    if not differences or any(not _attribute_differences(stored, e) for e in earlier):
        return None
    nor = " (nor an earlier cardcube's)" if earlier else ""
    return f"damaged: its attributes are not those ingest writes{nor}: {', '.join(differences)}"


def _attribute_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What ``stored`` attributes say otherwise than ``wanted``, each attribute missing, other or not wanted (none:
    the same): a CRS's WKT compared as the CRS (another PROJ writes another text of it), a GeoTransform as the
    numbers."""
    out = []
    for key, value in wanted.items():
        if key not in stored:
            out.append(f"{key} missing ({_shown(key, value)})")
            continue
        got = stored[key]
        try:
            if key in ("crs_wkt", "spatial_ref"):
                same = isinstance(got, str) and pyproj.CRS.from_wkt(got) == pyproj.CRS.from_wkt(value)
            elif key == "GeoTransform":
                same = [float(v) for v in got.split()] == [float(v) for v in value.split()]
            else:
                same = got == value
        except (pyproj.exceptions.CRSError, ValueError, AttributeError):
            same = False
        if not same:
            out.append(f"{key} {_shown(key, got)} where ingest writes {_shown(key, value)}")
    return out + [f"{key} {_shown(key, stored[key])} not written by ingest" for key in stored if key not in wanted]


def _shown(key: str, value: Any) -> str:
    """An attribute's value as a message shows it: a CRS's WKT by the CRS's name, else its repr, cut to 60
    characters."""
    if key in ("crs_wkt", "spatial_ref") and isinstance(value, str):
        try:
            return f"the WKT of {pyproj.CRS.from_wkt(value).to_string()}"
        except pyproj.exceptions.CRSError:
            pass
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def tile_groups(resolutions: Sequence[int]) -> list[tuple[int | None, bool]]:
    """The groups of a tile's Zarr group, as (resolution, hot), its own and the hot buffer's resolution None: each
    holding a ``zarr.json`` a plain Zarr reader opens the group by."""
    return [(None, False), (None, True), *((res, hot) for res in resolutions for hot in (False, True))]


def group_path(resolution: int | None, *, hot: bool) -> str:
    """The path of a group of :func:`tile_groups` in the tile's Zarr group (``""``: the tile's own)."""
    return layout.resolution_group(resolution, hot=hot) if resolution else "hot" if hot else ""


def group_key(collection: str, tile: str, resolution: int | None, *, hot: bool) -> str:
    """The store key of the ``zarr.json`` of a group of :func:`tile_groups`."""
    return "/".join(filter(None, (layout.tile_zarr_path(collection, tile), group_path(resolution, hot=hot),
                                  "zarr.json")))


# the Zarr conventions whose attributes a resolution group carries, registered as each convention requires (a reader
# of them passes unregistered attributes by)
ZARR_CONVENTIONS = (
    {"schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
     "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
     "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f", "name": "proj:",
     "description": "Coordinate reference system information for geospatial data"},
    {"schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
     "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
     "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4", "name": "spatial",
     "description": "Spatial coordinate information"},
)
# what a resolution group written before 2026-12-07 lacks of group_attributes (sound all the same: its grid is right)
_REGISTRATION = ("zarr_conventions", "spatial:dimensions")


def group_attributes(tile: TileGrid, resolution: int, *, hot: bool) -> dict[str, Any]:
    """The attributes of a resolution group of ``tile`` (cold or ``hot``): the ``proj:code``, ``spatial:transform``,
    ``spatial:shape`` and ``spatial:dimensions`` of its grid, and the registration of those Zarr conventions."""
    geobox = tile.geobox(resolution)
    a, (ny, nx) = geobox.affine, geobox.shape
    return {"resolution": resolution, "hot_buffer": hot, "zarr_conventions": [dict(c) for c in ZARR_CONVENTIONS],
            "proj:code": tile.crs, "spatial:dimensions": ["y", "x"],
            "spatial:transform": [a.a, a.b, a.c, a.d, a.e, a.f], "spatial:shape": [ny, nx]}


def _group_problem(data: bytes | None, grid: TileGrid, resolution: int | None, *, hot: bool) -> str | None:
    """What is wrong with a group's ``zarr.json`` bytes ``data``: missing, no group document, or (a resolution
    group's) other attributes than ingest writes."""
    if data is None:
        return "missing"
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        return "damaged: not a readable group document"
    if not resolution:
        return None
    wanted = json.loads(json.dumps(group_attributes(grid, resolution, hot=hot)))
    stored = doc.get("attributes")
    if stored in (wanted, {k: v for k, v in wanted.items() if k not in _REGISTRATION}):
        return None
    differences = _attribute_differences(stored, wanted) if isinstance(stored, dict) else ["none a mapping"]
    return f"damaged: its attributes are not those ingest writes (nor an earlier cardcube's): {', '.join(differences)}"


def _group_loses(path: str, resolution: int | None) -> str:
    """What a plain reader loses with the group at ``path`` of a tile's Zarr group."""
    if not resolution:
        what = "the hot buffer's group" if path else "the tile's group, which says what cube it is of"
        return (f"the group's metadata; a plain Zarr reader cannot open {what} (xarray.open_datatree), and an ingest "
                "writing the tile writes it again first (cardcube's own reads are unaffected)")
    return (f"the group's metadata; a plain Zarr reader (xarray.open_zarr(..., group=\"{path}\"), rioxarray) cannot "
            "open it, or loses its grid's proj:code, spatial:transform and spatial:shape (cardcube's own reads are "
            "unaffected)")


def _check_chunks(store: Any, reads: Sequence[_ChunkRead]) -> list[str | None]:
    """What is wrong with each chunk of ``reads`` (None: it holds its values), ``IN_FLIGHT`` read at a time; a chunk
    holding other values is looked up, to tell a lost one from one changed."""

    async def one(read: _ChunkRead) -> str | None:
        size, stop = read.array.chunks[0], int(read.places[-1]) + 1
        view = sized_view(read.array, stop)._async_array  # the dates committed, whatever shape a crash left
        start = read.where.chunk * size
        try:
            got = await view.getitem(slice(start, min(start + size, view.shape[0])))
        except Exception as exc:
            return f"damaged: it does not decode ({type(exc).__name__}: {exc})"
        if _same(np.asarray(got)[read.places - start], read.values):
            return None
        return "holds other values than the ledger and the tile grid say" if await store.exists(read.key) else "missing"

    with reading("the cube's coordinate arrays", store):
        return [what for _, found in in_steps(one, reads, IN_FLIGHT) for what in found]
