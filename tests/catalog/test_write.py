"""The catalog of a real cube: written by ingest's hook, read back by pystac, kept in step with the ledger."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pystac

from cardcube.storage import open_store
from catalog import catalog_is_current, find_tiles, published_version, rebuild_catalog, write_catalog
from catalog.validate import validate_catalog
from cube.ledger import read_version
from ingest.job import ingest
from tests.catalog.conftest import SCHEMA_DIR, make_scenes

REPO = Path(__file__).resolve().parents[2]


def snapshot(cube: Path) -> dict[str, bytes]:
    """Every catalog document of ``cube`` (not the Zarr data, the ledger nor the block manifests), by path."""
    return {str(p.relative_to(cube)): p.read_bytes() for p in sorted(cube.rglob("*.json"))
            if not {"cube.zarr", "_ledger", "_manifest"} & set(p.parts) and p.name not in ("zarr.json", "_lock.json")}


def _validate(cube: Path) -> list:
    return validate_catalog(cube, extension_dir=SCHEMA_DIR)


def test_layout_and_validation(base_cube):
    docs = snapshot(base_cube)
    assert sorted(docs) == ["catalog.json", "s2/31UFU/s2-31UFU.json", "s2/31UGU/s2-31UGU.json",
                            "s2/collection.json", "sources/sentinel-2-l2a/collection.json"]
    assert len(_validate(base_cube)) == 5


def test_pystac_reads_the_whole_tree_with_relative_links(base_cube):
    root = pystac.Catalog.from_file(str(base_cube / "catalog.json"))
    assert root.catalog_type == pystac.CatalogType.SELF_CONTAINED
    collections = {c.id: c for c in root.get_children()}
    assert set(collections) == {"sentinel-2-l2a-cube", "sentinel-2-l2a"}
    items = list(root.get_items(recursive=True))
    assert sorted(i.id for i in items) == ["s2-31UFU", "s2-31UGU"]
    for item in items:
        zarr = Path(item.assets["data"].get_absolute_href())
        assert zarr == base_cube / "s2" / item.properties["cardcube:tile"] / "cube.zarr"
        assert (zarr / "zarr.json").exists() and (zarr / "r20m" / "zarr.json").exists()
        assert item.get_collection().id == "sentinel-2-l2a-cube"
    for path, doc in snapshot(base_cube).items():
        assert str(base_cube) not in doc.decode(), f"{path} holds an absolute href"
    source = collections["sentinel-2-l2a-cube"].get_single_link("derived_from")
    assert source is not None and source.href == "../sources/sentinel-2-l2a/collection.json"


def test_a_folder_name_that_reads_as_url_syntax_keeps_every_link(base_cube, tmp_path):
    """pystac parses hrefs as URLs: a '#' or '?' in the cube's folder name ended its path, and every link came
    out as './cube' (a '%' would be decoded)."""
    cube = Path(shutil.copytree(base_cube, tmp_path / "cube #1?a=b%41"))
    for path in snapshot(cube):
        (cube / path).unlink()
    assert rebuild_catalog(cube) == {"s2": 1}
    docs = snapshot(cube)
    assert docs == snapshot(base_cube)
    assert len(_validate(cube)) == 5
    assert [ref.zarr_path for ref in find_tiles(cube, "s2")] == ["s2/31UFU/cube.zarr", "s2/31UGU/cube.zarr"]


def test_a_cube_named_through_a_parent_folder_keeps_its_source_collection(base_cube, scenes_dir, tmp_path, caplog,
                                                                         monkeypatch):
    """"elsewhere/../cube": pystac took the source collection's href for one outside the cube (it makes hrefs
    absolute without the ".."), warned on every ingest and left it out of a root it wrote."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="catalog.write"):
        assert ingest(scenes_dir, "elsewhere/../cube", collection="s2", progress=False).version == 1
        assert rebuild_catalog("elsewhere/../cube") == {"s2": 1}
    assert "is no STAC collection" not in caplog.text
    assert sorted(snapshot(tmp_path / "cube")) == sorted(snapshot(base_cube)) and len(_validate(tmp_path / "cube")) == 5
    root = pystac.Catalog.from_file(str(tmp_path / "cube" / "catalog.json"))
    assert {c.id for c in root.get_children()} == {"sentinel-2-l2a-cube", "sentinel-2-l2a"}


