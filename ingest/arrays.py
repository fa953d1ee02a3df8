"""The Zarr arrays of one cube tile: creation with CF/GDAL metadata, and sized views for writing.

Each native resolution gets a group holding one ``(time, y, x)`` array per band, plus the coordinate
arrays ``time``, ``y``, ``x``, the per-date acquisition coordinates and a scalar ``spatial_ref`` with the
CRS (``crs_wkt``) and ``GeoTransform``, the convention rioxarray, GDAL and odc-geo read. The hot buffer
has the same arrays with one date per chunk.

Writers never grow an array's persisted shape before the ledger commit: they write chunks through a
*sized view* (an in-memory array object whose metadata claims the larger shape) and
:func:`publish_shapes` persists the shapes afterwards, so a plain Zarr reader sees only committed dates.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import zarr
import zarr.errors
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.buffer import Buffer
from zarr.storage import MemoryStore

from cardcube.checkpoints import checkpoint
from cardcube.errors import CorruptDocumentError
from cardcube.grid import TileGrid
from cardcube.spec import BandSpec, CubeSpec
from cardcube.storage import delete_key, delete_prefix, list_each, local_file, write_many
from cube import layout, tile_arrays
from cube.coordinates import (
    ACQUISITION_COORDS,
    CoordinateProblem,
    coordinate_attributes,
    date_columns,
    group_attributes,
    pixel_centres,
    stored_dates,
)
from cube.ledger import Acquisition, CubeVersion, TileState

_COORD_CHUNK = 1024


def _compressors(spec: CubeSpec, band: BandSpec) -> tuple[BloscCodec, Crc32cCodec]:
    # zstd with bit-shuffle: reflectance varies in its low bits, bit planes compress well. Then each chunk's crc32c:
    # blosc decodes many a damaged chunk into wrong values without an error, which a read would serve as numbers.
    typesize = np.dtype(band.dtype).itemsize
    blosc = BloscCodec(cname="zstd", clevel=spec.compressor_level, shuffle="bitshuffle", typesize=typesize)
    return blosc, Crc32cCodec()


def _band_attrs(band: BandSpec) -> dict:
    # CF: `coordinates` makes xarray treat spatial_ref and the per-date metadata as coordinates, and
    # `grid_mapping` points rioxarray/odc-geo at the CRS.
    attrs: dict = {"long_name": band.long_name, "units": band.units, "grid_mapping": "spatial_ref",
                   "coordinates": " ".join(["spatial_ref", *ACQUISITION_COORDS])}
    if band.nodata is not None:  # the CF mask, encoded as xarray expects it in Zarr attributes
        attrs["_FillValue"] = (int(band.nodata) if np.dtype(band.dtype).kind in "iu"
                               else base64.standard_b64encode(struct.pack("<d", float(band.nodata))).decode())
    if band.scale != 1.0 or band.offset != 0.0:
        attrs.update(scale_factor=band.scale, add_offset=band.offset)
    if band.common_name:
        attrs["common_name"] = band.common_name
    if band.center_wavelength:
        attrs["center_wavelength"] = band.center_wavelength
    if band.is_flag:
        attrs.update(flag_values=list(band.flag_values), flag_meanings=" ".join(band.flag_meanings))
    return attrs


def _create_resolution_group(root: zarr.Group, spec: CubeSpec, tile: TileGrid, resolution: int, *, hot: bool) -> None:
    group = root.require_group(layout.resolution_group(resolution, hot=hot))
    geobox = tile.geobox(resolution)
    ny, nx = geobox.shape
    chunks = spec.chunks.chunks(resolution, hot=hot)
    shards = spec.chunks.shards(resolution, hot=hot)
    for band in spec.bands_at(resolution):
        fill = band.fill
        group.create_array(
            band.name, shape=(0, ny, nx), dtype=band.dtype, chunks=chunks, shards=shards,
            compressors=_compressors(spec, band), fill_value=fill, dimension_names=("time", "y", "x"),
            attributes=_band_attrs(band),
        )
    for name, values in pixel_centres(tile, resolution).items():
        arr = group.create_array(name, shape=values.shape, dtype="float64", chunks=values.shape,
                                 dimension_names=(name,), fill_value=np.nan,
                                 attributes=coordinate_attributes(tile, resolution, name))
        arr[:] = values
    ref = group.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0, dimension_names=(),
                             attributes=coordinate_attributes(tile, resolution, "spatial_ref"))
    ref[()] = 0
    group.create_array("time", shape=(0,), dtype="int64", chunks=(_COORD_CHUNK,), fill_value=0,
                       dimension_names=("time",), attributes=coordinate_attributes(tile, resolution, "time"))
    for name, (dtype, fill, _) in ACQUISITION_COORDS.items():
        group.create_array(name, shape=(0,), dtype=dtype, chunks=(_COORD_CHUNK,), fill_value=fill,
                           dimension_names=("time",), attributes=coordinate_attributes(tile, resolution, name))
    group.attrs.update(group_attributes(tile, resolution, hot=hot))


def _group_objects(spec: CubeSpec, tile: TileGrid, resolution: int, *, hot: bool) -> dict[str, bytes]:
    """The objects of a new resolution group of ``tile`` (its own ``zarr.json`` and its tile's, each array's, the
    ``x`` and ``y`` chunks), by store key: made in memory, to be stored at once, one request per object (zarr creating
    each array in place first looks for what is there and for its parents: 860 requests for a new S2 tile on S3,
    one by one)."""
    objects: dict[str, Buffer] = {}
    path = layout.tile_zarr_path(spec.name, tile.tile_id)
    _create_resolution_group(zarr.open_group(MemoryStore(objects), path=path, mode="w", zarr_format=3),
                             spec, tile, resolution, hot=hot)
    return {key: buf.to_bytes() for key, buf in objects.items() if key.startswith(f"{path}/")}


def ensure_tile(store: Store, spec: CubeSpec, tile: TileGrid, *, committed: bool) -> zarr.Group:
    """A tile's Zarr group, ready for writing. A tile no committed version holds is built anew: what is there
    was left by a run that died before its commit (half-created arrays, or arrays of another chunk layout),
    which nothing reads and the writer lock keeps anyone else from writing."""
    path = layout.tile_zarr_path(spec.name, tile.tile_id)
    if committed:
        return zarr.open_group(store, path=path, mode="r+", zarr_format=3)
    delete_prefix(store, f"{path}/")
    delete_prefix(store, f"{spec.name}/{tile.tile_id}/{layout.MANIFEST_DIR}/")  # of blocks in another layout, maybe
    root = zarr.create_group(store, path=path, zarr_format=3, attributes=_tile_attributes(spec, tile.tile_id))
    stored = {f"{path}/zarr.json"}  # the tile's own group, with its attributes
    for resolution in spec.resolutions:
        for hot in (False, True):
            new = {key: data for key, data in _group_objects(spec, tile, resolution, hot=hot).items()
                   if key not in stored}
            write_many(store, new)
            stored |= set(new)
            checkpoint("tile-group-created")  # tests kill here: a tile half built
    return root


def _tile_attributes(spec: CubeSpec, tile: str) -> dict:
    """The attributes of a tile's own Zarr group: what cube it is of."""
    return {"cardcube": {"format": 1, "collection": spec.name, "tile": tile, "spec": spec.to_dict()}}


