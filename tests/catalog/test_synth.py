"""End to end on the shared synthetic straddle region: s2 and s1 cubes under one root, parcels routed."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import pystac
import pytest

from cardcube.spec import ChunkLayout
from catalog.route import find_tiles
from catalog.validate import validate_catalog
from ingest.job import ingest
from tests.catalog.conftest import SCHEMA_DIR
from tests.conftest import TEST_CHUNKS

pytestmark = pytest.mark.slow
FU_EAST_EDGE = 709_800.0  # 31UFU ends here; 31UGU starts at 699 960, so west of the edge is in both


@pytest.fixture(scope="module")
def synth_cube(tmp_path_factory, tiny_straddle_region, tiny_straddle_cube):
    """The session's straddle cube (its S2 scenes, version 1) with the S1 scenes added, in a copy."""
    cube = Path(shutil.copytree(tiny_straddle_cube, tmp_path_factory.mktemp("synth-cube") / "cube"))
    result = ingest(tiny_straddle_region.items, cube, collection="s1", progress=False,
                    chunks=ChunkLayout.parse(TEST_CHUNKS))
    assert result.ok and result.version == 1, result.summary()
    return cube


def test_both_cube_collections_share_the_root(synth_cube):
    root = pystac.Catalog.from_file(str(synth_cube / "catalog.json"))
    assert sorted(c.id for c in root.get_children()) == [
        "sentinel-1-card-bs", "sentinel-1-card-bs-cube", "sentinel-2-l2a", "sentinel-2-l2a-cube"]
    assert sorted(i.id for i in root.get_items(recursive=True)) == ["s1-31UFU", "s1-31UGU", "s2-31UFU", "s2-31UGU"]
    s1 = pystac.Item.from_file(str(synth_cube / "s1" / "31UFU" / "s1-31UFU.json"))
    assert set(s1.properties["cube:variables"]) >= {"VV", "VH"}
    assert s1.properties["cube:variables"]["VV"]["nodata"] == "nan" and s1.properties["constellation"] == "sentinel-1"
    checked = validate_catalog(synth_cube, extension_dir=SCHEMA_DIR)
    assert len(checked) == 9


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_every_parcel_routes_to_the_tiles_it_overlaps(synth_cube, tiny_straddle_region, collection):
    parcels = gpd.read_parquet(tiny_straddle_region.parcels)
    crossing = parcels[(parcels.bounds.minx < FU_EAST_EDGE) & (parcels.bounds.maxx > FU_EAST_EDGE)]
    east = parcels[parcels.bounds.minx > FU_EAST_EDGE]
    assert len(crossing) and len(east)
    sample = [*crossing.geometry[:5], *east.geometry[:5], *parcels.geometry[:5]]
    for geom in sample:
        expected = ["31UFU", "31UGU"] if geom.bounds[0] < FU_EAST_EDGE else ["31UGU"]
        assert [r.tile for r in find_tiles(synth_cube, collection, geometry=geom, crs=parcels.crs)] == expected
    wgs = parcels.to_crs("EPSG:4326")
    assert [r.tile for r in find_tiles(synth_cube, collection, geometry=wgs.geometry[crossing.index[0]])] == [
        "31UFU", "31UGU"]
