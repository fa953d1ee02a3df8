"""Chips from the cube: the PNG is decoded and its pixels checked; contact sheet, GeoTIFF, limits."""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from PIL import Image

from cardcube.errors import (
    AmbiguousDateError,
    AreaOutsideCubeError,
    DateNotFoundError,
    InvalidRequestError,
    ParcelOutsideCubeError,
    RequestTooLargeError,
)
from cardcube.spec import DEFAULT_SCL_MASK
from cube import render
from cube.chips import Chip, chip
from cube.dataset import open_cube
from cube.indices import INDICES


def test_true_colour_png_shows_the_cube_pixels_and_the_outline(tiny_cube, parcels, parcel_id, tmp_path):
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=48)
    assert c.data.sizes["y"] == c.data.sizes["x"] == 48 and c.parcel_id == parcel_id
    clear = int(np.argmin(c.cloud_fraction()))
    c.to_png(tmp_path / "chip.png", clear, scale=4)
    png = np.asarray(Image.open(tmp_path / "chip.png").convert("RGBA"))
    assert png.shape == (192, 192, 4)
    # independent of the renderer: reflectance 0..0.3 -> 0..255, from the cube read separately
    ds = open_cube(tiny_cube, bbox=c.geobox.boundingbox, bands=["B04", "B03", "B02"]).isel(time=clear).compute()
    expected = np.clip(np.stack([ds[b].values for b in ("B04", "B03", "B02")], -1) / 0.3, 0, 1) * 255
    outline = np.all(png[..., :3] == render.OUTLINE[:3], axis=-1)
    body = ~outline[::4, ::4] & np.isfinite(expected).all(-1)  # chip pixels with data, off the outline
    assert np.abs(png[::4, ::4, :3][body].astype(float) - expected[body]).max() <= 1.0
    # the outline follows the parcel boundary: its pixels lie on the boundary drawn at this scale
    ys, xs = np.nonzero(outline)
    assert len(ys) > 20
    a = c.geobox.affine
    boundary = c.outline.boundary
    xw, yw = a.c + (xs + 0.5) / 4 * a.a, a.f + (ys + 0.5) / 4 * a.e
    dist = np.array([boundary.distance(gpd.points_from_xy([x], [y])[0]) for x, y in zip(xw, yw, strict=True)])
    assert np.percentile(dist, 95) <= 10.0  # within a 10 m pixel


def test_contact_sheet_marks_exactly_the_cloudy_dates(tiny_cube, parcels, parcel_id):
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=32)
    sheet = c.contact_sheet(scale=2)
    assert len(sheet.boxes) == c.data.sizes["time"] == 19
    # independent cloud fraction: SCL codes over the parcel's pixel centres
    scl = c.data["SCL"].values
    from tests.cube.reference import centre_pixels

    inside = centre_pixels(c.outline, c.geobox.affine, c.geobox.shape, buffer=0.0)
    seen = scl[:, inside] != 0  # outside the swath is no cloud
    fraction = (np.isin(scl[:, inside], DEFAULT_SCL_MASK) & seen).sum(axis=1) / seen.sum(axis=1)
    assert list(sheet.cloudy) == list(fraction > 0.3)
    assert any(sheet.cloudy) and not all(sheet.cloudy)
    png = Image.open(io.BytesIO(sheet.to_png()))
    for (x0, y0, _, _), cloudy in zip(sheet.boxes, sheet.cloudy, strict=True):
        frame = png.getpixel((x0 - 2, y0 - 2))[:3]
        assert (frame == render.CLOUDY) == cloudy
    assert not any(sheet.empty)


def test_a_single_band_sheet_is_stretched_once_for_the_season(tiny_cube, parcels, parcel_id):
    """Grey levels of one band compare across dates: one 2-98 % stretch over the season's pixels (a stretch
    per date would draw a date twice as bright just like the original)."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=24, bands=["B08"])
    data = c.data.copy(deep=True)
    data["B08"].values[1] = data["B08"].values[0] * 2  # date 1: date 0, twice as bright
    plain = Chip(data, ("B08",))  # no outline drawn over the panels
    sheet = plain.contact_sheet(scale=1)
    values = data["B08"].values
    lo, hi = np.percentile(values[np.isfinite(values)], [2, 98])  # independent: numpy over every date
    for t, (x0, y0, x1, y1) in enumerate(sheet.boxes):
        grey = sheet.image[y0:y1, x0:x1, 0].astype(float)
        seen = np.isfinite(values[t])
        expected = np.clip((values[t] - lo) / (hi - lo), 0, 1) * 255
        assert np.abs(grey[seen] - expected[seen]).max() <= 1.5, t
    panel = [sheet.image[y0:y1, x0:x1, 0].astype(float) for x0, y0, x1, y1 in sheet.boxes[:2]]
    assert panel[1].mean() > panel[0].mean() + 20


def test_the_chips_of_a_season_are_stretched_alike(tiny_cube, parcels, parcel_id, tmp_path):
    """A PNG per date (as cardcube chip writes them) of a band that is no index compares across dates: B08 over one
    2-98 % stretch of all the chip's dates (numpy here), as its sheet's; VV over -25..-5 dB on every chip, so a date's
    chip alone (REST chip.png) is drawn as in the season's. Each date had its own: the same -12 dB drawn grey 128 on
    one date and 193 on the next, and a date twice as bright drawn alike."""
    for collection, band in (("s2", "B08"), ("s1", "VV")):
        c = chip(tiny_cube, [parcel_id], registry=parcels, size=24, collection=collection, bands=band, time="2024-06")
        values = c.data[band].values
        lo, hi = (-25.0, -5.0) if band == "VV" else np.percentile(values[np.isfinite(values)], [2, 98])
        outline = render.draw_outline(np.zeros((24, 24, 4), np.uint8), c.outline, c.geobox, colour=(1, 1, 1, 1))
        for t in range(len(c.times)):
            c.to_png(tmp_path / "one.png", t, scale=1)
            grey = np.asarray(Image.open(tmp_path / "one.png").convert("RGBA"))[..., 0].astype(float)
            seen = np.isfinite(values[t]) & ~outline[..., 3].astype(bool)
            expected = np.clip((values[t] - lo) / (hi - lo), 0, 1) * 255
            assert np.abs(grey[seen] - expected[seen]).max() <= 1.0, (band, t)
        assert c.contact_sheet(scale=1).legend.limits == c.stretch
    alone = chip(tiny_cube, [parcel_id], registry=parcels, size=24, collection="s1", bands="VV", date=str(c.times[2]))
    np.testing.assert_array_equal(alone.image(0), c.image(2))  # a chip of its own date, as REST's chip.png


def test_a_scene_classification_chip_draws_each_class_its_own_grey(tiny_cube, parcels, parcel_id):
    """SCL alone: class k drawn grey 255 k / 11 on every date, so a cloud (8, 9, 10) is never the grey of bare
    soil (5) or of another date's class; a stretch of the chip's classes (3..10 here) drew shadow (3) and
    everything below it black, snow (11) as cirrus (10)."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=32, bands="SCL")
    for t in range(len(c.times)):
        scl, grey = c.data["SCL"].values[t], c.image(t, outline=False)
        seen = scl != 0  # no data: transparent
        assert np.abs(grey[..., 0][seen] - scl[seen] * 255.0 / 11).max() <= 1.0  # the colour map's 256 levels
        assert (grey[..., 3][~seen] == 0).all()


