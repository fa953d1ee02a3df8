"""Label layers kept beside the cube: listed, their use written down, the unused ones pruned and built anew."""

from __future__ import annotations

import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from cardcube.cli import main
from cardcube.storage import open_store
from cardcube.testing.s3proxy import start_s3_proxy
from cube.extract import extract, read_timeseries
from cube.parcel_layer import parcel_layer, prune_layers, stored_layers
from cube.parcels import as_parcels


@pytest.fixture()
def cube(tiny_cube, tmp_path) -> Path:
    """A private copy of the tiny cube, without the layers other tests left beside it."""
    root = tmp_path / "cube"
    shutil.copytree(tiny_cube, root, ignore=shutil.ignore_patterns("_parcels"))
    return root


def _layers(cube: Path) -> dict[str, object]:
    return {layer.digest: layer for layer in stored_layers(cube)}


def _same(a: Path, b: Path) -> None:
    key = ["parcel_id", "time", "band"]
    pd.testing.assert_frame_equal(read_timeseries(a).sort_values(key, ignore_index=True),
                                  read_timeseries(b).sort_values(key, ignore_index=True))


def _next_second() -> None:
    """Layer times are kept to the second: let the clock pass one, so the next use is later."""
    time.sleep(1.05)


def test_a_layer_read_again_is_kept_and_one_unused_goes(cube, parcels, tmp_path):
    store = open_store(str(cube))
    assert stored_layers(store) == []
    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    (full,) = _layers(cube).values()
    assert full.complete and full.parcels == len(parcels) and full.used <= full.created == full.last_use
    _next_second()
    extract(parcels.iloc[:-3], cube, tmp_path / "b", bands=["B08"], progress=False)  # an amended parcel file
    _next_second()
    extract(parcels, cube, tmp_path / "c", bands=["B08"], progress=False)  # the first file again: its layer read
    layers = _layers(cube)
    assert len(layers) == 2 and layers[full.digest].used > layers[full.digest].created
    (amended,) = (x for x in layers.values() if x.digest != full.digest)
    assert amended.parcels == len(parcels) - 3 and amended.last_use < layers[full.digest].last_use

    unused_for = timedelta(days=30)
    now = layers[full.digest].last_use - timedelta(seconds=1) + unused_for  # between the two last uses
    dry = prune_layers(store, unused_for=unused_for, now=now, dry_run=True)
    assert [x.digest for x in dry.deleted] == [amended.digest] and _layers(cube).keys() == layers.keys()
    result = prune_layers(store, unused_for=unused_for, now=now)
    assert [x.digest for x in result.deleted] == [amended.digest] and [x.digest for x in result.kept] == [full.digest]
    assert _layers(cube).keys() == {full.digest}
    assert not list((cube / amended.prefix).rglob("*.*"))  # nothing of it left

    assert prune_layers(store, unused_for=timedelta(0)).deleted  # the other one too
    assert _layers(cube) == {}
    extract(parcels, cube, tmp_path / "d", bands=["B08"], progress=False)  # built anew: the same numbers
    _same(tmp_path / "d", tmp_path / "a")


def test_a_cube_holding_a_label_layer_opens_whole_as_an_xarray_datatree(cube, parcels, tmp_path):
    """The cube root is a Zarr group: xarray opens it as a tree only if every array names its dimensions (a
    layer's labels did not: "missing the `dimension_names` metadata", a KeyError after any extraction)."""
    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    tree = xr.open_datatree(cube, engine="zarr", consolidated=False)
    (node,) = (n for n in tree.subtree if "labels" in n.data_vars)
    labels, tile = node["labels"], tree["s2/31UFU/cube.zarr/r10m"]
    assert labels.dims == ("y", "x") and labels.shape == (tile.sizes["y"], tile.sizes["x"])  # the tile's 10 m grid
    stored = zarr.open_group(cube, mode="r")[node.path.strip("/")]["labels"][:]
    assert np.array_equal(labels.values, stored) and (stored >= 0).any()


def test_a_build_that_never_finished_is_kept_for_the_age_given_then_goes(cube, parcels, tmp_path):
    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    store = open_store(str(cube))
    (done,) = stored_layers(store)
    tile = done.tile
    zarr.create_array(store, name=f"_parcels/{tile}/0123456789abcdef/labels", shape=(8, 8), chunks=(8, 8),
                      dtype="int32", fill_value=-1, zarr_format=3)  # a build killed before its layer.json
    half = _layers(cube)["0123456789abcdef"]
    assert not half.complete and half.last_use is None
    first = prune_layers(store, unused_for=timedelta(days=1))
    assert first.deleted == () and len(first.kept) == 2  # seen now: its time starts
    seen = _layers(cube)["0123456789abcdef"].used
    assert seen is not None
    assert [x.digest for x in prune_layers(store, unused_for=timedelta(days=1), now=seen + timedelta(days=2)).deleted
            ] == sorted([done.digest, "0123456789abcdef"])


