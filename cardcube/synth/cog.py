"""Thin Cloud-Optimized GeoTIFF writer (GDAL's COG driver through rasterio).

DEFLATE with a predictor, 512 x 512 blocks and internal overviews; GDAL writes no timestamps, so the
same array always gives the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def write_cog(
    path: str | os.PathLike, data: np.ndarray, geobox: GeoBox, *, nodata: float | int | None,
    description: str, scale: float = 1.0, offset: float = 0.0, categorical: bool = False,
) -> Path:
    """Write one band ``data`` (2-D, shape of ``geobox``) as a COG at ``path``."""
    path = Path(path)
    if data.shape != geobox.shape:
        raise ValueError(f"{path.name}: data shape {data.shape} differs from its grid {tuple(geobox.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    floating = np.issubdtype(data.dtype, np.floating)
    profile = {
        "driver": "COG", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": data.dtype.name,
        "crs": str(geobox.crs), "transform": Affine(*geobox.affine[:6]), "nodata": nodata,
        "compress": "DEFLATE", "level": 1, "predictor": "3" if floating else "2", "blocksize": 512,
        "overviews": "AUTO", "resampling": "nearest" if categorical else "average",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, description)
        if scale != 1.0 or offset != 0.0:
            dst.scales, dst.offsets = (scale,), (offset,)
    return path