def test_contact_sheet_tells_no_data_from_clouds(tiny_cube, parcels, parcel_id):
    """A date without data over the parcel (outside an orbit's swath: no values, SCL "no data", which the
    default cloud mask counts) is framed grey as "no data", not red as cloudy."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=32)
    from tests.cube.reference import centre_pixels

    data = c.data.copy(deep=True)
    inside = centre_pixels(c.outline, c.geobox.affine, c.geobox.shape, buffer=0.0)
    ys, xs = np.nonzero(inside)
    west = xs <= np.median(xs)  # half the parcel, or a little more, loses its data on date 2
    for band in (*c.bands, "SCL"):
        values = data[band].values
        values[2, ys[west], xs[west]] = 0 if band == "SCL" else np.nan
        values[3] = 0 if band == "SCL" else np.nan  # date 3: nothing at all
        if band == "SCL":
            values[2, ys[~west], xs[~west]] = 4  # the other half of date 2: clear vegetation
        data[band].values = values
    edited = Chip(data, c.bands, c.outline, c.parcel_id)
    sheet = edited.contact_sheet(scale=2)
    gone = np.isnan(data[c.bands[0]].values[:, inside]).mean(axis=1)
    assert list(sheet.empty) == list(gone > 0.5) and sheet.empty[3] and not sheet.cloudy[3]
    assert edited.cloud_fraction()[2] == 0 and not sheet.cloudy[2]  # half outside the swath, no cloud
    assert np.isnan(edited.cloud_fraction()[3])
    png = Image.open(io.BytesIO(sheet.to_png()))
    assert png.getpixel((sheet.boxes[3][0] - 2, sheet.boxes[3][1] - 2))[:3] == render.NO_DATA


def test_index_chip_and_geotiff(tiny_cube, parcels, parcel_id, tmp_path):
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=32, bands=("NDVI",))
    ndvi = c.data["NDVI"].values
    assert np.nanmax(ndvi) <= 1 and np.nanmin(ndvi) >= -1
    c.to_geotiff(tmp_path / "chip.tif", 0)
    with rasterio.open(tmp_path / "chip.tif") as src:
        assert src.crs.to_epsg() == 32631 and src.transform == c.geobox.affine
        np.testing.assert_allclose(src.read(1), ndvi[0], equal_nan=True)


def test_a_composite_of_two_bands_and_their_index(tiny_cube, tiny_region, parcels, parcel_id, tmp_path):
    """The usual Sentinel-1 composite VV, VH, VH/VV (two bands and the index computed from them): its GeoTIFF holds
    the source scene's pixels. Read at once, dask lost the bands the index is computed from ("Missing dependency")."""
    from rasterio.windows import from_bounds

    from tests.ingest.scene_edits import asset_path, items_of

    c = chip(tiny_cube, [parcel_id], registry=parcels, size=24, collection="s1", bands="VV,VH,VH_VV", time="2024-06")
    scenes = {f["id"]: f for f in items_of(tiny_region.items, "sentinel-1-card-bs")}
    for t in (0, len(c.times) - 1):
        c.to_geotiff(tmp_path / "s1.tif", t)
        with rasterio.open(tmp_path / "s1.tif") as tif:
            got, bounds = tif.read(), tif.bounds
        source = {}
        for band in ("VV", "VH"):
            with rasterio.open(asset_path(tiny_region.items, scenes[str(c.data.scene_id.values[t])], band)) as src:
                window = from_bounds(*bounds, src.transform)
                source[band] = src.read(1, window=window, boundless=True, fill_value=np.nan)
        np.testing.assert_array_equal(got, np.stack([source["VV"], source["VH"], source["VH"] - source["VV"]]))
    assert chip(tiny_cube, [parcel_id], registry=parcels, size=24, bands="B04,B08,NDVI", time="2024-06").bands == (
        "B04", "B08", "NDVI")


def test_a_composite_of_other_bands_than_reflectance_is_stretched_per_band(tiny_cube, parcels, parcel_id):
    """VV, VH, VH/VV in dB drawn as RGB: each band over its own dB range (VV -25..-5, VH -30..-10, VH/VV -25..0, as
    on every chip), not over the reflectance range 0..0.3 of true colour, which drew every pixel black; a true-colour
    chip keeps 0..0.3."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=24, collection="s1", bands="VV,VH,VH_VV", time="2024-06")
    img = c.image(1, outline=False)
    for channel, (band, (lo, hi)) in enumerate(zip(c.bands, [(-25, -5), (-30, -10), (-25, 0)], strict=True)):
        values = c.data[band].values[1]
        expected = np.clip((values - lo) / (hi - lo), 0, 1) * 255
        assert np.abs(img[..., channel] - expected)[np.isfinite(values)].max() <= 1.0
    assert img[..., :3].mean() > 60
    rgb = chip(tiny_cube, [parcel_id], registry=parcels, size=24, time="2024-06")
    values = np.stack([rgb.data[b].values[0] for b in ("B04", "B03", "B02")], axis=-1)
    seen = np.isfinite(values).all(axis=-1)
    assert np.abs(rgb.image(0, outline=False)[..., :3] - np.clip(values / 0.3, 0, 1) * 255)[seen].max() <= 1.0


def test_a_false_colour_chip_draws_the_near_infrared_over_its_own_range(tiny_cube, parcels, parcel_id, tmp_path):
    """B08, B04, B03 as RGB: near-infrared reflectance over 0..0.6, the visible bands over 0..0.3 (numpy here). Drawn
    over true colour's 0..0.3, the crops' NIR (0.35 to 0.5 in June) was one flat red: no field told from another."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=24, bands="B08,B04,B03", time="2024-06")
    t = int(np.argmin(c.cloud_fraction()))
    img = c.image(t, outline=False)
    values = np.stack([c.data[b].values[t] for b in c.bands], axis=-1)
    seen = np.isfinite(values).all(axis=-1)
    expected = np.clip(values / np.array([0.6, 0.3, 0.3]), 0, 1) * 255
    assert np.abs(img[..., :3] - expected)[seen].max() <= 1.0
    nir = values[..., 0][seen]
    assert (nir > 0.3).mean() > 0.5  # the case: most of the chip's NIR lies above true colour's white
    assert (img[..., 0][seen] == 255).mean() < 0.05 and len(np.unique(img[..., 0][seen])) > 20
    c.to_png(tmp_path / "false.png", t)
    assert Image.open(tmp_path / "false.png").text["STRETCH"] == ("R B08 0 to 0.6, G B04 0 to 0.3, B B03 0 to 0.3: "
                                                                  "reflectance, dark to bright")


