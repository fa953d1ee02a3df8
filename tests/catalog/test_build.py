"""Builders: pystac objects from hand-made ledger versions, valid against the offline STAC schemas."""

from __future__ import annotations

import copy
from dataclasses import replace

import pystac
import pytest
import shapely
from odc.geo.geom import Geometry
from shapely.geometry import box, shape
from zarr.storage import MemoryStore

from cardcube.errors import SchemaUnavailableError
from cardcube.grid import TileGrid
from cardcube.spec import S1_BACKSCATTER, S2_L2A
from catalog import keys
from catalog.build import build_cube_collection, build_tile_item, dimension_names
from catalog.io import StoreStacIO
from catalog.validate import validate_document, walk_documents
from catalog.write import build_catalog
from cube.ledger import footprint_record
from tests.catalog.conftest import T0, hand_version, iso

PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
DATACUBE = "https://stac-extensions.github.io/datacube/v2.3.0/schema.json"  # variables' nodata, data_type
DATACUBE_V22 = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"  # pystac's default


def test_tile_item_describes_the_tile_zarr():
    version = hand_version()
    item = build_tile_item(version, "31UFU")
    assert item.id == keys.item_id("s2", "31UFU") == "s2-31UFU"
    data = item.assets["data"]
    assert data.href == "./cube.zarr" and data.media_type == "application/vnd+zarr" and data.roles == ["data"]
    props = item.properties
    assert props["cardcube:dates"] == 4 and props["cardcube:hot_dates"] == 1
    assert "cardcube:version" not in props and "updated" not in props  # the collection's: see below
    assert props["start_datetime"] == iso(T0) and props["end_datetime"] == "2024-04-16T10:50:31Z"
    assert item.datetime is None


def test_projection_per_resolution():
    item = build_tile_item(hand_version(), "31UFU")
    props = item.properties
    assert props["proj:code"] == "EPSG:32631"
    assert props["proj:bbox"] == [600000.0, 5790240.0, 709800.0, 5900040.0]
    assert props["proj:shape"] == [10980, 10980]
    assert props["proj:transform"] == [10.0, 0.0, 600000.0, 0.0, -10.0, 5900040.0]
    r20 = item.assets["r20m"].extra_fields
    assert r20["proj:shape"] == [5490, 5490] and r20["proj:transform"][0] == 20.0
    assert "proj:code" not in r20  # inherited from the item


def test_datacube_dimensions_and_variables():
    props = build_tile_item(hand_version(), "31UFU").properties
    dims, variables = props["cube:dimensions"], props["cube:variables"]
    assert dims["time"]["extent"] == [iso(T0), "2024-04-16T10:50:31Z"] and dims["time"]["step"] == "P5D"
    assert dims["x"]["step"] == 10.0 and dims["x_20m"]["step"] == 20.0 and dims["y"]["reference_system"] == 32631
    assert dims["x"]["extent"] == [600005.0, 709795.0] and dims["y_20m"]["extent"] == [5790250.0, 5900030.0]
    assert variables["B04"]["dimensions"] == ["time", "y", "x"]
    assert variables["SCL"]["dimensions"] == ["time", "y_20m", "x_20m"]
    assert variables["B04"] | {"description": ""} == {
        "dimensions": ["time", "y", "x"], "type": "data", "unit": "1", "data_type": "uint16", "nodata": 0,
        "description": ""}
    assert variables["scene_id"]["type"] == "auxiliary"
    assert dimension_names(S1_BACKSCATTER, 10) == ("y", "x")


def test_irregular_time_step_is_null():
    version = hand_version(tiles={"31UFU": [iso(T0), "2024-04-03T10:50:31Z", "2024-04-10T10:50:31Z"]})
    assert build_tile_item(version, "31UFU").properties["cube:dimensions"]["time"]["step"] is None


def test_footprint_is_the_tile_in_wgs84_without_scene_windows():
    item = build_tile_item(hand_version(), "31UFU")
    footprint = shape(item.geometry)
    assert footprint.is_valid and footprint.exterior.is_ccw
    assert box(*item.bbox).contains(footprint)
    assert 4.4 < item.bbox[0] < 4.5 and 53.2 < item.bbox[3] < 53.3
    assert len(item.geometry["coordinates"][0]) > 20  # densified: the edges follow the UTM square


