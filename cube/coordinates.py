"""The coordinate and per-date arrays beside the bands of a tile's Zarr groups: what each holds, and checking them.

Each resolution group, cold (``r10m``) and hot (``hot/r10m``), holds ``x`` and ``y`` (the tile grid's pixel
centres), ``spatial_ref`` (the CRS and GeoTransform, in its attributes), ``time`` and the per-date acquisition
metadata (``scene_id``, ``platform``, ...). cardcube's reads take the grid and the dates from the ledger; a plain
Zarr reader (``xarray.open_zarr``, rioxarray) takes them from these arrays, so one lost or changed (a partial
restore, a lifecycle rule, a migration) costs it the pixels' place or the dates without a word. The writer
(:mod:`ingest.arrays`, :mod:`ingest.job`) and the check here (:func:`coordinate_problems`, run by ``verify``; what
it finds ``ingest --repair`` writes again, :func:`ingest.arrays.rewrite_coordinates`) take the values from the same
functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from cardcube.errors import CorruptDocumentError
from cardcube.grid import TileGrid
from cardcube.storage import reading
from cube import layout
from cube.ledger import Acquisition, CubeVersion, acquisition_columns
from cube.tile_arrays import open_arrays, sized_view

# Per-date coordinates: name -> (dtype, fill value, CF long_name)
ACQUISITION_COORDS: dict[str, tuple[str, object, str]] = {
    "scene_id": ("str", "", "source scene identifier"),
    "platform": ("str", "", "satellite platform"),
    "relative_orbit": ("int16", -1, "relative orbit number"),
    "orbit_state": ("str", "", "orbit direction"),
    "cloud_cover": ("float32", float("nan"), "scene cloud cover (percent)"),
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
    return {"long_name": ACQUISITION_COORDS[name][2]}


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


def stored_dates(versions: Sequence[CubeVersion], tile: str) -> dict[bool, dict[int, Acquisition]]:
    """The date each place of ``tile``'s per-date arrays holds, by hot, as the kept ``versions`` (the latest last)
    say: the cold arrays' are the latest's cold dates; a hot slot's, that of any version holding it (slots are never
    reused). A slot no kept version holds (expired) is not known."""
    hot = {h.slot: h.acquisition for v in versions if tile in v.tiles for h in v.tiles[tile].hot}
    return {False: dict(enumerate(versions[-1].tiles[tile].cold)), True: hot}


def is_coordinate_key(key: str) -> bool:
    """Whether store key ``key`` is of a coordinate or per-date array (its ``zarr.json`` or a chunk)."""
    parts = key.split("/")
    at = next((i for i, p in enumerate(parts) if p.startswith("r") and p.endswith("m") and p[1:-1].isdigit()), None)
    return (at is not None and layout.ZARR_NAME in parts[:at] and len(parts) > at + 1
            and parts[at + 1] in COORDINATE_ARRAYS)


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
    ``chunk``'s store key; the array's tile, resolution, name and hot; what is wrong."""

    key: str
    tile: str
    resolution: int
    name: str
    hot: bool
    chunk: int | None
    problem: str


