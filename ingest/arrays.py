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
import struct
from collections.abc import Callable, Iterable

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec
from zarr.core.buffer import Buffer
from zarr.storage import MemoryStore

from cardcube.checkpoints import checkpoint
from cardcube.grid import TileGrid
from cardcube.spec import BandSpec, CubeSpec
from cardcube.storage import delete_prefix, list_each, write_many
from cube import layout, tile_arrays
from cube.ledger import TileState

# Per-date coordinates: name -> (dtype, fill value, CF long_name)
ACQUISITION_COORDS: dict[str, tuple[str, object, str]] = {
    "scene_id": ("str", "", "source scene identifier"),
    "platform": ("str", "", "satellite platform"),
    "relative_orbit": ("int16", -1, "relative orbit number"),
    "orbit_state": ("str", "", "orbit direction"),
    "cloud_cover": ("float32", float("nan"), "scene cloud cover (percent)"),
}
_COORD_CHUNK = 1024
TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"


def _compressor(spec: CubeSpec, band: BandSpec) -> BloscCodec:
    # zstd with bit-shuffle: reflectance varies in its low bits, bit planes compress well.
    typesize = np.dtype(band.dtype).itemsize
    return BloscCodec(cname="zstd", clevel=spec.compressor_level, shuffle="bitshuffle", typesize=typesize)


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
            compressors=_compressor(spec, band), fill_value=fill, dimension_names=("time", "y", "x"),
            attributes=_band_attrs(band),
        )
    a = geobox.affine
    xs = a.c + a.a * (np.arange(nx) + 0.5)
    ys = a.f + a.e * (np.arange(ny) + 0.5)
    for name, values, std in (("x", xs, "projection_x_coordinate"), ("y", ys, "projection_y_coordinate")):
        arr = group.create_array(name, shape=values.shape, dtype="float64", chunks=values.shape,
                                 dimension_names=(name,), fill_value=np.nan,
                                 attributes={"standard_name": std, "units": "metre", "axis": name.upper()})
        arr[:] = values
    crs_wkt = geobox.crs.to_wkt()
    ref = group.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0, dimension_names=(),
                             attributes={"crs_wkt": crs_wkt, "spatial_ref": crs_wkt,
                                         "GeoTransform": " ".join(str(v) for v in (a.c, a.a, a.b, a.f, a.d, a.e))})
    ref[()] = 0
    group.create_array("time", shape=(0,), dtype="int64", chunks=(_COORD_CHUNK,), fill_value=0,
                       dimension_names=("time",),
                       attributes={"standard_name": "time", "units": TIME_UNITS, "calendar": "proleptic_gregorian"})
    for name, (dtype, fill, long_name) in ACQUISITION_COORDS.items():
        group.create_array(name, shape=(0,), dtype=dtype, chunks=(_COORD_CHUNK,), fill_value=fill,
                           dimension_names=("time",), attributes={"long_name": long_name})
    group.attrs.update({"resolution": resolution, "hot_buffer": hot, "proj:code": tile.crs,
                        "spatial:transform": [a.a, a.b, a.c, a.d, a.e, a.f], "spatial:shape": [ny, nx]})


def ensure_tile(store: Store, spec: CubeSpec, tile: TileGrid, *, committed: bool) -> zarr.Group:
    """A tile's Zarr group, ready for writing. A tile no committed version holds is built anew: what is there
    was left by a run that died before its commit (half-created arrays, or arrays of another chunk layout),
    which nothing reads and the writer lock keeps anyone else from writing."""
    path = layout.tile_zarr_path(spec.name, tile.tile_id)
    if committed:
        return zarr.open_group(store, path=path, mode="r+", zarr_format=3)
    delete_prefix(store, f"{path}/")
    delete_prefix(store, f"{spec.name}/{tile.tile_id}/{layout.MANIFEST_DIR}/")  # of blocks in another layout, maybe
    root = zarr.create_group(store, path=path, zarr_format=3, attributes={
        "cardcube": {"format": 1, "collection": spec.name, "tile": tile.tile_id, "spec": spec.to_dict()},
    })
    stored = {f"{path}/zarr.json"}  # the tile's own group, with its attributes
    for resolution in spec.resolutions:
        for hot in (False, True):
            # made in memory, then stored at once, one request per object: zarr creating each array in place
            # first looks for what is there and for its parents (860 requests for a new S2 tile on S3, one by one)
            objects: dict[str, Buffer] = {}
            _create_resolution_group(zarr.open_group(MemoryStore(objects), path=path, mode="w", zarr_format=3),
                                     spec, tile, resolution, hot=hot)
            new = {key: buf.to_bytes() for key, buf in objects.items()
                   if key.startswith(f"{path}/") and key not in stored}
            write_many(store, new)
            stored |= set(new)
            checkpoint("tile-group-created")  # tests kill here: a tile half built
    return root


def open_array(store: Store, spec: CubeSpec, tile: str, resolution: int, name: str, *, hot: bool,
               mode: str = "r") -> zarr.Array:
    return tile_arrays.open_array(store, spec.name, tile, resolution, name, hot=hot, mode=mode)


def time_lengths(state: TileState) -> dict[bool, int]:
    """Committed time length of the cold (False) and hot (True) arrays of a tile."""
    return {False: len(state.cold), True: state.hot_slots_used}


def array_names(spec: CubeSpec, resolution: int) -> Iterable[str]:
    yield from (b.name for b in spec.bands_at(resolution))
    yield "time"
    yield from ACQUISITION_COORDS


def publish_shapes(store: Store, spec: CubeSpec, state: TileState) -> None:
    """Persist each array's time length to match ``state`` (idempotent; only ever grows shapes)."""
    for hot, length in time_lengths(state).items():
        for resolution in spec.resolutions:
            for name in array_names(spec, resolution):
                arr = open_array(store, spec, state.tile, resolution, name, hot=hot, mode="r+")
                if arr.shape[0] < length:
                    arr.resize((length, *arr.shape[1:]))


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
