"""Fixtures of the read-side tests: the tiny region's parcels, and one parcel to look at; a region whose
Sentinel-1 passes twice on some days."""

from __future__ import annotations

import datetime as dt

import geopandas as gpd
import pytest

from cardcube.synth import SynthConfig, SynthResult, generate


@pytest.fixture(scope="module")
def parcels(tiny_region) -> gpd.GeoDataFrame:
    return gpd.read_parquet(tiny_region.parcels)


@pytest.fixture(scope="module")
def parcel_id(parcels) -> str:
    """A large parcel (the fifth largest): big enough for chips, series and the markers."""
    return parcels.sort_values("area_ha").parcel_id.iloc[-5]


@pytest.fixture(scope="session")
def two_pass_region(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """Three weeks of Sentinel-1 alone, each orbit every 3 days (the synthetic descending pass at dawn from the
    first day, the ascending one at dusk from the fourth): from May 4 on, two acquisitions a day, as two real
    tracks' cycles meet on some days."""
    return generate(tmp_path_factory.mktemp("two-pass"),
                    SynthConfig.tiny(s2=False, s1_revisit_days=3, end=dt.date(2024, 5, 20)))


@pytest.fixture(scope="session")
def two_pass_cube(two_pass_region: SynthResult, tmp_path_factory: pytest.TempPathFactory):
    """``two_pass_region`` ingested into a folder cube of its S1 collection; returns its root path."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS

    root = tmp_path_factory.mktemp("two-pass-cube")
    ingest(two_pass_region.items, root, collection="s1", chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    return root


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
