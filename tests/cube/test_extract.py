"""Full-territory extraction: the numbers of parcel_timeseries for every parcel, resumable, on dask."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import geopandas as gpd
import numcodecs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely.affinity
import zarr
from shapely.geometry import LineString, Polygon, box

import cardcube
from cardcube.errors import (
    CardcubeError,
    DateNotFoundError,
    InvalidRequestError,
    RequestTooLargeError,
    StoreError,
)
from cardcube.grid import TileGrid
from cardcube.storage import open_store
from cardcube.testing.s3proxy import start_s3_proxy
from cube import shard_reader, work_units
from cube.dataset import open_cube
from cube.extract import _check_written, extract, read_status, read_timeseries
from cube.extraction_files import MANIFEST
from cube.membership import DEFAULT_BUFFER
from cube.parcel_layer import parcel_layer
from cube.parcels import as_parcels
from cube.timeseries import parcel_timeseries
from tests.in_process import run_here
from tests.ingest.crashing import stopped_while_held

REPO = Path(__file__).resolve().parents[2]
BLOCK = 64  # small work units, so that many parcels cross a unit's edge
TIME_BLOCK = 4
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "NDVI", "NDMI"]


@pytest.fixture(scope="module")
def cube(tiny_cube, tmp_path_factory) -> Path:
    """A private copy of the tiny cube: extraction stores its parcel layers beside the cube."""
    root = tmp_path_factory.mktemp("extract-cube") / "cube"
    shutil.copytree(tiny_cube, root)
    return root


@pytest.fixture(scope="module")
def s2_extracted(cube, parcels, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("extract-s2")
    extract(parcels, cube, out, bands=S2_BANDS, block=BLOCK, time_block=TIME_BLOCK, progress=False)
    return out


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal frames, bit for bit, up to row order and dtypes of object columns."""
    assert sorted(a.columns) == sorted(b.columns)
    key = ["parcel_id", "time", "band"]
    a = a.sort_values(key, ignore_index=True)
    b = b[a.columns].sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=True, check_categorical=False)


def _bands(frame: pd.DataFrame, *bands: str) -> pd.DataFrame:
    return frame[frame.band.isin(bands)]


@pytest.mark.parametrize("collection", ["s2", "s1"])
def test_every_parcel_gets_the_numbers_of_parcel_timeseries(cube, parcels, s2_extracted, collection, tmp_path):
    if collection == "s2":
        out = s2_extracted
    else:
        out = tmp_path / "s1"
        extract(parcels, cube, out, collection="s1", bands=["VV", "VH", "RVI"], block=BLOCK, time_block=TIME_BLOCK,
                progress=False)
    with pytest.warns(UserWarning, match="no statistics"):  # the one parcel too small for a pixel
        reference = parcel_timeseries(cube, parcels, collection=collection,
                                      bands=S2_BANDS if collection == "s2" else ["VV", "VH", "RVI"])
    extracted = read_timeseries(out).drop(columns="tile")
    assert len(extracted) == len(reference) > 0
    _same(extracted, reference)
    assert not extracted.duplicated(["parcel_id", "time", "band"]).any()


