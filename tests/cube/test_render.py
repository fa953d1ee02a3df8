"""Rendering: decode the PNGs and check pixels against the inputs and the geometry."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from PIL import Image
from shapely.geometry import Polygon

from cardcube.errors import InvalidRequestError
from cube.render import (
    OUTLINE,
    colour_index,
    contact_sheet,
    draw_outline,
    enlarge,
    png_bytes,
    robust_limits,
    stretch,
    true_colour,
    write_geotiff,
    write_png,
)

X0, Y0 = 600_000.0, 5_800_020.0


@pytest.fixture
def chip() -> GeoBox:
    return GeoBox((24, 30), Affine(10.0, 0.0, X0, 0.0, -10.0, Y0), "EPSG:32631")


def decode(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    img.load()
    return np.asarray(img)


def test_stretch_is_monotonic_and_clipped() -> None:
    x = np.sort(np.random.default_rng(0).uniform(-0.1, 0.6, 500))
    for gamma in (1.0, 2.2):
        y = stretch(x, limits=(0.0, 0.3), gamma=gamma)
        assert (np.diff(y) >= 0).all() and y.min() == 0.0 and y.max() == 1.0
    assert stretch(np.array([0.15]), limits=(0.0, 0.3))[0] == pytest.approx(0.5)
    assert np.isnan(stretch(np.array([np.nan]), limits=(0, 1))[0])
    with pytest.raises(InvalidRequestError):
        stretch(x, limits=(0.3, 0.3))
    a, b = np.array([0.0, 0.1, np.nan]), np.arange(100) / 100
    assert robust_limits(a, b) == pytest.approx(tuple(np.percentile(np.r_[0.0, 0.1, b], [2, 98])))
    assert robust_limits(np.full(3, np.nan)) == (0.0, 0.3)


def test_the_stretch_of_a_large_season_is_that_of_its_values_sampled() -> None:
    """Up to ROBUST_SAMPLE values (a 2,048 px date) the 2-98 % are numpy's exactly; beyond, of every n-th value, within
    0.5 % of the range of numpy's over all of them (no float64 copy of a season of 2,048 px chips)."""
    from cube.render import ROBUST_SAMPLE

    rng = np.random.default_rng(3)
    date = rng.normal(-12, 3, (2048, 2048)).astype(np.float32)
    date[:100] = np.nan  # beyond the swath
    assert date.size == ROBUST_SAMPLE
    assert robust_limits(date) == tuple(np.nanpercentile(date.astype(np.float64), [2, 98]))
    season = rng.normal(-12, 3, (5, 1024, 1024)).astype(np.float32) + np.arange(5)[:, None, None]
    lo, hi = np.percentile(season.astype(np.float64), [2, 98])
    assert robust_limits(season) == pytest.approx((lo, hi), abs=0.005 * (hi - lo))


def test_true_colour_png_is_monotonic_with_transparent_nan() -> None:
    ramp = np.tile(np.linspace(0.0, 0.4, 40), (5, 1))
    red, green, blue = ramp, ramp * 0.5, np.full_like(ramp, 0.05)
    red[2, 7] = np.nan
    px = decode(png_bytes(true_colour(red, green, blue)))
    assert px.shape == (5, 40, 4)
    row = px[0].astype(int)
    assert (np.diff(row[:, 0]) >= 0).all() and (np.diff(row[:, 1]) >= 0).all()
    assert row[-1, 0] == 255 and row[0, 0] == 0  # 0 -> black, >= 0.3 -> saturated
    assert (row[:, 2] == round(0.05 / 0.3 * 255)).all()  # blue channel really comes from blue
    assert (row[:, 0] >= row[:, 1]).all()  # red is red, not swapped with green
    assert tuple(px[2, 7]) == (0, 0, 0, 0)
    assert (px[[0, 1, 3, 4], :, 3] == 255).all()


def test_colour_index_uses_the_colormap() -> None:
    ndvi = np.array([[0.0, 0.25, 0.5, 0.9, 1.2, -0.3, np.nan]])
    px = decode(png_bytes(colour_index(ndvi)))
    cmap = matplotlib.colormaps["RdYlGn"]
    for j, v in enumerate([0.0, 0.25, 0.5, 0.9, 1.0, 0.0]):
        np.testing.assert_allclose(px[0, j, :3], np.array(cmap(v)[:3]) * 255, atol=1)
    assert px[0, 3, 1] > px[0, 3, 0]  # dense canopy is green
    assert px[0, 0, 0] > px[0, 0, 1]  # bare soil is red
    assert px[0, 6, 3] == 0 and (px[0, :6, 3] == 255).all()