def test_what_else_lies_in_the_layers_folder_is_neither_listed_nor_pruned(cube, parcels, tmp_path, capsys):
    """An extraction written into the layers' folder (--out CUBE/_parcels/run) was listed by cardcube layers as
    unfinished layers, one per file, and a prune marked them seen, then deleted its statistics; so went a folder of
    the user's beside a tile's layers."""
    run = cube / "_parcels" / "run"
    extract(parcels, cube, run, bands=["B08"], progress=False)
    (layer,) = stored_layers(cube)  # the extraction's label layer, beside the cube
    notes = cube / "_parcels" / layer.tile / "notes"
    notes.mkdir()
    (notes / "visit.txt").write_text("field visit")
    kept = {p: p.read_bytes() for p in [*run.rglob("*"), *notes.rglob("*")] if p.is_file()}
    assert main(["layers", str(cube)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"label layers at {cube}: 1", f"  {layer.prefix}: {len(parcels)} "
                                                    f"parcels, made {layer.created:%Y-%m-%d %H:%M}, last used "
                                                    f"{layer.last_use:%Y-%m-%d %H:%M} UTC"]
    later = layer.last_use + timedelta(days=400)
    for _ in range(2):  # a build never finished is marked seen by the first prune, deleted by the next
        prune_layers(cube, unused_for=timedelta(0), now=later)
    assert stored_layers(cube) == [] and not (cube / layer.prefix).exists()  # the layer went
    assert {p: p.read_bytes() for p in [*run.rglob("*"), *notes.rglob("*")] if p.is_file()} == kept


def test_a_layer_that_lost_a_chunk_is_built_anew_not_read_as_no_parcel(cube, parcels, tmp_path, caplog):
    """A label chunk gone from the store (a lifecycle rule, a partial copy) read as "no parcel": its parcels' rows
    came out "ok" from fewer pixels. The layer lists the chunks it stored; a run finds one lost and builds it anew."""
    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    (layer,) = _layers(cube).values()
    doc = json.loads((cube / layer.prefix / "layer.json").read_text())
    chunks = sorted((cube / layer.prefix / doc["build"] / "labels" / "c").glob("*/*"))
    assert len(chunks) == len(doc["chunks"]) > 0
    chunks[0].unlink()
    with caplog.at_level("WARNING", logger="cube.parcel_layer"):
        extract(parcels, cube, tmp_path / "b", bands=["B08"], progress=False)
    assert "has lost 1 of its" in caplog.text and "building it anew" in caplog.text
    rebuilt = json.loads((cube / layer.prefix / "layer.json").read_text())["build"]
    assert list(_layers(cube)) == [layer.digest] and (cube / layer.prefix / rebuilt / "labels" / "c").is_dir()
    assert sorted(p.name for p in (cube / layer.prefix).iterdir()) == sorted([rebuilt, "layer.json", "used.json",
                                                                         "zarr.json"])  # the damaged build gone
    _same(tmp_path / "b", tmp_path / "a")


def test_two_runs_building_one_layer_at_once_each_read_their_own(cube, parcels, tmp_path):
    """The second build emptied the labels (zarr's overwrite) and wrote its own under the first run, whose parcels
    came out without a pixel ("ok"), or with a parcel file in another order, with other parcels' pixels."""
    store = open_store(cube)
    first = parcel_layer(store, "31UFU", as_parcels(parcels), buffer=-5, block=256, progress=False)
    window = (slice(int(first.index.row0.min()), int(first.index.row1.max())),
              slice(int(first.index.col0.min()), int(first.index.col1.max())))
    want = first.labels(*window)
    (cube / first.prefix).parent.joinpath("layer.json").unlink()  # as a second run that started before saw it
    second = parcel_layer(store, "31UFU", as_parcels(parcels.iloc[::-1]), buffer=-5, block=256, progress=False)
    assert second.prefix != first.prefix and (want >= 0).sum() > 0
    np.testing.assert_array_equal(first.labels(*window), want)
    got = second.labels(*window)
    np.testing.assert_array_equal(np.where(got >= 0, second.index.parcel_id.to_numpy()[got], None),
                                  np.where(want >= 0, first.index.parcel_id.to_numpy()[want], None))


def test_a_prune_during_a_rebuild_keeps_the_layer_being_built(cube, parcels, tmp_path, monkeypatch):
    """A build that crashed left a layer without its layer.json, marked used long ago; the next extraction builds
    it again, and a scheduled prune runs meanwhile: it must not delete the layer under the build's feet (the
    build marks it used before it starts)."""
    import cube.parcel_layer as parcel_layer

    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    (layer,) = _layers(cube).values()
    (cube / layer.prefix / "layer.json").unlink()
    (cube / layer.prefix / "used.json").write_text(json.dumps({"at": "2025-01-01T00:00:00Z"}))
    pruned = []

    def tasks_with_a_prune(fn, tasks, **kw):
        pruned.append(prune_layers(cube, unused_for=timedelta(days=30)))
        return run_tasks(fn, tasks, **kw)

    run_tasks = parcel_layer.run_tasks
    monkeypatch.setattr(parcel_layer, "run_tasks", tasks_with_a_prune)
    extract(parcels, cube, tmp_path / "b", bands=["B08"], progress=False)
    assert pruned[0].deleted == () and [x.digest for x in pruned[0].kept] == [layer.digest]
    assert _layers(cube)[layer.digest].complete
    _same(tmp_path / "b", tmp_path / "a")


def test_a_damaged_layer_document_is_an_incomplete_layer_not_a_traceback(cube, parcels, tmp_path, capsys):
    """A cut-short layer.json made `layers` and `--prune` fail (no way out but deleting by hand) and an unreadable
    time in used.json raised a ValueError: the layer counts as incomplete, is built anew by the next run, and
    pruned as one never finished; a time that is no time counts as not recorded."""
    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    (layer,) = _layers(cube).values()
    (cube / layer.prefix / "used.json").write_text('{"at": "yesterday"}')
    assert _layers(cube)[layer.digest].last_use == layer.created
    (cube / layer.prefix / "layer.json").write_text("{")
    assert main(["layers", str(cube)]) == 0
    assert "incomplete (a build that did not finish)" in capsys.readouterr().out
    extract(parcels, cube, tmp_path / "b", bands=["B08"], progress=False)
    assert _layers(cube)[layer.digest].complete
    _same(tmp_path / "b", tmp_path / "a")
    (cube / layer.prefix / "layer.json").write_text("{")
    assert main(["layers", str(cube), "--prune", "0"]) == 0
    assert main(["layers", str(cube), "--prune", "0"]) == 0  # marked seen by the first, gone by the second
    assert _layers(cube) == {}


def test_the_cli_lists_and_prunes_and_refuses_what_it_cannot_do(cube, parcels, tmp_path, capsys):
    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    (layer,) = _layers(cube).values()
    assert main(["layers", str(cube)]) == 0
    out = capsys.readouterr().out
    assert f"label layers at {cube}: 1" in out and f"{layer.prefix}: {len(parcels)} parcels, made " in out
    assert main(["layers", str(cube), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["digest"] == layer.digest and listed["complete"] and listed["last_use"] == listed["created"]
    for age in ("30d", "999999d"):  # the second reaches before year 1
        assert main(["layers", str(cube), "--prune", age]) == 0
        assert "deleted 0 unused, kept 1" in capsys.readouterr().out
    assert main(["layers", str(cube), "--prune", "0", "--dry-run"]) == 0
    assert f"would delete {layer.prefix}" in capsys.readouterr().out and _layers(cube)
    assert main(["layers", str(cube), "--dry-run"]) == 2
    assert "--dry-run goes with --prune AGE" in capsys.readouterr().err
    assert main(["layers", str(cube), "--prune", "soon"]) == 2
    assert "cannot read 'soon' as an age" in capsys.readouterr().err
    assert main(["layers", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"nothing at {tmp_path / 'nowhere'}: the folder does not exist (give the cube, or the --layers" in err
    assert "no cube" not in err  # the location may be the extractions' layers
    (tmp_path / "a.txt").write_text("")
    for where, why in (("nowhere", "the folder does not exist"), ("a.txt", "a.txt is a file: give a folder")):
        assert main(["layers", str(tmp_path / where), "--prune", "0"]) == 2  # not "deleted 0"
        err = capsys.readouterr().err
        assert why in err and "made if missing" not in err  # layers reads a folder: it makes none
        assert not (tmp_path / "nowhere").exists()
    for prune in ([], ["--prune", "0"]):  # the layers' own folder: "0" and "deleted 0", exit 0
        assert main(["layers", str(cube / "_parcels"), *prune]) == 2
        assert "_parcels is the folder of the layers themselves, which would list none: give the folder holding it " \
               "(the cube" in capsys.readouterr().err
    assert _layers(cube)  # nothing was deleted by a refused command
    assert main(["layers", str(cube), "--prune", "0", "--json"]) == 0
    assert [x["digest"] for x in json.loads(capsys.readouterr().out)["deleted"]] == [layer.digest]
    assert _layers(cube) == {}


def test_on_s3_and_through_credentials_that_may_only_read(cube, parcels, tmp_path, s3_bucket):
    """Listing and pruning use S3's listings and batched deletes; a run that may only read a stored layer reads
    it all the same (its use goes unrecorded)."""
    import s3fs

    extract(parcels, cube, tmp_path / "a", bands=["B08"], progress=False)
    (layer,) = _layers(cube).values()
    fs = s3fs.S3FileSystem(**s3_bucket.storage_options())
    fs.put(str(cube) + "/", f"{s3_bucket.name}/cube/", recursive=True)
    url, writer = s3_bucket.url_for("cube"), s3_bucket.storage_options()
    with start_s3_proxy(s3_bucket.server.endpoint_url) as read_only:
        read_only.fail_randomly(1.0, status=403, code="AccessDenied", methods=["PUT", "POST", "DELETE"])
        extract(parcels, url, tmp_path / "b", bands=["B08"], storage_options=read_only.storage_options(attempts=1),
                progress=False)
    _same(tmp_path / "b", tmp_path / "a")
    (listed,) = stored_layers(open_store(url, storage_options=writer))
    assert listed.digest == layer.digest and listed.used == layer.used  # unrecorded: the run could not write
    _next_second()
    extract(parcels, url, s3_bucket.url_for("out"), bands=["B08"], storage_options=writer,
            out_storage_options=writer, progress=False)
    (listed,) = stored_layers(open_store(url, storage_options=writer))
    assert listed.used > layer.used  # a run that may write records it
    result = prune_layers(open_store(url, storage_options=writer), unused_for=timedelta(0))
    assert [x.digest for x in result.deleted] == [layer.digest]
    assert not fs.exists(f"{s3_bucket.name}/cube/{layer.prefix}") and fs.exists(f"{s3_bucket.name}/cube/s2")


def test_on_s3_a_prefix_holding_nothing_is_refused_not_listed_as_no_layers(s3_bucket, capsys, monkeypatch):
    """``layers s3://bucket/cueb`` (a typo) said "0" and ``--prune`` "deleted 0", exit 0, where a missing folder
    is refused: a scheduled prune with a wrong URL reported success for ever."""
    from cardcube.storage import write_bytes

    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)
    write_bytes(open_store(s3_bucket.url_for("cube"), storage_options=s3_bucket.storage_options()), "s2/x", b"")
    for prune in ([], ["--prune", "30d"]):
        assert main(["layers", s3_bucket.url_for("cueb"), *prune]) == 2
        assert f"nothing at {s3_bucket.url_for('cueb')}: no object under that prefix" in capsys.readouterr().err
    assert main(["layers", s3_bucket.url_for("cube")]) == 0
    assert f"label layers at {s3_bucket.url_for('cube')}: 0" in capsys.readouterr().out


def test_the_parcels_digest_names_a_stored_layer_whatever_the_rows_order_and_as_before() -> None:
    """A layer's folder is named by the digest of its parcels: the same parcels in another order are the same layer,
    and the digest is the one stored layers were named by (sorted by the kind of each id, then its text), or every
    layer stored would be built anew after an upgrade. Its sorting of ids of one kind was made cheaper."""
    import hashlib

    import shapely
    from shapely.geometry import box

    from cube.parcel_layer import parcels_digest
    from cube.parcels import ParcelSet

    def reference(ids: tuple, geoms: tuple) -> str:
        keys = sorted(([type(i).__name__, str(i)], shapely.to_wkb(g, output_dimension=2))
                      for i, g in zip(ids, geoms, strict=True))
        h = hashlib.sha256(b"EPSG:32631")
        h.update(json.dumps([k for k, _ in keys]).encode())
        for _, wkb in keys:
            h.update(wkb)
        return h.hexdigest()[:16]

    for ids in [(3, 1, 20, 2), ("b", "a", "10", "9"), (1, "1", 2, "0"), ("NL-1",), (7,),  # integers by their text
                ('a"], ["str", "b', "é\\", "x, y", "\ta"), (-5, 2**62)]:  # quotes, escapes, a separator's text
        geoms = tuple(box(k, 0, k + 1, 1) for k in range(len(ids)))
        digest = parcels_digest(ParcelSet(ids, geoms, "EPSG:32631"))
        assert digest == reference(ids, geoms)
        assert parcels_digest(ParcelSet(ids[::-1], geoms[::-1], "EPSG:32631")) == digest
