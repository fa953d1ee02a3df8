"""Fixtures of the read-side tests: the tiny region's parcels, and one parcel to look at."""

from __future__ import annotations

import geopandas as gpd
import pytest


@pytest.fixture(scope="module")
def parcels(tiny_region) -> gpd.GeoDataFrame:
    return gpd.read_parquet(tiny_region.parcels)


@pytest.fixture(scope="module")
def parcel_id(parcels) -> str:
    """A large parcel (the fifth largest): big enough for chips, series and the markers."""
    return parcels.sort_values("area_ha").parcel_id.iloc[-5]
