"""Opening the Zarr arrays of a cube tile at a committed extent.

Readers slice every array to the extents the ledger lists, never to the persisted shape: a *sized
view* lets them read a committed version even if a crash left its shapes unpublished.
"""

from __future__ import annotations

import zarr
from zarr.abc.store import Store
from zarr.core.array import AsyncArray

from cube import layout


def open_array(store: Store, collection: str, tile: str, resolution: int, name: str, *, hot: bool,
               mode: str = "r") -> zarr.Array:
    """One array of a tile (a band or a coordinate) at one native resolution, cold or hot."""
    path = layout.array_path(collection, tile, resolution, name, hot=hot)
    return zarr.open_array(store, path=path, mode=mode, zarr_format=3)  # no v2 probes: fewer requests on S3


def sized_view(array: zarr.Array, length: int) -> zarr.Array:
    """``array`` as if its time axis had ``length`` entries, without persisting anything."""
    meta = array.metadata
    if meta.shape[0] >= length:
        return array
    bigger = meta.update_shape((length, *meta.shape[1:]))
    return zarr.Array(AsyncArray(bigger, array.store_path, config=array._async_array.config))
