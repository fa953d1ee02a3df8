"""Routing: parcels and boxes to the tiles that hold them, by reading the static catalog only."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from odc.geo.geom import Geometry
from shapely.geometry import Point, Polygon, box, mapping
from zarr.storage import MemoryStore

from cardcube.counting_store import CountingStore
from cardcube.errors import CubeNotFoundError, InvalidRequestError
from cardcube.grid import TileGrid
from cardcube.storage import open_store
from catalog.io import StoreStacIO
from catalog.route import ItemCache, find_tiles, tile_refs
from catalog.write import build_catalog, write_catalog
from cube.ledger import read_version
from tests.catalog.conftest import hand_version

UTM = "EPSG:32631"
IN_FU = box(650_000, 5_850_000, 650_100, 5_850_080)  # 31UFU only
STRADDLE = box(705_000, 5_850_000, 705_120, 5_850_100)  # in the 9.84 km overlap of 31UFU and 31UGU
IN_GU = box(750_000, 5_850_000, 750_100, 5_850_100)  # 31UGU only
OUTSIDE = box(900_000, 5_850_000, 900_100, 5_850_100)  # east of both


def wgs84(geom):
    return Geometry(geom, UTM).to_crs("EPSG:4326").geom


@pytest.fixture
def memory_cube():
    """A catalog of two tiles with different dates, in memory: 31UFU April, 31UGU May-June."""
    version = hand_version(tiles={
        "31UFU": ["2024-04-01T10:50:31Z", "2024-04-11T10:50:31Z", "2024-04-21T10:50:31Z"],
        "31UGU": ["2024-05-05T10:50:31Z", "2024-06-30T10:50:31Z"],
    })
    store = MemoryStore()
    io = StoreStacIO(store)
    build_catalog(version, io=io).save(io)
    return store


def ids(refs):
    return [r.tile for r in refs]


def test_parcels_route_to_their_tiles(base_cube):
    assert ids(find_tiles(base_cube, "s2", geometry=IN_FU, crs=UTM)) == ["31UFU"]
    assert ids(find_tiles(base_cube, "s2", geometry=IN_GU, crs=UTM)) == ["31UGU"]
    assert ids(find_tiles(base_cube, "s2", geometry=STRADDLE, crs=UTM)) == ["31UFU", "31UGU"]
    assert find_tiles(base_cube, "s2", geometry=OUTSIDE, crs=UTM) == []


def test_geometry_in_any_crs_and_forms(base_cube):
    assert ids(find_tiles(base_cube, "s2", geometry=wgs84(STRADDLE))) == ["31UFU", "31UGU"]  # default WGS84
    assert ids(find_tiles(base_cube, "s2", geometry=mapping(wgs84(IN_GU)), crs="EPSG:4326")) == ["31UGU"]
    assert ids(find_tiles(base_cube, "s2", geometry=Geometry(IN_FU, UTM).to_crs("EPSG:3035"))) == ["31UFU"]
    assert ids(find_tiles(base_cube, "s2", bbox=STRADDLE.bounds, crs=UTM)) == ["31UFU", "31UGU"]
    assert ids(find_tiles(base_cube, "s2", geometry=Point(650_000, 5_850_000), crs=UTM)) == ["31UFU"]
    assert ids(find_tiles(base_cube, "s2")) == ["31UFU", "31UGU"]


def test_exact_footprint_not_the_wgs84_bbox(base_cube):
    """A point in 31UGU's WGS84 bbox but west of its UTM square (north, where the edge leans east) is not routed."""
    square = TileGrid.from_id("31UGU").geobox(10).extent.to_crs("EPSG:4326").boundingbox
    west = Geometry(Point(699_000, 5_899_000), UTM).to_crs("EPSG:4326").geom
    assert square.left < west.x < square.right and square.bottom < west.y < square.top
    assert ids(find_tiles(base_cube, "s2", geometry=west)) == ["31UFU"]


