"""The mosaic of tile windows on one pixel lattice: a Dataset of every pixel of their bounds, each block of it
assembled by one dask task from the blocks of the tiles' arrays that cover it.

Tiles of one UTM zone share their pixel lattice, so placing a tile's window in the mosaic is an offset in rows and
columns, and its dates are positions among the mosaic's dates. xarray's outer join, ``combine_first`` and a sort
to north up did the same through whole-array copies: a 2,048 px chip across two tiles held almost four times its
values at once (1.9 GB for 496 MB; 1.0 GB so). Here the values are written once, into the block that holds them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from cardcube.errors import InvalidRequestError
from cardcube.spec import BandSpec
from cube.pass_dates import first_times

Span = tuple[int, int]  # [start, stop) along one axis
WHOLE_BLOCK_BYTES = 64 * 2**20  # a whole-area mosaic's blocks hold at least this much (or every date)


def pass_times(parts: Sequence[xr.Dataset]) -> list[np.ndarray]:
    """Each part's ``time`` values, with the dates of one pass on several parts (tiles) made one: the earliest.

    Real Sentinel-2 granules of one datatake carry their own sensing times, seconds apart from tile to tile (and
    Sentinel-1 slices theirs); a mosaic on the raw times would show each pass as two half-empty dates. Dates join
    when they share platform, relative orbit and orbit direction and follow each other within
    :data:`~cardcube.spec.PASS_GAP_S`; a part's own dates never join each other."""
    keys = [list(zip(*(p[name].values.tolist() if name in p.coords else [None] * p.sizes["time"]
                       for name in ("platform", "relative_orbit", "orbit_state")), strict=True)) for p in parts]
    return first_times([p["time"].values for p in parts], keys)


