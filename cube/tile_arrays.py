"""Opening the Zarr arrays of a cube tile at a committed extent.

Readers slice every array to the extents the ledger lists, never to the persisted shape: a *sized
view* lets them read a committed version even if a crash left its shapes unpublished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import zarr
import zarr.api.asynchronous as zarr_async
from zarr.abc.store import Store
from zarr.core.array import AsyncArray
from zarr.core.sync import sync

from cube import layout


def open_array(store: Store, collection: str, tile: str, resolution: int, name: str, *, hot: bool,
               mode: str = "r") -> zarr.Array:
    """One array of a tile (a band or a coordinate) at one native resolution, cold or hot."""
    path = layout.array_path(collection, tile, resolution, name, hot=hot)
    return zarr.open_array(store, path=path, mode=mode, zarr_format=3)  # no v2 probes: fewer requests on S3


ArrayKey = tuple[int, str, bool]  # native resolution, band or coordinate name, hot


def open_arrays(store: Store, collection: str, tile: str, keys: Sequence[ArrayKey]) -> dict[ArrayKey, zarr.Array]:
    """Several arrays of a tile, read-only, their metadata fetched concurrently: on S3 one round trip for
    all of a query's ``zarr.json``, not one after another."""
    async def _open() -> list:
        return await asyncio.gather(*(zarr_async.open_array(
            store=store, path=layout.array_path(collection, tile, res, name, hot=hot), mode="r", zarr_format=3)
            for res, name, hot in keys))

    return {key: zarr.Array(arr) for key, arr in zip(keys, sync(_open()), strict=True)}


def sized_view(array: zarr.Array, length: int) -> zarr.Array:
    """``array`` as if its time axis had ``length`` entries, without persisting anything."""
    meta = array.metadata
    if meta.shape[0] >= length:
        return array
    bigger = meta.update_shape((length, *meta.shape[1:]))
    return zarr.Array(AsyncArray(bigger, array.store_path, config=array._async_array.config))