def test_result_objects(base_cube):
    ref = find_tiles(base_cube, "s2", geometry=IN_FU, crs=UTM)[0]
    assert ref.item_id == "s2-31UFU" and ref.zarr_path == "s2/31UFU/cube.zarr" and ref.version == 1
    assert (base_cube / ref.zarr_path / "zarr.json").exists()
    assert ref.url(str(base_cube)) == f"{base_cube}/s2/31UFU/cube.zarr"
    assert ref.crs == UTM and ref.proj_bbox == (600000.0, 5790240.0, 709800.0, 5900040.0)
    assert (ref.start, ref.end, ref.dates) == ("2024-04-01T10:50:31Z", "2024-04-11T10:50:31Z", 3)
    with pytest.raises(AttributeError):
        ref.tile = "x"  # frozen


def test_time_filtering(memory_cube):
    both = dict(geometry=STRADDLE, crs=UTM)
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-04")) == ["31UFU"]
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-06")) == ["31UGU"]
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-04-15/2024-05-05")) == ["31UFU", "31UGU"]
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-04-22/2024-05-04")) == []
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-04-21")) == ["31UFU"]  # a whole day
    assert ids(find_tiles(memory_cube, "s2", **both, time=("2024-05-01", None))) == ["31UGU"]
    assert ids(find_tiles(memory_cube, "s2", **both, time="../2024-03-31")) == []
    end = datetime(2024, 4, 21, 10, 50, 31, tzinfo=UTC)
    assert ids(find_tiles(memory_cube, "s2", **both, time=(end, end))) == ["31UFU"]
    assert ids(find_tiles(memory_cube, "s2", time=(np.datetime64("2024-06-30T10:50:31"), None))) == ["31UGU"]


@pytest.fixture
def zones_cube():
    """A catalog in memory of a tile on each side of the 6 E zone boundary: 31UGU (zone 31) and 32ULD (zone 32)."""
    version = hand_version(tiles={"31UGU": ["2024-05-05T10:50:31Z"], "32ULD": ["2024-05-05T10:50:31Z"]}, hot=0)
    store = MemoryStore()
    io = StoreStacIO(store)
    build_catalog(version, io=io).save(io)
    return store


def test_a_web_mercator_box_from_greenwich_finds_the_tiles_of_the_next_zone(zones_cube):
    """A box of Web Mercator (a web map's CRS) from the Greenwich meridian (x = 0) to 18 E: its west edge, a curve in
    UTM zone 32, was reprojected as a straight line 500 km east, and 32ULD (6 to 7.6 E) was left out."""
    assert ids(find_tiles(zones_cube, "s2", bbox=(0, -20e6, 2e6, 20e6), crs="EPSG:3857")) == ["31UGU", "32ULD"]


def test_a_web_mercator_box_of_the_world_finds_every_tile(zones_cube):
    """A web map's view of the whole world, in its Web Mercator: reprojected whole into a UTM zone it was an invalid
    polygon, and found no tile without a word; cut to the zone in lon/lat first, as a lon/lat box of the world is."""
    world = (-20_037_508, -20_000_000, 20_037_508, 20_000_000)
    assert ids(find_tiles(zones_cube, "s2", bbox=world, crs="EPSG:3857")) == ["31UGU", "32ULD"]
    assert ids(find_tiles(zones_cube, "s2", bbox=(-10e6, 5e6, 10e6, 9e6), crs="EPSG:3857")) == ["31UGU", "32ULD"]


def test_a_tile_across_the_antimeridian_is_found_on_both_sides_of_it():
    """01KAB (Fiji, UTM zone 1) reaches west over the antimeridian to 179.24 E: a box there, written as lon/lat are,
    found no tile, since the query was cut to zone 1's longitudes (180 W to 174 W, and a margin) as written."""
    version = hand_version(tiles={"01KAB": ["2024-05-05T10:50:31Z"]}, hot=0)
    store = MemoryStore()
    io = StoreStacIO(store)
    build_catalog(version, io=io).save(io)
    for bbox in ((179.5, -17.1, 179.6, -17.0), (-179.8, -17.1, -179.75, -17.0), (179.9, -17.1, -179.9, -17.0)):
        assert ids(find_tiles(store, "s2", bbox=bbox)) == ["01KAB"], bbox
    assert ids(find_tiles(store, "s2", bbox=(178.9, -17.1, 179.0, -17.0))) == []  # west of the tile
    assert ids(find_tiles(store, "s2", bbox=(-179.6, -17.1, -179.5, -17.0))) == []  # east of it