def coordinate_problems(store: Any, versions: Sequence[CubeVersion]) -> list[CoordinateProblem]:
    """Each coordinate and per-date array of every tile the latest of the kept ``versions`` holds (cold and hot)
    whose metadata is missing, damaged or not the writer's, and each chunk of them missing or holding other values
    than the tile grid and the ledger say (its dates known to the kept versions); all chunks read at once,
    ``IN_FLIGHT`` at a time. Reads only."""
    latest = versions[-1]
    spec, problems = latest.spec, []
    reads: list[tuple[zarr.Array, tuple[str, int, str, bool], int, dict[int, Any]]] = []
    for tile in sorted(latest.tiles):
        grid, known = TileGrid.from_id(tile), stored_dates(versions, tile)
        keys = [(res, name, hot) for res in spec.resolutions for hot in (False, True) for name in COORDINATE_ARRAYS]
        arrays, unread = _open(store, spec.name, tile, keys)
        problems += unread
        for (res, name, hot), array in sorted(arrays.items()):
            if wrong := _metadata_problem(array, grid, res, name):
                problems.append(CoordinateProblem(f"{array.store_path.path}/zarr.json", tile, res, name, hot, None,
                                                  f"{wrong}; a plain Zarr reader loses {_loses(name)}"))
                continue
            if name == "spatial_ref":  # its value is the fill, stored nowhere: what it holds is its attributes
                continue
            if name in ("x", "y"):
                wanted = dict(enumerate(pixel_centres(grid, res)[name]))
            else:
                places = sorted(known[hot])
                wanted = dict(zip(places, date_columns([known[hot][p] for p in places])[name], strict=True))
            size = array.chunks[0]
            for chunk in sorted({p // size for p in wanted}):
                reads.append((array, (tile, res, name, hot), chunk,
                              {p: v for p, v in wanted.items() if p // size == chunk}))
    found = _read_chunks(store, reads)
    for (array, (tile, res, name, hot), chunk, wanted), (values, error, exists) in zip(reads, found, strict=True):
        key = f"{array.store_path.path}/{array.metadata.encode_chunk_key((chunk,))}"
        if error is not None:
            what = f"damaged: it does not decode ({error})"
        elif _same(values, wanted, chunk * array.chunks[0]):
            continue
        else:
            what = "holds other values than the ledger and the tile grid say" if exists else "missing"
        problems.append(CoordinateProblem(key, tile, res, name, hot, chunk,
                                          f"{what}: a plain Zarr reader (xarray.open_zarr, rioxarray) of "
                                          f"{layout.resolution_group(res, hot=hot)} loses {_loses(name)}; "
                                          "cardcube's own reads, which take them from the ledger, are unaffected"))
    return problems


def _same(values: np.ndarray, wanted: Mapping[int, Any], start: int) -> bool:
    """Whether ``values`` (a chunk's, from place ``start``) hold ``wanted`` (by place)."""
    got = [values[p - start] for p in wanted]
    want = list(wanted.values())
    if np.asarray(want).dtype.kind == "f":
        return bool(np.array_equal(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                                   equal_nan=True))
    return [str(g) if isinstance(w, str) else g for g, w in zip(got, want, strict=True)] == want


def _metadata_problem(array: zarr.Array, grid: TileGrid, resolution: int, name: str) -> str | None:
    """What is wrong with a coordinate array's metadata: its dtype, its shape (``x``, ``y``), or its attributes
    (the CRS, the units of the dates), not the writer's."""
    if array.dtype != coordinate_dtype(name) and not (name in ACQUISITION_COORDS and array.dtype.kind in "OTU"
                                                      and coordinate_dtype(name).kind in "OTU"):
        return f"damaged: its dtype is {array.dtype}, not {coordinate_dtype(name)}"
    if name in ("x", "y") and array.shape != pixel_centres(grid, resolution)[name].shape:
        return f"damaged: its shape is {array.shape}, not the tile grid's {pixel_centres(grid, resolution)[name].shape}"
    if dict(array.attrs) != coordinate_attributes(grid, resolution, name):
        return "damaged: its attributes are not those ingest writes"
    return None


def _open(store: Any, collection: str, tile: str, keys: Sequence[tuple[int, str, bool]]
          ) -> tuple[dict[tuple[int, str, bool], zarr.Array], list[CoordinateProblem]]:
    """The arrays ``keys`` of ``tile`` (their metadata fetched at once), and a problem for each whose ``zarr.json``
    is missing or damaged."""
    try:
        return open_arrays(store, collection, tile, keys), []
    except (FileNotFoundError, CorruptDocumentError, ValueError):
        pass
    arrays, problems = {}, []
    for res, name, hot in keys:
        try:
            arrays.update(open_arrays(store, collection, tile, [(res, name, hot)]))
        except (FileNotFoundError, CorruptDocumentError, ValueError) as exc:
            path = f"{layout.array_path(collection, tile, res, name, hot=hot)}/zarr.json"
            problems.append(CoordinateProblem(path, tile, res, name, hot, None,
                                              f"array metadata missing or damaged ({type(exc).__name__}); a plain "
                                              f"Zarr reader loses {_loses(name)}"))
    return arrays, problems


def _read_chunks(store: Any, reads: Sequence[tuple[zarr.Array, Any, int, Mapping[int, Any]]]
                 ) -> list[tuple[np.ndarray | None, str | None, bool]]:
    """Each read's chunk: its values (the array sized to the places wanted), what kept it from decoding, and
    whether its object is in the store; ``IN_FLIGHT`` at a time."""

    async def one(array: zarr.Array, chunk: int, wanted: Mapping[int, Any]) -> tuple[Any, str | None, bool]:
        size, stop = array.chunks[0], max(wanted) + 1
        view = sized_view(array, stop)._async_array
        key = f"{array.store_path.path}/{array.metadata.encode_chunk_key((chunk,))}"
        exists = await store.exists(key)
        try:
            return await view.getitem(slice(chunk * size, min((chunk + 1) * size, view.shape[0]))), None, exists
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}", exists

    async def batch(part: Sequence[Any]) -> list[Any]:
        return await asyncio.gather(*(one(array, chunk, wanted) for array, _, chunk, wanted in part))

    found: list[Any] = []
    with reading("the cube's coordinate arrays", store):
        for i in range(0, len(reads), IN_FLIGHT):
            found += sync(batch(reads[i:i + IN_FLIGHT]))
    return found