def test_parcels_cross_unit_edges_and_keep_exact_percentiles(cube, parcels, s2_extracted):
    """The test above is only meaningful if units split parcels; check they do, and check one by hand."""
    layer = next(d / doc["build"] for d in (cube / "_parcels" / "31UFU").glob("*/")
                 if (doc := json.loads((d / "layer.json").read_text()))["parcels"] == len(parcels))
    index = pd.read_parquet(layer / "index.parquet")
    ok = index[index.pixels > 0]
    crossing = ok[(ok.row1 - 1) // BLOCK > ok.row0 // BLOCK]
    assert len(crossing) >= 5
    pid = crossing.sort_values("pixels").parcel_id.iloc[-1]
    frame = read_timeseries(s2_extracted)
    rows = frame[(frame.parcel_id == pid) & (frame.band == "B08") & (frame["count"] > 2)]
    ds = open_cube(cube, bands=["B08", "SCL"])
    geobox = TileGrid.from_id("31UFU").geobox(10)
    labels = zarr.open_array(str(layer / "labels"), mode="r")
    a = ds.rio.transform()
    r0, c0 = round((geobox.affine.f - a.f) / 10), round((a.c - geobox.affine.c) / 10)
    window = labels[r0:r0 + ds.sizes["y"], c0:c0 + ds.sizes["x"]] == ok.set_index("parcel_id").label[pid]
    for row in rows.itertuples():
        day = ds.sel(time=row.time)
        values = day["B08"].values[window]
        values = values[~np.isin(day["SCL"].values[window], [0, 1, 3, 8, 9, 10, 11])]
        assert row.count == values.size
        assert row.p25 == pytest.approx(np.percentile(values, 25), rel=1e-6)
        assert row.median == pytest.approx(np.median(values), rel=1e-6)


def test_the_time_of_each_phase_is_told_with_the_cpu_time_in_it(cube, parcels, tmp_path):
    """Where a run's time went: wall seconds by phase, and the threads' CPU seconds within them (a wait for the
    store or a core is wall time only)."""
    result = extract(parcels.iloc[:30], cube, tmp_path / "out", bands=["B04", "B08"], block=BLOCK,
                     time_block=TIME_BLOCK, progress=False)
    wall, cpu = result.phase_seconds, result.phase_cpu_seconds
    assert list(wall) == list(cpu) == ["read", "statistics", "write"]  # in this order, whatever task ended first
    assert all(0 < cpu[k] <= wall[k] + 0.01 for k in wall), (wall, cpu)
    assert result.to_dict()["phase_cpu_seconds"] == cpu


@pytest.mark.parametrize("apart", [10**6, None], ids=["every neighbour", "the next two"])
def test_neighbouring_units_decode_the_chunks_they_share_once(cube, parcels, s2_extracted, tmp_path, monkeypatch,
                                                              apart):
    """A unit's window stretches into its neighbours' chunks (parcels crossing its edges): each chunk is fetched by
    every unit that reads it, but decoded once (until 2026-12-06 once per unit: 25 % more on the 10 km benchmark),
    and the rows are those of the threads' run. By default only with the units that start close to it (within
    NEIGHBOURS_APART tasks): some chunks are decoded again, fewer than fetched."""
    if apart is not None:
        monkeypatch.setattr(work_units, "NEIGHBOURS_APART", apart)
    fetched, decoded = [], []
    cut = shard_reader._cut

    def fetch(key, run, blob):
        chunks = cut(key, run, blob)
        fetched.extend((key, coords) for coords, _ in chunks)
        return chunks

    class CountingBlosc(numcodecs.Blosc):
        def decode(self, buf, out=None):
            decoded.append(len(buf))
            return super().decode(buf, out)

    monkeypatch.setattr(shard_reader, "_cut", fetch)
    monkeypatch.setattr(numcodecs, "Blosc", CountingBlosc)
    out = tmp_path / "out"
    extract(parcels, cube, out, bands=S2_BANDS, block=BLOCK, time_block=TIME_BLOCK, scheduler="sync", progress=False)
    assert len(fetched) > 1.1 * len(set(fetched))  # the units' windows overlap
    if apart is not None:
        assert len(decoded) == len(set(fetched))
    else:
        assert len(set(fetched)) < len(decoded) < len(fetched)
    _same(read_timeseries(out), read_timeseries(s2_extracted))


def test_every_input_parcel_has_a_status_with_its_reason(cube, parcels, tmp_path):
    grid = TileGrid.from_id("31UFU")
    x0, y0, x1, y1 = parcels.total_bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # inside the data
    odd = gpd.GeoDataFrame({"parcel_id": ["bowtie", "line", "tiny", "far", "empty", "beside"]}, geometry=[
        Polygon([(x0, y1), (x0 + 60, y1 + 60), (x0 + 60, y1), (x0, y1 + 60)]),  # self-intersecting: repaired
        LineString([(x0, y1), (x0 + 50, y1 + 50)]),                              # not a polygon
        box(cx, cy, cx + 6, cy + 6),                                              # no pixel after -5 m
        box(grid.ulx - 5_000_000, 0, grid.ulx - 4_999_000, 1000),               # outside every tile
        Polygon(),
        box(x1 + 3000, y0, x1 + 3100, y0 + 100),                                 # in the tile, beside the data
    ], crs=parcels.crs)
    mixed = pd.concat([parcels, odd], ignore_index=True)
    result = extract(mixed, cube, tmp_path / "out", bands=["B04"], block=BLOCK, progress=False)
    status = read_status(tmp_path / "out").set_index("parcel_id")
    assert len(status) == len(mixed) == result.parcels
    assert status.loc["line", "status"] == "invalid" and "LineString" in status.loc["line", "reason"]
    assert status.loc["empty", "status"] == "invalid" and "empty" in status.loc["empty", "reason"]
    assert status.loc["tiny", "status"] == "too_small" and "no pixel" in status.loc["tiny", "reason"]
    assert status.loc["far", "status"] == "outside" and "outside the data of every tile" in status.loc["far", "reason"]
    assert bool(status.loc["bowtie", "repaired"])
    assert status.loc["beside", "status"] == "outside"  # a season of nodata is no statistics
    assert result.status["invalid"] == 2 and result.status["outside"] == 2
    frame = read_timeseries(tmp_path / "out")
    assert set(frame.parcel_id) == set(status.index[status.status == "ok"])
    assert (status.loc[status.status == "ok", "pixels"] > 0).all()
    assert (status.cube_version == result.version).all()  # the audit trail: what was read, by what
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["software"] == f"cardcube {cardcube.__version__}" and manifest["finished"].endswith("+00:00")
    assert manifest["units"] == {band: "1" for band in manifest["bands"]}  # reflectance: what the numbers are in


def test_overlapping_parcels_each_keep_all_their_pixels(cube, parcels, tmp_path, monkeypatch):
    """A parcel register with overlaps (a duplicate, a field drawn inside another): the label raster gives a
    shared pixel to one parcel only, and the layer lists it for the others, so that each keeps all its pixels
    and gets the numbers of parcel_timeseries, read by block with the rest (they were read one by one)."""
    first = parcels.iloc[5]
    centre = first.geometry.representative_point()
    extra = gpd.GeoDataFrame({"parcel_id": ["copy", "inside"]},
                             geometry=[first.geometry, box(centre.x - 40, centre.y - 40, centre.x + 40, centre.y + 40)],
                             crs=parcels.crs)
    overlapping = pd.concat([parcels.iloc[:12], extra], ignore_index=True)
    extract(overlapping, cube, tmp_path / "out", bands=["B04"], block=BLOCK, progress=False)
    got = read_timeseries(tmp_path / "out").drop(columns="tile")
    _same(got, parcel_timeseries(cube, overlapping, bands=["B04"]))
    status = read_status(tmp_path / "out").set_index("parcel_id")
    assert (status.loc[[first.parcel_id, "copy", "inside"], "status"] == "ok").all()
    assert status.loc[first.parcel_id, "pixels"] == status.loc["copy", "pixels"] > status.loc["inside", "pixels"]
    assert not (tmp_path / "out" / "timeseries" / "tile=mosaic").exists()
    again = extract(overlapping, cube, tmp_path / "out", bands=["B04"], block=BLOCK, progress=False)
    assert again.rows == again.units == 0 and again.units_resumed > 0
    pd.testing.assert_frame_equal(read_status(tmp_path / "out").set_index("parcel_id"), status)


def test_all_touched_and_an_outward_buffer_keep_every_parcels_pixels_by_block(cube, parcels, tmp_path):
    """With all_touched or an outward buffer, neighbouring fields share the pixels of their common border: the
    layer lists each parcel's pixels labelled as a neighbour's, so every parcel gets the numbers of
    parcel_timeseries, read by block. They were read one by one (3,350 of the demo's 3,364 parcels: 26 s
    instead of 4 s for a month of B04, unbounded memory, no progress, no resumption)."""
    for kw in ({"all_touched": True, "buffer": 0.0}, {"buffer": 5.0}):
        out = tmp_path / f"out-{len(kw)}"
        extract(parcels, cube, out, bands=["B04", "NDVI"], block=BLOCK, time_block=TIME_BLOCK, progress=False, **kw)
        want = parcel_timeseries(cube, parcels, bands=["B04", "NDVI"], **kw)  # every parcel has pixels
        _same(read_timeseries(out).drop(columns="tile"), want)
        assert not (out / "timeseries" / "tile=mosaic").exists()
        made = {d: json.loads((d / "layer.json").read_text()) for d in (cube / "_parcels" / "31UFU").glob("*/")}
        layer = next(d / doc["build"] for d, doc in made.items() if (doc["buffer"], doc["all_touched"]) ==
                     (kw["buffer"], kw.get("all_touched", False)) and doc["parcels"] == len(parcels))
        index, lost = (pd.read_parquet(layer / f) for f in ("index.parquet", "lost.parquet"))
        assert index.shared.mean() > 0.5 and len(lost) > 10 * index.shared.sum()  # borders: pixels of two parcels
        status = read_status(out).set_index("parcel_id")
        assert (status.pixels.to_numpy() == index.set_index("parcel_id").pixels.loc[status.index].to_numpy()).all()


def test_a_parcel_on_the_edge_of_the_data_says_how_much_of_it_lies_outside(cube, parcels, tiny_region, tmp_path):
    """Half a parcel beyond the east edge of every scene: measured on the half inside, and its status says so
    (parcel_timeseries and extraction alike); a parcel inside gives no reason."""
    import rasterio

    from tests.ingest.scene_edits import asset_path, items_of

    bounds = []
    for feature in items_of(tiny_region.items, "sentinel-2-l2a"):  # independent: the source files' extents
        with rasterio.open(asset_path(tiny_region.items, feature, "B04")) as src:
            bounds.append(src.bounds)
    east, y = max(b.right for b in bounds), (min(b.bottom for b in bounds) + max(b.top for b in bounds)) / 2
    edge = gpd.GeoDataFrame({"parcel_id": ["edge"]}, geometry=[box(east - 100, y, east + 100, y + 100)],
                            crs=parcels.crs)
    two = pd.concat([parcels[["parcel_id", "geometry"]].iloc[:1], edge], ignore_index=True)
    frame = parcel_timeseries(cube, two, bands=["B04"])
    extract(two, cube, tmp_path / "out", bands=["B04"], block=BLOCK, progress=False)
    for status in (pd.DataFrame(frame.attrs["parcel_status"]).set_index("parcel_id"),
                   read_status(tmp_path / "out").set_index("parcel_id")):
        assert status.loc["edge", "status"] == "ok"
        assert status.loc["edge", "reason"].startswith("50% of the parcel lies outside the cube's data")
        assert status.loc[two.parcel_id[0], "reason"] == ""
    counts = frame[frame.parcel_id == "edge"]["count"]
    assert 0 < counts.max() <= 10 * 10  # the inner half only: its 10 x 10 pixels (its edges lie on pixel edges)


def test_a_parcel_larger_than_a_block_is_a_unit_of_its_own_read_in_shorter_runs(cube, parcels, tmp_path):
    """Two fields 1.5 km apart declared as one MultiPolygon: its window is not joined to a block's, and it is
    read a few dates at a time, with the numbers of parcel_timeseries."""
    from shapely.geometry import MultiPolygon

    a = parcels.geometry.iloc[0]
    far = parcels.geometry.distance(a).to_numpy()
    b = parcels.geometry.iloc[int(np.flatnonzero(far > 1500)[0])]
    split = gpd.GeoDataFrame({"parcel_id": ["split"]}, geometry=[MultiPolygon([a, b])], crs=parcels.crs)
    some = pd.concat([parcels.iloc[1:20], split], ignore_index=True)
    extract(some, cube, tmp_path / "out", bands=["B04", "NDVI"], block=BLOCK, time_block=TIME_BLOCK, progress=False)
    _same(read_timeseries(tmp_path / "out").drop(columns="tile"), parcel_timeseries(cube, some, bands=["B04", "NDVI"]))
    own = [p for p in (tmp_path / "out" / "timeseries").rglob("*.parquet") if "p" in p.stem.split("t")[0]]
    assert own and set(pd.concat(pd.read_parquet(p) for p in own).parcel_id) == {"split"}
    dates = read_timeseries(tmp_path / "out").time.nunique()
    assert len(own) > -(-dates // TIME_BLOCK)  # more runs than the blocks' time runs: fewer dates each
    # resumed with the parcels re-sorted and the layer built anew (elsewhere, or pruned): the wide parcel's files
    # were named by its label, its row in the file, and written again under its new one
    manifest = tmp_path / "out" / MANIFEST
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    again = extract(some.iloc[::-1], cube, tmp_path / "out", bands=["B04", "NDVI"], block=BLOCK,
                    time_block=TIME_BLOCK, layers=tmp_path / "layers", progress=False)
    assert again.rows == 0 and not read_timeseries(tmp_path / "out").duplicated(["parcel_id", "time", "band"]).any()
    # an earlier cardcube's names, by label, are found as written
    layer = parcel_layer(open_store(cube), "31UFU", as_parcels(some), buffer=DEFAULT_BUFFER, progress=False)
    label = int(layer.index.set_index("parcel_id").label["split"])
    for p in own:
        p.rename(p.with_name(re.sub(r"p[0-9a-f]{12}t", f"l{label}t", p.name)))
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    again = extract(some, cube, tmp_path / "out", bands=["B04", "NDVI"], block=BLOCK, time_block=TIME_BLOCK,
                    progress=False)
    assert again.rows == 0 and again.units_resumed > len(own)


def test_every_file_stores_times_that_spark_reads(cube, parcels, tmp_path):
    """Spark reads no Parquet TIMESTAMP(NANOS): the units' files store microseconds (the acquisition times are
    whole seconds), in UTC without a time zone (the file of the parcels read across tiles: test_multitile.py)."""
    extract(parcels.iloc[:4], cube, tmp_path, bands=["B04"], block=BLOCK, time_block=TIME_BLOCK, progress=False)
    files = list((tmp_path / "timeseries").rglob("*.parquet"))
    assert len(files) > 1 and {pq.read_schema(f).field("time").type for f in files} == {pa.timestamp("us")}


def test_order_statistics_of_stored_integer_bands_are_dictionary_encoded(cube, parcels, tmp_path):
    """A block's min, max and percentiles of a band stored as integers take a few values (the integers scaled):
    dictionary-encoded, files smaller and faster to write; not the mean, nor with an index among the bands (its
    order statistics are floats of their own), and the numbers read back are the same."""
    def encodings(out: Path) -> dict[str, set[str]]:
        files = sorted((out / "timeseries").rglob("*.parquet"))
        meta = pq.ParquetFile(files[0]).metadata.row_group(0)
        return {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}

    for bands in (["B04"], ["B04", "NDVI"]):
        out = tmp_path / "+".join(bands)
        extract(parcels.iloc[:8], cube, out, bands=bands, block=BLOCK, time_block=TIME_BLOCK, progress=False)
        found = encodings(out)
        encoded = {c for c in ("min", "max", "p25", "median", "p75") if "RLE_DICTIONARY" in found[c]}
        assert encoded == ({"min", "max", "p25", "median", "p75"} if bands == ["B04"] else set()), (bands, found)
        assert "RLE_DICTIONARY" not in found["mean"] | found["std"]
    with pytest.warns(UserWarning, match="no statistics"):  # a parcel too small for a pixel
        reference = parcel_timeseries(cube, parcels.iloc[:8], bands=["B04"])
    _same(read_timeseries(tmp_path / "B04").drop(columns="tile"), reference)


def test_an_out_folder_with_other_files_is_refused_and_ids_keep_their_type(cube, parcels, tiny_region, tmp_path):
    lpis = tmp_path / "lpis"
    lpis.mkdir()
    shutil.copy(tiny_region.parcels, lpis / "parcels.parquet")  # the name of the status table
    with pytest.raises(InvalidRequestError, match=r"holds parcels\.parquet but no extraction"):
        extract(lpis / "parcels.parquet", cube, lpis, bands=["B04"], progress=False)
    assert gpd.read_parquet(lpis / "parcels.parquet").columns.equals(gpd.read_parquet(tiny_region.parcels).columns)
    with pytest.raises(InvalidRequestError, match="no extraction at"):
        read_status(lpis)
    for read in (read_status, read_timeseries):  # no folder at all: still no extraction, not "no cube"
        with pytest.raises(InvalidRequestError, match=r"no extraction at .*missing: the folder does not exist"):
            read(lpis / "missing")
    numbered = parcels.iloc[:8].assign(parcel_id=range(1, 9))
    as_text = numbered.assign(parcel_id=[str(i) for i in range(1, 9)])
    extract(numbered, cube, tmp_path / "int", bands=["B04"], progress=False)
    extract(as_text, cube, tmp_path / "str", bands=["B04"], progress=False)  # not the integer ids' layer
    assert read_timeseries(tmp_path / "str").parcel_id.map(type).eq(str).all()
    assert read_status(tmp_path / "int").parcel_id.tolist() == list(range(1, 9))


def test_a_killed_run_resumes_without_duplicate_rows(cube, parcels, s2_extracted, tiny_region, tmp_path):
    out = tmp_path / "out"
    argv = ["extract", "--parcels", str(tiny_region.parcels), "--cube", str(cube), "--out", str(out), "--block",
            str(BLOCK), "--bands", "B04,NDVI", "--scheduler", "sync", "--quiet"]
    env = {**os.environ, "CARDCUBE_KILL_AT": "extract-unit-written", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "cardcube.cli", *argv], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    written = list((out / "timeseries").rglob("*.parquet"))
    assert len(written) == 1  # killed right after its first file
    with pytest.raises(InvalidRequestError, match="is unfinished"):  # not read as if it held every parcel
        read_timeseries(out)
    assert set(read_timeseries(out, allow_incomplete=True).band) == {"B04", "NDVI"}
    first = len(pd.read_parquet(written[0]))
    # a kill inside a file's write leaves the local store's temporary file (written whole, or cut): read as one more
    # file of the dataset, it repeated rows or failed the read
    shutil.copy(written[0], written[0].with_name("r00000c00000t0004.0123456789abcdef.partial"))
    written[0].with_name("r00000c00000t0008.fedcba9876543210.partial").write_bytes(written[0].read_bytes()[:100])
    resumed = run_here(argv)  # run to its end: in this process (the kill needed one of its own)
    assert resumed.returncode == 0, resumed.stderr
    done = resumed.stdout
    assert "(1 already there from an earlier run)" in done
    rows = int(done.split(" rows written")[0].rsplit(" ", 1)[1].replace(",", ""))  # the resumed run wrote
    assert rows + first == len(read_timeseries(out)) == pq.ParquetDataset(out / "timeseries").read().num_rows
    assert rows > 999 and f" {rows:,} rows written" in done  # a count of thousands read at a glance
    assert not list(out.rglob("*.partial"))
    _same(read_timeseries(out), _bands(read_timeseries(s2_extracted), "B04", "NDVI"))


def test_a_run_killed_writing_its_manifest_is_no_stranger_s_folder(cube, parcels, tmp_path):
    """The temporary file of the first manifest.json, left by a kill, made every run refuse the folder as holding
    other files."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.0123456789abcdef.partial").write_text('{"cardcube:')
    result = extract(parcels, cube, out, bands=["B04"], block=BLOCK, progress=False)
    assert not result.failures and sorted(p.name for p in out.iterdir()) == ["manifest.json", "parcels.parquet",
                                                                         "timeseries"]


def test_a_rerun_is_a_no_op_and_other_parameters_are_refused(cube, parcels, s2_extracted):
    before = {p: p.stat().st_mtime_ns for p in (s2_extracted / "timeseries").rglob("*.parquet")}
    again = extract(parcels, cube, s2_extracted, bands=S2_BANDS, block=BLOCK, time_block=TIME_BLOCK, progress=False)
    assert again.rows == again.units == 0 and again.units_resumed == len(before)
    # the same parcels re-sorted, and the cube named through a link and "..", are the same extraction
    (cube.parent / "elsewhere").mkdir(exist_ok=True)
    link = cube.parent / "elsewhere" / "link"
    if not link.exists():
        link.symlink_to(cube)
    same_cube = link / ".." / cube.name  # the OS goes up from the link's target, not from "elsewhere"
    again = extract(parcels.iloc[::-1], same_cube, s2_extracted, bands=S2_BANDS, block=BLOCK, time_block=TIME_BLOCK,
                    progress=False)
    assert again.rows == again.units == 0 and again.units_resumed == len(before)
    assert {p: p.stat().st_mtime_ns for p in (s2_extracted / "timeseries").rglob("*.parquet")} == before
    with pytest.raises(InvalidRequestError, match="other bands"):
        extract(parcels, cube, s2_extracted, bands=["B04"], block=BLOCK, time_block=TIME_BLOCK, progress=False)
    assert '"complete": true' in (s2_extracted / MANIFEST).read_text()


def test_a_finished_extraction_without_its_status_table_is_refused_not_cut(cube, parcels, s2_extracted, tmp_path):
    """parcels.parquet lost (not copied with the folder): the run took the extraction for an interrupted first one,
    read parcels from other tiles than their rows were and deleted those rows as stale (4,104 rows became 893)."""
    out = Path(shutil.copytree(s2_extracted, tmp_path / "copy"))
    (out / "parcels.parquet").unlink()
    before = sorted(p.name for p in (out / "timeseries").rglob("*.parquet"))
    for update in (False, True):
        with pytest.raises(InvalidRequestError, match=r"finished, and its status table parcels\.parquet is missing"):
            extract(parcels, cube, out, bands=S2_BANDS, block=BLOCK, time_block=TIME_BLOCK, update=update,
                    progress=False)
    assert sorted(p.name for p in (out / "timeseries").rglob("*.parquet")) == before


def test_other_parcels_are_named_so_not_blamed_on_the_cube(cube, parcels, s2_extracted, tmp_path):
    """A parcel redrawn outside the data, run again into a finished extraction: refused as "the cube's covered area
    grew" (an update was told "other parcels")."""
    out = Path(shutil.copytree(s2_extracted, tmp_path / "copy"))
    moved = parcels.copy()
    moved.loc[moved.index[0], "geometry"] = shapely.affinity.translate(moved.geometry.iloc[0], 50_000, 0)
    for update in (False, True):
        with pytest.raises(InvalidRequestError, match="with other parcels; write to a new --out"):
            extract(moved, cube, out, bands=S2_BANDS, block=BLOCK, time_block=TIME_BLOCK, update=update,
                    progress=False)


def test_an_extraction_of_another_cube_at_the_same_location_is_not_resumed_into(tiny_region, parcels, tmp_path):
    """The cube deleted and ingested anew at the same path (its versions numbered from 1 again): a re-run
    resumed the unfinished extraction of the old cube, mixing rows of both, complete and exit 0."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    cube, out, few = tmp_path / "cube", tmp_path / "out", parcels.iloc[:20]
    ingest(write_items(tiny_region.items, features[:4], "old-archive.json"), cube,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    extract(few, cube, out, bands=["B04"], progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))  # as if killed before its end
    shutil.rmtree(cube)
    ingest(write_items(tiny_region.items, features[4:8], "new-archive.json"), cube,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    with pytest.raises(InvalidRequestError, match=r"holds an extraction of version 1 of .*, committed at .*; the cube "
                                                  r"there now has a version 1 committed at .*another cube"):
        extract(few, cube, out, bands=["B04"], progress=False)


def test_an_unfinished_extraction_of_a_version_the_cube_made_anew_never_held_says_so(tiny_region, parcels, tmp_path):
    """The cube deleted and ingested anew at the same path, with fewer versions than the extraction's: a re-run was
    told its version "has been expired since", where the cube there never held it."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    cube, out, few = tmp_path / "cube", tmp_path / "out", parcels.iloc[:20]
    for part in (features[:2], features[2:4]):
        ingest(write_items(tiny_region.items, part, "old-archive.json"), cube, chunks=ChunkLayout.parse(TEST_CHUNKS),
               progress=False)
    extract(few, cube, out, bands=["B04"], progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["version"] == 2
    (out / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))  # as if killed before its end
    shutil.rmtree(cube)
    ingest(write_items(tiny_region.items, features[4:8], "new-archive.json"), cube,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    with pytest.raises(InvalidRequestError, match=r"holds an extraction of version 2 of .*; the cube there now never "
                                                  r"held version 2 \(its latest is 1\): another cube at the same "
                                                  r"location \(made anew\?\)"):
        extract(few, cube, out, bands=["B04"], progress=False)


def test_an_extraction_follows_its_cube_moved_and_refuses_another_cube_elsewhere(cube, tiny_region, parcels,
                                                                                  tmp_path):
    """A demo folder (cube and extraction) moved whole: a re-run was refused "with other cube; write to a new --out",
    the cube's URL compared, not the cube. The cube moved is the same cube (its version's commit time says so); a
    cube ingested anew elsewhere is not."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    first, few = tmp_path / "first", parcels.iloc[:20]
    shutil.copytree(cube, first)
    extract(few, first, tmp_path / "out", bands=["B04"], progress=False)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    shutil.move(tmp_path / "out", tmp_path / "out-moved")
    cube, out = tmp_path / "moved", tmp_path / "out-moved"
    before = read_timeseries(out)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))  # as if killed before its end
    extract(few, cube, out, bands=["B04"], progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["cube"] == str(cube.resolve())
    _same(read_timeseries(out), before)

    other = tmp_path / "other"
    features = items_of(tiny_region.items, "sentinel-2-l2a")
    ingest(write_items(tiny_region.items, features[:4], "other-archive.json"), other,
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    with pytest.raises(InvalidRequestError, match=r"holds an extraction of version 1 of .*moved, committed at .*; "
                                                  r"the cube at .*other has a version 1 committed at .*: another "
                                                  r"cube, whose rows must not be mixed"):
        extract(few, other, out, bands=["B04"], progress=False)
    # a copy of the cube made before the extraction's version never had it: said so, not that it expired
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "version": 2, "cube": "/elsewhere/cube"}))
    with pytest.raises(InvalidRequestError, match=r"holds an extraction of version 2 of /elsewhere/cube, not .*moved,"
                                                  r" which never held version 2 \(its latest is 1: a copy made before "
                                                  r"it\?\): it cannot be told to be the same cube"):
        extract(few, cube, out, bands=["B04"], progress=False)


def test_a_time_range_given_in_python_is_the_same_run_as_its_text(cube, parcels, tmp_path):
    """``time=slice(a, b)`` or ``(a, b)`` was recorded as its Python text: an update with ``--time a/b`` (or
    the other form) was refused as a run "with other time"."""
    out, few = tmp_path / "out", parcels.iloc[:10]
    first = extract(few, cube, out, bands=["B04"], time=slice("2024-05", "2024-06"), progress=False)
    assert json.loads((out / MANIFEST).read_text())["time"] == "2024-05/2024-06"
    for same in ("2024-05/2024-06", ("2024-05-01", "2024-06-30"), slice("2024-05", "2024-06")):
        assert extract(few, cube, out, bands=["B04"], time=same, update=True, progress=False).rows == 0
    with pytest.raises(InvalidRequestError, match="with other time"):
        extract(few, cube, out, bands=["B04"], time=("2024-05", "2024-07"), update=True, progress=False)
    assert first.rows > 0


def test_an_extraction_that_recorded_a_python_time_range_as_its_text_is_updated_by_the_same_call(cube, parcels,
                                                                                               tmp_path):
    """A manifest written before 2026-12-06 records ``time=slice(a, b)`` as ``str(time)``: the same call, now
    recorded as ``a/b``, was refused as a run "with other time", its message saying to run it as it was run."""
    out, few, time = tmp_path / "out", parcels.iloc[:10], slice("2024-05", "2024-06")
    extract(few, cube, out, bands=["B04"], time=time, progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "time": str(time)}))  # as the cardcube before recorded it
    assert extract(few, cube, out, bands=["B04"], time=time, update=True, progress=False).rows == 0
    assert json.loads((out / MANIFEST).read_text())["time"] == str(time)  # its text kept
    with pytest.raises(InvalidRequestError, match="with other time"):
        extract(few, cube, out, bands=["B04"], time=slice("2024-05", "2024-07"), update=True, progress=False)


def test_absurd_work_units_and_bad_requests_are_refused_before_anything_is_written(cube, parcels, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RequestTooLargeError, match="smaller block"):
        extract(parcels, cube, out, block=20_000, progress=False)
    with pytest.raises(InvalidRequestError, match="not an ISO 8601"):
        extract(parcels, cube, out, time="2024-13", progress=False)
    with pytest.raises(InvalidRequestError, match="empty time range"):
        extract(parcels, cube, out, time="2024-09/2024-04", progress=False)
    with pytest.raises(InvalidRequestError, match="unknown statistic"):
        extract(parcels, cube, out, stats=["mean", "average"], progress=False)
    with pytest.raises(InvalidRequestError, match=r"block \(--block\) must be a positive number of pixels, not 0"):
        extract(parcels, cube, out, block=0, progress=False)
    with pytest.raises(InvalidRequestError, match="no band given"):
        extract(parcels, cube, out, bands=[], progress=False)
    with pytest.raises(InvalidRequestError, match="no statistic given"):
        extract(parcels, cube, out, stats=[], progress=False)
    with pytest.raises(InvalidRequestError, match="SCL holds scene classes"):
        extract(parcels, cube, out, bands=["B04", "SCL"], progress=False)
    with pytest.raises(DateNotFoundError, match=r"time range .*: version 1 of the s2 cube holds"):
        extract(parcels, cube, out, time="2030-01/2030-12", progress=False)
    with pytest.raises(DateNotFoundError, match=r"time range .*: version 1 of the s2 cube holds"):  # was a complete
        extract(parcels, cube, out, time="2030-01/2030-12", update=True, progress=False)  # extraction of no row
    from cube.indices import check_bands

    assert check_bands("B04, NDVI", ["B04", "B08"]) == ["B04", "NDVI"]  # one string is a list, not letters
    assert check_bands("b04,ndvi,NDVI", ["B04", "B08"]) == ["B04", "NDVI"]  # in any case, each once
    with pytest.raises(InvalidRequestError, match="unknown band") as refused:
        check_bands("B99", ["B04", "B08", "SCL"], statistics=True)
    assert "SCL" not in str(refused.value)  # not offered where it is refused
    with pytest.raises(InvalidRequestError, match=r"1 parcel\(s\) have no id \(row\(s\) 3\)"):
        extract(parcels.assign(parcel_id=parcels.parcel_id.where(parcels.index != 3, None)), cube, out, progress=False)
    nullable = parcels.assign(parcel_id=pd.array(range(len(parcels)), dtype="Int64")).copy()
    nullable.loc[2, "parcel_id"] = pd.NA  # a database's table: rows written with no id, then a KeyError
    with pytest.raises(InvalidRequestError, match=r"1 parcel\(s\) have no id \(row\(s\) 2\)"):
        extract(nullable, cube, out, progress=False)
    file = tmp_path / "layers.txt"
    file.write_text("not a folder")
    with pytest.raises(InvalidRequestError, match=r"layers \(--layers\) .*layers.txt is a file: give a folder"):
        extract(parcels, cube, out, layers=file, progress=False)  # was a StoreError once the manifest was written
    with pytest.raises(InvalidRequestError, match="unknown scheduler 'bogus'"):
        extract(parcels, cube, out, scheduler="bogus", progress=False)
    assert not out.exists()  # so a corrected run is not refused as "other parameters"


def test_ids_of_integers_and_text_mixed_are_extracted_as_text(cube, parcels, tmp_path):
    """Two registers joined (1, 2, "A-3"): Arrow refused the column deep inside the run, which left an unfinished
    manifest behind; the ids are now text throughout, as posted GeoJSON's are."""
    few = parcels.iloc[:4].assign(parcel_id=pd.Series([1, 2, "A-3", "4"], dtype=object).values)
    out = tmp_path / "out"
    extract(few, cube, out, bands=["B04"], progress=False)
    status = read_status(out)
    assert status.parcel_id.tolist() == ["1", "2", "A-3", "4"]
    ok = status.parcel_id[status.status == "ok"]
    assert len(ok) >= 2 and sorted(read_timeseries(out).parcel_id.unique()) == sorted(ok)


@pytest.mark.timeout(240)  # about 20 s; a worker hung once in a fresh clone: fail in minutes, not ten
def test_a_dask_cluster_of_two_processes_gives_identical_output(cube, parcels, s2_extracted, tmp_path):
    from distributed import LocalCluster

    # by its address, as `cardcube extract --scheduler tcp://...` (tests/ingest/test_distributed.py passes a Client)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        before = set(cluster.scheduler.clients)
        extract(parcels, cube, tmp_path / "out", bands=["B8A", "NDVI"], block=BLOCK, time_block=TIME_BLOCK,
                scheduler=cluster.scheduler_address, progress=False)
        assert set(cluster.scheduler.clients) == before  # the Client connected for the run is closed after it
    _same(read_timeseries(tmp_path / "out"), _bands(read_timeseries(s2_extracted), "B8A", "NDVI"))


@pytest.mark.timeout(240)
def test_files_the_workers_wrote_where_this_machine_cannot_see_them_are_no_complete_run(cube, parcels, tmp_path,
                                                                                       monkeypatch):
    """Workers on other machines wrote a local --out to their own disks: the run said "41040 rows written",
    marked the extraction complete, and read_timeseries gave 0 rows without a word. Workers in another working
    folder, given a folder by a relative path, stand for them here. Refused before any work now, and checked after
    it too."""
    import os

    from distributed import Client, LocalCluster
    from zarr.storage import LocalStore

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(os.chdir, str(tmp_path / "elsewhere"))
        # refused before any work: the workers do not see the manifest this machine has just written
        with pytest.raises(InvalidRequestError, match=r"2 of the 2 dask workers .* do not see the output folder "
                                                      r"\(--out\) out \(is it on this machine's disk only\?\)"):
            extract(parcels, cube, LocalStore("out", read_only=False), bands=["B8A"], block=BLOCK,
                    time_block=TIME_BLOCK, scheduler=client, progress=False)
    assert not (tmp_path / "elsewhere" / "out").exists()  # the workers wrote nothing
    with pytest.raises(CardcubeError, match=r"unfinished|not complete|incomplete"):
        read_timeseries(tmp_path / "out")  # not taken for a complete extraction of no rows
    # and after the work (a worker that joined later): files a unit said it wrote, not found here
    with pytest.raises(StoreError, match=r"1 of the 1 files the work units wrote are not in .* as this machine sees"):
        _check_written(open_store(tmp_path / "out"), ["timeseries/31UFU/x-0a1b2c.parquet"], "0a1b2c")


@pytest.mark.timeout(300)
def test_files_a_stopped_run_s_workers_write_late_are_not_a_new_run_s(cube, parcels, s2_extracted, tiny_region,
                                                                     s3_bucket, s3_proxy, monkeypatch):
    """A SIGTERMed extraction on a cluster ended at once while its workers' units ran on; their files landed
    later, over those of a run started anew in the cleared --out with other bands, which read them as its own: a
    complete B08 extraction of B04 rows. The run now waits for its units (--stop-grace), says what may still
    land, and a new run reads only the files named by its own run."""
    import signal
    import time

    import distributed

    url, direct = s3_bucket.url_for("out"), s3_bucket.storage_options()
    for name, value in s3_bucket.server.environment().items():  # the keys, for the workers and the driver alike
        monkeypatch.setenv(name, value)
    client = s3_bucket.server.client()
    s3_proxy.hold(["PUT"], path_contains="/timeseries/")  # the first run's uploads are slow to land
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        proc = stopped_while_held([sys.executable, "-m", "cardcube.cli", "extract", "--parcels",
                                   str(tiny_region.parcels), "--cube", str(cube), "--out", url, "--bands", "B04",
                                   "--block", str(BLOCK), "--time-block", str(TIME_BLOCK), "--scheduler",
                                   cluster.scheduler_address, "--endpoint-url", s3_proxy.endpoint_url,
                                   "--stop-grace", "1", "--quiet"], s3_proxy)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "extract stopped: waiting up to 1 s for the" in err
        assert re.search(r"files of this run \(\w+\) may still land in s3://", err), err
        assert "cardcube extract: error: the run stopped (interrupted: Ctrl-C or SIGTERM); " in err
        listed = client.list_objects_v2(Bucket=s3_bucket.name, Prefix="out/").get("Contents", [])
        for key in (o["Key"] for o in listed):  # start over
            client.delete_object(Bucket=s3_bucket.name, Key=key)
        extract(parcels, cube, url, bands=["B08"], block=BLOCK, time_block=TIME_BLOCK, progress=False,
                out_storage_options=direct)
        s3_proxy.release()  # the first run's uploads land
        with distributed.Client(cluster) as workers:
            while sum(workers.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
                time.sleep(0.1)
    run = json.loads(client.get_object(Bucket=s3_bucket.name, Key="out/manifest.json")["Body"].read())["run"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket.name, Prefix="out/timeseries/")["Contents"]]
    assert any(not k.endswith(f"-{run}.parquet") for k in keys)  # the late files are there
    _same(read_timeseries(url, storage_options=direct), _bands(read_timeseries(s2_extracted), "B08"))


def test_from_s3_to_s3(cube, parcels, s2_extracted, s3_bucket):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options())
    fs.put(str(cube) + "/", f"{s3_bucket.name}/cube/", recursive=True)
    opts = s3_bucket.storage_options()
    result = extract(parcels, s3_bucket.url_for("cube"), s3_bucket.url_for("out"), bands=["B08"], block=2 * BLOCK,
                     storage_options=opts, out_storage_options=opts, progress=False)
    assert result.status["ok"] == len(parcels) - 1
    _same(read_timeseries(s3_bucket.url_for("out"), storage_options=opts), _bands(read_timeseries(s2_extracted), "B08"))


def test_a_cube_that_may_only_be_read_needs_layers_kept_elsewhere(cube, parcels, s2_extracted, s3_bucket):
    """An analyst's credentials may only read the agency's cube: the label layers go where they may write."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options())
    fs.put(str(cube) + "/", f"{s3_bucket.name}/ro-cube/", recursive=True)
    fs.rm(f"{s3_bucket.name}/ro-cube/_parcels", recursive=True)  # the layers other tests stored beside it
    writer = s3_bucket.storage_options()
    cube_url, out = s3_bucket.url_for("ro-cube"), s3_bucket.url_for("ro-out")
    for layers in (None, s3_bucket.url_for("layers")):
        with start_s3_proxy(s3_bucket.server.endpoint_url) as read_only:  # the cube through a proxy refusing writes
            read_only.fail_randomly(1.0, status=403, code="AccessDenied", methods=["PUT", "POST", "DELETE"])
            reader = read_only.storage_options(attempts=1)
            if layers is None:
                with pytest.raises(StoreError, match=r"cannot store the label layer of tile \w+ in s3://\S+/ro-cube: "
                                                     r".*--layers"):
                    extract(parcels, cube_url, out, bands=["B08"], storage_options=reader, out_storage_options=writer,
                            progress=False)
                continue
            result = extract(parcels, cube_url, out, bands=["B08"], layers=layers, storage_options=reader,
                             out_storage_options=writer, progress=False)
            assert not set(read_only.snapshot().requests) & {"PUT", "POST", "DELETE"}  # the cube was only read
    assert result.status["ok"] == len(parcels) - 1
    _same(read_timeseries(out, storage_options=writer), _bands(read_timeseries(s2_extracted), "B08"))
    assert fs.ls(f"{s3_bucket.name}/layers/_parcels")  # kept there for the next run
    assert not fs.exists(f"{s3_bucket.name}/ro-cube/_parcels")


def test_read_timeseries_selects_bands_and_columns(s2_extracted):
    every = read_timeseries(s2_extracted)
    some = read_timeseries(s2_extracted, bands=["B04", "NDVI"], columns=["mean", "count"])
    assert list(some.columns) == ["parcel_id", "time", "band", "mean", "count", "tile"]
    want = every[every.band.isin(["B04", "NDVI"])][list(some.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(some, want, check_dtype=False, check_categorical=False)


def test_flag_cli_on_an_extraction_is_flag_parcels_of_its_statistics(s2_extracted, cube, parcels, tiny_region,
                                                                      tmp_path, capsys):
    from cardcube.cli import main
    from cardcube.storage import open_store
    from cube.anomalies import MarkerRules, flag_parcels
    from cube.ledger import read_version

    out = tmp_path / "flags.parquet"
    assert main(["flag", "--timeseries", str(s2_extracted), "--parcels", str(tiny_region.parcels),
                 "--grassland", "265,266", "--out", str(out)]) == 0
    written = pd.read_parquet(out)
    assert pq.read_schema(out).field("min_ndvi_date").type == pa.timestamp("us")  # as Spark reads it
    want = flag_parcels(read_timeseries(s2_extracted), parcels.set_index("parcel_id").crop_code, grassland=[265, 266])
    # the parcels the extraction could not measure follow, not judged (the test below)
    pd.testing.assert_frame_equal(written.iloc[:len(want)], want, check_dtype=False)
    assert written.bare_soil.any() and f"{int(want.flagged.sum()):,} of {len(written):,} parcels flagged" in \
        capsys.readouterr().out
    record = json.loads((tmp_path / "flags.parquet.json").read_text())  # what reproduces the flags
    assert record["rules"] == json.loads(json.dumps(asdict(MarkerRules()))) and record["grassland"] == ["265", "266"]
    assert record["inputs"]["timeseries"]["cube_version"] == read_version(open_store(cube), "s2").version
    (tmp_path / "rules.json").write_text('{"bare_ndvi": 0.05, "season": ["05-15", "09-15"]}')
    assert main(["flag", "--timeseries", str(s2_extracted), "--parcels", str(tiny_region.parcels), "--grassland",
                 "265,266", "--rules", str(tmp_path / "rules.json"), "--out", str(out)]) == 0
    strict = MarkerRules(bare_ndvi=0.05, season=("05-15", "09-15"))
    strictly = flag_parcels(read_timeseries(s2_extracted), parcels.set_index("parcel_id").crop_code,
                            grassland=[265, 266], rules=strict)
    pd.testing.assert_frame_equal(pd.read_parquet(out).iloc[:len(strictly)], strictly, check_dtype=False)
    assert json.loads((tmp_path / "flags.parquet.json").read_text())["rules"]["bare_ndvi"] == 0.05
    assert pd.read_parquet(out).bare_soil.sum() < written.bare_soil.sum()
    (tmp_path / "rules.json").write_text('{"bare_nvdi": 0.05}')
    assert main(["flag", "--timeseries", str(s2_extracted), "--parcels", str(tiny_region.parcels), "--rules",
                 str(tmp_path / "rules.json"), "--out", str(out)]) == 2
    assert "unknown marker rule(s) ['bare_nvdi']" in capsys.readouterr().err
    assert main(["flag", "--timeseries", str(s2_extracted), "--parcels", str(tiny_region.parcels),
                 "--crop-column", "crop", "--out", str(out)]) == 2
    assert "no column 'crop'" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="no statistics"):  # parcels too small to measure
        s1 = parcel_timeseries(cube, parcels, collection="s1", bands=["VH"], stats=["mean"], histogram=False)
    s1.to_parquet(tmp_path / "s1.parquet")
    assert main(["flag", "--timeseries", str(s2_extracted), "--s1", str(tmp_path / "s1.parquet"), "--parcels",
                 str(tiny_region.parcels), "--grassland", "265,266", "--out", str(tmp_path / "flags.csv")]) == 0
    with_radar = flag_parcels(read_timeseries(s2_extracted), parcels.set_index("parcel_id").crop_code,
                              grassland=[265, 266], s1=s1)
    written = pd.read_csv(tmp_path / "flags.csv")
    written = written.iloc[:len(with_radar)]
    assert written.parcel_id.tolist() == with_radar.parcel_id.tolist() and written.largest_vh_drop.notna().any()
    np.testing.assert_allclose(written.largest_vh_drop, with_radar.largest_vh_drop, rtol=1e-12)
    assert written.no_mowing.tolist() == with_radar.no_mowing.tolist()


def test_an_update_after_the_covered_area_grew_gives_the_parcels_inside_now_the_new_dates_and_says_so(
        tiny_region, parcels, tmp_path):
    """Early scenes cover the west of the region only (a partial swath), a later one all of it: the parcels
    outside before are inside now. An update gave them the new date only, silently (110 rows of 152); then it was
    refused, and every update of an S1 extraction whose first dates' GRD collars left parcels outside was refused.
    It now reads them from their tile: their rows begin with the new date, as their status says, and equal a whole
    extraction's but for the rows of count 0 of the dates that held no data over them; the note stays."""
    from ingest.job import ingest
    from tests.ingest.scene_edits import broken_copy, items_of, west_part, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    partial = []
    for f in features[:3]:
        item = broken_copy(tiny_region.items, f, f"{f['id']}-west", west_part(0.5))
        for asset in item["assets"].values():
            shape = asset.get("proj:shape")
            if shape:
                asset["proj:shape"] = [shape[0], round(shape[1] * 0.5)]
        partial.append(item)
    cube, out = tmp_path / "cube", tmp_path / "out"
    ingest(write_items(tiny_region.items, partial, "west.json"), cube, progress=False)
    kw = {"bands": ["B04"], "block": BLOCK, "progress": False}
    first = extract(parcels, cube, out, **kw)
    assert first.status["outside"] > 0 and first.status["ok"] > 0
    manifest = (out / MANIFEST).read_bytes()
    ingest(write_items(tiny_region.items, features[3:4], "full.json"), cube, progress=False)
    amended = parcels.assign(geometry=parcels.geometry.translate(xoff=-50_000))  # another parcel file: said so,
    with pytest.raises(InvalidRequestError, match="with other parcels; write to a new --out"):  # not blamed on
        extract(amended, cube, out, update=True, **kw)  # the covered area ("31UFU -> outside")
    assert (out / MANIFEST).read_bytes() == manifest
    was_outside = set(read_status(out).query("status == 'outside'").parcel_id)
    extract(parcels, cube, out, update=True, **kw)
    extract(parcels, cube, out, **kw)  # a run again keeps what the update said
    status = read_status(out).set_index("parcel_id")
    assert (status.loc[list(was_outside), "status"] == "ok").all()
    assert status.loc[list(was_outside), "reason"].str.contains("its rows begin with the dates of version 2").all()
    assert not status.drop(index=list(was_outside)).reason.fillna("").str.contains("rows begin").any()
    whole = extract(parcels, cube, tmp_path / "whole", **kw)
    assert whole.status["outside"] == 0
    key = ["parcel_id", "time", "band"]
    got = read_timeseries(out).drop(columns="cube_version").sort_values(key).reset_index(drop=True)
    want = read_timeseries(tmp_path / "whole").drop(columns="cube_version")
    earlier = want.parcel_id.isin(was_outside) & (want.time < got.time.max())
    assert (want[earlier]["count"] == 0).all() and earlier.any()  # the dates that held no data over them
    pd.testing.assert_frame_equal(got, want[~earlier].sort_values(key).reset_index(drop=True))


def test_an_update_adds_only_the_new_dates_and_gives_the_numbers_of_a_whole_run(tiny_region, parcels, tmp_path):
    """New scenes arrive (one of them older than dates already extracted): ``--update`` extracts their
    dates alone, into files of their own, resumes when killed, and the output equals a whole extraction of
    the new version."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")[:9]  # the season's first 9 dates, of its 19
    first = write_items(tiny_region.items, features[:2] + features[3:6], "update-first.json")  # 4 cold, 1 hot
    cube, out = tmp_path / "cube", tmp_path / "out"
    ingest(first, cube, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    kw = {"bands": ["B04", "NDVI"], "block": BLOCK, "time_block": TIME_BLOCK, "progress": False}
    extract(parcels, cube, out, **kw)
    written = {p: p.read_bytes() for p in (out / "timeseries").rglob("*.parquet")}
    everything = write_items(tiny_region.items, features, "update-all.json")
    assert ingest(everything, cube, progress=False).compacted  # version 2: 4 more dates, hot buffer compacted
    with pytest.raises(InvalidRequestError, match="--update") as refused:
        extract(parcels, cube, out, **kw)
    assert "resume" not in str(refused.value)  # it is complete

    argv = ["extract", "--parcels", str(tiny_region.parcels), "--cube", str(cube), "--out", str(out), "--block",
            str(BLOCK), "--bands", "B04,NDVI", "--scheduler", "sync", "--quiet", "--update"]
    env = {**os.environ, "CARDCUBE_KILL_AT": "extract-unit-written", "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-m", "cardcube.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=300).returncode == -9
    resumed = run_here(argv)  # run to its end: in this process (the kill needed one of its own)
    assert resumed.returncode == 0, resumed.stderr
    assert "(1 already there from an earlier run)" in resumed.stdout and "version 2" in resumed.stdout

    assert {p: p.read_bytes() for p in written} == written  # the first run's files as they were
    added = {p for p in (out / "timeseries").rglob("*.parquet")} - set(written)
    run = json.loads((out / "manifest.json").read_text())["run"]  # of the first run, which names the update's too
    assert added and all(p.name.endswith(f"-v00000002-{run}.parquet") for p in added)
    new_times = {pd.Timestamp(f["properties"]["datetime"]).tz_localize(None) for f in [features[2], *features[6:]]}
    assert set(pd.concat([pd.read_parquet(p) for p in added]).time) == new_times
    whole = extract(parcels, cube, tmp_path / "whole", **kw)
    assert whole.version == 2
    assert set(read_status(out).cube_version) == {2}  # the status now describes version 2's statistics
    _same(read_timeseries(out).drop(columns="cube_version"),
          read_timeseries(tmp_path / "whole").drop(columns="cube_version"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["version"] == 2 and manifest["updated_from"] == [1]
    assert [len(ids) for ids in manifest["scenes"].values()] == [len(features)]
    again = extract(parcels, cube, out, update=True, **kw)  # nothing new: nothing written
    assert again.rows == 0 and {p for p in (out / "timeseries").rglob("*.parquet")} == set(written) | added
    assert again.new_scenes == 0 and "(no scene new since the last run: the extraction holds them all)" in \
        again.summary()
    with pytest.raises(InvalidRequestError, match="only goes forward"):
        extract(parcels, cube, out, as_of=1, update=True, **kw)
    unfinished = tmp_path / "unfinished"  # an extraction of version 1 killed before it completed
    shutil.copytree(tmp_path / "whole", unfinished)
    manifest = json.loads((unfinished / MANIFEST).read_text())
    from cardcube.storage import open_store
    from cube.ledger import read_version

    committed = read_version(open_store(cube), "s2", 1).created
    (unfinished / MANIFEST).write_text(json.dumps({**manifest, "version": 1, "committed": committed,
                                                   "complete": False}))
    with pytest.raises(InvalidRequestError, match=r"unfinished.*as_of=1"):
        extract(parcels, cube, unfinished, update=True, **kw)
    with pytest.raises(InvalidRequestError, match=r"unfinished: resume it with as_of=1 \(--as-of 1\)") as refused:
        extract(parcels, cube, unfinished, **kw)
    assert "--update" not in str(refused.value)  # an update starts from a complete extraction
    from datetime import timedelta

    from ingest.expire import expire

    expire(cube, older_than=timedelta(0))  # version 1 is gone: --as-of 1 cannot resume it, and is not said
    with pytest.raises(InvalidRequestError, match=r"unfinished, and that version has been expired since \(cardcube "
                                                  r"expire\): it cannot be resumed; write to a new --out"):
        extract(parcels, cube, unfinished, **kw)


def test_the_cli_passes_every_statistics_option_and_fails_when_nothing_is_measured(cube, parcels, tiny_region,
                                                                                  tmp_path, capsys):
    from cardcube.cli import main

    base = ["extract", "--parcels", str(tiny_region.parcels), "--cube", str(cube), "--quiet", "--bands", "B04,NDVI"]
    assert main([*base, "--out", str(tmp_path / "out"), "--stats", "mean,p90", "--all-touched", "--buffer", "0",
                 "--time-block", "2", "--no-mask"]) == 0
    got = read_timeseries(tmp_path / "out").drop(columns="tile")
    assert {"mean", "p90"} <= set(got.columns) and "median" not in got.columns
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["time_block"] == 2 and manifest["all_touched"] and manifest["mask"] is None
    _same(got, parcel_timeseries(cube, parcels, bands=["B04", "NDVI"], stats=["mean", "p90"], all_touched=True,
                                 buffer=0, mask=None))
    files = list((tmp_path / "out" / "timeseries").rglob("*.parquet"))
    runs = [pd.read_parquet(f).time.nunique() for f in files if "mosaic" not in str(f)]
    assert max(runs) <= 3  # the cube's time chunks of 4 dates, cut in 2 (+ 1 of the hot buffer)
    # the same statistics spelled otherwise are the same extraction: nothing to do
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "out"), "--stats", "P90, mean,mean", "--all-touched", "--buffer",
                 "0", "--time-block", "2", "--no-mask"]) == 0
    assert f"0 rows written in 0 file(s) ({len(files)} already there" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "scl"), "--bands", "B04,scl"]) == 2
    err = capsys.readouterr().err
    assert "SCL holds scene classes" in err and not (tmp_path / "scl").exists()
    assert main([*base, "--out", str(tmp_path / "none"), "--stats", ""]) == 2
    assert "no statistic given" in capsys.readouterr().err
    far = parcels.iloc[:3].assign(geometry=parcels.iloc[:3].geometry.translate(xoff=5e6))  # outside every tile
    far.to_parquet(tmp_path / "far.parquet")
    code = main(["extract", "--parcels", str(tmp_path / "far.parquet"), "--cube", str(cube), "--quiet",
                 "--out", str(tmp_path / "far"), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "no parcel could be measured" in err
    assert "none lies in the cube's data: is the CRS the parcel file says that of its coordinates?" in err
    assert json.loads(out)["status"] == {"ok": 0, "too_small": 0, "outside": 3, "invalid": 0, "failed": 0}
    assert (read_status(tmp_path / "far").status == "outside").all()
    none = read_timeseries(tmp_path / "far", columns=["mean"])  # no row, but the columns asked for
    assert none.empty and list(none.columns) == ["parcel_id", "time", "band", "mean", "tile"]


def test_a_geopackage_of_several_layers_needs_one_named(cube, parcels, tmp_path, capsys):
    """An agency's GeoPackage holding a layer per year: taking the first one would extract the wrong year."""
    from cardcube.cli import main

    years = tmp_path / "years.gpkg"
    parcels.iloc[:3].to_crs(28992).to_file(years, layer="y2023")
    parcels.iloc[3:6].to_file(years, layer="y2024")
    base = ["extract", "--parcels", str(years), "--cube", str(cube), "--quiet", "--bands", "B04"]
    assert main([*base, "--out", str(tmp_path / "any")]) == 2
    assert "holds 2 layers (y2023, y2024): name one with --layer" in capsys.readouterr().err
    assert not (tmp_path / "any").exists()
    assert main([*base, "--out", str(tmp_path / "any"), "--layer", "y2025"]) == 2
    assert "has no layer 'y2025'; its layers: y2023, y2024" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "y2024"), "--layer", "y2024"]) == 0
    assert read_status(tmp_path / "y2024").parcel_id.tolist() == parcels.parcel_id.iloc[3:6].tolist()


