"""Synthetic items rewritten the way real providers write theirs: Earth Search v1 and the CDSE STAC.

The files stay the synthetic COGs (or lossless JPEG 2000 copies of them), so a cube ingested from the
rewritten items must equal the one ingested from the originals. Only the fields that matter are kept, with
the providers' own key names, media types and band descriptions; every decoy (a JPEG 2000 twin, another
resolution, a true-colour image) points at a file that does not exist, so taking one fails the scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from tests.ingest.scene_edits import asset_path

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
JP2 = "image/jp2"
RESOLUTION = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20,
              "B12": 20, "SCL": 20}

# Earth Search v1 (sentinel-2-l2a, sentinel-2-c1-l2a): asset key and eo:bands as it writes them.
EARTH_SEARCH = {  # band: (asset key, eo:bands common_name, title)
    "B02": ("blue", "blue", "Blue (band 2) - 10m"), "B03": ("green", "green", "Green (band 3) - 10m"),
    "B04": ("red", "red", "Red (band 4) - 10m"), "B08": ("nir", "nir", "NIR 1 (band 8) - 10m"),
    "B05": ("rededge1", "rededge", "Red edge 1 (band 5) - 20m"),
    "B06": ("rededge2", "rededge", "Red edge 2 (band 6) - 20m"),
    "B07": ("rededge3", "rededge", "Red edge 3 (band 7) - 20m"), "B8A": ("nir08", "nir08", "NIR 2 (band 8A) - 20m"),
    "B11": ("swir16", "swir16", "SWIR 1 (band 11) - 20m"), "B12": ("swir22", "swir22", "SWIR 2 (band 12) - 20m"),
    "SCL": ("scl", None, "Scene classification map (SCL)"),
}


def _raster(band: str, res: int, *, offset: float | None = -0.1) -> dict:
    if band == "SCL":
        return {"nodata": 0, "data_type": "uint8", "spatial_resolution": res}
    return {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15, "spatial_resolution": res, "scale": 0.0001,
            "offset": offset}


def earth_search_item(feature: dict, *, collection: str = "sentinel-2-c1-l2a", offset: float = -0.1) -> dict:
    """``feature`` (a synthetic S2 item) as Earth Search v1 writes its items: common-name keys, a ``-jp2`` twin of
    every band, ``visual``, ``aot``, ``wvp``, a thumbnail and metadata; ``offset`` in each band's raster:bands."""
    item = json.loads(json.dumps(feature))
    item["collection"] = collection
    item["properties"]["s2:processing_baseline"] = "05.10"
    assets = {}
    for band, (key, common, title) in EARTH_SEARCH.items():
        res = RESOLUTION[band]
        cog = {"href": feature["assets"][band]["href"], "type": COG, "title": title, "gsd": res,
               "proj:shape": feature["assets"][band]["proj:shape"],
               "raster:bands": [_raster(band, res, offset=offset)], "roles": ["data", "reflectance"]}
        if common is not None:
            cog["eo:bands"] = [{"name": key, "common_name": common, "description": title.split(" - ")[0]}]
        assets[key] = cog
        assets[f"{key}-jp2"] = {**cog, "href": f"missing-jp2/{band}.jp2", "type": JP2,
                                "raster:bands": [_raster(band, res, offset=0.0)]}  # taken, it would fail the scene
    rgb = [{"name": n, "common_name": n} for n in ("red", "green", "blue")]
    assets["visual"] = {"href": "missing/TCI.tif", "type": COG, "title": "True color image", "eo:bands": rgb,
                        "roles": ["visual"]}
    assets["visual-jp2"] = {**assets["visual"], "href": "missing/TCI.jp2", "type": JP2}
    for key, title in (("aot", "Aerosol optical thickness (AOT)"), ("wvp", "Water vapour (WVP)")):
        assets[key] = {"href": f"missing/{key.upper()}.tif", "type": COG, "title": title, "gsd": 20,
                       "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 20,
                                         "scale": 0.001, "offset": 0}], "roles": ["data", "reflectance"]}
    assets["thumbnail"] = {"href": "missing/thumbnail.jpg", "type": "image/jpeg", "title": "Thumbnail image",
                           "roles": ["thumbnail"]}
    assets["granule_metadata"] = {"href": "missing/metadata.xml", "type": "application/xml", "roles": ["metadata"]}
    item["assets"] = assets
    return item


def to_jp2(source: Path, target: Path) -> Path:
    """A lossless JPEG 2000 copy of ``source`` (as the CDSE serves L2A bands), with its CRS and transform."""
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(target, "w", driver="JP2OpenJPEG", width=profile["width"], height=profile["height"], count=1,
                       dtype=profile["dtype"], crs=profile["crs"], transform=profile["transform"], QUALITY=100,
                       REVERSIBLE="YES") as dst:
        dst.write(data, 1)
    with rasterio.open(target) as back:  # lossless, or the comparison with the COG cube means nothing
        assert np.array_equal(back.read(1), data)
    return target


def cdse_item(items_path: Path, feature: dict) -> dict:
    """``feature`` as the CDSE STAC writes its ``sentinel-2-l2a`` items (STAC 1.1): ``B04_10m``-style keys at
    every resolution a band comes in, JPEG 2000 files (written beside the items), ``bands`` with the
    ``eo:`` common name and ``raster:scale``/``raster:offset`` on the asset; ``TCI``, ``AOT`` and ``WVP`` too."""
    root = Path(items_path).parent
    item = json.loads(json.dumps(feature))
    item["stac_version"] = "1.1.0"
    assets = {}
    for band, (_key, common, title) in EARTH_SEARCH.items():
        native = RESOLUTION[band]
        jp2 = to_jp2(asset_path(items_path, feature, band), root / "cdse" / feature["id"] / f"{band}_{native}m.jp2")
        for res in (native,) if band == "B08" else (r for r in (10, 20, 60) if r >= native):  # no B08_20m
            entry = {"name": band} if common is None else {"name": band, "eo:common_name": common}
            asset = {"href": str(jp2.relative_to(root)) if res == native else f"missing/{band}_{res}m.jp2",
                     "type": JP2, "title": f"{title.split(' - ')[0]} - {res}m", "gsd": res,
                     "roles": ["data", "reflectance" if band != "SCL" else "classification", f"gsd:{res}m"],
                     "bands": [entry], "nodata": 0, "data_type": "uint8" if band == "SCL" else "uint16",
                     "raster:spatial_resolution": res}
            if band != "SCL":
                asset |= {"raster:scale": 0.0001, "raster:offset": -0.1}
            assets[f"{band}_{res}m"] = asset
    for res in (10, 20, 60):
        assets[f"TCI_{res}m"] = {"href": f"missing/TCI_{res}m.jp2", "type": JP2, "roles": ["visual"],
                                 "bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]}
        for key in ("AOT", "WVP"):
            assets[f"{key}_{res}m"] = {"href": f"missing/{key}_{res}m.jp2", "type": JP2, "roles": ["data"],
                                       "gsd": res, "raster:scale": 0.001, "raster:offset": 0}
    item["assets"] = assets
    return item
