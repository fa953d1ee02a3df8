"""Where things live inside a cube root: one place for every key and group path.

::

    <root>/catalog.json                         STAC root catalog
    <root>/<collection>/collection.json         STAC collection of the cube collection
    <root>/<collection>/_ledger/v00000007.json  commit record of version 7 (created once, never changed)
    <root>/<collection>/_ledger/scenes-00000007-<digest>.json  the details of the scenes version 7 recorded first
    <root>/<collection>/_lock.json              the writer lock while an ingest runs
    <root>/<collection>/<tile>/<item>.json      STAC item of one cube tile
    <root>/<collection>/<tile>/_manifest/       the shards each time block stores (cube.manifest)
        cold-000002.json  hot-000014.json
    <root>/<collection>/<tile>/cube.zarr/       Zarr v3 group of one cube tile
        r10m/  r20m/                            time-first ("cold") arrays per native resolution
        hot/r10m/  hot/r20m/                    the hot buffer: one date per chunk, recent dates
    <root>/_parcels/<tile>/<digest>/            a parcel set's label layer on a tile (cube.parcel_layer)

A cube collection is ``s2`` or ``s1`` (see :mod:`cardcube.spec`); tiles are MGRS tile ids.
"""

from __future__ import annotations

import os
from typing import Any

LEDGER_DIR = "_ledger"
MANIFEST_DIR = "_manifest"
ZARR_NAME = "cube.zarr"
PARCELS_DIR = "_parcels"
LOCK_NAME = "_lock.json"
MENDING_NAME = "_mending.json"  # the cold dates a repair writes into in place, until a version records them
ROOT_KEY = "catalog.json"  # the STAC root catalog (the catalog's other keys: catalog.keys)


def cube_root(location: Any) -> Any:
    """A cube location as given (path, URL or Store), less a trailing ``catalog.json``: the file a STAC browser is
    pointed at names its cube too."""
    path = os.fspath(location) if isinstance(location, str | os.PathLike) else None
    if path is not None and (path == ROOT_KEY or path.endswith(f"/{ROOT_KEY}")):  # not a folder s2catalog.json
        return path[: -len(ROOT_KEY)].rstrip("/") or "."
    return location


def ledger_prefix(collection: str) -> str:
    return f"{collection}/{LEDGER_DIR}/"


def ledger_key(collection: str, version: int) -> str:
    return f"{collection}/{LEDGER_DIR}/v{version:08d}.json"


def details_key(collection: str, name: str) -> str:
    """Key of a details object of the ledger (:mod:`cube.scene_details`), by its name."""
    return f"{collection}/{LEDGER_DIR}/{name}"


def details_of_key(key: str) -> str | None:
    """The name of a details object's key, or None for anything else under the ledger prefix (a record)."""
    name = key.rsplit("/", 1)[-1]
    return name if name.startswith("scenes-") and name.endswith(".json") else None


def version_of_key(key: str) -> int | None:
    """The version number of a ledger key, or None for anything else under the ledger prefix."""
    name = key.rsplit("/", 1)[-1]
    if name.startswith("v") and name.endswith(".json") and name[1:-5].isdigit():
        return int(name[1:-5])
    return None


def lock_key(collection: str) -> str:
    return f"{collection}/{LOCK_NAME}"


def mending_key(collection: str) -> str:
    return f"{collection}/{MENDING_NAME}"


def tile_zarr_path(collection: str, tile: str) -> str:
    """Path of a tile's Zarr group, relative to the cube root."""
    return f"{collection}/{tile}/{ZARR_NAME}"


def resolution_group(resolution: int, *, hot: bool = False) -> str:
    """Group of one native resolution inside a tile's Zarr group."""
    return f"hot/r{resolution}m" if hot else f"r{resolution}m"


def array_path(collection: str, tile: str, resolution: int, name: str, *, hot: bool = False) -> str:
    return f"{tile_zarr_path(collection, tile)}/{resolution_group(resolution, hot=hot)}/{name}"


def manifest_key(collection: str, tile: str, block: int, *, hot: bool = False) -> str:
    """Key of the manifest of one time block of a tile (a hot-buffer slot with ``hot``)."""
    return f"{collection}/{tile}/{MANIFEST_DIR}/{'hot' if hot else 'cold'}-{block:06d}.json"