def test_flag_lists_the_parcels_an_extraction_could_not_measure(s2_extracted, tiny_region, tmp_path, capsys):
    """A declared parcel without statistics (too small, outside) is not cleared: it gets a row, not judged, why."""
    from cardcube.cli import main

    status = read_status(s2_extracted)
    unmeasured = status[status.status != "ok"]
    assert len(unmeasured)  # the tiny region has parcels too small to measure
    out = tmp_path / "flags.csv"
    assert main(["flag", "--timeseries", str(s2_extracted), "--parcels", str(tiny_region.parcels), "--out",
                 str(out)]) == 0
    flags = pd.read_csv(out).set_index("parcel_id")
    assert sorted(flags.index) == sorted(status.parcel_id)
    rows = flags.loc[unmeasured.parcel_id]
    assert not rows.flagged.any()
    assert rows.not_judged.tolist() == [f"every marker: no statistics ({s}: {r})"
                                        for s, r in zip(unmeasured.status, unmeasured.reason, strict=True)]
    assert f"of {len(status):,} parcels flagged" in capsys.readouterr().out
    parcels = gpd.read_parquet(tiny_region.parcels)  # a parcel without a declaration has nothing to check
    parcels.loc[parcels.parcel_id.isin(unmeasured.parcel_id), "crop_code"] = None
    extra = parcels.iloc[[0]].assign(parcel_id="not-extracted")  # declared, but not in the extraction
    pd.concat([parcels, extra], ignore_index=True).to_parquet(tmp_path / "undeclared.parquet")
    assert main(["flag", "--timeseries", str(s2_extracted), "--parcels", str(tmp_path / "undeclared.parquet"),
                 "--out", str(out)]) == 0
    assert sorted(pd.read_csv(out).parcel_id) == sorted(set(status.parcel_id) - set(unmeasured.parcel_id))
    note = f"1 declared parcel(s) have no statistics in {s2_extracted} (e.g. not-extracted): not judged, no row"
    assert note in capsys.readouterr().err and note in json.loads((tmp_path / "flags.csv.json").read_text())["notes"]

