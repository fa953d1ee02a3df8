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
            if key not in opened:  # each scene's window is read by one Zarr call (chunks="window"): the same
                # pixels as dask's task per stored chunk, which took twice as long for a check read scene by scene
                opened[key] = open_cube(cube, collection, tiles=[tile], resolution=band.resolution, decode=False,
                                        bands=[b.name for b in spec.bands_at(band.resolution)], as_of=as_of,
                                        storage_options=storage_options, chunks="window")
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