def test_catalog_is_current_and_idempotent(cube):
    store = open_store(cube)
    version = read_version(store, "s2")
    assert catalog_is_current(store, version) and published_version(store, "s2") == 1
    before = snapshot(cube)
    mtimes = {p: os.stat(cube / p).st_mtime_ns for p in before}
    write_catalog(store, version)
    assert snapshot(cube) == before
    (cube / "s2" / "collection.json").unlink()  # as if a crash came between the items and the collection
    assert not catalog_is_current(store, version)
    assert rebuild_catalog(cube) == {"s2": 1}
    assert snapshot(cube) == before  # deterministic: the same bytes again
    after = {p: os.stat(cube / p).st_mtime_ns for p in before}
    assert {p for p in before if after[p] != mtimes[p]} == {"s2/collection.json"}  # equal documents not rewritten


def test_a_rebuild_never_rolls_the_catalog_back(cube, tmp_path):
    """A rebuild that read version 1, then an ingest that commits and publishes version 2, then the rebuild
    writing: the catalog named version 1 again (forced writes skipped the check), and its items lacked a date."""
    store = open_store(cube)
    first = read_version(store, "s2")
    assert ingest(make_scenes(tmp_path / "more", days=(20,)), cube, collection="s2", progress=False).version == 2
    latest = snapshot(cube)
    write_catalog(store, first, force=True)  # the rebuild's late write
    assert published_version(store, "s2") == 2 and snapshot(cube) == latest


def test_the_catalog_left_by_a_cube_wiped_and_built_again_is_replaced(cube, tmp_path):
    """A cube's ledger and tiles wiped (a pipeline run again from scratch) and built again at the same place number
    its versions anew, while the catalog left of the old cube named its version 2: the new cube's version 1 was
    taken for an older one, never to roll back to. Its ingest published nothing, and 'catalog build' kept the old
    catalog too (saying 'catalog of version 1'), whose items were gone: catalog find failed on them. A published
    version the ledger does not hold is no newer one."""
    assert ingest(make_scenes(tmp_path / "more", days=(20,)), cube, collection="s2", progress=False).version == 2
    left = (cube / "s2" / "collection.json").read_bytes()
    for gone in ("_ledger", "31UFU", "31UGU"):
        shutil.rmtree(cube / "s2" / gone)
    again = make_scenes(tmp_path / "again", tiles=("31UFU",), days=(30,))
    assert ingest(again, cube, collection="s2", progress=False).version == 1
    assert published_version(cube, "s2") == 1
    assert [(r.tile, r.dates) for r in find_tiles(cube, "s2")] == [("31UFU", 1)]
    (cube / "s2" / "collection.json").write_bytes(left)  # the old catalog once more (a backup restored)
    assert rebuild_catalog(cube) == {"s2": 1} and published_version(cube, "s2") == 1
    assert [(r.tile, r.dates) for r in find_tiles(cube, "s2")] == [("31UFU", 1)]
    assert _validate(cube)


def test_a_catalog_left_of_a_wiped_cube_is_not_current_for_the_same_version_number_of_the_new_one(cube, tmp_path):
    """The catalog left of a wiped cube's version 2 (its publication after the new cube's commits lost, or a
    backup restored) was taken as current for the new cube's version 2: same number. Its items named the old
    tiles and dates until someone ran 'catalog build'. The version's commit time tells them apart."""
    assert ingest(make_scenes(tmp_path / "more", days=(20,)), cube, collection="s2", progress=False).version == 2
    left = (cube / "s2" / "collection.json").read_bytes()
    for gone in ("_ledger", "31UFU", "31UGU"):
        shutil.rmtree(cube / "s2" / gone)
    for n, day in ((1, 30), (2, 35)):
        again = make_scenes(tmp_path / f"again{n}", tiles=("31UFU",), days=(day,))
        assert ingest(again, cube, collection="s2", progress=False).version == n
    new = read_version(open_store(cube), "s2")
    assert catalog_is_current(cube, new)
    (cube / "s2" / "collection.json").write_bytes(left)
    assert published_version(cube, "s2") == new.version == 2 and not catalog_is_current(cube, new)
    write_catalog(cube, new)  # as the next ingest's recovery does
    assert catalog_is_current(cube, new) and [(r.tile, r.dates) for r in find_tiles(cube, "s2")] == [("31UFU", 2)]


