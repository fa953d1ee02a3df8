"""Readers of a generated region for the synth tests, independent of the generator's internals:
they open the written files (items.json, COGs, parquet) as any consumer would."""

from __future__ import annotations

import json
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
from rasterio import features


@dataclass
class S2Stack:
    dates: list  # datetime.date per item
    items: list[dict]
    red: np.ndarray  # (t, y, x) reflectance at 10 m, NaN where nodata
    nir: np.ndarray
    blue: np.ndarray
    scl: np.ndarray  # (t, y, x) SCL upsampled to 10 m
    parcel_index: np.ndarray  # (y, x) row of the parcel table whose interior holds the pixel, -1 elsewhere

    @property
    def ndvi(self) -> np.ndarray:
        return (self.nir - self.red) / (self.nir + self.red)


def load_items(result) -> list[dict]:
    return json.loads(result.items.read_text())["features"]


def read_band(result, item: dict, band: str) -> tuple[np.ndarray, rasterio.DatasetReader]:
    with rasterio.open(result.out_dir / item["assets"][band]["href"]) as ds:
        return ds.read(1), ds.profile


def reflectance(dn: np.ndarray) -> np.ndarray:
    return np.where(dn == 0, np.nan, (dn.astype(float) - 1000) / 10_000)


def interior_index(parcels: gpd.GeoDataFrame, profile: dict, *, inset: float = 12.0) -> np.ndarray:
    inner = parcels.geometry.buffer(-inset)
    shapes = [(g, i) for i, g in enumerate(inner) if not g.is_empty]
    return features.rasterize(shapes, out_shape=(profile["height"], profile["width"]),
                              transform=profile["transform"], fill=-1, dtype="int32")