def test_a_season_sheet_has_a_legend_of_its_colours(tiny_cube, parcels, parcel_id):
    """Each sheet says what its colours mean: S1 VH in dB over -30..-10 (every chip's), B08 over the season's 2-98 %
    (numpy here), the index's range on its colour map, the bands of R, G and B."""
    vh = chip(tiny_cube, [parcel_id], registry=parcels, size=16, collection="s1", bands="VH", time="2024-06")
    assert vh.contact_sheet(scale=1).legend == render.Legend("VH (dB)", "gray", (-30.0, -10.0))
    nir = chip(tiny_cube, [parcel_id], registry=parcels, size=16, bands="B08", time="2024-06")
    values = nir.data["B08"].values
    legend = nir.contact_sheet(scale=1).legend
    assert legend.text == "B08" and legend.cmap == "gray"
    np.testing.assert_allclose(legend.limits, np.percentile(values[np.isfinite(values)], [2, 98]), rtol=1e-6)
    ratio = chip(tiny_cube, [parcel_id], registry=parcels, size=16, collection="s1", time="2024-06")
    assert ratio.contact_sheet(scale=1).legend == render.Legend("VH_VV (dB)", "RdYlGn", (-25.0, 0.0))
    assert ratio.data["VH_VV"].attrs["units"] == "dB"  # VH - VV of dB values: a ratio in dB, not a unitless index
    rgb = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06").contact_sheet(scale=1).legend
    assert rgb.text == "R B04, G B03, B B02: reflectance 0 (dark) to 0.3 (bright)" and rgb.cmap is None


@pytest.mark.parametrize("index", sorted(INDICES))
def test_an_index_chip_is_not_one_clipped_colour(tiny_cube, parcels, parcel_id, index):
    """Each index's colour map spans what farmland shows over the season: NDWI is negative over land (crops about
    -0.6), NDMI and NBR negative over bare soil, RVI above 1 under canopy and speckle; on NDVI's 0..1 up to 99 % of
    the pixels clipped to the same colour. Under 5 % clip here, the middle 90 % of the values spans over 15 %
    of the map, and the clearest date's image has many colours."""
    collection = "s1" if set(INDICES[index][0]) <= {"VV", "VH"} else "s2"
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=128, collection=collection, bands=index)
    values = c.data[index].values
    if collection == "s2":  # cloud-free pixels only: clouds are not farmland
        values = np.where(np.isin(c.data["SCL"].values, DEFAULT_SCL_MASK), np.nan, values)
    values = values[np.isfinite(values)]
    lo, hi = c.contact_sheet(scale=1).legend.limits
    p5, p95 = np.percentile(values, [5, 95])
    assert ((values < lo) | (values > hi)).mean() < 0.05 and (p95 - p5) / (hi - lo) > 0.15
    clouds = c.cloud_fraction()
    img = c.image(int(np.nanargmin(clouds)) if collection == "s2" else len(clouds) // 2, outline=False)
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 20


def test_the_outline_stands_out_on_an_index_colour_map(tiny_cube, parcels, parcel_id):
    """An NDVI (RdYlGn) chip: the outline's colour is far from every colour of the map (the yellow outline of the
    true-colour chips is lost among its yellows and oranges), and it still lies on the parcel boundary."""
    import matplotlib

    c = chip(tiny_cube, [parcel_id], registry=parcels, size=32, bands="NDVI", time="2024-06")
    drawn, plain = c.image(0, scale=4), c.image(0, scale=4, outline=False)
    changed = (drawn != plain).any(axis=-1)
    colours = np.unique(drawn[changed][:, :3], axis=0)
    assert len(colours) == 1 and changed.sum() > 100
    cmap = matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, 256))[:, :3] * 255
    assert np.sqrt(((cmap - colours[0]) ** 2).sum(axis=1)).min() > 200
    ys, xs = np.nonzero(changed)
    a = c.geobox.affine
    points = gpd.points_from_xy(a.c + (xs + 0.5) / 4 * a.a, a.f + (ys + 0.5) / 4 * a.e)
    assert np.percentile(points.distance(c.outline.boundary), 95) <= 10.0  # within a 10 m pixel
    sheet = c.contact_sheet(scale=2)  # the sheet's outlines alike
    x0, y0, x1, y1 = sheet.boxes[0]
    assert (sheet.image[y0:y1, x0:x1] == colours[0]).all(axis=-1).sum() > 20


def test_sentinel1_dates_are_labelled_with_their_orbit_direction(tiny_cube, tiny_region, parcels, parcel_id):
    """Ascending and descending passes look from opposite sides: a season sheet of S1 says which each date is (as
    the time series plot does), from the scene's STAC item; a Sentinel-2 sheet (one direction) gives the day alone."""
    from tests.ingest.scene_edits import items_of

    direction = {f["id"]: f["properties"]["sat:orbit_state"] for f in items_of(tiny_region.items, "sentinel-1-card-bs")}
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, collection="s1", time="2024-06")
    want = [f"{str(t)[:10]} {direction[str(s)][:4].replace('asce', 'asc')}"
            for t, s in zip(c.times, c.data.scene_id.values, strict=True)]
    assert c.labels == want and {w[11:] for w in want} == {"asc", "desc"}
    s2 = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    assert s2.labels == [str(t)[:10] for t in s2.times]


def test_a_geotiff_chip_says_when_and_what_it_shows(tiny_cube, tiny_region, parcels, parcel_id, tmp_path):
    """A GeoTIFF opened on its own (QGIS, an inspector's file) tells its acquisition time and scene, as the STAC
    item of the scene gives them, the parcel, and each band's unit; its pixels are the source scene's."""
    from rasterio.windows import from_bounds

    from tests.ingest.scene_edits import asset_path, items_of

    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    c.to_geotiff(tmp_path / "chip.tif", 2)
    with rasterio.open(tmp_path / "chip.tif") as tif:
        tags, units, pixels, bounds = tif.tags(), tif.units, tif.read(1), tif.bounds
    item = next(f for f in items_of(tiny_region.items, "sentinel-2-l2a") if f["id"] == tags["SCENE_ID"])
    assert tags["ACQUISITION_TIME"] == item["properties"]["datetime"] and tags["PARCEL_ID"] == parcel_id
    assert units == ("1", "1", "1") and tags["ORBIT_STATE"] == item["properties"]["sat:orbit_state"]
    with rasterio.open(asset_path(tiny_region.items, item, "B04")) as src:
        raw = src.read(1, window=from_bounds(*bounds, src.transform), boundless=True, fill_value=0).astype("float64")
    np.testing.assert_allclose(pixels, np.where(raw == 0, np.nan, raw * 1e-4 - 0.1), atol=1e-6)


