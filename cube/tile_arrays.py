"""Opening the Zarr arrays of a cube tile at a committed extent.

Readers slice every array to the extents the ledger lists, never to the persisted shape: a *sized
view* lets them read a committed version even if a crash left its shapes unpublished.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping, Sequence
from typing import Any

import zarr
import zarr.api.asynchronous as zarr_async
import zarr.errors
from zarr.abc.store import Store
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import StorePath

from cardcube.errors import CorruptDocumentError, InvalidRequestError
from cardcube.lru import LRUDict
from cardcube.storage import canonical_url, in_steps, key_exists, reading, store_url
from cube import layout
from cube.manifest import AbsentShards


def open_array(store: Store, collection: str, tile: str, resolution: int, name: str, *, hot: bool,
               mode: str = "r") -> zarr.Array:
    """One array of a tile (a band or a coordinate) at one native resolution, cold or hot."""
    path = layout.array_path(collection, tile, resolution, name, hot=hot)
    return zarr.open_array(store, path=path, mode=mode, zarr_format=3)  # no v2 probes: fewer requests on S3


ArrayKey = tuple[int, str, bool]  # native resolution, band or coordinate name, hot
DOCUMENTS_IN_FLIGHT = 256  # zarr.json read at once (read_documents): each about a KB


class ArrayCache:
    """Opened arrays and the shard indexes read through them, kept from one query to the next by a
    long-running reader of one store (the REST service), so a query fetches chunks, not metadata.

    Valid for every version: an array's metadata changes only in its persisted time length, which readers
    replace by the ledger's (:func:`sized_view`), and a committed shard is never rewritten. Of one store: kept by
    path in the cube, so the first store read through it is the only one it serves (:meth:`serve`)."""

    def __init__(self, arrays: int = 1024) -> None:
        """Keep up to ``arrays`` opened arrays and 64 shard indexes for each (~1 KB an index)."""
        self.size = arrays
        self.store: str | None = None  # the location of the cube it serves, once it served one
        self.clear()

    def serve(self, store: Store) -> None:
        """Take ``store`` as the one this cache serves, or refuse another: its arrays are kept by their path in the
        cube, which another cube's arrays share, so one cache passed to two cubes read the first's pixels for the
        second's dates without a word."""
        url = canonical_url(store)  # a folder named two ways is one
        if self.store is None:
            self.store = url
        elif url != self.store:
            raise InvalidRequestError(f"this ArrayCache keeps the arrays of the cube at {self.store}, not of {url}: "
                                      f"the same paths there are other arrays; give each cube an ArrayCache of its own")

    def clear(self) -> None:
        """Forget everything: the cube was replaced by another at the same place (its objects are other ones).
        New containers, not emptied ones: a query begun before keeps those it took, so what it still reads of the
        replaced cube (a shard index, under the path the new cube's shard has) never reaches the later queries."""
        self.arrays: MutableMapping[str, zarr.Array] = LRUDict(self.size)
        self.indexes: MutableMapping[str, Any] = LRUDict(64 * self.size)
        self.absent = AbsentShards(64 * self.size)  # confirm_absent's


def open_arrays(store: Store, collection: str, tile: str, keys: Sequence[ArrayKey], *,
                cache: ArrayCache | None = None) -> dict[ArrayKey, zarr.Array]:
    """Several arrays of a tile, read-only, their metadata fetched concurrently: on S3 one round trip for
    all of a query's ``zarr.json``, not one after another; arrays in ``cache`` are not fetched again."""
    paths = {(res, name, hot): layout.array_path(collection, tile, res, name, hot=hot) for res, name, hot in keys}
    if cache is not None:
        cache.serve(store)
    kept = None if cache is None else cache.arrays  # taken once: a cache cleared meanwhile gets none of these
    cached = {key: kept.get(paths[key]) for key in keys} if kept is not None else {}
    known = {key: arr for key, arr in cached.items() if arr is not None}
    missing = [key for key in keys if key not in known]

    async def _open() -> list:
        return await asyncio.gather(*(zarr_async.open_array(store=store, path=paths[key], mode="r", zarr_format=3)
                                      for key in missing))

    try:
        with reading(f"the arrays of tile {tile}", store):
            opened = {key: zarr.Array(arr) for key, arr in zip(missing, sync(_open()), strict=True)}
    except json.JSONDecodeError as exc:  # a truncated or overwritten zarr.json: the cube's fault, said so
        raise CorruptDocumentError(f"an array document (zarr.json) of tile {tile} in {store_url(store)} is not valid "
                                   f"JSON ({exc}); check the cube with cardcube verify, re-ingest the tile") from None
    except zarr.errors.ArrayNotFoundError:  # the ledger says the tile holds them: a lost object, or a store amiss
        lost = [paths[k] for k in missing if not key_exists(store, f"{paths[k]}/zarr.json")] or [
            paths[k] for k in missing]  # none missing now: the store answered 404 for a moment
        raise CorruptDocumentError(
            f"an array document (zarr.json) of tile {tile} that the cube's ledger reads is missing from "
            f"{store_url(store)} ({', '.join(lost)}): the cube has lost data, or the store answered 404 for an "
            f"object it holds; check the cube with cardcube verify") from None
    if kept is not None:
        kept.update({paths[key]: arr for key, arr in opened.items()})
    found = {**known, **opened}
    return {key: found[key] for key in keys}


def read_documents(store: Store, keys: Sequence[str], what: str) -> list[bytes | None]:
    """The bytes of each of ``keys`` (None: missing), ``DOCUMENTS_IN_FLIGHT`` read at a time: the ``zarr.json`` of
    every tile's arrays in a few rounds, not one round a tile (on S3, a round trip's wait each); ``what`` they are,
    for a store's error."""
    proto = default_buffer_prototype()

    async def one(key: str) -> bytes | None:
        buf = await store.get(key, proto)
        return None if buf is None else buf.to_bytes()

    with reading(what, store):
        return [data for _, got in in_steps(one, keys, DOCUMENTS_IN_FLIGHT) for data in got]


def array_of_document(store: Store, path: str, data: bytes | None) -> zarr.Array | str:
    """The array at ``path`` of the ``zarr.json`` bytes ``data`` read there (:func:`read_documents`), opened without
    another read, or what is wrong with them ("missing", "damaged: ...")."""
    if data is None:
        return "missing"
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
            raise ValueError("not a Zarr v3 document")
        return zarr.Array(AsyncArray(metadata=doc, store_path=StorePath(store, path)))
    except (ValueError, TypeError, KeyError):
        return "damaged: not a readable array document"


def sized_view(array: zarr.Array, length: int) -> zarr.Array:
    """``array`` as if its time axis had ``length`` entries, without persisting anything."""
    meta = array.metadata
    if meta.shape[0] >= length:
        return array
    bigger = meta.update_shape((length, *meta.shape[1:]))
    return zarr.Array(AsyncArray(bigger, array.store_path, config=array._async_array.config))