def test_bad_queries_are_clear_errors():
    with pytest.raises(InvalidRequestError, match="time"):
        find_tiles(MemoryStore(), "s2", time="spring")
    with pytest.raises(InvalidRequestError, match="either"):
        find_tiles(MemoryStore(), "s2", bbox=(0, 0, 1, 1), geometry=IN_FU)


@pytest.mark.parametrize("empty", [Polygon(), {"type": "FeatureCollection", "features": []},
                                   {"type": "MultiPolygon", "coordinates": []}], ids=["shapely", "features", "geojson"])
def test_an_empty_geometry_is_named_so(memory_cube, empty):
    """An empty geometry (no feature, no coordinates) was 'coordinates (nan, nan, nan, nan) are not lon/lat: name their
    CRS', and with a CRS named it found no tile without a word."""
    for crs in (None, UTM):
        with pytest.raises(InvalidRequestError, match="the geometry is empty"):
            find_tiles(memory_cube, "s2", geometry=empty, crs=crs)


@pytest.mark.parametrize("bad", [{"type": "Polygon"}, {"type": "Point", "coordinates": ["a", "b"]},
                                 {"type": "Hexagon", "coordinates": [1, 2]}, [5.8, 52.7], "5.8,52.7"],
                         ids=["no-coordinates", "text-coordinates", "unknown-type", "list", "text"])
def test_a_geometry_that_is_no_geojson_is_named_so(memory_cube, bad):
    """GeoJSON that is none (a Polygon without coordinates, a pair of numbers, a text) failed with shapely's
    KeyError, ValueError, GeometryTypeError or AttributeError; and a Feature whose geometry is null (valid GeoJSON)
    with AttributeError 'NoneType' object has no attribute 'get'. One is an input error saying so; the other empty."""
    with pytest.raises(InvalidRequestError, match="is no GeoJSON geometry, Feature or FeatureCollection"):
        find_tiles(memory_cube, "s2", geometry=bad)
    with pytest.raises(InvalidRequestError, match="the geometry is empty"):
        find_tiles(memory_cube, "s2", geometry={"type": "Feature", "properties": {}, "geometry": None})
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(STRADDLE)}
    assert [r.tile for r in find_tiles(memory_cube, "s2", geometry=feature, crs=UTM)] == ["31UFU", "31UGU"]


def test_reads_only_the_collection_when_warm(memory_cube):
    """The caller's cache keeps the parsed items: a warm call reads the collection document alone."""
    counting, cache = CountingStore(memory_cube), ItemCache()
    everything = ["s2/31UFU/s2-31UFU.json", "s2/31UGU/s2-31UGU.json", "s2/collection.json"]
    find_tiles(counting, "s2", geometry=STRADDLE, crs=UTM, cache=cache)
    assert sorted(counting.keys_read) == everything
    counting.reset()
    assert ids(find_tiles(counting, "s2", geometry=IN_FU, crs=UTM, cache=cache)) == ["31UFU"]
    assert counting.keys_read == ["s2/collection.json"]
    counting.reset()
    find_tiles(counting, "s2", geometry=IN_FU, crs=UTM)  # no cache: no state kept between calls
    assert sorted(counting.keys_read) == everything


class _InFlight(CountingStore):
    """Counts the GETs waiting on the store at once (each held a moment, as a request over a network is)."""

    now = peak = 0

    async def get(self, key, prototype, byte_range=None):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.05)
            return await super().get(key, prototype, byte_range)
        finally:
            self.now -= 1