@pytest.mark.parametrize("factor", [1, 8])
def test_outline_follows_the_polygon_boundary(chip: GeoBox, factor: int) -> None:
    rng = np.random.default_rng(4)
    ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
    rad = rng.uniform(50, 110, 9)
    cx, cy = X0 + 150.3, Y0 - 121.7
    poly = Polygon(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))
    poly = poly.difference(shapely.Point(cx, cy).buffer(20))  # a hole is outlined too
    grey = np.full(chip.shape, 0.12)
    base = enlarge(true_colour(grey, grey, grey), factor)
    px = decode(png_bytes(draw_outline(base, poly, chip)))
    assert px.shape == (24 * factor, 30 * factor, 4)
    is_outline = (px == np.array(OUTLINE, dtype=np.uint8)).all(axis=-1)

    def to_pixel(x, y):  # continuous image coordinates: pixel i spans [i, i + 1)
        return (np.asarray(x) - X0) / 10.0 * factor, (Y0 - np.asarray(y)) / 10.0 * factor

    # Along both rings every boundary point falls on (or next to) an outline pixel.
    for ring in (poly.exterior, *poly.interiors):
        pts = shapely.line_interpolate_point(ring, np.linspace(0, ring.length, 400))
        u, v = to_pixel(shapely.get_x(pts), shapely.get_y(pts))
        i, j = np.floor(v).astype(int), np.floor(u).astype(int)
        near = np.zeros_like(i, dtype=bool)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                near |= is_outline[np.clip(i + di, 0, px.shape[0] - 1), np.clip(j + dj, 0, px.shape[1] - 1)]
        assert near.all()
        exact = is_outline[i, j].mean()
        assert exact > 0.6  # the rest is one pixel off: Bresenham between vertex pixels
    # And every outline pixel lies on the boundary (its centre within 1.5 image pixels of it).
    rows, cols = np.nonzero(is_outline)
    x = X0 + (cols + 0.5) / factor * 10.0
    y = Y0 - (rows + 0.5) / factor * 10.0
    dist = shapely.distance(poly.boundary, shapely.points(x, y)) / 10.0 * factor
    assert dist.max() < 1.5
    assert (px[~is_outline] == base[~is_outline]).all()  # nothing else changed


def test_contact_sheet_panels_labels_and_cloud_frames(tmp_path) -> None:
    rng = np.random.default_rng(1)
    panels = [true_colour(*(rng.uniform(0, 0.3, (3, 10, 12)))) for _ in range(9)]
    panels[4][2, 3] = 0  # a transparent pixel shows the background
    clouds = [0.0, 0.8, 0.1, np.nan, 0.31, 0.0, 1.0, 1.0, 0.2]
    nodata = [0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.9, 0.0, 0.0]  # date 7: mostly outside the swath, not cloudy
    labels = [f"2024-05-{d:02d}" for d in range(1, 10)]
    sheet = contact_sheet(panels, labels=labels, cloud_fraction=clouds, nodata_fraction=nodata, columns=4, scale=3)
    path = tmp_path / "sheet.png"
    sheet.write(path)
    px = np.asarray(Image.open(path).convert("RGB"))
    assert px.shape == sheet.image.shape
    assert len(sheet.boxes) == 9 and sheet.cloudy == (False, True, False, False, True, False, False, True, False)
    assert sheet.empty == tuple(i == 6 for i in range(9))
    assert len({b[0] for b in sheet.boxes}) == 4 and len({b[1] for b in sheet.boxes}) == 3  # 4 x 3 grid
    for a in sheet.boxes:
        assert a[2] - a[0] == 36 and a[3] - a[1] == 30
        assert a[0] >= 0 and a[2] <= px.shape[1] and a[1] >= 0 and a[3] <= px.shape[0]
        for b in sheet.boxes:  # panels do not overlap
            assert a is b or a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    red, grey = np.array([220, 30, 30]), np.array([150, 150, 150])
    for panel, (x0, y0, x1, y1), cloudy, empty in zip(panels, sheet.boxes, sheet.cloudy, sheet.empty, strict=True):
        content = px[y0:y1, x0:x1]
        shown = enlarge(panel, 3)
        opaque = shown[..., 3] == 255
        np.testing.assert_array_equal(content[opaque], shown[opaque][:, :3])
        frame = np.concatenate([px[y0 - 2, x0:x1], px[y1 + 1, x0:x1], px[y0:y1, x0 - 2], px[y0:y1, x1 + 1]])
        assert (frame == red).all() == cloudy and (frame == grey).all() == empty
        # The label strip under the panel holds text (not just background).
        strip = px[y1 + 4 : y1 + 16, x0:x1]
        assert (strip != strip[0, 0]).any(axis=-1).sum() > 10
    assert tuple(px[sheet.boxes[4][1] + 6, sheet.boxes[4][0] + 9]) == (40, 40, 40)
    with pytest.raises(InvalidRequestError):
        contact_sheet(panels, labels=labels[:3])


