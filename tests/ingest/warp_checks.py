"""Independent references for resampled scenes: rasterio.warp.reproject of a whole file, done on its own, and the
cube's pixels on the same piece of grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.warp import reproject

from cube.dataset import open_cube


def reference_warp(path: Path, target: GeoBox, resampling: Resampling, *, db: bool | None,
                   nodata: float | None = None) -> np.ndarray:
    """rasterio.warp.reproject of the whole file onto ``target``. Backscatter (``db``: the file is in dB, else
    in linear power) is resampled in linear power and returned in dB; ``db=None``: the values as they are."""
    with rasterio.open(path) as src:
        values, transform, crs, file_nodata = src.read(1), src.transform, src.crs, src.nodata
    if db is not None:
        values = np.where(values == file_nodata, np.nan, values).astype(np.float64)
        if db:
            values = 10 ** (values / 10)
        nodata = np.nan
    out = np.full(target.shape, nodata, dtype=values.dtype)
    reproject(values, out, src_transform=transform, src_crs=crs, src_nodata=nodata, dst_transform=target.affine,
              dst_crs=target.crs, dst_nodata=nodata, resampling=resampling)
    if db is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(out > 0, 10 * np.log10(out), np.nan)
    return out


def cube_pixels(cube: Path, collection: str, scene_id: str, band: str, target: GeoBox, *,
                tile: str | None = None) -> np.ndarray:
    """The cube's pixels of ``band`` on ``target`` (of ``tile``, in a cube of several), nodata where the cube holds
    none (beyond its data)."""
    ds = open_cube(cube, collection, bands=[band], decode=False, tiles=None if tile is None else [tile])
    got = ds[band].isel(time=list(ds["scene_id"].values).index(scene_id))
    x, y = target.coords["x"].values, target.coords["y"].values
    fill = ds[band].encoding.get("_FillValue", np.nan) if got.dtype.kind == "f" else 0
    got = got.reindex(x=x, y=y, method="nearest", tolerance=0.1, fill_value=fill).values
    assert got.shape == target.shape
    return got