def test_the_items_are_requested_all_at_once(memory_cube):
    """A cold routing call asks for every tile item at once (on S3: one round trip, not one per tile)."""
    store = _InFlight(memory_cube)
    assert ids(tile_refs(store, "s2")) == ["31UFU", "31UGU"]
    assert store.peak == 2 and store.requests["get"] == 3  # the collection first, then both items together


def test_new_version_is_seen(cube, tmp_path):
    cache = ItemCache()
    assert {r.version for r in tile_refs(cube, "s2", cache=cache)} == {1}
    store = open_store(cube)
    from cube.ledger import read_version

    v1 = read_version(store, "s2")
    later = {t: type(s)(t, s.cold, s.hot, s.hot_slots_used) for t, s in v1.tiles.items()}
    v2 = type(v1)("s2", 2, v1.spec, {"31UFU": later["31UFU"]}, v1.scenes, created=v1.created)
    write_catalog(store, v2)  # a version that changed the data: the catalog follows, cache or not
    assert {r.version for r in tile_refs(cube, "s2", cache=cache)} == {2}


def test_items_written_before_they_left_the_version_to_the_collection_route_as_before(tmp_path):
    """Until 2026-12-06 each item named the version and its commit time, so every version rewrote every item; the
    collection names them alone now, and a catalog of items naming them is routed as before (the collection's
    version), until the next version writes its items without them."""
    import dataclasses
    import json

    store, cache = open_store(str(tmp_path / "cube")), ItemCache()
    first = hand_version(tiles={"31UFU": ["2024-04-01T10:50:31Z"], "31UGU": ["2024-05-05T10:50:31Z"]}, version=1)
    write_catalog(store, first)
    items = {t: tmp_path / "cube" / "s2" / t / f"s2-{t}.json" for t in ("31UFU", "31UGU")}
    for path in items.values():  # as a cardcube of before wrote them
        doc = json.loads(path.read_text())
        doc["properties"] |= {"cardcube:version": 1, "updated": first.created}
        path.write_text(json.dumps(doc, indent=2))
    refs = tile_refs(store, "s2", cache=cache)
    assert [(r.tile, r.version, r.dates) for r in refs] == [("31UFU", 1, 1), ("31UGU", 1, 1)]
    assert ids(find_tiles(store, "s2", geometry=STRADDLE, crs=UTM, time="2024-05-05")) == ["31UGU"]
    write_catalog(store, dataclasses.replace(first, version=2, created="2024-06-02T00:00:00.000000Z"), force=True)
    assert {r.version for r in tile_refs(store, "s2", cache=cache)} == {2}
    assert not any("cardcube:version" in json.loads(p.read_text())["properties"] for p in items.values())


def test_a_cube_built_again_at_the_same_place_is_seen_through_the_cache(tmp_path):
    """A cube wiped and built again numbers its versions anew: version 3 of the new cube was served from the cache
    as the old cube's version 3 (its items, its dates)."""
    import dataclasses
    from datetime import timedelta

    from tests.catalog.conftest import T0, iso

    store, cache = open_store(str(tmp_path / "cube")), ItemCache()
    old = hand_version(version=3)
    write_catalog(store, old)
    before = tile_refs(store, "s2", cache=cache)
    new = dataclasses.replace(hand_version(tiles={"31UFU": [iso(T0 + timedelta(days=d)) for d in (1, 2)]},
                                           version=3), created="2024-07-01T00:00:00.000000Z")
    write_catalog(store, new, force=True)
    after = tile_refs(store, "s2", cache=cache)
    assert before[0].version == after[0].version == 3
    assert after[0].dates == 2 and before[0].dates == 4  # the new cube's items, not the cached ones