def test_the_cli_says_where_to_read_why_parcels_have_no_statistics(cube, parcels, tmp_path, capsys):
    from cardcube.cli import main

    centre = parcels.geometry.iloc[0].representative_point()
    tiny = gpd.GeoDataFrame({"parcel_id": ["tiny"]}, crs=parcels.crs,
                            geometry=[box(centre.x - 6, centre.y - 6, centre.x + 6, centre.y + 6)])
    pd.concat([tiny, parcels.iloc[[0]]], ignore_index=True).to_parquet(tmp_path / "parcels.parquet")
    assert main(["extract", "--parcels", str(tmp_path / "parcels.parquet"), "--cube", str(cube), "--quiet",
                 "--bands", "B04", "--out", str(tmp_path / "out")]) == 0
    status = read_status(tmp_path / "out")
    assert status.status.tolist() == ["too_small", "ok"]
    assert f"1 parcel(s) without statistics: {tmp_path / 'out'}/parcels.parquet gives each one's status and reason" \
        in capsys.readouterr().out


def test_read_timeseries_takes_bands_in_any_case_and_refuses_what_was_not_extracted(s2_extracted):
    """An empty frame for ``ndvi`` or an Arrow error for a statistic not extracted would mislead."""
    ndvi = read_timeseries(s2_extracted, bands=["ndvi"], columns=["mean"])
    assert len(ndvi) and set(ndvi.band) == {"NDVI"}
    with pytest.raises(InvalidRequestError, match=r"holds no band VH; its bands: B02, B03, .*NDVI, NDMI"):
        read_timeseries(s2_extracted, bands=["B04", "VH"])
    with pytest.raises(InvalidRequestError, match=r"has no column p90; its columns: parcel_id, time, band, count"):
        read_timeseries(s2_extracted, columns=["mean", "p90"])


