"""Parcel-label layers: a tile's parcels rasterised once onto its 10 m grid, stored beside the cube.

Full-territory extraction reads every pixel of the cube once; the question "which parcel is this pixel
in" has the same answer for every date and band, so it is answered once per tile and kept::

    <root>/_parcels/<tile>/<digest>/labels/        Zarr v3 int32 array, the tile's 10 m grid; -1 = no parcel
    <root>/_parcels/<tile>/<digest>/index.parquet  label, parcel_id, pixels, row0, row1, col0, col1, shared
    <root>/_parcels/<tile>/<digest>/layer.json     written last: a layer without it is incomplete

``digest`` hashes the tile, the parcels (ids and geometry, in the tile CRS) and the pixel rule (buffer,
all_touched), so a layer is reused exactly when it would come out the same. Labels follow
:func:`cube.membership.label_pixels`, i.e. the pixel rule of :func:`cube.timeseries.parcel_timeseries`.
The raster is built block by block (parallel, bounded memory), each block rasterising only the parcels
that meet it; the index records each parcel's pixel count and pixel bounding box (end-exclusive), which
extraction uses to give every parcel one home block, and whether the parcel shares pixels with another one
(overlapping parcels: the layer gives such a pixel to one of them, so extraction reads these parcels one
by one instead).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
import zarr
from odc.geo.geobox import GeoBox
from shapely.geometry import box
from zarr.abc.store import Store
from zarr.codecs import BloscCodec

from cardcube.grid import TileGrid
from cardcube.parallel import run_tasks
from cardcube.storage import read_bytes, read_json, write_bytes, write_json
from cube.membership import buffered, label_pixels, shared_pixels
from cube.parcels import ParcelSet

LAYER_RESOLUTION = 10
INDEX_COLUMNS = ("label", "parcel_id", "pixels", "row0", "row1", "col0", "col1", "shared")
LAYER_FORMAT = 2  # part of the digest: a layer of another format is built anew

__all__ = ["INDEX_COLUMNS", "ParcelLayer", "layer_digest", "parcel_layer", "parcels_digest", "parquet_bytes"]


def parcels_digest(parcels: ParcelSet) -> str:
    """A short hash of a parcel set: CRS, ids and geometries, whatever the order of its rows (the same parcels
    read from a re-sorted file are the same set)."""
    keys = [[type(i).__name__, str(i)] for i in parcels.ids]  # 1 and "1" differ
    order = sorted(range(len(keys)), key=keys.__getitem__)
    h = hashlib.sha256(parcels.crs.to_string().encode())
    h.update(json.dumps([keys[k] for k in order]).encode())
    wkbs = shapely.to_wkb(np.asarray(parcels.geometries, dtype=object), output_dimension=2)
    for k in order:
        h.update(wkbs[k])
    return h.hexdigest()[:16]


def layer_digest(tile: str, parcels: ParcelSet, *, buffer: float, all_touched: bool) -> str:
    """A short hash of everything the label raster depends on."""
    key = json.dumps([LAYER_FORMAT, tile, buffer, all_touched, parcels_digest(parcels)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def parquet_bytes(data: pd.DataFrame | pa.Table, **options: Any) -> bytes:
    """A frame (a GeoDataFrame as GeoParquet) or an Arrow table as Parquet bytes, for one atomic store write;
    ``options`` go to ``pyarrow.parquet.write_table``."""
    buf = io.BytesIO()
    if isinstance(data, pa.Table):
        pq.write_table(data, buf, **options)
    else:
        data.to_parquet(buf, index=False, **options)
    return buf.getvalue()


@dataclass(frozen=True, eq=False)
class ParcelLayer:
    """A stored label raster of one tile and the index of its parcels (``label`` = row in ``index``)."""

    store: Store
    prefix: str
    tile: str
    index: pd.DataFrame

    @property
    def geobox(self) -> GeoBox:
        return TileGrid.from_id(self.tile).geobox(LAYER_RESOLUTION)

    @cached_property
    def _array(self) -> zarr.Array:
        return zarr.open_array(self.store, path=f"{self.prefix}/labels", mode="r", zarr_format=3)

    def labels(self, rows: slice, cols: slice) -> np.ndarray:
        """The label window ``[rows, cols]`` of the tile's 10 m grid."""
        return self._array[rows, cols]