def test_a_png_chip_says_when_and_what_it_shows(tiny_cube, tiny_region, parcels, parcel_id, tmp_path):
    """A PNG saved on its own (an inspector's file, a report's figure) said nothing of its date: its text chunks
    tell the acquisition time and scene as the scene's STAC item gives them, the bands and the parcel."""
    from tests.ingest.scene_edits import items_of

    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06", bands=("NDVI",))
    c.to_png(tmp_path / "chip.png", 1)
    text = Image.open(tmp_path / "chip.png").text
    item = next(f for f in items_of(tiny_region.items, "sentinel-2-l2a") if f["id"] == text["SCENE_ID"])
    assert text["ACQUISITION_TIME"] == item["properties"]["datetime"]
    assert text["SCENE_ID"] == str(c.data.scene_id[1].values)
    assert text["BANDS"] == "NDVI" and text["PARCEL_ID"] == parcel_id and text == {**c.tags(1), "STRETCH": text[
        "STRETCH"]}
    assert text["STRETCH"] == "NDVI 0 to 1 on RdYlGn"


def test_a_saved_season_sheet_says_what_it_shows(tiny_cube, tiny_region, parcels, parcel_id, tmp_path):
    """A sheet written (cardcube chip --sheet, REST season.png) named no parcel, scene or cube version, where a chip
    does: its text chunks give the parcel, bands, stretch and version, and each panel's time and scene in order,
    as the scenes' STAC items give them."""
    from tests.ingest.scene_edits import items_of

    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, collection="s1", bands="VV", time="2024-06")
    c.contact_sheet(scale=1).write(tmp_path / "season.png")
    text = Image.open(tmp_path / "season.png").text
    items = {f["id"]: f["properties"] for f in items_of(tiny_region.items, "sentinel-1-card-bs")}
    scenes = text["SCENE_ID"].split(",")
    assert len(scenes) == len(c.times) and scenes == [str(s) for s in c.data.scene_id.values]
    assert text["ACQUISITION_TIME"].split(",") == [items[s]["datetime"] for s in scenes]
    assert text["PARCEL_ID"] == parcel_id and text["BANDS"] == "VV" and text["CUBE_VERSION"] == str(
        c.data.attrs["cardcube:version"])
    assert text["STRETCH"] == "VV (dB) -25 (black) to -5 (white)"
    assert Image.open(io.BytesIO(c.contact_sheet(scale=1).to_png())).text == text