def test_a_rebuild_drops_the_link_to_a_collection_deleted_since(cube):
    """``rm -r s1`` then ``catalog build``: the root kept linking s1's collection, and pystac failed on it."""
    import json
    import shutil

    root = json.loads((cube / "catalog.json").read_text())
    gone = {**root, "links": [*root["links"], {"rel": "child", "href": "./s1/collection.json",
                                               "type": "application/json"}]}
    (cube / "catalog.json").write_text(json.dumps(gone))  # as a cube with an S1 collection, deleted since
    shutil.rmtree(cube / "s1", ignore_errors=True)
    rebuild_catalog(cube)
    children = [c.id for c in pystac.Catalog.from_file(str(cube / "catalog.json")).get_children()]
    assert sorted(children) == ["sentinel-2-l2a", "sentinel-2-l2a-cube"]


def test_append_grows_extent_and_properties(cube, tmp_path):
    more = make_scenes(tmp_path / "more", tiles=("31UFU",), days=(20, 25))
    result = ingest(more, cube, collection="s2", progress=False)
    assert result.ok and result.version == 2
    coll = pystac.Collection.from_file(str(cube / "s2" / "collection.json"))
    start, end = coll.extent.temporal.intervals[0]
    assert start.isoformat().startswith("2024-04-01T10:50:31") and end.isoformat().startswith("2024-04-26T10:50:31")
    assert coll.extra_fields["cardcube:version"] == 2
    fu = pystac.Item.from_file(str(cube / "s2" / "31UFU" / "s2-31UFU.json"))
    assert fu.properties["cardcube:dates"] == 5 and "cardcube:version" not in fu.properties  # the collection's
    assert fu.properties["end_datetime"] == "2024-04-26T10:50:31Z"
    assert fu.properties["cube:dimensions"]["time"]["extent"][1] == "2024-04-26T10:50:31Z"
    gu = pystac.Item.from_file(str(cube / "s2" / "31UGU" / "s2-31UGU.json"))
    assert gu.properties["cardcube:dates"] == 3 and gu.properties["end_datetime"] == "2024-04-11T10:50:31Z"
    source = pystac.Collection.from_file(str(cube / "sources" / "sentinel-2-l2a" / "collection.json"))
    assert source.extent.temporal.intervals[0][1] == end


def test_a_date_on_one_tile_rewrites_that_tiles_item_alone_and_equals_a_rebuild(cube, tmp_path):
    """Every item named the cube's version and commit time, so an ingest of one date on one tile rewrote the item of
    every tile (hundreds at hundreds of tiles). It writes that tile's item and the collections now; the other items
    keep their bytes (not written at all), and the catalog is the one a full rebuild writes."""
    before = snapshot(cube)
    mtimes = {p: os.stat(cube / p).st_mtime_ns for p in before}
    assert ingest(make_scenes(tmp_path / "more", tiles=("31UFU",), days=(20,)), cube, collection="s2",
                  progress=False).version == 2
    after = snapshot(cube)
    assert sorted(p for p in after if after[p] != before.get(p)) == [
        "s2/31UFU/s2-31UFU.json", "s2/collection.json", "sources/sentinel-2-l2a/collection.json"]
    written = {p for p in before if os.stat(cube / p).st_mtime_ns != mtimes[p]}
    assert written == {"s2/31UFU/s2-31UFU.json", "s2/collection.json", "sources/sentinel-2-l2a/collection.json"}
    assert len(_validate(cube)) == 5
    assert [(r.tile, r.version, r.dates) for r in find_tiles(cube, "s2")] == [("31UFU", 2, 4), ("31UGU", 2, 3)]
    for path in after:  # the catalog a full rebuild writes from the ledger, document for document
        (cube / path).unlink()
    assert rebuild_catalog(cube) == {"s2": 2}
    assert snapshot(cube) == after


