"""Fixtures of the read-side tests: the tiny region's parcels, and one parcel to look at; a day of one and a day
of two Sentinel-1 passes of ``two_pass_cube`` (tests/conftest.py); a register of three fields (``FIELDS``) to read
parcels from."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box

UTM = "EPSG:32631"
# Three fields near Lelystad (NL), lon/lat, about 200 m x 150 m each, the last one an L shape.
FIELDS = {
    "NL-001": box(5.4000, 52.5000, 5.4030, 52.5014),
    "NL-002": box(5.4030, 52.5000, 5.4060, 52.5014),
    "NL-003": Polygon([(5.4000, 52.5014), (5.4060, 52.5014), (5.4060, 52.5030), (5.4045, 52.5030),
                       (5.4045, 52.5020), (5.4000, 52.5020)]),
}


@pytest.fixture
def register() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"parcel_id": list(FIELDS), "crop": ["wheat", "maize", "grass"]},
                            geometry=list(FIELDS.values()), crs="EPSG:4326")


@pytest.fixture(scope="module")
def parcels(tiny_region) -> gpd.GeoDataFrame:
    return gpd.read_parquet(tiny_region.parcels)


@pytest.fixture(scope="module")
def parcel_id(parcels) -> str:
    """A large parcel (the fifth largest): big enough for chips, series and the markers."""
    return parcels.sort_values("area_ha").parcel_id.iloc[-5]


@pytest.fixture(scope="session")
def two_pass_days(two_pass_cube) -> tuple[str, list[tuple[str, str]]]:
    """A day of one acquisition, and a day of two with each acquisition's time and orbit direction, from the
    ledger."""
    from cardcube.storage import open_store
    from cube.ledger import read_version

    (state,) = read_version(open_store(two_pass_cube), "s1").tiles.values()
    days: dict[str, list[tuple[str, str]]] = {}
    for a in state.acquisitions:
        days.setdefault(a.time[:10], []).append((a.time, a.orbit_state))
    single = next(day for day, acqs in days.items() if len(acqs) == 1)
    double = next(day for day, acqs in days.items() if len(acqs) == 2)
    return single, sorted(days[double])