def test_footprint_is_where_the_tile_holds_data(validator):
    """Scenes that cover two separate 1 km squares of 31UFU: the item's geometry is those two squares in WGS84,
    not the 110 km tile (the projection extension still gives the whole tile's grid), and it validates."""
    version = hand_version()
    windows = {}
    for i, scene_id in enumerate(sorted(version.scenes)):  # rows, cols at 10 m: (10000, 1000) or (2000, 8000)
        row, col = ((10_000, 1_000), (2_000, 8_000))[i % 2]
        windows[scene_id] = replace(version.scenes[scene_id], windows={10: (row, col, 100, 100),
                                                                      20: (row // 2, col // 2, 50, 50)})
    item = build_tile_item(replace(version, scenes=windows), "31UFU")
    squares = [box(600_000 + c * 10, 5_900_040 - (r + 100) * 10, 600_000 + c * 10 + 1000, 5_900_040 - r * 10)
               for r, c in ((10_000, 1_000), (2_000, 8_000))]
    expected = Geometry(shapely.union_all(squares), "EPSG:32631").to_crs("EPSG:4326").geom
    footprint = shape(item.geometry)
    assert item.geometry["type"] == "MultiPolygon" and footprint.is_valid
    assert all(p.exterior.is_ccw for p in footprint.geoms)
    assert footprint.symmetric_difference(expected).area < 1e-3 * expected.area  # grown by cm (below)
    assert item.bbox == pytest.approx(list(expected.bounds), abs=2e-5)
    assert item.properties["proj:bbox"] == [600000.0, 5790240.0, 709800.0, 5900040.0]
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    assert validate_document(doc, validator=validator, extensions=False)


def test_footprint_follows_a_resampled_scenes_polygon_within_its_window(validator):
    """A warped scene's window holds a triangle of nodata collar (a GRD's slanted edge across it), which its record's
    polygon leaves out: the item's geometry is the window less that triangle, in WGS84, and it validates."""
    version = hand_version(tiles={"31UFU": [iso(T0)]}, hot=1)
    (scene_id,) = version.scenes
    x0, y0 = 600_000 + 1_000 * 10, 5_900_040 - 2_000 * 10  # the window's upper-left corner: row 2000, col 1000
    window = box(x0, y0 - 5_000, x0 + 5_000, y0)
    polygon = shapely.Polygon([(x0, y0), (x0 + 5_000, y0), (x0 + 5_000, y0 - 5_000), (x0 + 1_500, y0 - 5_000),
                               (x0, y0 - 2_000)])
    record = replace(version.scenes[scene_id], windows={10: (2_000, 1_000, 500, 500), 20: (1_000, 500, 250, 250)},
                     footprint=footprint_record(polygon.intersection(window)))
    item = build_tile_item(replace(version, scenes={scene_id: record}), "31UFU")
    expected = Geometry(polygon, "EPSG:32631").to_crs("EPSG:4326").geom
    footprint = shape(item.geometry)
    assert item.geometry["type"] == "Polygon" and footprint.is_valid and footprint.exterior.is_ccw
    assert footprint.symmetric_difference(expected).area < 1e-3 * expected.area  # grown by 0.7 m (below)
    assert footprint.area < 0.95 * Geometry(window, "EPSG:32631").to_crs("EPSG:4326").geom.area  # the collar: out
    assert item.bbox == pytest.approx(list(expected.bounds), abs=2e-5)
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    assert validate_document(doc, validator=validator, extensions=False)
    assert {PROJ, DATACUBE} <= set(validate_document(doc, validator=validator))


@pytest.mark.parametrize("tile, window", [("31UFU", None), ("31UFU", (4_000, 10_800, 200, 180)),
                                          ("33XWG", None), ("01KAB", None)])
def test_the_footprint_holds_every_pixel_of_the_data(tile, window):
    """Between two vertices an edge of the footprint is straight in lon/lat, where the UTM edge of the data curves: it
    cut up to 2.6 m off a whole tile at 52 N (9.5 m at 79 N, 0.1 m off a 2 km window), and a STAC search of a parcel
    at the data's edge found no item. The footprint holds the whole outline of the data now, grown by no more than a
    few metres (79 N: the outward bulge itself is that large)."""
    version = hand_version(tiles={tile: [iso(T0)]}, hot=1)
    grid = TileGrid.from_id(tile)
    if window is not None:  # a scene's window at the tile's east edge (row, col, height, width at 10 m)
        (scene_id,) = version.scenes
        row, col, h, w = window
        version = replace(version, scenes={scene_id: replace(version.scenes[scene_id], windows={
            10: window, 20: (row // 2, col // 2, h // 2, w // 2)})})
        data = box(grid.ulx + col * 10, grid.uly - (row + h) * 10, grid.ulx + (col + w) * 10, grid.uly - row * 10)
    else:
        data = box(*grid.geobox(10).extent.boundingbox.bbox)
    item = build_tile_item(version, tile)
    outline = shapely.segmentize(data.exterior, 20)  # points 20 m apart on the data's outline
    lonlat = Geometry(shapely.MultiPoint(shapely.get_coordinates(outline)), grid.crs).to_crs("EPSG:4326").geom
    footprint = shape(item.geometry)
    assert footprint.covers(lonlat)
    assert shapely.box(*item.bbox).covers(lonlat) or tile == "01KAB"  # its bbox runs across 180 (west > east)
    corners = Geometry(shapely.MultiPoint(shapely.get_coordinates(footprint)), "EPSG:4326").to_crs(grid.crs).geom
    assert shapely.distance(data, shapely.points(shapely.get_coordinates(corners))).max() < (
        4.5 if tile == "33XWG" else 1.5)  # its vertices within a few metres of the data (a cut at 180: inside)


def test_a_tile_across_the_antimeridian_is_drawn_on_both_sides_of_it(validator):
    """01KAB (Fiji, UTM zone 1) reaches from 179.24 E over the antimeridian to 179.72 W. Its footprint was one
    polygon from one side to the other, round the world the long way, and its bbox (-180, 180) spanned every
    longitude: a STAC browser drew a band round the globe, and a bbox search found it at any longitude. It is cut at
    the antimeridian (RFC 7946 3.1.9), and its bbox and its collection's run west to east across 180, as STAC has."""
    version = hand_version(tiles={"01KAB": [iso(T0)], "01KBB": [iso(T0)]})
    item, east_of_it = (build_tile_item(version, t) for t in ("01KAB", "01KBB"))
    footprint = shape(item.geometry)
    assert item.geometry["type"] == "MultiPolygon" and footprint.is_valid
    assert all(p.exterior.is_ccw for p in footprint.geoms)
    assert sum(p.bounds[2] - p.bounds[0] for p in footprint.geoms) < 1.1  # 110 km at 17 S: about 1.04 degrees
    west, south, east, north = item.bbox
    assert 179.2 < west < 179.3 and -179.8 < east < -179.7 and -17.3 < south < north < -16.2
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    assert validate_document(doc, validator=validator, extensions=False)
    union = build_cube_collection(version, [item, east_of_it]).extent.spatial.bboxes[0]
    assert union == [west, min(south, east_of_it.bbox[1]), east_of_it.bbox[2], max(north, east_of_it.bbox[3])]
    assert east < union[2] < -178


def test_collection_extent_and_metadata():
    version = hand_version(tiles={"31UFU": [iso(T0), "2024-05-01T10:50:31Z"], "31UGU": ["2024-03-01T10:50:31Z"]})
    items = [build_tile_item(version, t) for t in sorted(version.tiles)]
    coll = build_cube_collection(version, items)
    assert coll.id == "sentinel-2-l2a-cube" and coll.extra_fields["cardcube:version"] == 3
    start, end = coll.extent.temporal.intervals[0]
    assert (iso(start), iso(end)) == ("2024-03-01T10:50:31Z", "2024-05-01T10:50:31Z")
    bboxes = coll.extent.spatial.bboxes
    assert len(bboxes) == 3 and bboxes[0][0] == items[0].bbox[0] and bboxes[0][2] == items[1].bbox[2]
    assert coll.license == "other"
    assert any(link.rel == "license" and "Sentinel_Data_Legal_Notice" in link.href for link in coll.links)
    roles = {p.name: p.roles for p in coll.providers}
    assert "producer" in roles["European Space Agency (ESA)"] and "licensor" in roles["European Space Agency (ESA)"]
    assert roles["cardcube"] == ["processor", "host"]
    assert "Sentinel-2" in coll.keywords and [i.id for i in coll.get_items()] == ["s2-31UFU", "s2-31UGU"]


@pytest.mark.parametrize("spec", [S2_L2A, S1_BACKSCATTER], ids=["s2", "s1"])
def test_the_collection_defines_every_asset_its_items_have(spec):
    """A STAC browser or client learns a collection's assets from its item_assets: it defined the tile's whole group
    (data) alone, not the resolution groups (r10m, r20m) that every item has and a reader of a band opens."""
    version = replace(hand_version(), spec=spec)
    item = build_tile_item(version, "31UFU")
    defined = build_cube_collection(version, [item]).item_assets
    assert set(defined) == set(item.assets) == {"data", *(f"r{res}m" for res in spec.resolutions)}
    for key, asset in item.assets.items():
        assert (defined[key].title if key != "data" else asset.title) == asset.title
        assert (defined[key].media_type, defined[key].roles) == (asset.media_type, asset.roles)


def test_builders_are_deterministic():
    a, b = build_tile_item(hand_version(), "31UFU"), build_tile_item(hand_version(), "31UFU")
    assert a.to_dict(include_self_link=False) == b.to_dict(include_self_link=False)


def test_a_tile_item_is_the_same_in_every_version_that_leaves_the_tile_as_it_was():
    """An item named the version and its commit time (cardcube:version, updated), so every version rewrote every
    item of the cube: hundreds of PUTs an ingest of one date on one tile. An item's properties are of its tile (STAC);
    the cube-wide version and commit time are the collection's."""
    one = hand_version(tiles={"31UFU": [iso(T0)], "31UGU": [iso(T0)]}, version=3)
    grown = hand_version(tiles={"31UFU": [iso(T0), "2024-05-01T10:50:31Z"], "31UGU": [iso(T0)]}, version=4)
    two = replace(grown, created="2024-07-01T00:00:00.000000Z",
                  scenes={**one.scenes, **{k: v for k, v in grown.scenes.items() if k not in one.scenes}})
    same = [build_tile_item(v, "31UGU").to_dict(include_self_link=False) for v in (one, two)]
    assert same[0] == same[1]
    assert build_tile_item(one, "31UFU").to_dict() != build_tile_item(two, "31UFU").to_dict()
    collections = [build_cube_collection(v, []).extra_fields for v in (one, two)]
    assert [(c["cardcube:version"], c["updated"]) for c in collections] == [
        (3, "2024-06-01T00:00:00.000000Z"), (4, "2024-07-01T00:00:00.000000Z")]


@pytest.mark.parametrize("spec", [S2_L2A, S1_BACKSCATTER])
def test_documents_validate_offline(spec, validator):
    version = hand_version(tiles={"31UFU": [iso(T0)], "31UGU": [iso(T0), "2024-05-01T10:50:31Z"]})
    version = replace(version, collection=spec.name, spec=spec)
    io = StoreStacIO(MemoryStore())
    build_catalog(version, io=io).save(io)
    docs = dict(walk_documents(io.store))
    assert sorted(docs) == sorted([keys.ROOT_KEY, keys.collection_key(spec.name),
                                   keys.source_collection_key(spec.source_collection),
                                   keys.item_key(spec.name, "31UFU"), keys.item_key(spec.name, "31UGU")])
    for key, doc in docs.items():
        core_only = validate_document(doc, validator=validator, href=key, extensions=False)
        assert core_only and core_only[0].startswith("https://schemas.stacspec.org/v1.1.0/")
        checked = validate_document(doc, validator=validator, href=key)
        if doc["type"] == "Feature":
            assert {PROJ, DATACUBE} <= set(checked)


PC = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/31/U/FU/2024/05/01/B04.tif"


@pytest.mark.parametrize(("read_from", "href"), [((), ""), (("sentinel-2-l2a",), "s3://eodata/Sentinel-2/B04.jp2"),
                                                 (("sentinel-2-l2a",), "/data/scenes/B04.tif"),
                                                 (("sentinel-2-l2a",), PC),
                                                 (("sentinel-2-c1-l2a",), "s3://sentinel-cogs/B04.tif")])
def test_the_source_collection_names_the_host_the_scenes_were_read_from(read_from, href, validator):
    """A cube ingested from Earth Search's sentinel-2-c1-l2a published CDSE as the scenes' host, with a link to
    CDSE's collection, which they were not read from; so did one from Planetary Computer, whose collection has
    CDSE's id (sentinel-2-l2a): the files' host tells."""
    version = hand_version(tiles={"31UFU": [iso(T0)]})
    version = replace(version, scenes={k: replace(v, collection=read_from[0] if read_from else "",
                                                  sources={"B04": href} if href else {})
                                       for k, v in version.scenes.items()})
    io = StoreStacIO(MemoryStore())
    tree = build_catalog(version, io=io)
    source = tree.source.to_dict()
    hosts = [p["name"] for p in source["providers"] if "host" in p["roles"]]
    via = [link["href"] for link in source["links"] if link["rel"] == "via"]
    if read_from == ("sentinel-2-c1-l2a",):
        assert hosts == [] and via == [] and source["description"].endswith(
            "read from the STAC collection(s) sentinel-2-c1-l2a and files at s3://sentinel-cogs.")
    elif href == PC:
        assert hosts == [] and via == [] and source["description"].endswith(
            "read from files at https://sentinel2l2a01.blob.core.windows.net.")
    else:  # read from CDSE's collection and host (or local copies), or records that do not say (older cubes)
        assert hosts == ["Copernicus Data Space Ecosystem"] and via and "read from" not in source["description"]
    assert validate_document(source, validator=validator)


@pytest.mark.parametrize("extension", ["eo/v1.1.0", "raster/v1.1.0"])
def test_the_bundled_schemas_whose_id_ends_with_a_hash_validate_too(validator, extension):
    """The eo and raster schemas' $id ends with "#": the validator said it had "no offline copy" of them."""
    version = hand_version(tiles={"31UFU": [iso(T0)]})
    io = StoreStacIO(MemoryStore())
    build_catalog(version, io=io).save(io)
    item = dict(walk_documents(io.store))[keys.item_key(version.collection, "31UFU")]
    uri = f"https://stac-extensions.github.io/{extension}/schema.json"
    good = {**item, "stac_extensions": [*item["stac_extensions"], uri]}
    assert uri in validate_document(good, validator=validator)
    if extension.startswith("eo"):  # and it checks: a cloud cover that is no number fails
        bad = {**good, "properties": {**good["properties"], "eo:cloud_cover": "cloudy"}}
        with pytest.raises(pystac.STACValidationError):
            validate_document(bad, validator=validator)


def test_validation_never_downloads(validator, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to fetch a schema")

    monkeypatch.setattr(pystac.StacIO, "read_text", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    doc = build_tile_item(hand_version(), "31UFU").to_dict(include_self_link=False, transform_hrefs=False)
    doc["stac_extensions"].append("https://stac-extensions.github.io/unknown/v9.9.9/schema.json")
    with pytest.raises(SchemaUnavailableError):
        validate_document(doc, validator=validator)


def test_validation_catches_a_bad_extension_field(validator):
    doc = build_tile_item(hand_version(), "31UFU").to_dict(include_self_link=False, transform_hrefs=False)
    doc["properties"]["proj:shape"] = "10980x10980"
    with pytest.raises(pystac.STACValidationError):
        validate_document(doc, validator=validator)
    doc = build_tile_item(hand_version(), "31UFU").to_dict(include_self_link=False, transform_hrefs=False)
    doc["properties"]["cube:dimensions"]["time"]["type"] = "clock"
    with pytest.raises(pystac.STACValidationError):
        validate_document(doc, validator=validator)


def test_variable_nodata_and_data_type_are_validated(validator):
    """``nodata``/``data_type`` of cube variables are datacube v2.3 fields: the item declares that version,
    so a wrong value fails validation instead of passing unchecked under v2.2."""
    doc = build_tile_item(hand_version(), "31UFU").to_dict(include_self_link=False, transform_hrefs=False)
    assert DATACUBE in doc["stac_extensions"] and DATACUBE_V22 not in doc["stac_extensions"]
    assert DATACUBE in validate_document(doc, validator=validator)
    for field, wrong in (("nodata", "none"), ("data_type", "u16")):
        bad = copy.deepcopy(doc)
        bad["properties"]["cube:variables"]["B04"][field] = wrong
        with pytest.raises(pystac.STACValidationError):
            validate_document(bad, validator=validator)


SAT = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
SAR = "https://stac-extensions.github.io/sar/v1.3.0/schema.json"  # the newest offline copy


def test_a_sentinel1_collection_says_which_passes_and_polarisations_it_holds(two_pass_cube):
    """The collection said nothing a STAC client reads of the passes (dawn descending on track 37, dusk ascending
    on 88) nor of the SAR data, and published its satellites under ``platforms``, which STAC does not define."""
    import json

    from catalog.validate import validate_catalog

    doc = json.loads((two_pass_cube / "s1" / "collection.json").read_text())
    summaries = doc["summaries"]
    assert summaries["sat:orbit_state"] == ["ascending", "descending"] and summaries["sat:relative_orbit"] == [37, 88]
    assert (summaries["sar:polarizations"], summaries["sar:instrument_mode"], summaries["sar:frequency_band"]) == (
        ["VV", "VH"], ["IW"], ["C"])
    assert summaries["platform"] == ["sentinel-1a", "sentinel-1b"] and "platforms" not in summaries
    assert {SAT, SAR} <= set(doc["stac_extensions"])
    item = json.loads((two_pass_cube / "s1" / "31UFU" / "s1-31UFU.json").read_text())["properties"]
    assert "platform" not in item and "platforms" not in item  # two satellites: STAC's platform is one value
    checked = validate_catalog(two_pass_cube)
    assert {SAT, SAR} <= set(checked["s1/collection.json"])


def test_a_tile_of_one_satellite_names_it_as_stac_does(validator):
    """An S2 collection: ``platform`` is the item's one satellite, the sat summaries its orbit, and no sar."""
    version = hand_version()
    item = build_tile_item(version, "31UFU")
    assert item.common_metadata.platform == "sentinel-2a" and "platforms" not in item.properties
    coll = build_cube_collection(version, [])  # the summaries come from the ledger, not the items
    assert coll.summaries.lists["platform"] == ["sentinel-2a"]
    assert coll.summaries.lists["sat:relative_orbit"] == [51] and coll.summaries.lists["sat:orbit_state"] == [
        "descending"]
    assert coll.stac_extensions == [SAT] and not any(k.startswith("sar:") for k in coll.summaries.lists)
    assert SAT in validate_document(coll.to_dict(include_self_link=False), validator=validator)


def test_the_catalog_says_how_many_dates_were_resampled_and_converted(validator):
    """The ledger recorded ``--warp`` and linear power per scene, but no catalog document said it: the source
    collection called the scenes "on the MGRS tiling grid"."""
    from cube.ledger import ScenePart

    version = replace(hand_version(tiles={"31UFU": [iso(T0), "2024-04-06T10:50:31Z", "2024-04-11T10:50:31Z"],
                                          "31UGU": [iso(T0)]}),
                      collection="s1", spec=S1_BACKSCATTER)
    how = {"resampling": "bilinear", "crs": "EPSG:32632", "transform": [10, 0, 300000, 0, -10, 5850000], "scale": 1}
    fu = sorted(s for s in version.scenes if "31UFU" in s)
    scenes = dict(version.scenes)
    scenes[fu[0]] = replace(scenes[fu[0]], warped={"VV": how, "VH": how}, converted={"VV": "unit linear"})
    scenes[fu[1]] = replace(scenes[fu[1]], parts=(  # a pass of two slices, the second warped from geographic
        ScenePart(fu[1], "", scenes[fu[1]].time),
        ScenePart("slice-2", "item-2", scenes[fu[1]].time, warped={"VV": {**how, "crs": "EPSG:4326"}})))
    version = replace(version, scenes=scenes)
    props = build_tile_item(version, "31UFU").properties
    assert (props["cardcube:warped_dates"], props["cardcube:resampling"], props["cardcube:source_crs"],
            props["cardcube:converted_dates"]) == (2, ["bilinear"], ["EPSG:32632", "EPSG:4326"], 1)
    assert props["description"].endswith("2 of its 3 dates were resampled onto the tile grid (ingest --warp, "
                                         "bilinear from EPSG:32632, EPSG:4326); 1 was converted from linear power "
                                         "to dB.")
    untouched = build_tile_item(version, "31UGU").properties  # a tile of dates taken as they were says nothing
    assert not any(k.startswith(("cardcube:warped", "cardcube:converted")) for k in untouched)
    assert "resampled" not in untouched["description"]
    io = StoreStacIO(MemoryStore())
    build_catalog(version, io=io).save(io)
    docs = dict(walk_documents(io.store))
    source = docs[keys.source_collection_key(S1_BACKSCATTER.source_collection)]["description"]
    assert "2 of this cube's 4 scenes were resampled onto the tile grid (ingest --warp" in source
    for key, doc in docs.items():
        validate_document(doc, validator=validator, href=key)