def test_a_png_chip_says_its_stretch(tiny_cube, parcels, parcel_id, tmp_path):
    """A saved PNG of B08 said nothing of which reflectance its greys are: its STRETCH text chunk gives the values
    drawn black and white (the 2-98 % of the chip's dates, numpy here); VV its dB, true colour its reflectance."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, bands="B08", time="2024-06")
    c.to_png(tmp_path / "nir.png", 2)
    lo, hi = np.nanpercentile(c.data["B08"].values, [2, 98])
    assert Image.open(tmp_path / "nir.png").text["STRETCH"] == f"B08 {lo:.3g} (black) to {hi:.3g} (white)"
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, collection="s1", bands="VV", time="2024-06")
    c.to_png(tmp_path / "vv.png", 2)
    assert Image.open(tmp_path / "vv.png").text["STRETCH"] == "VV (dB) -25 (black) to -5 (white)"
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    c.to_png(tmp_path / "rgb.png", 0)
    assert Image.open(tmp_path / "rgb.png").text["STRETCH"] == ("R B04, G B03, B B02: reflectance 0 (dark) to 0.3 "
                                                                 "(bright)")


def test_a_date_the_chip_lacks_is_a_clear_error(tiny_cube, parcels, parcel_id, tmp_path):
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    n = len(c.times)
    for write in (c.to_png, c.to_geotiff):
        with pytest.raises(InvalidRequestError, match=rf"date index 100 is outside the chip's {n} date\(s\): give "
                           rf"0..{n - 1}"):
            write(tmp_path / "x", 100)
    c.to_png(tmp_path / "last.png", -1)  # from the end, as numpy counts
    ds = open_cube(tiny_cube, bbox=c.geobox.boundingbox, bands=["B04", "B03", "B02", "SCL"])
    with pytest.raises(DateNotFoundError, match="no date of the Dataset falls within the time range 2023; its "
                       "dates run from 2024-"):
        chip(ds, [parcel_id], registry=parcels, size=16, time="2023")


def test_point_chip_and_limits(tiny_cube, tiny_region):
    x, y = (tiny_region.bbox[0] + tiny_region.bbox[2]) / 2, (tiny_region.bbox[1] + tiny_region.bbox[3]) / 2
    lon, lat = gpd.GeoSeries(gpd.points_from_xy([x], [y]), crs=32631).to_crs(4326).iloc[0].coords[0]
    from shapely.geometry import Point

    c = chip(tiny_cube, Point(lon, lat), size=16, collection="s1", bands=("VH",))
    assert c.data.sizes["x"] == 16 and c.outline is None
    with pytest.raises(RequestTooLargeError, match="size"):
        chip(tiny_cube, Point(lon, lat), size=100_000)
    with pytest.raises(InvalidRequestError, match="chip size 0 px: give a whole number of pixels"):
        chip(tiny_cube, Point(lon, lat), size=0)  # not "too large ... lower the size"
    with pytest.raises(InvalidRequestError, match="three bands"):
        chip(tiny_cube, Point(lon, lat), bands=("B04", "B03"))
    assert chip(tiny_cube, Point(lon, lat), size=16, bands="NDVI").bands == ("NDVI",)  # a name, not its letters
    assert chip(tiny_cube, Point(lon, lat), size=16, bands="B04,B03,B02").bands == ("B04", "B03", "B02")
    s1 = chip(tiny_cube, Point(lon, lat), size=16, collection="s1")
    assert s1.bands == ("VH_VV",) and np.isnan(s1.cloud_fraction()).all()  # no SCL: no cloud share


def test_a_chip_of_a_point_given_lat_first_says_lon_and_lat_look_swapped(tiny_cube, tiny_region, parcels):
    """``--point 52.7 6.1`` (latitude first, EPSG:4326's official order) was "no tile holds a chip around it", no
    more said, as the time series' status was before it said so too: the chip's error says the swap now."""
    from shapely.geometry import Point

    x, y = (tiny_region.bbox[0] + tiny_region.bbox[2]) / 2, (tiny_region.bbox[1] + tiny_region.bbox[3]) / 2
    lon, lat = gpd.GeoSeries(gpd.points_from_xy([x], [y]), crs=32631).to_crs(4326).iloc[0].coords[0]
    with pytest.raises(AreaOutsideCubeError, match=rf"the point at lon {lat:.6g}, lat {lon:.6g} \(EPSG:4326\): no "
                       rf"tile .* with data in it; lon and lat swapped\? so swapped \(lon {lon:.6g}, lat {lat:.6g}\) "
                       rf"it lies in the data of tile 31UFU: give the coordinates lon first"):
        chip(tiny_cube, Point(lat, lon), size=16)
    with pytest.raises(AreaOutsideCubeError, match=r"with data in it$"):  # nowhere either way: nothing more said
        chip(tiny_cube, Point(lon + 1, lat), size=16)
    far = parcels.set_index("parcel_id").geometry.iloc[:1].to_crs(4326)
    turned = gpd.GeoSeries([shapely.transform(far.iloc[0], lambda xy: xy[:, ::-1])], crs=4326)
    with pytest.raises(ParcelOutsideCubeError, match="lon and lat swapped"):  # a parcel's outline too
        chip(tiny_cube, gpd.GeoDataFrame({"parcel_id": ["p"]}, geometry=turned), size=16)


def test_a_point_chip_marks_the_point(tiny_cube, tiny_region):
    """A chip centred on a lon/lat point, with no parcel to outline, draws a cross on the point: the cross's pixels
    centre on the point projected with pyproj here (to within a pixel of the chip), on the PNG and every sheet panel."""
    from pyproj import Transformer
    from shapely.geometry import Point

    x, y = tiny_region.bbox[0] + 1234.0, tiny_region.bbox[1] + 765.0
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(x, y)
    c = chip(tiny_cube, Point(lon, lat), size=24, time="2024-06")
    assert c.outline is None and c.parcel_id is None
    changed = (c.image(0, scale=4) != c.image(0, scale=4, outline=False)).any(axis=-1)
    ys, xs = np.nonzero(changed)
    a = c.geobox.affine
    centre = (a.c + (xs.mean() + 0.5) / 4 * a.a, a.f + (ys.mean() + 0.5) / 4 * a.e)  # of the cross's pixels
    assert len(xs) > 10 and abs(centre[0] - x) <= 10 and abs(centre[1] - y) <= 10
    assert xs.max() - xs.min() <= 6 * 4 and ys.max() - ys.min() <= 6 * 4  # a small cross, not a frame
    sheet = c.contact_sheet(scale=2)
    x0, y0, x1, y1 = sheet.boxes[0]
    assert (sheet.image[y0:y1, x0:x1] == render.OUTLINE[:3]).all(axis=-1).sum() >= 6


def test_a_point_chip_s_cross_is_five_pixels_centred_on_the_point_s_pixel(tiny_cube, tiny_region):
    """At scale 1 the cross is the pixel holding the point (rasterio's rowcol here) and 2 pixels on each side of it:
    arms of 2.5 pixels drew 6 (two on one side, three on the other), wherever the point lay in its pixel."""
    from pyproj import Transformer
    from shapely.geometry import Point

    for dx, dy in ((1234.0, 765.0), (1239.9, 760.1), (1235.0, 765.0)):
        x, y = tiny_region.bbox[0] + dx, tiny_region.bbox[1] + dy
        lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(x, y)
        c = chip(tiny_cube, Point(lon, lat), size=21, time="2024-06")
        row, col = rasterio.transform.rowcol(c.geobox.affine, x, y)
        changed = (c.image(0) != c.image(0, outline=False)).any(axis=-1)
        ys, xs = np.nonzero(changed)
        assert sorted(xs[ys == row]) == list(range(col - 2, col + 3)), (dx, dy)
        assert sorted(ys[xs == col]) == list(range(row - 2, row + 3)), (dx, dy)


def test_a_chip_of_an_open_dataset_is_the_chip_of_the_cube(tiny_cube, parcels, parcel_id):
    """The README's advice for many chips over one area: open the Dataset once. Its chips keep the time range,
    and a point beyond it is a clear error, not an empty chip."""
    from shapely.geometry import Point

    from cardcube.errors import AreaOutsideCubeError

    ds = open_cube(tiny_cube, bbox=parcels.total_bounds, crs=parcels.crs, bands=["B04", "B03", "B02", "SCL"])
    c = chip(ds, [parcel_id], registry=parcels, size=24, time="2024-06")
    want = chip(tiny_cube, [parcel_id], registry=parcels, size=24, time="2024-06")
    assert list(c.times) == list(want.times) and 0 < len(c.times) < ds.sizes["time"]
    np.testing.assert_array_equal(c.data["SCL"].values, want.data["SCL"].values)
    with pytest.raises(AreaOutsideCubeError, match="outside the Dataset"):
        chip(ds, Point(10, 50), size=24)


@pytest.fixture(scope="module")
def edge_cube(tmp_path_factory):
    """A tiny region at the western edge of tile 31UFU, its neighbour not ingested. Its S2 scenes of June only, the
    month the test draws (six dates: two time blocks of the tests' chunks); no S1 scenes, which it never ingests."""
    import datetime as dt

    from cardcube.spec import ChunkLayout
    from cardcube.synth import SynthConfig, generate
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS

    config = SynthConfig.tiny(origin=(600_000, 5_845_000), start=dt.date(2024, 6, 1), end=dt.date(2024, 6, 30),
                              s1=False)
    region = generate(tmp_path_factory.mktemp("edge-region"), config)
    root = tmp_path_factory.mktemp("edge-cube")
    ingest(region.items, root, chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False, catalog=False)
    return root, gpd.read_parquet(region.parcels)


def test_a_chip_across_the_edge_of_the_only_tile_is_padded_with_no_data(edge_cube):
    root, parcels = edge_cube
    west = parcels.geometry.centroid.x - 600_000  # metres from the tile's western edge
    pid = parcels.parcel_id[west.between(100, 400)].iloc[0]
    c = chip(root, [pid], registry=parcels, size=128, time="2024-06")
    assert c.data.sizes["x"] == c.data.sizes["y"] == 128
    outside = c.data.x.values < 600_000
    assert outside.any() and (~outside).any()
    assert np.isnan(c.data["B04"].values[:, :, outside]).all() and (c.data["SCL"].values[:, :, outside] == 0).all()
    inner = open_cube(root, bbox=(600_000, float(c.data.y.min()) - 5, float(c.data.x.max()) + 5,
                                  float(c.data.y.max()) + 5), crs=parcels.crs, time="2024-06", bands=["B04"])
    np.testing.assert_array_equal(c.data["B04"].values[:, :, ~outside], inner["B04"].values)
    assert list(np.isnan(c.cloud_fraction())) == list(c.nodata_fraction() == 1)  # the pad is no cloud


def test_what_a_chip_cannot_draw_is_a_clear_error(tiny_cube, parcels, parcel_id, tmp_path):
    """Stored integers were drawn as reflectance (a white image, nodata counted as data); a date given as text
    failed in a comparison; a point in metres was taken as lon/lat and overflowed."""
    from shapely.geometry import Point

    box = parcels.set_index("parcel_id").geometry[parcel_id].buffer(300).bounds
    raw = open_cube(tiny_cube, bbox=box, bands=["B04", "B03", "B02", "SCL"], decode=False)
    with pytest.raises(InvalidRequestError, match="a chip needs physical values, and B04, B03, B02 holds stored "
                                                  "integers: open the cube with decode=True"):
        chip(raw, [parcel_id], registry=parcels, size=16)
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    with pytest.raises(InvalidRequestError, match=r"date index '2024-06-01' is no position: give 0..\d+ "
                                                  r"\(Chip.times lists the dates"):
        c.to_png(tmp_path / "x.png", t="2024-06-01")
    c.to_png(tmp_path / "x.png", t=np.int64(0))
    with pytest.raises(InvalidRequestError, match="scale 0 is no enlargement"):  # was "too large: 0 px a side"
        c.to_png(tmp_path / "x.png", scale=0)
    with pytest.raises(InvalidRequestError, match=r"x.jpg: a chip image is written as PNG; give a file name ending "
                                                  r"\.png"):  # was PNG bytes under a .jpg name
        c.to_png(tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()
    renamed = parcels.rename(columns={"parcel_id": "id"})
    with pytest.raises(InvalidRequestError, match="no 'parcel_id' column"):
        chip(tiny_cube, [parcel_id], registry=renamed, size=8)
    assert chip(tiny_cube, [parcel_id], registry=renamed, id_column="id", size=8).parcel_id == parcel_id
    x, y = parcels.set_index("parcel_id").geometry[parcel_id].centroid.coords[0]
    with pytest.raises(InvalidRequestError, match=r"the point's coordinates \(\d+\.\d, \d+\.\d, .*\) are not lon/lat "
                                                  r"in EPSG:4326: give a lon/lat point"):
        chip(tiny_cube, Point(x, y), size=16)


def test_a_day_of_two_sentinel1_passes_is_a_choice_not_the_first(two_pass_cube, two_pass_region, two_pass_days):
    """chip(date=): a day of one acquisition is that acquisition; a day of two (dawn descending, dusk ascending) is
    an error listing both times and orbit directions, and either time is then a chip of that pass alone."""
    parcels = gpd.read_parquet(two_pass_region.parcels)
    pid = parcels.sort_values("area_ha").parcel_id.iloc[-1]
    single, (first, second) = two_pass_days
    one = chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=24, date=single)
    assert [f"{t:%Y-%m-%d}" for t in pd.to_datetime(one.times)] == [single]
    day = first[0][:10]
    with pytest.raises(AmbiguousDateError, match=f"date {day} holds 2 acquisitions of the s1 cube") as caught:
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=24, date=day)
    for when, orbit in (first, second):
        assert f"{when} ({orbit}, relative orbit" in str(caught.value)
    both = chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=24, time=f"{day}/{day}")  # a range
    for t, (when, orbit) in enumerate((first, second)):
        for given in (when, pd.Timestamp(when)):  # the time as text, or a Timestamp
            c = chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=24, date=given)
            assert pd.Timestamp(c.times[0], tz="UTC") == pd.Timestamp(when) and c.data.sizes["time"] == 1
            assert c.data["orbit_state"].values[0] == orbit
            np.testing.assert_array_equal(c.image(0), both.image(t))
    late = f"{pd.Timestamp(second[0]) + pd.Timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}"  # a second after the pass
    with pytest.raises(DateNotFoundError, match=f"no acquisition of the s1 cube at {late}; {day} holds {first[0]} "
                                                f"\\({first[1]}\\); {second[0]} \\({second[1]}\\)"):
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=24, date=late)
    with pytest.raises(InvalidRequestError, match="not both"):
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", date=day, time=day)
    with pytest.raises(InvalidRequestError, match="'2024-05' is not a day or a time"):
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", date="2024-05")