def _pixel_boxes(geoms: np.ndarray, geobox: GeoBox) -> np.ndarray:
    """(n, 4) row0, row1, col0, col1 of every pixel each (already buffered) geometry can touch."""
    bounds = shapely.bounds(geoms)
    a = geobox.affine
    cols = (bounds[:, [0, 2]] - a.c) / a.a
    rows = (bounds[:, [3, 1]] - a.f) / a.e
    out = np.stack([np.floor(rows[:, 0]), np.floor(rows[:, 1]) + 1, np.floor(cols[:, 0]), np.floor(cols[:, 1]) + 1],
                   axis=1)
    h, w = geobox.shape
    return np.clip(np.nan_to_num(out, nan=0), 0, [h, h, w, w]).astype(np.int64)


def _rasterise_block(array: zarr.Array, geoms: Sequence[Any], labels: np.ndarray, geobox: GeoBox,
                     rows: slice, cols: slice, *, buffer: float, all_touched: bool) -> tuple[np.ndarray, np.ndarray]:
    """Burn ``geoms`` (global ``labels``) into one block; the block's (label, pixels, row0, row1, col0, col1),
    and the labels of the parcels that share a pixel with another one (:func:`_sharing`)."""
    block = geobox[rows, cols]
    grown = [buffered(g, buffer) for g in geoms]  # once, for the labels and for the shared pixels
    local = label_pixels(grown, block, buffer=0.0, all_touched=all_touched)
    out = np.where(local >= 0, labels[np.maximum(local, 0)], -1).astype(np.int32)
    array[rows, cols] = out
    return _label_boxes(out, rows, cols), labels[_sharing(grown, block, all_touched=all_touched)]


def _sharing(grown: Sequence[Any], geobox: GeoBox, *, all_touched: bool) -> np.ndarray:
    """Positions in ``grown`` (buffered geometries, None where nothing remains) of the parcels holding a pixel
    that another one holds too (overlapping parcels: the label layer can give such a pixel to one only)."""
    shared = shared_pixels(grown, geobox, buffer=0.0, all_touched=all_touched)
    if not shared.any():
        return np.empty(0, dtype=np.int64)
    rows, cols = np.nonzero(shared)
    a = geobox.affine
    if all_touched:  # the pixels themselves
        where = shapely.box(a.c + cols * a.a, a.f + (rows + 1) * a.e, a.c + (cols + 1) * a.a, a.f + rows * a.e)
    else:  # their centres
        where = shapely.points(a.c + (cols + 0.5) * a.a, a.f + (rows + 0.5) * a.e)
    tree = shapely.STRtree([g if g is not None else shapely.Point() for g in grown])
    return np.unique(tree.query(where, predicate="intersects")[1])


