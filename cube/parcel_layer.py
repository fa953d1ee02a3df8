"""Parcel-label layers: a tile's parcels rasterised once onto its 10 m grid, stored beside the cube.

Full-territory extraction reads every pixel of the cube once; the question "which parcel is this pixel
in" has the same answer for every date and band, so it is answered once per tile and kept::

    <root>/_parcels/<tile>/<digest>/<build>/labels/        Zarr v3 int32 array, the tile's 10 m grid; -1 = no parcel
    <root>/_parcels/<tile>/<digest>/<build>/index.parquet  label, parcel_id, pixels, row0, row1, col0, col1, shared
    <root>/_parcels/<tile>/<digest>/<build>/lost.parquet   row, col, label: pixels of a parcel labelled as another's
    <root>/_parcels/<tile>/<digest>/layer.json     written last, naming its build: a layer without it is incomplete
    <root>/_parcels/<tile>/<digest>/used.json      when a run last found the layer stored and read it

``digest`` hashes the tile, the parcels (ids and geometry, in the tile CRS) and the pixel rule (buffer,
all_touched, :data:`cube.membership.PIXEL_RULE`), so a layer is reused exactly when it would come out the same.
Labels follow :func:`cube.membership.label_pixels`, i.e. the pixel rule of :func:`cube.timeseries.parcel_timeseries`.
The raster is built block by block (parallel, bounded memory), each block rasterising only the parcels
that meet it; the index records each parcel's pixel count and pixel bounding box (end-exclusive), which
extraction uses to give every parcel one home block, and whether the parcel shares pixels with another one.
Parcels share pixels where they overlap: along every common border with ``all_touched`` or an outward buffer,
or a register's duplicate. The raster gives such a pixel to one of them; the others' pixels it took are
listed in ``lost.parquet`` (each parcel rasterised alone over its own window, the rule of
:func:`cube.membership.parcel_pixels`), so that every parcel keeps all its pixels, as in ``parcel_timeseries``.

Each build writes a folder of its own (layers of before 2026-12-05 lie at the digest itself): two runs building one
layer at once (the weekly Sentinel-1 and Sentinel-2 extractions of a new parcel file) each read their own, where
the second build emptied the labels under the first run (most of its parcels came out without a pixel, "ok").

Every new parcel file (an amended declaration changes the digest of each tile it touches) leaves a new layer;
:func:`prune_layers` deletes those no run has used for a given time (``cardcube layers --prune``), as
:func:`ingest.expire.expire` does for old cube versions.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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

from cardcube.errors import CorruptDocumentError, StoreError, StoreUnavailableError
from cardcube.grid import TileGrid, is_tile_id
from cardcube.parallel import is_distributed, run_tasks
from cardcube.query import TIME_FORMAT
from cardcube.storage import (
    StoreLike,
    delete_key,
    delete_prefix,
    list_children,
    list_keys,
    open_store,
    read_bytes,
    read_json,
    read_json_many,
    store_url,
    write_bytes,
    write_json,
)
from catalog.build import parse_time
from cube.layout import PARCELS_DIR
from cube.membership import PIXEL_RULE, buffered, label_pixels, shared_pixels
from cube.parcels import ParcelSet

LAYER_RESOLUTION = 10
INDEX_COLUMNS = ("label", "parcel_id", "pixels", "row0", "row1", "col0", "col1", "shared")
LAYER_FORMAT = 3  # part of the digest: a layer of another format is built anew
LAYER_DIGEST = re.compile(r"[0-9a-f]{16}")  # a layer's folder name, :func:`layer_digest`
DEFAULT_UNUSED_FOR = timedelta(days=30)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_UNUSED_FOR", "INDEX_COLUMNS", "LayerPrune", "ParcelLayer", "StoredLayer", "layer_digest",
           "parcel_layer", "parcels_digest", "parquet_bytes", "prune_layers", "stored_layers"]


def parcels_digest(parcels: ParcelSet) -> str:
    """A short hash of a parcel set: CRS, ids and geometries, whatever the order of its rows (the same parcels
    read from a re-sorted file are the same set)."""
    kinds = [type(i).__name__ for i in parcels.ids]  # 1 and "1" differ
    texts = list(map(str, parcels.ids))
    one_kind = len(set(kinds)) < 2
    order = sorted(range(len(texts)), key=texts.__getitem__ if one_kind else lambda k: (kinds[k], texts[k]))
    h = hashlib.sha256(parcels.crs.to_string().encode())
    if one_kind:  # [[kind, text], ...] written at once: a pair made for each took 0.4 s of 300,000
        pair = f"[{json.dumps(kinds[0])}, "
        listing = f"[{pair}{json.dumps([texts[k] for k in order], separators=('], ' + pair, ': '))[1:]}]"
    else:
        listing = json.dumps([[kinds[k], texts[k]] for k in order])
    h.update(listing.encode())
    wkbs = shapely.to_wkb(np.asarray(parcels.geometries, dtype=object), output_dimension=2)
    for k in order:
        h.update(wkbs[k])
    return h.hexdigest()[:16]


def layer_digest(tile: str, parcels: ParcelSet, *, buffer: float, all_touched: bool) -> str:
    """A short hash of everything the label raster depends on."""
    key = json.dumps([LAYER_FORMAT, PIXEL_RULE, tile, buffer, all_touched, parcels_digest(parcels)])
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

    @cached_property
    def _lost(self) -> np.ndarray:
        """(n, 3) row, col, label of every pixel a parcel holds that the raster labels as another's, by row."""
        data = read_bytes(self.store, f"{self.prefix}/lost.parquet")
        if data is None:
            raise StoreError(f"label layer {store_url(self.store)}/{self.prefix} has no lost.parquet: delete the "
                             f"layer (cardcube layers --prune) to build it anew")
        return pd.read_parquet(io.BytesIO(data)).to_numpy(np.int64)

    def lost(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """The pixels of window ``[rows, cols]`` that a parcel holds beside the one labelled there: their flat
        positions in the window (row-major) and the parcels' labels."""
        lost = self._lost
        first, last = np.searchsorted(lost[:, 0], [rows.start, rows.stop])
        r, c, label = lost[first:last].T
        inside = (c >= cols.start) & (c < cols.stop)
        return (r[inside] - rows.start) * (cols.stop - cols.start) + c[inside] - cols.start, label[inside]


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
                     rows: slice, cols: slice, *, buffer: float, all_touched: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Burn ``geoms`` (global ``labels``) into one block; the block's (label, pixels, row0, row1, col0, col1),
    the labels of the parcels that share a pixel with another one (:func:`_sharing`), and the (row, col, label)
    of the pixels those parcels lost to another label (:func:`_lost_pixels`)."""
    block = geobox[rows, cols]
    grown = [buffered(g, buffer) for g in geoms]  # once, for the labels and for the shared pixels
    local = label_pixels(grown, block, buffer=0.0, all_touched=all_touched)
    out = np.where(local >= 0, labels[np.maximum(local, 0)], -1).astype(np.int32)
    array[rows, cols] = out
    sharing = _sharing(grown, block, all_touched=all_touched)
    lost = _lost_pixels([grown[i] for i in sharing], sharing, local, block, all_touched=all_touched)
    lost[:, 0] += rows.start
    lost[:, 1] += cols.start
    lost[:, 2] = labels[lost[:, 2]]
    return _label_boxes(out, rows, cols), labels[sharing], lost


def _lost_pixels(grown: Sequence[Any], which: np.ndarray, local: np.ndarray, block: GeoBox, *,
                 all_touched: bool) -> np.ndarray:
    """(n, 3) block row, col and position in the block's geometries (``which``) of each pixel that one of
    ``grown`` holds alone (rasterised by itself over its own pixel box) but ``local`` labels otherwise."""
    found = [np.empty((0, 3), np.int64)]
    for geom, (r0, r1, c0, c1), label in zip(grown, _pixel_boxes(np.asarray(grown, dtype=object), block), which,
                                             strict=True):
        if r1 <= r0 or c1 <= c0:
            continue
        own = label_pixels([geom], block[r0:r1, c0:c1], buffer=0.0, all_touched=all_touched) == 0
        r, c = np.nonzero(own & (local[r0:r1, c0:c1] != label))
        found.append(np.stack([r + r0, c + c0, np.full(r.size, label)], axis=1))
    return np.concatenate(found).astype(np.int64)


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


def _merge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], ids: Sequence[Hashable]
           ) -> tuple[pd.DataFrame, np.ndarray]:
    """One index row per parcel from the per-block rows (pixels summed, boxes joined, the pixels it lost to
    another label included), whether it shares pixels with another parcel; and every lost pixel, by row."""
    lost = np.concatenate([np.empty((0, 3), np.int64), *(p[2] for p in parts)])
    lost = lost[np.lexsort((lost[:, 1], lost[:, 0]))]
    lost_boxes = np.stack([lost[:, 2], np.ones(len(lost), np.int64), lost[:, 0], lost[:, 0] + 1, lost[:, 1],
                           lost[:, 1] + 1], axis=1)
    rows = pd.DataFrame(np.concatenate([np.empty((0, 6), np.int64), *(p[0] for p in parts), lost_boxes]),
                        columns=["label", "pixels", "row0", "row1", "col0", "col1"])
    agg = rows.groupby("label").agg(pixels=("pixels", "sum"), row0=("row0", "min"), row1=("row1", "max"),
                                    col0=("col0", "min"), col1=("col1", "max"))
    index = pd.DataFrame({"label": np.arange(len(ids), dtype=np.int64), "parcel_id": pd.array(list(ids), dtype=object)})
    index = index.join(agg, on="label")
    index[["pixels", "row0", "row1", "col0", "col1"]] = index[["pixels", "row0", "row1", "col0", "col1"]].fillna(0)
    index["shared"] = np.isin(index["label"], np.concatenate([np.empty(0, np.int64), *(p[1] for p in parts)]))
    return index.astype({c: np.int64 for c in INDEX_COLUMNS if c not in ("parcel_id", "shared")}), lost


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
    layer = f"{PARCELS_DIR}/{tile}/{layer_digest(tile, ps, buffer=buffer, all_touched=all_touched)}"
    doc = _layer_doc(store, f"{layer}/layer.json")
    _mark_used(store, layer, datetime.now(UTC))  # before a build too: a prune meanwhile keeps what it builds
    damaged = None
    if doc is not None:
        if not _lost_chunks(store, prefix := _build_prefix(layer, doc), doc):
            index = pd.read_parquet(io.BytesIO(read_bytes(store, f"{prefix}/index.parquet")))
            return ParcelLayer(store, prefix, tile, index)
        damaged = prefix

    build = uuid.uuid4().hex[:16]
    prefix = f"{layer}/{build}"  # this build's own: another run's build of the same layer is not touched
    geobox = grid.geobox(LAYER_RESOLUTION)
    array = zarr.create_array(store, name=f"{prefix}/labels", shape=geobox.shape, chunks=(block, block),
                              dtype="int32", fill_value=-1, overwrite=True, zarr_format=3,
                              dimension_names=("y", "x"),  # else xarray refuses the cube root's tree (open_datatree)
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
    try:
        parts = run_tasks(partial(_rasterise_block, buffer=buffer, all_touched=all_touched), tasks,
                          scheduler=scheduler, desc=f"parcel layer {tile}", progress=progress, unit="block")
    except PermissionError as exc:
        if not is_distributed(scheduler):
            raise
        raise StoreError(  # this process has just written the layer's zarr.json: the workers' credentials are others
            f"the dask workers may not write the label layer of tile {tile} to {store_url(store)}, where this "
            f"machine may ({str(exc).rstrip('.')}): are their credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
            f"in the workers' environment) this machine's?") from exc
    index, lost = _merge(parts, ps.ids)
    chunks = sorted((t[4].start // block, t[5].start // block) for t, p in zip(tasks, parts, strict=True) if len(p[0]))
    write_bytes(store, f"{prefix}/index.parquet", parquet_bytes(index))
    write_bytes(store, f"{prefix}/lost.parquet", parquet_bytes(pd.DataFrame(lost, columns=["row", "col", "label"])))
    write_json(store, f"{layer}/layer.json", {"tile": tile, "parcels": len(ps), "buffer": buffer,
                                              "all_touched": all_touched, "resolution": LAYER_RESOLUTION,
                                              "labelled": int((index.pixels > 0).sum()),
                                              "chunks": [list(c) for c in chunks], "build": build,
                                              "created": datetime.now(UTC).strftime(TIME_FORMAT)})
    if damaged == layer:  # the build this one replaces, which lost chunks: of before builds had folders
        for part in ("labels", "index.parquet", "lost.parquet"):
            delete_prefix(store, f"{layer}/{part}")
    elif damaged is not None:  # ... in a folder of its own
        delete_prefix(store, damaged)
    return ParcelLayer(store, prefix, tile, index)


def _build_prefix(layer: str, doc: dict[str, Any]) -> str:
    """Where the files of the build ``doc`` (a layer's ``layer.json``) names lie: its folder in the layer's, or the
    layer's own for a layer of before builds had folders."""
    build = doc.get("build")
    return f"{layer}/{build}" if isinstance(build, str) and build.isalnum() else layer


def _lost_chunks(store: Store, prefix: str, doc: dict[str, Any]) -> list[str]:
    """The label chunks the layer at ``prefix`` stored (its ``layer.json`` lists them) that the store no longer
    has, each logged: a chunk without any label is not stored, so a lost one would read as "no parcel" and its
    parcels' statistics would come out from fewer pixels. One listing; none for a layer of an older cardcube."""
    if not isinstance(doc.get("chunks"), list):
        return []
    present = set(list_keys(store, f"{prefix}/labels/c/"))
    lost = [key for r, c in doc["chunks"] if (key := f"{prefix}/labels/c/{r}/{c}") not in present]
    if lost:
        log.warning("label layer %s in %s has lost %d of its %d chunk(s) (%s): building it anew", prefix,
                    store_url(store), len(lost), len(doc["chunks"]), ", ".join(lost[:3]))
    return lost


def _mark_used(store: Store, prefix: str, now: datetime) -> None:
    """Write down that a run read the layer at ``prefix`` at ``now`` (what :func:`prune_layers` goes by). A store
    this run may only read keeps the mark it had: its layers are pruned by whoever may write there."""
    try:
        write_json(store, f"{prefix}/used.json", {"at": now.strftime(TIME_FORMAT)})
    except StoreUnavailableError:
        raise
    except StoreError as exc:
        log.debug("label layer %s: its use not written down (%s)", prefix, exc)


def _layer_doc(store: Store, key: str) -> dict[str, Any] | None:
    """A layer's JSON document, None if absent or damaged (a write cut short, an edit by hand): a layer whose
    ``layer.json`` is damaged counts as incomplete, built anew by the next run and pruned as one never finished."""
    try:
        doc = read_json(store, key)
    except CorruptDocumentError as exc:
        log.warning("%s: taken for an incomplete label layer", exc)
        return None
    return doc if isinstance(doc, dict) else None


def _layer_docs(store: Store, keys: Sequence[str]) -> list[dict[str, Any] | None]:
    """:func:`_layer_doc` of each of ``keys``, all requested at once (one by one again if one is damaged)."""
    try:
        return [doc if isinstance(doc, dict) else None for doc in read_json_many(store, keys)]
    except CorruptDocumentError:
        return [_layer_doc(store, key) for key in keys]


def _time(doc: Any, key: str) -> datetime | None:
    """The time ``doc`` records under ``key``; None if it records none or no time (taken as not recorded)."""
    text = doc.get(key) if isinstance(doc, dict) else None
    try:
        return parse_time(text) if isinstance(text, str) else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class StoredLayer:
    """A label layer found in a store: ``complete`` once its ``layer.json`` is written; when it was made and
    last read by a run (``None``: not recorded, e.g. a build that never finished)."""

    tile: str
    digest: str
    complete: bool
    parcels: int | None
    created: datetime | None
    used: datetime | None

    @property
    def prefix(self) -> str:
        return f"{PARCELS_DIR}/{self.tile}/{self.digest}"

    @property
    def last_use(self) -> datetime | None:
        """When a run last made or read the layer."""
        times = [t for t in (self.created, self.used) if t is not None]
        return max(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``cardcube layers --json``."""
        return {"tile": self.tile, "digest": self.digest, "complete": self.complete, "parcels": self.parcels,
                **{k: None if t is None else t.strftime(TIME_FORMAT)
                   for k, t in (("created", self.created), ("last_use", self.last_use))}}


def stored_layers(store: StoreLike, *, storage_options: Mapping[str, Any] | None = None) -> list[StoredLayer]:
    """Every label layer in ``store`` (a cube, or the ``layers`` location of :func:`cube.extract.extract`: a path,
    URL or zarr Store), by tile and digest: a listing per tile and one round of small reads. What else lies in the
    layers' folder (an extraction or chips written there) is no layer, neither listed nor pruned: it was taken for
    an unfinished one, and deleted by a prune."""
    store = open_store(store, storage_options=storage_options, read_only=True)
    tiles = [name for name in list_children(store, PARCELS_DIR) if is_tile_id(name)]  # not zarr.json above
    found = [(tile, digest) for tile in tiles for digest in list_children(store, f"{PARCELS_DIR}/{tile}")
             if LAYER_DIGEST.fullmatch(digest)]
    docs = _layer_docs(store, [f"{PARCELS_DIR}/{t}/{d}/{name}" for t, d in found
                               for name in ("layer.json", "used.json")])
    return [StoredLayer(tile, digest, layer is not None, layer.get("parcels") if layer else None,
                        _time(layer, "created"), _time(used, "at"))
            for (tile, digest), layer, used in zip(found, docs[::2], docs[1::2], strict=True)]


@dataclass(frozen=True, slots=True)
class LayerPrune:
    """What :func:`prune_layers` deleted (or, with ``dry_run``, would delete) and kept."""

    store: str
    deleted: tuple[StoredLayer, ...]
    kept: tuple[StoredLayer, ...]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "deleted": [x.to_dict() for x in self.deleted],
                "kept": [x.to_dict() for x in self.kept], "dry_run": self.dry_run}

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"label layers at {self.store}: {verb} {len(self.deleted)} unused, "
                f"kept {len(self.kept)}")


def prune_layers(store: StoreLike, *, unused_for: timedelta = DEFAULT_UNUSED_FOR, dry_run: bool = False,
                 now: datetime | None = None, storage_options: Mapping[str, Any] | None = None) -> LayerPrune:
    """Delete the label layers of ``store`` (a path, URL or zarr Store, as for :func:`stored_layers`) that no run
    made or read for longer than ``unused_for`` (at ``now``,
    default the current time); ``dry_run`` reports without deleting. A layer with no recorded time (a build that
    never finished) is marked as seen now and goes ``unused_for`` later. Each layer's use is read again just
    before it goes (a run that reads it meanwhile keeps it), and its ``layer.json`` goes first: a run that starts
    during the deletion finds the layer incomplete and builds it anew. Keep ``unused_for`` longer than any
    extraction takes (the default is 30 days), as a run that read a layer before the prune reads it on."""
    store = open_store(store, storage_options=storage_options, read_only=True)  # a missing folder says so
    store = store if dry_run else store.with_read_only(False)
    now = now or datetime.now(UTC)
    try:
        cutoff = now - unused_for
    except OverflowError:  # before year 1: no layer is that old
        cutoff = datetime.min.replace(tzinfo=UTC)
    deleted, kept = [], []
    for layer in stored_layers(store):
        if layer.last_use is None and not dry_run:
            _mark_used(store, layer.prefix, now)
        if layer.last_use is None or layer.last_use > cutoff:
            kept.append(layer)
            continue
        if not dry_run:
            used = _time(_layer_doc(store, f"{layer.prefix}/used.json"), "at")
            if used is not None and used > cutoff:  # read by a run since the listing
                kept.append(layer)
                continue
            delete_key(store, f"{layer.prefix}/layer.json")
            delete_prefix(store, layer.prefix)
        deleted.append(layer)
    result = LayerPrune(store_url(store), tuple(deleted), tuple(kept), dry_run=dry_run)
    log.info("%s", result.summary())
    return result