@pytest.fixture(scope="module")
def partial_dusk_cube(two_pass_region, two_pass_days, tmp_path_factory):
    """``two_pass_region`` with the dusk pass of its first day of two passes cut by its swath's edge: no data over
    the east 60 % of the region (its scene's extent unchanged). Returns the cube's root."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import broken_copy, east_nodata, items_of, write_items

    _, (_, dusk) = two_pass_days
    features = [broken_copy(two_pass_region.items, f, f["id"], east_nodata(0.6))
                if f["properties"]["datetime"] == dusk[0] else f
                for f in items_of(two_pass_region.items, "sentinel-1-card-bs")]
    root = tmp_path_factory.mktemp("partial-dusk")
    ingest(write_items(two_pass_region.items, features, "items-partial-dusk.json"), root, collection="s1",
           chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    return root


def test_a_pass_without_data_over_the_parcel_makes_no_day_ambiguous(partial_dusk_cube, two_pass_region,
                                                                    two_pass_days):
    """A day of a dawn pass over the parcel and a dusk pass whose swath misses it was a 409 "over the chip" that
    offered the dusk pass's time, a chip of no data: it is the dawn pass's chip. Where both passes have data over
    the parcel, the day is still a choice between them."""
    parcels = gpd.read_parquet(two_pass_region.parcels)
    _, (dawn, dusk) = two_pass_days
    day = dawn[0][:10]
    x = parcels.geometry.centroid.x
    east = parcels[(x > x.quantile(0.85)) & (parcels.area_ha > 1)].parcel_id.iloc[0]
    west = parcels[(x < x.quantile(0.15)) & (parcels.area_ha > 1)].parcel_id.iloc[0]
    both = chip(partial_dusk_cube, [east], registry=parcels, collection="s1", size=32, time=f"{day}/{day}")
    assert both.nodata_fraction().tolist() == [0.0, 1.0]  # the set-up: the dusk pass has no pixel over it
    c = chip(partial_dusk_cube, [east], registry=parcels, collection="s1", size=32, date=day)
    assert pd.Timestamp(c.times[0], tz="UTC") == pd.Timestamp(dawn[0]) and c.data.sizes["time"] == 1
    np.testing.assert_array_equal(c.image(0), both.image(0))
    point = parcels.to_crs(4326).set_index("parcel_id").geometry[east].centroid  # no parcel: the chip's pixels
    assert list(chip(partial_dusk_cube, point, collection="s1", size=8, date=day).times) == [both.times[0]]
    with pytest.raises(AmbiguousDateError, match=f"date {day} holds 2 acquisitions of the s1 cube with data over "
                                                 f"the parcel: {dawn[0]} .*; {dusk[0]} .*date={dusk[0]}$"):
        chip(partial_dusk_cube, [west], registry=parcels, collection="s1", size=32, date=day)


def test_a_datetime64_date_is_the_day_it_writes(two_pass_cube, two_pass_region, two_pass_days):
    """``np.datetime64("2024-05-01")`` (a time series' ``time.values.astype("datetime64[D]")``) was the instant of
    its midnight: "no acquisition at 2024-05-01; 2024-05-01 holds ..."; a month's is refused as the text is."""
    parcels = gpd.read_parquet(two_pass_region.parcels)
    pid = parcels.sort_values("area_ha").parcel_id.iloc[-1]
    single, (first, _) = two_pass_days
    one = chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=np.datetime64(single))
    assert [f"{t:%Y-%m-%d}" for t in pd.to_datetime(one.times)] == [single]
    when = np.datetime64(first[0].rstrip("Z"), "ns")  # a cube's time, to the nanosecond: that pass
    assert list(chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=when).times) == [when]
    with pytest.raises(InvalidRequestError, match=r"'2024-05' is not a day or a time: .*every date of a range: "
                                                  r"time=2024-05 "):
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=np.datetime64("2024-05"))


