"""STAC Items for the written scenes, as a provider's STAC API would return them (built with pystac).

One Item per scene (acquisition x tile) in collection ``sentinel-2-l2a`` or ``sentinel-1-card-bs``,
with the eo, projection, raster, sat, sar, grid and mgrs extensions; assets keyed by band name with
hrefs relative to ``items.json``. :func:`item_collection` works from the
:class:`~cardcube.synth.scenes.SceneRecord` list and :func:`save_items` writes it; :func:`read_features`
and :func:`write_features` take subsets of a written one (a batch of scenes to ingest, dates that arrive
later).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pystac
import shapely
from pyproj import Transformer
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.grid import GridExtension
from pystac.extensions.mgrs import MgrsExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.extensions.sar import FrequencyBand, ObservationDirection, Polarization, SarExtension
from pystac.extensions.sat import OrbitState, SatExtension

from cardcube.spec import S1_BACKSCATTER, S2_L2A, BandSpec
from cardcube.synth.cog import COG_MEDIA_TYPE
from cardcube.synth.scenes import SceneRecord

# Where the provider's STAC API would serve the collections (a reserved .example domain: synthetic data).
PROVIDER_API = "https://stac.synthetic.example/v1"
_COMMON_NAMES = {"blue", "green", "red", "nir", "nir08", "rededge", "swir16", "swir22"}


def scene_item(scene: SceneRecord) -> pystac.Item:
    """The STAC Item of one scene."""
    acq = scene.acquisition
    geometry = _wgs84(scene.footprint, scene.epsg)
    s2 = acq.is_s2
    item = pystac.Item(
        id=scene.product_id,
        geometry=shapely.geometry.mapping(geometry),
        bbox=[round(v, 7) for v in geometry.bounds],
        datetime=acq.datetime.replace(tzinfo=dt.UTC),
        properties={
            "platform": acq.platform_name,
            "constellation": "sentinel-2" if s2 else "sentinel-1",
            "instruments": ["msi"] if s2 else ["c-sar"],
        },
        collection=acq.collection,
    )
    item.add_link(pystac.Link(pystac.RelType.COLLECTION, f"{PROVIDER_API}/collections/{acq.collection}",
                              media_type=pystac.MediaType.JSON))
    spec = S2_L2A if s2 else S1_BACKSCATTER
    for rec in scene.assets:
        band = spec.band(rec.band)
        asset = pystac.Asset(href=rec.href, media_type=COG_MEDIA_TYPE, roles=["data"],
                             title=band.long_name or band.name)
        item.add_asset(rec.band, asset)

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(code=f"EPSG:{scene.epsg}")
    RasterExtension.add_to(item)
    sat = SatExtension.ext(item, add_if_missing=True)
    sat.apply(orbit_state=OrbitState(acq.orbit_state), relative_orbit=acq.relative_orbit)
    GridExtension.ext(item, add_if_missing=True).apply(code=f"MGRS-{scene.tile_id}")
    MgrsExtension.ext(item, add_if_missing=True).apply(
        latitude_band=scene.tile_id[2], grid_square=scene.tile_id[3:], utm_zone=int(scene.tile_id[:2]))
    if s2:
        eo = EOExtension.ext(item, add_if_missing=True)
        eo.cloud_cover = scene.cloud_cover
    else:
        SarExtension.ext(item, add_if_missing=True).apply(
            instrument_mode="IW", frequency_band=FrequencyBand.C,
            polarizations=[Polarization.VV, Polarization.VH], product_type="CARD-BS",
            center_frequency=5.405, observation_direction=ObservationDirection.RIGHT)

    for rec in scene.assets:
        asset = item.assets[rec.band]
        band = spec.band(rec.band)
        aproj = ProjectionExtension.ext(asset)
        aproj.shape = list(rec.geobox.shape)
        aproj.transform = [float(v) for v in rec.geobox.affine[:6]]
        RasterExtension.ext(asset).bands = [_raster_band(band)]
        if s2 and band.center_wavelength is not None:
            common = band.common_name if band.common_name in _COMMON_NAMES else None
            EOExtension.ext(asset).bands = [Band.create(
                name=band.name, common_name=common, center_wavelength=band.center_wavelength,
                description=band.long_name)]
    return item


def _raster_band(band: BandSpec) -> RasterBand:
    nodata = band.nodata
    if isinstance(nodata, float) and math.isnan(nodata):
        nodata = NoDataStrings.NAN
    kwargs = {}
    if not band.is_flag and (band.scale != 1.0 or band.offset != 0.0):
        kwargs = {"scale": band.scale, "offset": band.offset}
    return RasterBand.create(nodata=nodata, data_type=DataType(band.dtype), spatial_resolution=band.resolution,
                             unit=None if band.units == "1" else band.units, **kwargs)


def _wgs84(footprint, epsg: int):
    to_wgs84 = Transformer.from_crs(epsg, 4326, always_xy=True)
    dense = shapely.segmentize(shapely.normalize(footprint), 250.0)
    out = shapely.transform(dense, lambda xy: _project(to_wgs84, xy))
    return shapely.set_precision(out, 1e-7)


def _project(transformer: Transformer, xy: np.ndarray) -> np.ndarray:
    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def item_collection(scenes: Iterable[SceneRecord]) -> pystac.ItemCollection:
    """Items of ``scenes``, sorted by collection, datetime and tile (a stable order)."""
    ordered = sorted(scenes, key=lambda s: (s.acquisition.collection, s.acquisition.datetime, s.tile_id))
    return pystac.ItemCollection([scene_item(s) for s in ordered])


def save_items(items: pystac.ItemCollection, path: Path) -> Path:
    """Write ``items`` as a GeoJSON FeatureCollection at ``path`` (hrefs stay relative)."""
    items.save_object(str(path))
    return path


def read_features(items: Path, collection: str | None = None) -> list[dict]:
    """The items (GeoJSON features) of the ItemCollection ``items``, of ``collection`` if given, in time order
    (then by id)."""
    features = json.loads(Path(items).read_text())["features"]
    return sorted((f for f in features if collection is None or f["collection"] == collection),
                  key=lambda f: (f["properties"]["datetime"], f["id"]))


def write_features(features: Iterable[dict], path: Path) -> Path:
    """``features`` as an ItemCollection at ``path``; beside the one they came from, relative hrefs still hold."""
    Path(path).write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return Path(path)