def test_an_item_read_while_a_version_is_written_is_not_kept_under_the_digest_it_no_longer_has(tmp_path):
    """An item is cached by the digest its collection's link gives (a new version reads only the items it changed).
    A reader between a writer's items and its collection reads the old collection and a new item: kept under the old
    digest, it was served again for a later catalog naming that digest (a cube built again at the same place, its
    item as the old one's byte for byte), with the other version's dates."""
    import dataclasses

    from cardcube.storage import read_bytes, write_bytes

    store, cache = open_store(str(tmp_path / "cube")), ItemCache()
    first = hand_version(tiles={"31UFU": ["2024-04-01T10:50:31Z"]}, version=1)
    grown = hand_version(tiles={"31UFU": ["2024-04-01T10:50:31Z", "2024-05-01T10:50:31Z"]}, version=2)
    write_catalog(store, first)
    old_collection = read_bytes(store, "s2/collection.json")
    write_catalog(store, dataclasses.replace(grown, created="2024-06-02T00:00:00.000000Z"))
    write_bytes(store, "s2/collection.json", old_collection)  # as the reader saw it: the new item, the old collection
    assert [r.dates for r in tile_refs(store, "s2", cache=cache)] == [2]  # what it read
    write_catalog(store, first, force=True)  # the cube wiped and built again: version 1's item, byte for byte
    assert [(r.version, r.dates) for r in tile_refs(store, "s2", cache=cache)] == [(1, 1)]


def test_a_time_range_between_two_dates_of_a_tile_does_not_find_it(memory_cube):
    """A tile's item gave its first and last date only, so a range between two of them found the tile, which then
    gave no date of it. An item without the dates (a catalog of a cardcube before them) still routes by the span."""
    import json

    from cardcube.storage import read_json, write_bytes

    both = dict(geometry=STRADDLE, crs=UTM)
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-04-12/2024-04-20")) == []  # between 31UFU's dates
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-05-06/2024-06-29")) == []  # between 31UGU's
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-04-11")) == ["31UFU"]
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-06-15/2024-07")) == ["31UGU"]
    (ref,) = find_tiles(memory_cube, "s2", geometry=IN_GU, crs=UTM)
    assert ref.times == (np.datetime64("2024-05-05T10:50:31"), np.datetime64("2024-06-30T10:50:31"))
    key = "s2/31UGU/s2-31UGU.json"
    doc = read_json(memory_cube, key)
    del doc["properties"]["cube:dimensions"]["time"]["values"]
    write_bytes(memory_cube, key, json.dumps(doc).encode())
    assert ids(find_tiles(memory_cube, "s2", **both, time="2024-05-06/2024-06-29")) == ["31UGU"]


def test_a_pass_is_found_on_every_tile_by_the_time_a_read_across_them_gives_it():
    """31UGU's product of each pass 4 s after 31UFU's (real granules' own sensing times), the second pass across
    midnight UTC. A read across the two takes each pass as one date at its earliest time, and open_cube of that time
    reads it on both tiles: the catalog found 31UFU alone by that time, and by the day before midnight. A tile's own
    time still finds it; a tile found alone (its square alone meets the area) goes by its own times."""
    version = hand_version(tiles={"31UFU": ["2024-05-02T10:50:31Z", "2024-05-06T23:59:58Z"],
                                  "31UGU": ["2024-05-02T10:50:35Z", "2024-05-07T00:00:03Z"]})
    store = MemoryStore()
    io = StoreStacIO(store)
    build_catalog(version, io=io).save(io)
    both = dict(geometry=STRADDLE, crs=UTM)
    assert ids(find_tiles(store, "s2", **both, time="2024-05-02T10:50:31Z")) == ["31UFU", "31UGU"]
    assert ids(find_tiles(store, "s2", **both, time="2024-05-02T10:50:35Z")) == ["31UGU"]  # its own time
    assert ids(find_tiles(store, "s2", **both, time="2024-05-06")) == ["31UFU", "31UGU"]
    assert ids(find_tiles(store, "s2", **both, time="2024-05-07")) == ["31UGU"]  # its own time, that day
    assert ids(find_tiles(store, "s2", **both, time="2024-05-03/2024-05-05")) == []
    assert ids(find_tiles(store, "s2", geometry=IN_GU, crs=UTM, time="2024-05-02T10:50:31Z")) == []
    assert ids(find_tiles(store, "s2", geometry=IN_GU, crs=UTM, time="2024-05-06")) == []