def test_a_chip_date_takes_a_time_written_with_a_space(two_pass_cube, two_pass_region, two_pass_days):
    """A time as pandas prints the time series' (``2024-05-04 05:49:55``, with ``+00:00`` if aware) was "not a day
    or a time", offered a season sheet of that one instant, while ``time=`` took it."""
    parcels = gpd.read_parquet(two_pass_region.parcels)
    pid = parcels.sort_values("area_ha").parcel_id.iloc[-1]
    _, (first, second) = two_pass_days
    when = pd.Timestamp(first[0])
    for given in (str(when), str(when.tz_convert(None)), f"{when:%Y-%m-%d %H:%M:%SZ}"):
        c = chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=given)
        assert pd.Timestamp(c.times[0], tz="UTC") == when and c.data.sizes["time"] == 1
    late = f"{when + pd.Timedelta(seconds=1):%Y-%m-%d %H:%M:%S}"  # a second after the pass: that day's passes named
    with pytest.raises(DateNotFoundError, match=f"no acquisition of the s1 cube at {late}; .* holds {first[0]} "
                                                f"\\({first[1]}\\); {second[0]}"):
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=late)


def test_a_chip_date_takes_a_lower_case_t_and_z(two_pass_cube, two_pass_region, two_pass_days):
    """RFC 3339 allows ``2024-05-04t05:49:55z``, and ISO 8601 an offset of whole hours (``+02``), as ``time=`` takes
    them: the chip's date was "not a day or a time"."""
    parcels = gpd.read_parquet(two_pass_region.parcels)
    pid = parcels.sort_values("area_ha").parcel_id.iloc[-1]
    _, (first, _) = two_pass_days
    when = pd.Timestamp(first[0])
    for given in (first[0].lower(), f"{when.tz_convert('Etc/GMT-2'):%Y-%m-%dT%H:%M:%S%z}"[:-2]):  # ...+02
        c = chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=given)
        assert pd.Timestamp(c.times[0], tz="UTC") == when and c.data.sizes["time"] == 1
    late = f"{when + pd.Timedelta(seconds=1):%Y-%m-%dt%H:%M:%Sz}"  # that day's passes named, as for a "T"
    with pytest.raises(DateNotFoundError, match=f"no acquisition of the s1 cube at {late}; .* holds {first[0]} "):
        chip(two_pass_cube, [pid], registry=parcels, collection="s1", size=16, date=late)


def test_a_day_without_an_acquisition_names_the_nearest_ones(tiny_cube, tiny_region, parcels, parcel_id):
    """An inspector's chip of a day between two passes said only that the cube holds dates from May to July."""
    import itertools

    from tests.ingest.scene_edits import items_of

    times = sorted(f["properties"]["datetime"] for f in items_of(tiny_region.items, "sentinel-2-l2a"))
    before, after = next((a, b) for a, b in itertools.pairwise(times)
                         if pd.Timestamp(b[:10]) - pd.Timestamp(a[:10]) >= pd.Timedelta(days=2))
    gap = pd.date_range(before[:10], after[:10])[1:-1]  # the days between two passes
    for date in (f"{gap[0]:%Y-%m-%d}", f"{gap[-1]:%Y-%m-%d}T12:00:00Z"):
        with pytest.raises(DateNotFoundError, match=f"holds dates from .*; the nearest acquisitions: {before} before, "
                                                    f"{after} after$"):
            chip(tiny_cube, [parcel_id], registry=parcels, date=date)
    with pytest.raises(DateNotFoundError) as outside:  # before the cube's first date: its dates say it all
        chip(tiny_cube, [parcel_id], registry=parcels, date="2023-06-01")
    assert "nearest" not in str(outside.value)


def test_a_chip_date_that_is_no_date_is_offered_no_season_of_it():
    """"date=foo" was told to ask for "season.png?time=foo"; a month still is, as its dates make a season sheet."""
    from cube.chips import _one_date

    with pytest.raises(InvalidRequestError) as foo:
        _one_date("foo")
    assert "season" not in str(foo.value) and "YYYY-MM-DD" in str(foo.value)
    with pytest.raises(InvalidRequestError, match=r"every date of a range: time=2024-05 \(REST: season.png"):
        _one_date("2024-05")
    with pytest.raises(InvalidRequestError, match=r"lists them\) \(a UTC offset's '\+' reaches a URL's query as a "
                                                  r"space: write it %2B"):  # as time= hints it
        _one_date("2024-05-10T07:49:54 02:00")


