"""Independent checks of a cube against its source COGs, pixel by pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from cardcube.spec import cube_spec
from cube.dataset import open_cube
from tests.ingest.scene_edits import asset_path, items_of


def assert_matches_sources(cube: Any, items_path: Path, collection: str, *, storage_options=None,
                           sample: int | None = None, as_of: int | None = None) -> int:
    """Every band of (a sample of) the source scenes equals the cube's pixels bit for bit; returns pixels checked."""
    spec = cube_spec(collection)
    features = items_of(items_path, spec.source_collection)
    if sample is not None:
        features = features[:: max(1, len(features) // sample)][:sample]
    checked = 0
    opened: dict[tuple[str, int], Any] = {}
    for feature in features:
        tile = feature["properties"]["grid:code"].removeprefix("MGRS-")
        for band in spec.bands:
            path = asset_path(items_path, feature, band.name)
            with rasterio.open(path) as src:
                expected = src.read(1)
                bounds = src.bounds
            key = (tile, band.resolution)
            if key not in opened:  # every band of a tile and resolution read once, by one Zarr call per array
                # (chunks="window"): the same pixels as dask's task per stored chunk, which took twice as long
                opened[key] = open_cube(cube, collection, tiles=[tile], resolution=band.resolution, decode=False,
                                        bands=[b.name for b in spec.bands_at(band.resolution)], as_of=as_of,
                                        storage_options=storage_options, chunks="window").load()
            ds = opened[key]
            t = np.flatnonzero(ds["scene_id"].values == feature["id"])
            assert t.size == 1, f"{feature['id']} is {t.size} times in the cube"
            got = ds[band.name].isel(time=int(t[0])).sel(
                x=slice(bounds.left, bounds.right), y=slice(bounds.top, bounds.bottom)).values
            assert got.shape == expected.shape, (feature["id"], band.name)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected, err_msg=f"{feature['id']} {band.name}")
            checked += expected.size
    return checked


def assert_manifests_match(cube: Path, collection: str) -> int:
    """Every time block the latest version reads has a manifest (:mod:`cube.manifest`) listing exactly the shards
    of each band the folder ``cube`` holds for it; returns the shards listed."""
    from cardcube.storage import open_store
    from cube import layout
    from cube.ledger import read_version
    from cube.manifest import read_manifests

    store = open_store(cube, read_only=True)
    version = read_version(store, collection)
    listed = 0
    for tile, state in version.tiles.items():
        blocks = [(tile, False, b) for b in range(len(state.cold) // version.spec.chunks.time)]
        blocks += [(tile, True, h.slot) for h in state.hot]
        for (_, hot, block), manifest in read_manifests(store, collection, blocks).items():
            assert manifest is not None, f"no manifest of {tile} {'hot slot' if hot else 'block'} {block}"
            for band in version.spec.bands:
                array = cube / layout.array_path(collection, tile, band.resolution, band.name, hot=hot)
                on_disk = {(int(p.parent.name), int(p.name)) for p in (array / "c" / str(block)).glob("*/*")}
                assert set(manifest.shards[band.name]) == on_disk, (tile, hot, block, band.name)
                listed += len(on_disk)
    return listed


def unlist_shards(cube: Path, shards: list[Path]) -> None:
    """Take the shard files ``shards`` of the folder ``cube`` out of their blocks' manifests: as if ingest had
    found no data there (so a shard deleted is an area without data, not a lost one)."""
    import json

    from cube import layout
    from cube.manifest import ShardKey

    for shard in shards:
        key = ShardKey.parse(shard.relative_to(cube).as_posix())
        collection = shard.relative_to(cube).parts[0]
        path = cube / layout.manifest_key(collection, key.tile, key.block, hot=key.hot)
        doc = json.loads(path.read_text())
        doc["shards"][key.band] = [cell for cell in doc["shards"][key.band] if cell[:2] != [key.row, key.col]]
        path.write_text(json.dumps(doc))