def test_missing_catalog(tmp_path, cube):
    with pytest.raises(CubeNotFoundError, match=r"no cube at memory://.*: no committed version of s2 or s1"):
        find_tiles(MemoryStore(), "s2")
    # a collection the cube does not hold: "catalog build writes it" sent the user to a command that failed too
    with pytest.raises(CubeNotFoundError, match=r"holds no 's1' collection \(no committed version\); it holds s2$"):
        find_tiles(cube, "s1")
    item = next((cube / "s2").glob("*/s2-*.json"))  # an item lost: the same repair, said as for a damaged one
    item.rename(item.with_suffix(".kept"))
    with pytest.raises(CubeNotFoundError, match=r"s2-31UFU.json linked from s2/collection.json is missing in .*: "
                       r"'cardcube catalog build' writes it anew$"):
        find_tiles(cube, "s2")
    item.with_suffix(".kept").rename(item)
    (cube / "s2" / "collection.json").unlink()  # one it holds: the catalog build that repairs it
    with pytest.raises(CubeNotFoundError, match=r"s2/collection.json is missing; 'cardcube catalog build' writes it"):
        find_tiles(cube, "s2")


@pytest.mark.parametrize("name", ["S1", "sentinel-1-card-bs-cube", "../../other/s1"])
def test_an_unknown_collection_is_named_so_before_any_read(name):
    """A typo or the STAC id got "...collection.json is missing; 'cardcube catalog build' writes it", and a path
    read a collection outside the cube."""
    store = CountingStore(MemoryStore())
    for call in (find_tiles, tile_refs):
        with pytest.raises(InvalidRequestError, match=rf"unknown cube collection '{re.escape(name)}'; known: s2, s1"):
            call(store, name)
    assert store.keys_read == []


def test_a_damaged_catalog_document_is_a_clear_error_saying_what_repairs_it(cube):
    """A collection document holding ``[]`` was an AttributeError, an item without ``proj:bbox`` a KeyError."""
    import json

    from cardcube.errors import CorruptDocumentError

    item = cube / "s2" / "31UFU" / "s2-31UFU.json"
    doc = json.loads(item.read_text())
    del doc["properties"]["proj:bbox"]
    item.write_text(json.dumps(doc))
    with pytest.raises(CorruptDocumentError, match=r"s2-31UFU.json .*lacks what routing reads \(KeyError: "
                                                   r"'proj:bbox'\): 'cardcube catalog build' writes it anew"):
        find_tiles(cube, "s2")
    for damaged in ("[]", "{}"):  # "{}" listed no tile: "no tile matches", exit 0
        (cube / "s2" / "collection.json").write_text(damaged)
        with pytest.raises(CorruptDocumentError, match="is no STAC collection"):
            find_tiles(cube, "s2")
    write_catalog(cube, read_version(open_store(cube), "s2"), force=True)  # the repair, which a "{}" made fail
    assert ids(find_tiles(cube, "s2"))
    from cube.dataset import open_cube  # the catalog routes, the ledger holds the truth: reads go on without it

    assert open_cube(cube, "s2", bbox=(700_000, 5_849_800, 700_200, 5_850_000), bands=["B04"]).sizes["time"] > 0


@pytest.mark.parametrize("field", ["cardcube:version", "updated"])
def test_a_collection_version_edited_into_a_list_is_the_collections_damage(cube, field):
    """The collection's version and commit time key the caller's item cache: one edited into a list was a TypeError
    (unhashable type) out of tile_refs and open_cube, which reads on from the ledger when the catalog is damaged."""
    import json

    from cardcube.errors import CorruptDocumentError
    from cube.dataset import open_cube

    path = cube / "s2" / "collection.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: [1]}))
    with pytest.raises(CorruptDocumentError, match="'cardcube catalog build' writes it anew"):
        tile_refs(cube, "s2", cache=ItemCache())
    ds = open_cube(cube, "s2", bbox=(700_000, 5_849_800, 700_200, 5_850_000), bands=["B04"], item_cache=ItemCache())
    assert ds.sizes["time"] > 0