def test_a_chip_of_a_dataset_is_centred_where_asked_even_off_its_north_west_edge(tiny_cube, parcels, parcel_id):
    """The window was shifted, not cut, on the north and west: a point or parcel beyond them got a chip of the
    Dataset's corner, labelled with the parcel's id."""
    from shapely.geometry import Point

    from cardcube.errors import AreaOutsideCubeError

    ds = open_cube(tiny_cube, bands=["B04", "B03", "B02", "SCL"], time="2024-06")
    x0, y1 = float(ds.x.min()) - 5, float(ds.y.max()) + 5  # the Dataset's north-west corner
    lonlat = gpd.GeoSeries(gpd.points_from_xy([x0 - 60, x0 - 5_000], [y1 + 60, y1 + 5_000]), crs=parcels.crs
                           ).to_crs(4326)
    c = chip(ds, Point(lonlat.x[0], lonlat.y[0]), size=32)
    assert c.data.sizes["x"] == c.data.sizes["y"] == 32
    assert float(c.data.x.min()) < x0 - 60 < float(c.data.x.max())  # centred on the point, 6 px off the Dataset
    beyond = (c.data.x.values < x0)[None, :] | (c.data.y.values > y1)[:, None]
    assert beyond.sum() == 32 * 32 - 10 * 10
    assert np.isnan(c.data.B04.values[:, beyond]).all() and (c.data.SCL.values[:, beyond] == 0).all()
    inner = ds.B04.sel(x=c.data.x[c.data.x > x0], y=c.data.y[c.data.y < y1]).values
    np.testing.assert_array_equal(c.data.B04.values[:, ~beyond].reshape(inner.shape), inner)
    with pytest.raises(AreaOutsideCubeError, match="outside the Dataset"):
        chip(ds, Point(lonlat.x[1], lonlat.y[1]), size=32)
    one = chip(ds.isel(time=0), [parcel_id], registry=parcels, size=16)  # one date selected: a chip of it
    assert list(one.times) == [ds.time.values[0]]


def test_the_scene_class_band_shows_its_no_data_as_no_data(tiny_cube, parcels, parcel_id, tmp_path):
    """SCL 0 (no data) was drawn opaque black, counted as data, and its GeoTIFF failed half-written (NaN in uint8)."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06", bands="SCL")
    scl = c.data.SCL.values.copy()
    scl[0, :4, :4] = 0  # no data over a corner of the first date
    c = Chip(c.data.assign(SCL=(c.data.SCL.dims, scl)), c.bands, c.outline, c.parcel_id)
    alpha = c.image(0, outline=False)[..., 3]
    assert (alpha == 0).tolist() == (scl[0] == 0).tolist()
    c.to_geotiff(tmp_path / "scl.tif", 0)
    with rasterio.open(tmp_path / "scl.tif") as src:
        written = src.read(1)
    assert np.isnan(written[:4, :4]).all() and (written[4:, 4:] == scl[0, 4:, 4:]).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scl.tif"]  # no part file left


def test_chip_requests_that_cannot_be_drawn_right_are_refused(tiny_cube, parcels, parcel_id):
    with pytest.raises(InvalidRequestError, match=r"three bands \(RGB\) or one band/index, got \['B04', 'B03'\]"):
        chip(tiny_cube, [parcel_id], registry=parcels, size=8, bands="B04,b04,B03")  # a case variant is one band
    for size in (64.5, True, "64"):
        with pytest.raises(InvalidRequestError, match="give a whole number of pixels"):
            chip(tiny_cube, [parcel_id], registry=parcels, size=size)
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    with pytest.raises(RequestTooLargeError, match=r"a season sheet of \d+ dates of 16 px at scale 400 would be"):
        c.contact_sheet(scale=400)  # refused before drawing: the CLI had no limit (517 Mpx, 6.5 GB)


def test_a_season_sheet_stays_within_its_limit_as_drawn(tiny_cube, parcels, parcel_id, monkeypatch):
    """The limit was checked on the sheet's least size, which left out the legend line: the demo's 49 dates at
    size=220 gave a 200 with 25.04 Mpx (the README says 413). Labels wider than small panels widen it more."""
    from cube import chips, render

    c = chip(tiny_cube, [parcel_id], registry=parcels, size=16, time="2024-06")
    n = c.data.sizes["time"]
    for scale in (8, 12):  # panels wider than their labels: the least size is the size drawn
        least = render.least_sheet_size(n, (16, 16), columns=chips.SHEET_COLUMNS, scale=scale)
        assert c.contact_sheet(scale=scale).image.shape[:2] == least[::-1]
    drawn = c.contact_sheet(scale=1).image.shape  # 16 px panels under wider labels
    least = render.least_sheet_size(n, (16, 16), columns=chips.SHEET_COLUMNS, scale=1)
    assert drawn[1] > least[0] and drawn[0] == least[1]
    monkeypatch.setattr(chips, "MAX_SHEET_PIXELS", drawn[0] * drawn[1] - 1)
    with pytest.raises(RequestTooLargeError, match=rf"would be {drawn[1]} x {drawn[0]} px"):
        c.contact_sheet(scale=1)
    monkeypatch.setattr(chips, "MAX_SHEET_PIXELS", drawn[0] * drawn[1])
    assert c.contact_sheet(scale=1).image.shape == drawn


def test_the_size_limit_counts_every_array_an_index_chip_holds(tiny_cube, tiny_region, monkeypatch):
    """An NDVI chip holds B04, B08, SCL and NDVI: four arrays of its dates, where the limit counted two (the bands
    asked for and one), so a chip twice the limit went through."""
    import cube.chips

    x, y = (tiny_region.bbox[0] + tiny_region.bbox[2]) / 2, (tiny_region.bbox[1] + tiny_region.bbox[3]) / 2
    lon, lat = gpd.GeoSeries(gpd.points_from_xy([x], [y]), crs=32631).to_crs(4326).iloc[0].coords[0]
    from shapely.geometry import Point

    one = chip(tiny_cube, Point(lon, lat), size=16, bands="NDVI", time="2024-06")
    array = one.data.sizes["time"] * 16 * 16 * 4  # one float32 array of the chip's dates
    monkeypatch.setattr(cube.chips, "MAX_BYTES", 3 * array)
    with pytest.raises(RequestTooLargeError, match="narrow the time range"):
        chip(tiny_cube, Point(lon, lat), size=16, bands="NDVI", time="2024-06")
    monkeypatch.setattr(cube.chips, "MAX_BYTES", 4 * array)
    assert chip(tiny_cube, Point(lon, lat), size=16, bands="NDVI", time="2024-06").bands == ("NDVI",)


def test_the_sheet_frames_clouds_red_not_snow_nor_saturated_pixels(tiny_cube, parcels, parcel_id):
    """Its label says "% cloud": snow (SCL 11) and saturated pixels (SCL 1), which the statistics mask too, were
    counted as cloud and their dates framed red."""
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=32)
    data = c.data.copy(deep=True)
    scl = data["SCL"].values
    scl[0], scl[1], scl[2] = 11, 1, 9  # a date of snow, one of saturated pixels, one of cloud
    data["SCL"].values = scl
    edited = Chip(data, c.bands, c.outline, c.parcel_id)
    assert list(edited.cloud_fraction()[:3]) == [0.0, 0.0, 1.0]
    assert list(edited.contact_sheet(scale=1).cloudy[:3]) == [False, False, True]
    assert edited.cloud_fraction(classes=(1, 11))[:2].tolist() == [1.0, 1.0]  # counted when asked for