def test_rejected_ingest_leaves_catalog_unchanged(cube, tmp_path):
    before = snapshot(cube)
    bad = make_scenes(tmp_path / "bad", tiles=("31UFU",), days=(30,), broken=True)
    result = ingest(bad, cube, collection="s2", progress=False)
    assert not result.added and len(result.rejected) == 1
    assert snapshot(cube) == before
    if result.version is not None:  # the ledger records the rejection; the data, and so the catalog, are as before
        head = read_version(open_store(cube), "s2")
        assert head.version == result.version and catalog_is_current(cube, head)
        assert published_version(cube, "s2") == 1


def test_killed_ingest_leaves_catalog_unchanged(cube, tmp_path):
    before = snapshot(cube)
    more = make_scenes(tmp_path / "more", tiles=("31UFU",), days=(20,))
    code = ("import sys; from ingest.job import ingest; from catalog import write_catalog; "
            "ingest(sys.argv[1], sys.argv[2], collection='s2', progress=False)")
    env = {**os.environ, "CARDCUBE_KILL_AT": "written", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, str(more), str(cube)], env=env, cwd=REPO, timeout=300,
                          capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert snapshot(cube) == before


def test_rebuild_rewrites_a_damaged_catalog(cube):
    before = snapshot(cube)
    (cube / "s2" / "31UFU" / "s2-31UFU.json").unlink()
    (cube / "sources" / "sentinel-2-l2a" / "collection.json").unlink()
    (cube / "catalog.json").write_text("{ not json")
    assert rebuild_catalog(cube) == {"s2": 1}
    assert snapshot(cube) == before
    assert len(_validate(cube)) == 5


def test_a_first_ingest_of_rejected_scenes_publishes_a_valid_catalog(tmp_path):
    bad = make_scenes(tmp_path / "bad", tiles=("31UFU",), days=(30,), broken=True)
    result = ingest(bad, tmp_path / "cube", collection="s2", progress=False)
    assert result.version == 1 and not result.added  # the rejection is recorded; no tile holds data
    assert _validate(tmp_path / "cube")  # summaries of no tile are left out, not empty lists


def test_expiring_the_version_the_catalog_names_republishes_it(cube, tmp_path):
    from datetime import timedelta

    from ingest.expire import expire

    bad = make_scenes(tmp_path / "bad", tiles=("31UFU",), days=(30,), broken=True)
    assert ingest(bad, cube, collection="s2", progress=False).version == 2  # a rejection: the catalog names v1
    assert published_version(cube, "s2") == 1
    assert expire(cube, "s2", older_than=timedelta(0)).expired == (1,)
    assert published_version(cube, "s2") == 2  # not a version that no longer exists
    assert len(_validate(cube)) == 5


def test_rebuild_repairs_an_item_when_the_root_and_collection_are_intact(cube):
    """``catalog build`` rewrites every document, not only when the collection or the root link is gone."""
    before = snapshot(cube)
    (cube / "s2" / "31UFU" / "s2-31UFU.json").unlink()
    (cube / "sources" / "sentinel-2-l2a" / "collection.json").write_text("{ not json")
    assert catalog_is_current(cube, read_version(open_store(cube), "s2"))  # the root and the collection look fine
    assert rebuild_catalog(cube) == {"s2": 1}
    assert snapshot(cube) == before
    assert len(_validate(cube)) == 5


def test_rebuild_replaces_a_root_that_is_json_but_no_catalog(cube):
    before = snapshot(cube)
    for text in ("{}", "[]", '{"type": "Catalog"}'):
        (cube / "catalog.json").write_text(text)
        assert rebuild_catalog(cube) == {"s2": 1}
        assert snapshot(cube) == before