def _group_document(spec: CubeSpec, problem: CoordinateProblem) -> bytes:
    """The ``zarr.json`` of the group of a tile ``problem`` names (:func:`cube.coordinates.tile_groups`), as
    :func:`ensure_tile` writes it."""
    grid = TileGrid.from_id(problem.tile)
    if problem.name:  # a resolution group, or the hot buffer's (made with its first resolution's)
        return _group_objects(spec, grid, problem.resolution or spec.resolutions[0], hot=problem.hot)[problem.key]
    objects: dict[str, Buffer] = {}
    zarr.create_group(MemoryStore(objects), path=layout.tile_zarr_path(spec.name, problem.tile), zarr_format=3,
                      attributes=_tile_attributes(spec, problem.tile))
    return objects[problem.key].to_bytes()


def rewrite_coordinates(store: Store, latest: CubeVersion, hot_dates: Mapping[str, Mapping[int, Acquisition]],
                        problems: Sequence[CoordinateProblem], *, check: Callable[[], None]) -> list[str]:
    """Write the coordinate and per-date arrays ``problems`` names (:func:`cube.coordinates.coordinate_problems` of
    the ``latest`` kept version and the dates ``hot_dates`` the kept versions give the hot slots) again, as ingest
    wrote them: a lost or damaged ``zarr.json`` made anew as a new tile's is (sized to the dates the latest version
    holds), then the values, from the tile grid and the ledger, into each chunk found missing, damaged or other
    (every chunk of an array whose metadata was); a chunk that does not decode is deleted first, so the dates no kept
    version knows (expired hot slots) read as fill there. The ``zarr.json`` of a tile's group lost or damaged
    (``group``) is written first, as :func:`ensure_tile` writes it. ``check`` runs before each write (the writer's
    fence). The keys written."""
    spec, written = latest.spec, []
    for p in sorted((p for p in problems if p.group), key=lambda p: (p.tile, p.key.count("/"), p.key)):
        check()  # a tile's own group before those in it
        write_many(store, {p.key: _group_document(spec, p)})
        written.append(p.key)
    arrays = sorted({(p.tile, p.resolution, p.name, p.hot) for p in problems if not p.group})
    for tile, res, name, hot in arrays:
        found = [p for p in problems if (p.tile, p.resolution, p.name, p.hot) == (tile, res, name, hot)]
        grid, path = TileGrid.from_id(tile), layout.array_path(spec.name, tile, res, name, hot=hot)
        if any(p.chunk is None for p in found):  # its metadata
            check()
            write_many(store, {f"{path}/zarr.json": _group_objects(spec, grid, res, hot=hot)[f"{path}/zarr.json"]})
            written.append(f"{path}/zarr.json")
        target = open_array(store, spec, tile, res, name, hot=hot, mode="r+")
        if name == "spatial_ref":  # its value is the fill, stored nowhere
            continue
        if name in ("x", "y"):
            check()
            target[:] = pixel_centres(grid, res)[name]  # one chunk, written whole
            written.append(f"{path}/{target.metadata.encode_chunk_key((0,))}")
            continue
        known = stored_dates(latest, hot_dates, tile)[hot]
        length = latest.tiles[tile].length(hot)
        if target.shape[0] < length and any(p.chunk is None for p in found):  # made anew: as the bands are sized
            target.resize((length,))
        size = target.chunks[0]
        chunks = ({p.chunk for p in found} if all(p.chunk is not None for p in found)
                  else {place // size for place in known})
        for chunk in sorted(chunks):
            places = sorted(p for p in known if p // size == chunk)
            key = f"{path}/{target.metadata.encode_chunk_key((chunk,))}"
            check()
            if any(p.chunk == chunk and p.problem.startswith("damaged") for p in found):
                delete_key(store, key)  # zarr would read it to merge the write into it
            values = date_columns([known[p] for p in places])[name]
            try:
                _write_places(target, places, values)
            except (ValueError, RuntimeError):  # its metadata made anew, and it does not decode: written anew
                delete_key(store, key)
                _write_places(target, places, values)
            written.append(key)
    return written


def _write_places(target: zarr.Array, places: Sequence[int], values: np.ndarray) -> None:
    """Write ``values`` at ``places`` (sorted) of a per-date array, each run of consecutive places at once."""
    view = tile_arrays.sized_view(target, places[-1] + 1)
    for run in np.split(np.arange(len(places)), np.flatnonzero(np.diff(places) != 1) + 1):
        view[places[run[0]]:places[run[-1]] + 1] = values[run]


def open_array(store: Store, spec: CubeSpec, tile: str, resolution: int, name: str, *, hot: bool,
               mode: str = "r") -> zarr.Array:
    return tile_arrays.open_array(store, spec.name, tile, resolution, name, hot=hot, mode=mode)


def array_names(spec: CubeSpec, resolution: int) -> Iterable[str]:
    yield from (b.name for b in spec.bands_at(resolution))
    yield "time"
    yield from ACQUISITION_COORDS


def publish_shapes(store: Store, spec: CubeSpec, state: TileState) -> None:
    """Persist each array's time length to match ``state`` (idempotent; only ever grows the time axis), and a band
    array's rows and columns the tile grid's where its ``zarr.json`` says other (``cardcube verify`` names it)."""
    grid = TileGrid.from_id(state.tile)
    for hot in (False, True):
        length = state.length(hot)
        for resolution in spec.resolutions:
            rows_cols = tuple(grid.geobox(resolution).shape)
            for name in array_names(spec, resolution):
                try:
                    arr = open_array(store, spec, state.tile, resolution, name, hot=hot, mode="r+")
                except (zarr.errors.ArrayNotFoundError, json.JSONDecodeError) as exc:
                    raise CorruptDocumentError(_unopened(spec, state.tile, resolution, name, hot, exc,
                                                         remote=local_file(store, "") is None)) from None
                shape = (max(arr.shape[0], length), *(rows_cols if arr.ndim == 3 else arr.shape[1:]))
                if arr.shape != shape:
                    arr.resize(shape)


def _unopened(spec: CubeSpec, tile: str, resolution: int, name: str, hot: bool, exc: Exception, *,
              remote: bool = False) -> str:
    """What to say of an array of a committed tile whose ``zarr.json`` is missing or damaged, and what to run;
    ``remote``: on an object store, whose 404 may be a read behind its writes (a replica) rather than a loss."""
    path = layout.array_path(spec.name, tile, resolution, name, hot=hot)
    what = "missing" if isinstance(exc, zarr.errors.ArrayNotFoundError) else f"not valid JSON ({exc})"
    mend = ("`cardcube ingest --cube CUBE --repair` writes it again from the ledger (no SOURCE needed)"
            if name not in spec.band_names else "restore it from a backup")
    lag = (" (or the store answered 404 for an object it holds, its reads behind its writes: run again shortly "
           "first)" if remote and isinstance(exc, zarr.errors.ArrayNotFoundError) else "")
    return (f"{path}/zarr.json of a committed tile is {what}{lag}: a plain Zarr reader cannot open the array; {mend} "
            "(`cardcube verify` lists what else is lost); this ingest commits nothing")


def stored_blocks(store: Store, spec: CubeSpec, tile: str, *, hot: Iterable[bool] = (False, True)
                  ) -> dict[tuple[int, str, bool], list[int]]:
    """Time-block indices (cold blocks, or hot slots) of the shard folders each band array of ``tile`` has in the
    store, by (resolution, band, hot): one listing per array, all at once (one round trip's wait on S3)."""
    prefixes = {(resolution, band.name, h): f"{layout.array_path(spec.name, tile, resolution, band.name, hot=h)}/c/"
                for resolution in spec.resolutions for band in spec.bands_at(resolution) for h in sorted(set(hot))}
    listed = list_each(store, list(prefixes.values()))
    return {key: [int(n) for n in listed[prefix] if n.isdigit()] for key, prefix in prefixes.items()}


def clear_blocks(store: Store, spec: CubeSpec, tile: str, blocks: Iterable[tuple[bool, int]], *,
                 check: Callable[[], None]) -> int:
    """Delete, in every band array of a committed ``tile``, what is stored in ``blocks`` (hot, block): where a run
    is about to write, a run that died before its commit may have written other shards of the same block, which
    readers would take for part of this run's dates. ``check`` runs before each delete (the writer's fence). One
    listing per array, all at once (:func:`stored_blocks`); how many blocks held leftovers."""
    wanted = set(blocks)
    cleared = set()
    for (resolution, band, hot), stored in stored_blocks(store, spec, tile, hot={h for h, _ in wanted}).items():
        path = layout.array_path(spec.name, tile, resolution, band, hot=hot)
        for block in stored:
            if (hot, block) in wanted:
                check()
                delete_prefix(store, f"{path}/c/{block}/")
                cleared.add((hot, block))
    return len(cleared)
