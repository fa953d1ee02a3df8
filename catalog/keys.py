"""Where the catalog's documents live inside a cube root (keys relative to the root).

::

    catalog.json                                  root catalog (one per cube root, all collections)
    <collection>/collection.json                  STAC collection of one cube collection (s2, s1)
    <collection>/<tile>/<collection>-<tile>.json  STAC item of one cube tile, beside its cube.zarr
    sources/<source-id>/collection.json           STAC collection of the source scenes (no items)

The cube's own keys (ledger, tile groups) are in :mod:`cube.layout`; these are defined here because only
the catalog writes and reads them.
"""

from __future__ import annotations

from cube.layout import ROOT_KEY as ROOT_KEY  # the root catalog is the cube's entry: its layout names it

SOURCES_DIR = "sources"
JSON_MEDIA_TYPE = "application/json"
ZARR_MEDIA_TYPE = "application/vnd+zarr"


def collection_key(collection: str) -> str:
    return f"{collection}/collection.json"


def item_id(collection: str, tile: str) -> str:
    """The STAC id of a tile item, unique within the catalog (``s2-31UFU``)."""
    return f"{collection}-{tile}"


def item_key(collection: str, tile: str) -> str:
    return f"{collection}/{tile}/{item_id(collection, tile)}.json"


def source_collection_key(source_id: str) -> str:
    return f"{SOURCES_DIR}/{source_id}/collection.json"