def mosaic(parts: list[xr.Dataset], bands: Sequence[BandSpec], *, whole: bool) -> xr.Dataset:
    """The tiles' windows ``parts`` as one Dataset, north up: at each pixel and date the value of the first part
    with one (other than the ``nodata`` its variable's attrs give, as stored values and SCL do; else not NaN; a
    band of stored integers averaged to 20 m is float32 with the stored nodata), on the dates of :func:`pass_times`;
    pixels of no part's window (windows apart) nodata. Each date keeps its acquisition metadata (that of the first
    part holding it; ``scene_id`` and ``tile`` those of every part holding it, ``+``-joined).

    Its dask chunks are cut in time where the first part's start (each of its stored time chunks read by one
    block, and a block's parts let go once it is made: a mosaic of one time chunk held every part at once), and in
    space as the first part's stored chunks (:func:`_space_chunks`); ``whole``: one over the area (as the parts
    are read), in time of at least :data:`WHOLE_BLOCK_BYTES` (a parcel's window of one date a block took 1.5
    times the CPU)."""
    crs = parts[0].rio.crs
    if any(p.rio.crs != crs for p in parts[1:]):
        raise InvalidRequestError("the query spans tiles of different UTM zones; query each zone separately (a bbox or "
                                  "tiles= within one zone)")
    times = pass_times(parts)
    dates = np.unique(np.concatenate(times))
    step_x, step_y = (abs(r) for r in parts[0].rio.resolution())
    west = min(float(p["x"][0]) for p in parts)
    north = max(float(p["y"][0]) for p in parts)
    nx = max(round((float(p["x"][-1]) - west) / step_x) for p in parts) + 1
    ny = max(round((north - float(p["y"][-1])) / step_y) for p in parts) + 1
    places = [(np.searchsorted(dates, t), round((north - float(p["y"][0])) / step_y),
               round((float(p["x"][0]) - west) / step_x)) for p, t in zip(parts, times, strict=True)]
    first = parts[0][bands[0].name].data
    at_least = -(-WHOLE_BLOCK_BYTES // (ny * nx * first.dtype.itemsize)) if whole else 1
    chunks = (_time_chunks(places[0][0], first.chunks[0], dates.size, at_least), *(((ny,), (nx,)) if whole else (
        _space_chunks(places[0][1], first.chunks[1], ny), _space_chunks(places[0][2], first.chunks[2], nx))))
    data_vars = {}
    for b in bands:
        arrays = [p[b.name].data for p in parts]
        integers = np.issubdtype(arrays[0].dtype, np.integer)  # stored values (decode=False) and SCL say their nodata
        nodata = parts[0][b.name].attrs.get("nodata", b.nodata if integers else None)
        empty = np.nan if nodata is None else nodata
        data_vars[b.name] = (("time", "y", "x"), _assembled(arrays, places, chunks, empty), parts[0][b.name].attrs)
    coords = {"time": ("time", dates, parts[0]["time"].attrs),
              "y": ("y", north - step_y * np.arange(ny), parts[0]["y"].attrs),
              "x": ("x", west + step_x * np.arange(nx), parts[0]["x"].attrs)}
    coords.update(_date_metadata(parts, times, dates))
    merged = xr.Dataset(data_vars, coords=coords)
    return merged.rio.write_crs(crs).rio.write_transform(Affine(step_x, 0, west - step_x / 2, 0, -step_y,
                                                                north + step_y / 2))


def _date_metadata(parts: Sequence[xr.Dataset], times: Sequence[np.ndarray], dates: np.ndarray) -> dict[str, Any]:
    """Each mosaic date's acquisition coordinates: the first part's holding it; ``scene_id`` and ``tile`` of every
    part holding it, ``+``-joined (xarray drops a coordinate whose parts disagree); the first part's attributes."""
    per_date = [c for c in parts[0].coords if c != "time" and parts[0][c].dims == ("time",)]
    table = pd.concat([pd.DataFrame({c: p[c].values for c in per_date}, index=pd.Index(t, name="t"))
                       for p, t in zip(parts, times, strict=True)])
    joined = {c: (lambda v: "+".join(dict.fromkeys(v))) if c in ("scene_id", "tile") else "first" for c in per_date}
    table = table.groupby(level="t", sort=False).agg(joined).reindex(dates)
    return {c: ("time", table[c].to_numpy(), parts[0][c].attrs) for c in per_date}


def _space_chunks(offset: int, sizes: tuple[int, ...], n: int) -> tuple[int, ...]:
    """The mosaic's chunks along ``y`` or ``x``: those of the first part (placed at ``offset``), so its stored
    chunks stay whole, and beyond it chunks of their full size on the same lattice (the part's first and last
    chunks cut at the area's edges are no measure of it)."""
    size = max(sizes)
    edges = offset + np.cumsum((0, *sizes))
    low, high = (edges[1], edges[-2]) if len(sizes) > 1 else (offset, offset)
    cuts = np.concatenate([[0, n], np.arange(low, 0, -size), np.arange(high, n, size), edges[1:-1]])
    return tuple(int(c) for c in np.diff(np.unique(cuts[(cuts >= 0) & (cuts <= n)])))


def _time_chunks(positions: np.ndarray, sizes: tuple[int, ...], n: int, at_least: int = 1) -> tuple[int, ...]:
    """The mosaic's time chunks: cut where a chunk of the first part starts, so its stored chunks stay whole, each
    of ``at_least`` dates (the last may be shorter)."""
    if not n:
        return (0,)
    starts = positions[np.cumsum((0, *sizes[:-1]))] if positions.size else np.empty(0, int)
    cuts = [0]
    for c in np.unique(np.concatenate([starts, [n]])):
        if c == n or c - cuts[-1] >= at_least:
            cuts.append(int(c))
    return tuple(int(c) for c in np.diff(np.unique(cuts)))


def _spans(chunks: tuple[int, ...]) -> list[Span]:
    ends = np.cumsum(chunks)
    return [(int(e - c), int(e)) for c, e in zip(chunks, ends, strict=True)]


def _overlaps(out: Span, offset: int, chunks: tuple[int, ...]) -> list[tuple[int, slice, slice]]:
    """The blocks of a part placed at ``offset`` along one axis that meet the mosaic's span ``out``: each block's
    index, where it lands in the mosaic's block and which of its own cells do."""
    found = []
    for i, (a, b) in enumerate(_spans(chunks)):
        lo, hi = max(out[0], a + offset), min(out[1], b + offset)
        if lo < hi:
            found.append((i, slice(lo - out[0], hi - out[0]), slice(lo - offset - a, hi - offset - a)))
    return found


def _date_overlaps(out: Span, positions: np.ndarray, chunks: tuple[int, ...]) -> list[tuple[int, np.ndarray,
                                                                                             np.ndarray]]:
    """As :func:`_overlaps` along time, where a part's dates are positions among the mosaic's, not a run."""
    found = []
    for i, (a, b) in enumerate(_spans(chunks)):
        own = np.flatnonzero((positions[a:b] >= out[0]) & (positions[a:b] < out[1]))
        if own.size:
            found.append((i, positions[a:b][own] - out[0], own))
    return found


def _assembled(arrays: Sequence[da.Array], places: Sequence[tuple[np.ndarray, int, int]],
               chunks: tuple[tuple[int, ...], ...], empty: float | int) -> da.Array:
    """One band of the mosaic: a dask array of ``chunks``, each block one task filling it from the parts' blocks
    over it, in the parts' order (a cell a part has filled is left to it)."""
    name = f"mosaic-{tokenize(*arrays, [(p[0].tobytes(), p[1], p[2]) for p in places], chunks, empty)}"
    spans = [_spans(c) for c in chunks]
    overlaps = [([_date_overlaps(s, positions, a.chunks[0]) for s in spans[0]],
                 [_overlaps(s, row, a.chunks[1]) for s in spans[1]], [_overlaps(s, col, a.chunks[2]) for s in spans[2]])
                for a, (positions, row, col) in zip(arrays, places, strict=True)]
    layer = {}
    for it, iy, ix in itertools.product(*(range(len(c)) for c in chunks)):
        pieces = [[(a.name, bt, by, bx), dst_t, src_t, dst_y, src_y, dst_x, src_x]
                  for a, (times, rows, cols) in zip(arrays, overlaps, strict=True)
                  for (bt, dst_t, src_t), (by, dst_y, src_y), (bx, dst_x, src_x)
                  in itertools.product(times[it], rows[iy], cols[ix])]
        shape = (chunks[0][it], chunks[1][iy], chunks[2][ix])
        layer[(name, it, iy, ix)] = (_fill_block, shape, arrays[0].dtype, empty, pieces)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=arrays)
    return da.Array(graph, name, chunks, dtype=arrays[0].dtype)


def _fill_block(shape: tuple[int, ...], dtype: np.dtype, empty: float | int, pieces: list[list]) -> np.ndarray:
    """A block of the mosaic: ``empty`` everywhere, then each piece's cells where the block is still empty."""
    out = np.full(shape, empty, dtype)
    nan = isinstance(empty, float) and np.isnan(empty)
    for block, dst_t, src_t, dst_y, src_y, dst_x, src_x in pieces:
        for i, j in zip(dst_t, src_t, strict=True):
            target = out[i, dst_y, dst_x]
            np.copyto(target, block[j, src_y, src_x], where=np.isnan(target) if nan else target == empty)
    return out