def _label_boxes(out: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Per label of a block: (label, pixels, row0, row1, col0, col1), rows and cols in tile pixels."""
    flat = np.flatnonzero(out >= 0)
    lab = out.ravel()[flat]
    order = np.argsort(lab, kind="stable")
    lab, flat = lab[order], flat[order]
    r = flat // out.shape[1] + rows.start
    c = flat % out.shape[1] + cols.start
    if lab.size == 0:
        return np.empty((0, 6), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    return np.stack([lab[starts], np.diff(np.r_[starts, lab.size]), np.minimum.reduceat(r, starts),
                     np.maximum.reduceat(r, starts) + 1, np.minimum.reduceat(c, starts),
                     np.maximum.reduceat(c, starts) + 1], axis=1).astype(np.int64)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], ids: Sequence[Hashable]) -> pd.DataFrame:
    """One index row per parcel from the per-block rows (pixels summed, boxes joined), and whether it shares
    pixels with another parcel."""
    rows = pd.DataFrame(np.concatenate([np.empty((0, 6), np.int64), *(p[0] for p in parts)]),
                        columns=["label", "pixels", "row0", "row1", "col0", "col1"])
    agg = rows.groupby("label").agg(pixels=("pixels", "sum"), row0=("row0", "min"), row1=("row1", "max"),
                                    col0=("col0", "min"), col1=("col1", "max"))
    index = pd.DataFrame({"label": np.arange(len(ids), dtype=np.int64), "parcel_id": pd.array(list(ids), dtype=object)})
    index = index.join(agg, on="label")
    index[["pixels", "row0", "row1", "col0", "col1"]] = index[["pixels", "row0", "row1", "col0", "col1"]].fillna(0)
    index["shared"] = np.isin(index["label"], np.concatenate([np.empty(0, np.int64), *(p[1] for p in parts)]))
    return index.astype({c: np.int64 for c in INDEX_COLUMNS if c not in ("parcel_id", "shared")})


def parcel_layer(
    store: Store,
    tile: str,
    parcels: ParcelSet,
    *,
    buffer: float,
    all_touched: bool = False,
    block: int = 1024,
    scheduler: Any = None,
    progress: bool = True,
) -> ParcelLayer:
    """The label layer of ``parcels`` on ``tile``: read back if stored, else built and stored.

    ``parcels`` are the parcels to label on this tile, in any CRS; a label is a row of the layer's ``index``
    (the same parcels in another order find the stored layer).
    ``block`` is the side of the blocks rasterised in parallel (and of the stored chunks).
    """
    grid = TileGrid.from_id(tile)
    ps = parcels.to_crs(grid.crs)
    prefix = f"_parcels/{tile}/{layer_digest(tile, ps, buffer=buffer, all_touched=all_touched)}"
    if read_json(store, f"{prefix}/layer.json") is not None:
        index = pd.read_parquet(io.BytesIO(read_bytes(store, f"{prefix}/index.parquet")))
        return ParcelLayer(store, prefix, tile, index)

    geobox = grid.geobox(LAYER_RESOLUTION)
    array = zarr.create_array(store, name=f"{prefix}/labels", shape=geobox.shape, chunks=(block, block),
                              dtype="int32", fill_value=-1, overwrite=True, zarr_format=3,
                              compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=4))
    geoms = np.asarray(ps.geometries, dtype=object)
    grown = np.array([buffered(g, max(buffer, 0.0)) or g for g in geoms], dtype=object)
    boxes = _pixel_boxes(grown, geobox)
    r0, r1 = boxes[:, 0].min() // block * block, boxes[:, 1].max()
    c0, c1 = boxes[:, 2].min() // block * block, boxes[:, 3].max()
    tree = shapely.STRtree(grown)
    tasks = []
    for br in range(int(r0), int(r1), block):
        for bc in range(int(c0), int(c1), block):
            rows, cols = slice(br, min(br + block, geobox.shape[0])), slice(bc, min(bc + block, geobox.shape[1]))
            hits = np.sort(tree.query(box(*geobox[rows, cols].boundingbox)))
            if hits.size:
                tasks.append((array, geoms[hits], hits, geobox, rows, cols))
    parts = run_tasks(partial(_rasterise_block, buffer=buffer, all_touched=all_touched), tasks, scheduler=scheduler,
                      desc=f"parcel layer {tile}", progress=progress, unit="block")
    index = _merge(parts, ps.ids)
    write_bytes(store, f"{prefix}/index.parquet", parquet_bytes(index))
    write_json(store, f"{prefix}/layer.json", {"tile": tile, "parcels": len(ps), "buffer": buffer,
                                               "all_touched": all_touched, "resolution": LAYER_RESOLUTION,
                                               "labelled": int((index.pixels > 0).sum())})
    return ParcelLayer(store, prefix, tile, index)

