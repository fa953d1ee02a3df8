"""An independent reference for parcel statistics: raw COG pixels, shapely pixel centres, numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import shapely
from shapely.geometry.base import BaseGeometry

from cardcube.spec import ChunkLayout, cube_spec
from tests.ingest.scene_edits import asset_path, items_of


def centre_pixels(geometry: BaseGeometry, transform, shape, *, buffer: float) -> np.ndarray:
    """Pixel-centre-in-buffered-polygon mask on a raster grid (shapely, not rasterio); a centre on a buffered outline
    is in."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    xs = transform.c + (cols + 0.5) * transform.a
    ys = transform.f + (rows + 0.5) * transform.e
    inside = shapely.intersects_xy if buffer else shapely.contains_xy
    return inside(geometry.buffer(buffer), xs, ys)


def _sample(path: Path, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Values of a raster at the given map coordinates (the pixel containing each point)."""
    with rasterio.open(path) as src:
        data = src.read(1)
        rows, cols = rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel())
        return data[np.asarray(rows), np.asarray(cols)].reshape(xs.shape), src.nodata


def reference_stats(items_path: Path, collection: str, scene_id: str, geometry: BaseGeometry, band: str, *,
                    buffer: float = -5.0, mask_classes=None) -> dict[str, float]:
    """Statistics of one parcel on one scene, straight from the source COGs, on the scene's 10 m grid."""
    spec = cube_spec(collection)
    feature = next(f for f in items_of(items_path, spec.source_collection) if f["id"] == scene_id)
    grid_band = "B04" if collection == "s2" else "VV"
    with rasterio.open(asset_path(items_path, feature, grid_band)) as src:
        transform, shape = src.transform, src.shape
    inside = centre_pixels(geometry, transform, shape, buffer=buffer)
    rows, cols = np.nonzero(inside)
    xs, ys = transform.c + (cols + 0.5) * transform.a, transform.f + (rows + 0.5) * transform.e
    raw, nodata = _sample(asset_path(items_path, feature, band), xs, ys)
    raw = raw.astype("float64")
    b = spec.band(band)
    valid = ~np.isnan(raw) if nodata is None or np.isnan(nodata) else raw != nodata
    if mask_classes is not None:
        scl, _ = _sample(asset_path(items_path, feature, "SCL"), xs, ys)
        valid &= ~np.isin(scl, list(mask_classes))
    v = raw[valid] * b.scale + b.offset
    out = {"count": float(v.size), "masked": float(inside.sum() - v.size)}
    if v.size:
        out["mean"] = 10 * np.log10(np.mean(10 ** (v / 10))) if b.units == "dB" else v.mean()
        out.update(std=v.std(), min=v.min(), max=v.max(), p25=np.percentile(v, 25), median=np.median(v),
                   p75=np.percentile(v, 75))
    return out


def season_chunks(geometry: BaseGeometry, layout: ChunkLayout, dates: int) -> tuple[range, range, int]:
    """What a tiny-region parcel's season touches, counted from geometry alone (tile 31UFU's corner at
    600000, 5900040; 10 m pixels): the rows and cols of the ``layout.space`` px chunks under the parcel's
    -5 m buffered bounds, and the time blocks read for ``dates`` ingested at once (the full cold blocks,
    then each date left in the hot buffer on its own)."""
    minx, miny, maxx, maxy = geometry.buffer(-5).bounds
    size = layout.space
    rows = range(int((5900040 - maxy) // 10) // size, int((5900040 - miny) // 10) // size + 1)
    cols = range(int((minx - 600000) // 10) // size, int((maxx - 600000) // 10) // size + 1)
    return rows, cols, dates // layout.time + dates % layout.time