def test_png_file_and_bad_images(tmp_path) -> None:
    img = true_colour(*np.full((3, 4, 5), 0.1))
    write_png(img, tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
    with pytest.raises(FileNotFoundError, match=r"no folder .*nodir to write b\.png in") as lost:
        write_png(img, tmp_path / "nodir" / "b.png")  # it named the hidden .part file written meanwhile
    assert lost.value.filename == str(tmp_path / "nodir" / "b.png") and ".part" not in str(lost.value)
    with pytest.raises(InvalidRequestError, match="uint8"):
        png_bytes(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(InvalidRequestError):
        enlarge(img, 0)


def test_geotiff_has_the_chip_grid(tmp_path, chip: GeoBox) -> None:
    data = np.random.default_rng(2).uniform(0, 0.4, (2, *chip.shape)).astype(np.float32)
    data[1, 3, 4] = np.nan
    write_geotiff(tmp_path / "chip.tif", data, chip, nodata=float("nan"), band_names=["B04", "B08"])
    with rasterio.open(tmp_path / "chip.tif") as src:
        assert src.crs.to_epsg() == 32631
        assert src.transform == chip.affine
        assert src.descriptions == ("B04", "B08")
        np.testing.assert_array_equal(src.read(), data)
        assert src.bounds == pytest.approx(tuple(chip.boundingbox))
    with pytest.raises(InvalidRequestError, match="does not match"):
        write_geotiff(tmp_path / "bad.tif", data[:, :3], chip)
    for name in ("chip.png", "chip.jpg", "chip"):  # TIFF bytes under a name every viewer takes for another format
        with pytest.raises(InvalidRequestError, match=rf"{name}: a chip is written as GeoTIFF here; give a file name "
                                                      rf"ending \.tif"):
            write_geotiff(tmp_path / name, data, chip)
        assert not (tmp_path / name).exists()
    write_geotiff(tmp_path / "chip.TIFF", data, chip)


def test_contact_sheet_labels_of_small_panels_stay_in_their_cell() -> None:
    """Panels narrower than their label ("2024-05-07  100% cloud", about 110 px): each cell is as wide as its
    text, so no label runs across the gap into the next panel's label or frame."""
    panels = [true_colour(*np.full((3, 8, 8), 0.1)) for _ in range(4)]
    labels = [f"2024-05-{d:02d}" for d in range(1, 5)]
    sheet = contact_sheet(panels, labels=labels, cloud_fraction=[1.0, 1.0, 0.0, 1.0], columns=4, scale=2)
    px = sheet.image.astype(int)
    _, y0, _, y1 = sheet.boxes[0]
    for x0_next, _, _, _ in sheet.boxes[1:]:
        gap = px[y0 - 3:y1 + 18, x0_next - 3 - 6:x0_next - 3]  # the 6 px gap before the next panel's frame
        assert (gap == (40, 40, 40)).all()  # background only, the whole height of panel and label
    assert all(b[2] - b[0] == 16 for b in sheet.boxes)  # the panels keep their size


def test_contact_sheet_legend_draws_the_colour_bar_under_the_panels() -> None:
    """A sheet of index panels says what its colours mean: the legend's text and a colour bar of the same colour
    map from its low to its high value, on a line under the panels."""
    from cube.render import Legend

    panels = [colour_index(np.linspace(-0.2, 1.2, 36).reshape(6, 6)) for _ in range(3)]
    sheet = contact_sheet(panels, labels=["a", "b", "c"], scale=2, legend=Legend("NDVI", "RdYlGn", (0.0, 1.0)))
    below = sheet.image[max(b[3] for b in sheet.boxes) + 16:]  # under the panels and their labels
    cmap = np.round(matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, 120))[:, :3] * 255).astype(np.uint8)
    rows = [r for r in below if any((r[i:i + 120] == cmap).all() for i in range(r.shape[0] - 119))]
    assert len(rows) >= 8  # the bar, 10 px high
    plain = contact_sheet(panels, labels=["a", "b", "c"], scale=2)
    assert plain.legend is None and plain.image.shape[0] < sheet.image.shape[0]
