"""The static STAC catalog of a cube, and query routing to its Zarr stores.

The catalog is derived from the ledger (:mod:`cube.ledger`) after each commit: a root catalog, one
collection per cube collection and per source collection, and one item per cube tile whose main asset is
the tile's Zarr group. The read side asks :func:`find_tiles` which tiles a geometry and time range need,
reading only these static JSON documents.
"""

from catalog.build import build_cube_collection, build_root, build_tile_item
from catalog.io import StoreStacIO
from catalog.route import ItemCache, TileRef, find_tiles, tile_refs
from catalog.write import build_catalog, catalog_is_current, published_version, rebuild_catalog, write_catalog

__all__ = [
    "ItemCache",
    "StoreStacIO",
    "TileRef",
    "build_catalog",
    "build_cube_collection",
    "build_root",
    "build_tile_item",
    "catalog_is_current",
    "find_tiles",
    "published_version",
    "rebuild_catalog",
    "tile_refs",
    "write_catalog",
]
