"""The COG baselines: the same questions answered from the per-scene COGs, as users do it today.

Two readers: rasterio windowed reads of every (scene, band) in a thread pool, and ``odc.stac.load``
with the same number of threads. Both compute the same statistics as cardcube, through the same
function (:class:`cube.pixels.ParcelPixels`), on the same pixels (the parcel's pixels on the tile's
10 m grid, 20 m bands repeated 2 x 2), so the checksums of a pattern agree across layouts and the time
measured is the time to the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from odc.geo.geobox import GeoBox
from shapely.geometry.base import BaseGeometry

from cardcube.spec import DEFAULT_SCL_MASK, S2_L2A, BandSpec
from cube.membership import parcel_pixels
from cube.pixels import ParcelPixels

if TYPE_CHECKING:
    from benchmarks.storage import Access


def band_attrs(band: BandSpec) -> dict[str, Any]:
    """The CF packing attributes cardcube's stored-integer Datasets carry, for :func:`cube.pixels.physical`."""
    if band.is_flag:
        return {"flag_values": list(band.flag_values), "nodata": band.nodata}
    return {"scale_factor": band.scale, "add_offset": band.offset, "nodata": band.nodata}


def _window(geobox: GeoBox, transform: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and cols of a file with ``transform`` covering ``geobox`` (rounded outwards)."""
    x0, y0, x1, y1 = geobox.boundingbox
    c0 = math.floor((x0 - transform.c) / transform.a + 1e-6)
    c1 = math.ceil((x1 - transform.c) / transform.a - 1e-6)
    r0 = math.floor((y1 - transform.f) / transform.e + 1e-6)
    r1 = math.ceil((y0 - transform.f) / transform.e - 1e-6)
    return (r0, r1), (c0, c1)


def _read(access: Access, href: str, geobox: GeoBox) -> np.ndarray:
    """One band of one scene over ``geobox`` (10 m), 20 m pixels repeated 2 x 2 as cardcube does."""
    import rasterio
    from rasterio.windows import Window

    with access.rio_env(), rasterio.open(access.cog_path(href)) as ds:
        (r0, r1), (c0, c1) = _window(geobox, ds.transform)
        data = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        k = round(ds.transform.a / abs(geobox.affine.a))
    if k > 1:  # the window starts on the coarse lattice, so the 10 m grid is a crop of the repeat
        x0, _, _, y1 = geobox.boundingbox
        res = abs(geobox.affine.a)
        dr = round((ds.transform.f + r0 * ds.transform.e - y1) / res)
        dc = round((x0 - (ds.transform.c + c0 * ds.transform.a)) / res)
        data = data.repeat(k, axis=0).repeat(k, axis=1)[dr:dr + geobox.shape[0], dc:dc + geobox.shape[1]]
    return data


def rasterio_load(features: Sequence[Mapping], bands: Sequence[str], geobox: GeoBox, access: Access, *,
                  threads: int) -> dict[str, np.ndarray]:
    """``(time, y, x)`` stored values per band over ``geobox``: one windowed read per scene and band."""
    jobs = [(f["assets"][b]["href"], geobox) for f in features for b in bands]
    with ThreadPoolExecutor(threads) as pool:
        arrays = list(pool.map(lambda job: _read(access, *job), jobs))
    n = len(bands)
    return {b: np.stack(arrays[i::n]) for i, b in enumerate(bands)}


def odc_load(features: Sequence[Mapping], bands: Sequence[str], geobox: GeoBox, access: Access, *,
             threads: int) -> dict[str, np.ndarray]:
    """The same through ``odc.stac.load`` (nearest resampling onto ``geobox``, ``threads`` readers)."""
    import copy

    import odc.stac
    import pystac

    from benchmarks.storage import gdal_options

    items = []
    for f in features:
        d = copy.deepcopy(dict(f))
        for asset in d["assets"].values():
            asset["href"] = access.cog_url(asset["href"])
        items.append(pystac.Item.from_dict(d))
    aws = access.storage.aws_session() if access.tier.is_s3 else None
    odc.stac.configure_rio(cloud_defaults=True, aws=aws, **gdal_options(access.tier))
    ds = odc.stac.load(items, bands=list(bands), geobox=geobox, pool=threads, groupby="id")
    order = np.argsort(ds["time"].values, kind="stable")
    return {b: ds[b].values[order] for b in bands}


def parcel_frame(pixels: Mapping[str, np.ndarray], bands: Sequence[str], features: Sequence[Mapping],
                 geometry: BaseGeometry, geobox: GeoBox, parcel_id: Any) -> Any:
    """cardcube's statistics frame of ``bands`` (indices included) for one parcel from ``(time, y, x)``
    stored values on ``geobox``, SCL-masked as :func:`cube.timeseries.parcel_timeseries` does by default."""
    mask = parcel_pixels(geometry, geobox)
    selected = np.flatnonzero(mask.ravel())
    values = {b: v.reshape(v.shape[0], -1)[:, selected] for b, v in pixels.items()}
    times = np.array([np.datetime64(f["properties"]["datetime"].rstrip("Z"), "ns") for f in features])
    pp = ParcelPixels.from_labels(np.array([parcel_id], dtype=object), np.zeros(selected.size, np.int64), times,
                                  values, {b: band_attrs(S2_L2A.band(b)) for b in values}, {})
    return pp.frame(list(bands), mask=DEFAULT_SCL_MASK if "SCL" in pixels else None)


LOADERS = {"cog-rasterio": rasterio_load, "cog-odc": odc_load}
