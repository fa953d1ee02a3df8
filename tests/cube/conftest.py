"""Fixtures of the read-side tests: the tiny region's parcels, and one parcel to look at; a day of one and a day
of two Sentinel-1 passes of ``two_pass_cube`` (tests/conftest.py); a register of three fields (``FIELDS``) to read
parcels from; an extraction's parameters and hand-made cube versions for the tests of its manifest and files."""

from __future__ import annotations

from dataclasses import replace

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box

from cardcube.spec import cube_spec
from cube.ledger import Acquisition, CubeVersion, SceneRecord, TileState

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


# An extraction's parameters and hand-made cube versions, for the tests of its manifest and files without a cube
PARAMETERS = {"cube": "memory://cube", "collection": "s2", "version": 1, "bands": ["B04"], "block": 256}


def _version(number: int, scenes: list[str]) -> CubeVersion:
    acqs = tuple(Acquisition(f"2024-05-0{i + 1}T10:50:31Z", sid, "sentinel-2a", 8, "descending")
                 for i, sid in enumerate(scenes))
    return replace(CubeVersion.empty(cube_spec("s2")), version=number, tiles={"31UFU": TileState("31UFU", cold=acqs)})


def _recorded(version: CubeVersion, **versions: int) -> CubeVersion:
    """``version`` with a record of each of its scenes, written by version 1 but those given (``S2A_2=3``)."""
    acqs = [a for state in version.tiles.values() for a in state.acquisitions]
    return replace(version, scenes={a.scene_id: SceneRecord(a.scene_id, "31UFU", a.time, versions.get(a.scene_id, 1))
                                    for a in acqs})