@pytest.mark.parametrize(("field", "value"), [("proj:bbox", [1, 2, 3]), ("proj:bbox", ["a", "b", "c", "d"]),
                                              ("proj:code", "EPSG:999999"), ("proj:code", None)])
def test_an_item_square_or_crs_edited_into_none_is_the_items_fault(cube, field, value):
    """A tile's square and CRS were first used to test the query against, outside the item's checks: an item whose
    proj:bbox or proj:code was edited into none made catalog find and open_cube fail with a traceback (TypeError,
    ValueError, pyproj's CRSError), where a damaged item is a CorruptDocumentError and open_cube reads on."""
    import json

    from cardcube.errors import CorruptDocumentError
    from cube.dataset import open_cube

    path = cube / "s2" / "31UFU" / "s2-31UFU.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "properties": {**doc["properties"], field: value}}))
    with pytest.raises(CorruptDocumentError, match=r"s2-31UFU\.json .*lacks what routing reads"):
        find_tiles(cube, "s2", bbox=(700_000, 5_849_800, 700_200, 5_850_000), crs=UTM)
    assert open_cube(cube, "s2", bbox=(700_000, 5_849_800, 700_200, 5_850_000), bands=["B04"]).sizes["time"] > 0


@pytest.mark.parametrize("end", [None, "19/05/2024"])
def test_an_item_time_edited_into_no_time_is_the_items_fault(cube, end, capsys, caplog):
    """An ``end_datetime`` of null or no ISO 8601 was parsed at each query, outside the item's checks: find and
    ``catalog find`` crashed (AttributeError, ValueError), and open_cube did too instead of reading without it."""
    import json
    import logging

    from cardcube.cli import main
    from cardcube.errors import CorruptDocumentError
    from cube.dataset import open_cube

    item = cube / "s2" / "31UFU" / "s2-31UFU.json"
    doc = json.loads(item.read_text())
    doc["properties"]["end_datetime"] = end
    item.write_text(json.dumps(doc))
    with pytest.raises(CorruptDocumentError, match=r"s2-31UFU.json .*lacks what routing reads \((Attribute|Value)"):
        find_tiles(cube, "s2")
    assert main(["catalog", "find", "--cube", str(cube)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("cardcube catalog find: error: catalog item s2/31UFU/s2-31UFU.json")
    with caplog.at_level(logging.WARNING):
        read = open_cube(cube, "s2", bbox=(700_000, 5_849_800, 700_200, 5_850_000), crs=UTM, bands=["B04"])
    assert read.sizes["time"] == 3 and "reading without it" in caplog.text


def test_absolute_item_hrefs_route_as_relative_ones(cube):
    """Item links written as absolute hrefs (valid STAC, as a publisher normalising a catalog writes them) were
    read as relative ones: "item ... is missing", and open_cube read every tile instead."""
    import json

    before = ids(find_tiles(cube, "s2", bbox=(6.0, 52.6, 6.2, 52.8)))
    path = cube / "s2" / "collection.json"
    doc = json.loads(path.read_text())
    for link in doc["links"]:
        if link["rel"] == "item":
            link["href"] = str((path.parent / link["href"]).resolve())
    path.write_text(json.dumps(doc))
    assert before and ids(find_tiles(cube, "s2", bbox=(6.0, 52.6, 6.2, 52.8))) == before


def test_an_absolute_data_asset_href_gives_the_tiles_zarr_path(cube):
    """An absolute ``data`` href was joined to the item's folder: ``s2/31UFU//abs/.../cube.zarr``."""
    import json

    from cardcube.errors import CorruptDocumentError

    item = cube / "s2" / "31UFU" / "s2-31UFU.json"
    doc = json.loads(item.read_text())
    doc["assets"]["data"]["href"] = str(item.parent / "cube.zarr")
    item.write_text(json.dumps(doc))
    ref = find_tiles(cube, "s2", geometry=IN_FU, crs=UTM)[0]
    assert ref.zarr_path == "s2/31UFU/cube.zarr" and (cube / ref.zarr_path / "zarr.json").exists()
    for outside in (str(cube.parent / "elsewhere" / "cube.zarr"), "../../../elsewhere/cube.zarr"):
        doc["assets"]["data"]["href"] = outside
        item.write_text(json.dumps(doc))
        with pytest.raises(CorruptDocumentError, match=r"s2-31UFU.json .*catalog href .*elsewhere/cube.zarr is "
                                                       r"outside the cube .*`cardcube catalog build --cube "):
            find_tiles(cube, "s2")
    from catalog.write import rebuild_catalog  # the repair the error names

    rebuild_catalog(open_store(str(cube)))
    assert find_tiles(cube, "s2", geometry=IN_FU, crs=UTM)[0].zarr_path == "s2/31UFU/cube.zarr"


def test_coordinates_that_are_no_lonlat_are_a_clear_error(base_cube, capsys):
    """A UTM box given without its CRS would route to nothing, silently: it is an error naming ``crs``."""
    with pytest.raises(InvalidRequestError, match=r"not lon/lat.*crs="):
        find_tiles(base_cube, "s2", bbox=STRADDLE.bounds)
    with pytest.raises(InvalidRequestError, match="not lon/lat"):
        find_tiles(base_cube, "s2", geometry=IN_FU, crs="EPSG:4326")
    assert ids(find_tiles(base_cube, "s2", bbox=(-180, -90, 180, 90))) == ["31UFU", "31UGU"]  # the world
    # across the antimeridian, as STAC writes it (minx > maxx): from 5 E east to 170 W; was refused
    assert ids(find_tiles(base_cube, "s2", bbox=(5.0, 52.0, -170.0, 53.5))) == ["31UFU", "31UGU"]
    assert ids(find_tiles(base_cube, "s2", bbox=(170.0, 52.0, -170.0, 53.5))) == []
    from cardcube.cli import main

    assert main(["catalog", "find", "--cube", str(base_cube), "--bbox", "705000,5850000,705100,5850100"]) == 2
    assert "--crs" in capsys.readouterr().err


def test_open_cube_routes_a_geometry_in_its_own_crs(base_cube):
    """An ``odc.geo`` Geometry keeps its CRS when no ``crs`` is given, in routing as in the read itself."""
    from cube.dataset import open_cube

    window = Geometry(box(700_020, 5_849_700, 700_200, 5_849_900), UTM)  # where the tiny cube holds data
    expected = open_cube(base_cube, "s2", geometry=window, bands=["B04"])
    lonlat = open_cube(base_cube, "s2", geometry=window.to_crs("EPSG:4326"), bands=["B04"])
    assert lonlat.sizes["time"] == expected.sizes["time"] == 3 and lonlat.sizes["x"] >= expected.sizes["x"] > 0


def test_open_cube_routes_through_the_callers_item_cache(base_cube):
    """``open_cube(..., item_cache=)``: a second query of the same caller reads no catalog item again."""
    from cube.dataset import open_cube

    store, cache = CountingStore(open_store(base_cube, read_only=True)), ItemCache()
    window = (700_020, 5_849_700, 700_200, 5_849_900)
    item_keys = {"s2/31UFU/s2-31UFU.json", "s2/31UGU/s2-31UGU.json"}
    items = lambda: [k for k in store.keys_read if k in item_keys]  # noqa: E731
    open_cube(store, "s2", bbox=window, crs=UTM, bands=["B04"], item_cache=cache)
    assert items() and len(cache) == 2
    store.reset()
    open_cube(store, "s2", bbox=window, crs=UTM, bands=["B04"], item_cache=cache)
    assert items() == [] and "s2/collection.json" in store.keys_read