def test_datacube_fields_match_the_zarr_arrays(base_cube):
    """What cube:dimensions and cube:variables say is what a reader of each resolution group finds."""
    import numpy as np
    import zarr

    from cube.layout import resolution_group

    item = pystac.Item.from_file(str(base_cube / "s2" / "31UFU" / "s2-31UFU.json"))
    dims, variables = item.properties["cube:dimensions"], item.properties["cube:variables"]
    spec = read_version(open_store(base_cube), "s2").spec
    for res in spec.resolutions:
        group = zarr.open_group(item.assets[resolution_group(res)].get_absolute_href(), mode="r")
        for band in spec.bands_at(res):
            var, array = variables[band.name], group[band.name]
            assert var["data_type"] == str(array.dtype) and var["nodata"] == array.fill_value
            y_dim, x_dim = var["dimensions"][1:]
            for dim, axis in ((dims[x_dim], "x"), (dims[y_dim], "y")):
                values = group[axis][:]
                assert dim["step"] == abs(float(np.diff(values)[0])) == res
                assert dim["extent"] == [float(values.min()), float(values.max())], (res, axis)


def test_s1_and_s2_publishing_at_once_both_stay_linked_from_the_root(tmp_path, monkeypatch):
    """The S1 and S2 ingests hold separate locks and both rewrite the root: the S2 writer reads the root, the
    S1 writer publishes meanwhile, and the S2 writer's root (from what it read) lacks S1. It checks the
    root after writing it, so the last writer puts it right."""
    from dataclasses import replace

    import catalog.write
    from cardcube.spec import S1_BACKSCATTER
    from tests.catalog.conftest import hand_version

    s2 = hand_version()
    s1 = replace(hand_version(), collection="s1", spec=S1_BACKSCATTER)
    read_root = catalog.write._existing_children
    raced = []

    def meanwhile(io):
        links = read_root(io)
        if not raced:  # the S2 writer's first read of the root: S1 publishes before it writes
            raced.append(True)
            write_catalog(tmp_path, s1)
        return links

    monkeypatch.setattr(catalog.write, "_existing_children", meanwhile)
    write_catalog(tmp_path, s2)
    assert raced
    root = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    assert sorted(c.id for c in root.get_children()) == [
        "sentinel-1-card-bs", "sentinel-1-card-bs-cube", "sentinel-2-l2a", "sentinel-2-l2a-cube"]
    titles = {link.get_absolute_href(): link.title for link in root.get_child_links()}
    assert titles[str(tmp_path / "sources" / "sentinel-1-card-bs" / "collection.json")] == "Sentinel-1 CARD backscatter"


def rejected_s1_scene(region, tmp_path: Path) -> Path:
    """An items file of one copy of ``region``'s last S1 scene, its VV file cut short, at a time of its own (at the
    time of a date the cube holds, it is refused as a duplicate unread, and no longer outstanding): every ingest
    rejects it, and the rejection stays."""
    from tests.ingest.scene_edits import broken_copy, items_of, truncate, write_items

    last = items_of(region.items, "sentinel-1-card-bs")[-1]
    return write_items(region.items, [broken_copy(region.items, last, last["id"] + "_CUT", truncate,
                                                  props={"datetime": "2024-01-01T17:00:00Z"})],
                       f"rejected-{tmp_path.name}.json")


def test_a_sentinel1_version_that_changes_no_data_leaves_the_catalog_as_it_is(two_pass_cube, two_pass_region,
                                                                               tmp_path):
    """The S1 spec's NaN nodata made the version read back unequal to itself: an ingest whose every scene was
    rejected rewrote every S1 document under its version."""
    cube = Path(shutil.copytree(two_pass_cube, tmp_path / "cube"))
    before = snapshot(cube)
    result = ingest(rejected_s1_scene(two_pass_region, tmp_path), cube, collection="s1", progress=False)
    assert result.rejected and not result.added and result.version == 2
    assert snapshot(cube) == before and published_version(cube, "s1") == 1
    assert catalog_is_current(cube, read_version(open_store(cube), "s1"))
