"""Session fixtures of the synth tests: the tiny region's Sentinel-2 stack, parcels and ground truth."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from tests.synth.readers import S2Stack, interior_index, load_items, read_band, reflectance


@pytest.fixture(scope="session")
def s2_stack(tiny_region) -> S2Stack:
    items = [i for i in load_items(tiny_region) if i["collection"] == "sentinel-2-l2a"]
    parcels = gpd.read_parquet(tiny_region.parcels)
    red, nir, blue, scl = [], [], [], []
    profile = None
    for item in items:
        r, profile = read_band(tiny_region, item, "B04")
        red.append(reflectance(r))
        nir.append(reflectance(read_band(tiny_region, item, "B08")[0]))
        blue.append(reflectance(read_band(tiny_region, item, "B02")[0]))
        s = read_band(tiny_region, item, "SCL")[0]
        scl.append(np.repeat(np.repeat(s, 2, axis=0), 2, axis=1))
    dates = [pd.Timestamp(i["properties"]["datetime"]).date() for i in items]
    return S2Stack(dates, items, np.array(red), np.array(nir), np.array(blue), np.array(scl),
                   interior_index(parcels, profile))


@pytest.fixture(scope="session")
def parcels(tiny_region) -> gpd.GeoDataFrame:
    return gpd.read_parquet(tiny_region.parcels)


@pytest.fixture(scope="session")
def truth(tiny_region) -> pd.DataFrame:
    return pd.read_parquet(tiny_region.ground_truth)