def test_chunks_read_count_each_hot_date_as_a_chunk_of_its_own(tiny_region, parcels, tmp_path):
    """The summary's chunks read: the hot buffer stores a chunk per date, so 6 hot dates read 6 times the chunks
    of one (not one 16-date chunk's worth), and an update adding 2 dates reads 2 dates' chunks."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    cube = tmp_path / "cube"
    ingest(write_items(tiny_region.items, features[:6], "six.json"), cube, progress=False,
           chunks=ChunkLayout.parse("time=16,space=64,shard_space=256"))  # 6 dates: all in the hot buffer
    kw = {"bands": ["B04"], "block": BLOCK, "progress": False}
    one = extract(parcels, cube, tmp_path / "one", time=features[0]["properties"]["datetime"][:10], **kw)
    six = extract(parcels, cube, tmp_path / "six", **kw)
    assert one.chunks > 0 and six.chunks == 6 * one.chunks
    ingest(write_items(tiny_region.items, features[:8], "eight.json"), cube, progress=False)
    update = extract(parcels, cube, tmp_path / "six", update=True, **kw)
    assert update.rows > 0 and update.chunks == 2 * one.chunks


def test_workers_refused_what_this_machine_may_write_are_named(cube, parcels, s3_bucket, s3_proxy):
    """Workers with other credentials than the driver's (a Helm chart without the workers' keys): the error told to
    keep the label layers elsewhere, which did not help."""
    distributed = pytest.importorskip("distributed")
    # the label chunks are the only writes the workers make here; the proxy refuses them alone
    s3_proxy.fail_randomly(1.0, status=403, code="AccessDenied", methods=["PUT"], path_contains="/labels/c/")
    opts = s3_proxy.storage_options(attempts=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client, \
            pytest.raises(StoreError, match=r"^the dask workers may not write the label layer of tile \w+ to "
                                            r"s3://\S+/layers, where this machine may \(.*\): are their credentials"):
        extract(parcels, cube, s3_bucket.url_for("out"), bands=["B08"], layers=s3_bucket.url_for("layers"),
                out_storage_options=opts, progress=False, scheduler=client)
    assert s3_proxy.snapshot().faults > 0


def test_an_update_from_a_cube_made_anew_at_the_same_place_is_refused_once_its_version_expired(tiny_region, parcels,
                                                                                               tmp_path):
    """The cube deleted and ingested anew at the same place (a reprocessed product goes into a new cube), its
    version of the extraction's number expired there: nothing compared the commit time, and an update kept the rows
    of a scene the cube no longer holds beside the new cube's (19 dates of 18). The scenes read are checked."""
    from datetime import timedelta

    from ingest.expire import expire
    from ingest.job import ingest
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    cube, out = tmp_path / "cube", tmp_path / "out"
    kw = {"bands": ["B04"], "block": BLOCK, "progress": False}
    ingest(write_items(tiny_region.items, features[:6], "anew-first.json"), cube, progress=False)
    extract(parcels, cube, out, **kw)
    manifest = (out / MANIFEST).read_bytes()
    shutil.rmtree(cube)
    ingest(write_items(tiny_region.items, features[:3] + features[4:8], "anew-1.json"), cube, progress=False)
    ingest(write_items(tiny_region.items, features[:3] + features[4:9], "anew-2.json"), cube,
           progress=False)  # a version 2, with one date more: version 1 can be expired
    expire(cube, older_than=timedelta(0))  # its version 1 is gone: no commit time to compare
    with pytest.raises(InvalidRequestError, match=rf"no longer holds 1 scene\(s\) it read, e.g. {features[3]['id']}"):
        extract(parcels, cube, out, update=True, **kw)
    assert (out / MANIFEST).read_bytes() == manifest
