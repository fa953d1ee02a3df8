"""Pixel membership against an independent rule: shapely predicates on pixel centres and pixel boxes."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import Polygon, box

from cardcube.errors import InvalidRequestError
from cube.membership import ON_OUTLINE, label_pixels, parcel_pixels, shared_pixels, window_for

RES = 10.0
X0, Y0 = 500_020.0, 5_799_980.0  # on the 31UET 20 m lattice


@pytest.fixture
def geobox() -> GeoBox:
    return GeoBox((48, 56), Affine(RES, 0.0, X0, 0.0, -RES, Y0), "EPSG:32631")


def random_polygon(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 11) -> Polygon:
    """A star-shaped irregular polygon with float vertices around (cx, cy)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.35 * r, r, n)
    return Polygon(np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]))


def centres(geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    h, w = geobox.shape
    a = geobox.affine
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return a.c + cols * a.a, a.f + rows * a.e


def pixel_boxes(geobox: GeoBox) -> np.ndarray:
    h, w = geobox.shape
    a = geobox.affine
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    x0, y1 = a.c + cols * a.a, a.f + rows * a.e
    return shapely.box(x0, y1 + a.e, x0 + a.a, y1)


def polygons(geobox: GeoBox, n: int = 12, seed: int = 1) -> list[Polygon]:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = geobox.boundingbox
    out = []
    for _ in range(n):
        r = rng.uniform(25, 140)
        # Some reach over the grid edge on purpose.
        out.append(random_polygon(rng, rng.uniform(minx, maxx), rng.uniform(miny, maxy), r))
    return out


@pytest.mark.parametrize("buffer", [0.0, -5.0, -12.5])
def test_centre_rule_matches_shapely(geobox: GeoBox, buffer: float) -> None:
    xs, ys = centres(geobox)
    for poly in polygons(geobox):
        mask = parcel_pixels(poly, geobox, buffer=buffer)
        ref = shapely.contains_xy(poly.buffer(buffer), xs, ys)
        assert mask.shape == geobox.shape and mask.dtype == bool
        np.testing.assert_array_equal(mask, ref)


def test_a_field_on_pixel_edges_keeps_every_pixel_wholly_inside_it(geobox: GeoBox) -> None:
    """Edges on the 10 m grid put the buffered outline through pixel centres: every side alike, the pixels wholly
    inside the field kept (GDAL alone kept three sides' and dropped the fourth's: 90 of 100)."""
    xs, ys = centres(geobox)
    x, y = X0 + 60, Y0 - 50  # pixel edges: col 6, row 5
    fields = [box(x, y - 100, x + 100, y), box(x + 100, y - 100, x + 220, y)]  # 10 x 10 px, 12 x 10 px beside it
    labels = label_pixels(fields, geobox)
    for i, field in enumerate(fields):
        mask = parcel_pixels(field, geobox)
        np.testing.assert_array_equal(mask, shapely.intersects_xy(field.buffer(-5.0), xs, ys))
        np.testing.assert_array_equal(mask, shapely.covers(field, pixel_boxes(geobox)))
        np.testing.assert_array_equal(labels == i, mask)
    assert [int((labels == i).sum()) for i in range(2)] == [100, 120]
    # A hair inside the grid the border pixels are no longer wholly in the field.
    assert parcel_pixels(box(x + 0.01, y - 99.99, x + 99.99, y - 0.01), geobox).sum() == 64
    # Grown by half a pixel, the ring the field's edge halves is the field's on every side alike, but for its corner
    # pixels, whose centres lie 7 m from the field (GDAL: one side of the ring left out, 130 pixels)
    grown = parcel_pixels(fields[0], geobox, buffer=5.0)
    np.testing.assert_array_equal(grown, shapely.intersects_xy(fields[0].buffer(5.0), xs, ys))
    rows, cols = np.nonzero(grown)
    assert grown.sum() == 12 * 12 - 4 and (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 15, 5, 16)


@pytest.mark.parametrize(("res", "buffer"), [(10.0, -5.0), (60.0, -30.0)])
def test_a_field_one_pixel_wide_on_pixel_edges_keeps_its_pixels(res: float, buffer: float) -> None:
    """A strip as wide as twice the buffer shrinks to a sliver through its pixel centres, which GEOS's buffer, eased
    by a micrometre, collapsed: a 10 m strip of the 10 m grid kept none of its pixels lying east-west, and about
    half of them lying north-south, though each is wholly inside the field."""
    x0, y0 = 600_000.0, 5_900_040.0  # a tile's corner: GEOS's precision is the coordinates'
    grid = GeoBox((60, 60), Affine(res, 0.0, x0, 0.0, -res, y0), "EPSG:32632")
    for k in range(8):
        x, y = x0 + (3 + 5 * k) * res, y0 - (2 + 3 * k) * res
        strips = [box(x, y - 20 * res, x + res, y), box(x, y - res, x + 20 * res, y)]  # north-south, east-west
        for strip in strips:
            assert parcel_pixels(strip, grid, buffer=buffer).sum() == 20
        assert [int((label_pixels(strips[:1], grid, buffer=buffer) == 0).sum()),
                int((label_pixels(strips[1:], grid, buffer=buffer) == 0).sum())] == [20, 20]


def test_an_inward_buffer_smaller_than_the_ease_grows_no_parcel(geobox: GeoBox) -> None:
    """An inward buffer of less than a micrometre (the outline's ease was one) grew each parcel by the rest of the
    ease: two fields whose common edge runs through pixel centres both took those pixels."""
    x, y = X0 + 65, Y0 - 55  # edges through pixel centres
    fields = [box(x, y - 100, x + 100, y), box(x + 100, y - 100, x + 200, y)]
    for tiny in (-1e-7, -5e-7):
        assert not shared_pixels(fields, geobox, buffer=tiny).any()
        for field in fields:
            assert not (parcel_pixels(field, geobox, buffer=tiny) & ~parcel_pixels(field, geobox, buffer=0.0)).any()


def test_inward_buffer_keeps_pixel_centres_away_from_the_border(geobox: GeoBox) -> None:
    xs, ys = centres(geobox)
    for poly in polygons(geobox, seed=2):
        plain = parcel_pixels(poly, geobox, buffer=0)
        shrunk = parcel_pixels(poly, geobox, buffer=-7.0)
        assert not (shrunk & ~plain).any()
        if plain.sum() > 10:
            assert shrunk.sum() < plain.sum()
        d = shapely.distance(poly.exterior, shapely.points(xs[shrunk], ys[shrunk]))
        assert (d >= 7.0 * (1 - ON_OUTLINE)).all()  # a centre on the buffered outline is in: within its ease


def test_all_touched_is_every_pixel_the_polygon_intersects(geobox: GeoBox) -> None:
    boxes = pixel_boxes(geobox)
    for poly in polygons(geobox, seed=3):
        touched = parcel_pixels(poly, geobox, buffer=-5.0, all_touched=True)
        centre = parcel_pixels(poly, geobox, buffer=-5.0)
        assert not (centre & ~touched).any()
        ref = shapely.intersects(boxes, poly.buffer(-5.0))
        np.testing.assert_array_equal(touched, ref)


def test_window_covers_the_mask_exactly(geobox: GeoBox) -> None:
    for poly in polygons(geobox, seed=4):
        win = window_for(poly, geobox, buffer=-5.0)
        touched = parcel_pixels(poly, geobox, buffer=-5.0, all_touched=True)
        if not touched.any():
            continue
        rows, cols = np.nonzero(touched)
        # The window is the bounding box of the touched pixels: it holds all of them and no more.
        assert win == (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        centre = parcel_pixels(poly, geobox, buffer=-5.0)
        assert centre[win].sum() == centre.sum()
        # The sub-grid gives the same mask as cutting the full one.
        np.testing.assert_array_equal(parcel_pixels(poly, geobox[win], buffer=-5.0), centre[win])


def test_window_pad_clipping_and_outside(geobox: GeoBox) -> None:
    cx, cy = X0 + 200.0, Y0 - 200.0
    square = box(cx - 31, cy - 31, cx + 31, cy + 31)
    win = window_for(square, geobox, buffer=-5.0, pad=2)
    assert win == (slice(15, 25), slice(15, 25))  # 52 m square spans pixels 17..22, padded by 2
    corner = box(X0 - 100, Y0 - 35, X0 + 35, Y0 + 100)
    assert window_for(corner, geobox, buffer=0.0, pad=5) == (slice(0, 9), slice(0, 9))
    far = box(X0 - 1000, Y0 + 1000, X0 - 900, Y0 + 1100)
    assert window_for(far, geobox, buffer=0.0) is None
    tiny = box(cx, cy, cx + 8, cy + 8)
    assert window_for(tiny, geobox, buffer=-5.0) is None
    assert not parcel_pixels(tiny, geobox, buffer=-5.0).any()


def test_label_pixels_equals_per_parcel_masks_for_a_register(geobox: GeoBox) -> None:
    rng = np.random.default_rng(5)
    minx, miny, maxx, maxy = geobox.boundingbox
    pts = shapely.multipoints(np.column_stack([rng.uniform(minx, maxx, 25), rng.uniform(miny, maxy, 25)]))
    cells = [c.intersection(box(minx, miny, maxx, maxy)) for c in shapely.voronoi_polygons(pts).geoms]
    cells.insert(3, None)  # a missing geometry gets no pixel and keeps the indices aligned
    labels = label_pixels(cells, geobox, buffer=-5.0)
    assert labels.dtype == np.int32
    assert (labels != 3).all()
    for i, cell in enumerate(cells):
        if cell is not None:
            np.testing.assert_array_equal(labels == i, parcel_pixels(cell, geobox, buffer=-5.0))
    # Without a buffer a Voronoi partition gives every pixel to exactly one cell.
    assert (label_pixels(cells, geobox, buffer=0.0) >= 0).all()


def test_label_pixels_later_parcel_wins_an_overlap(geobox: GeoBox) -> None:
    a = box(X0 + 100, Y0 - 300, X0 + 300, Y0 - 100)
    b = box(X0 + 200, Y0 - 300, X0 + 400, Y0 - 100)
    labels = label_pixels([a, b], geobox, buffer=0.0, all_touched=True)
    np.testing.assert_array_equal(labels == 1, parcel_pixels(b, geobox, buffer=0.0, all_touched=True))
    assert (labels == 0).sum() < parcel_pixels(a, geobox, buffer=0.0).sum()
    assert (label_pixels([], geobox) == -1).all()


def test_buffer_needs_a_projected_grid() -> None:
    geographic = GeoBox((10, 10), Affine(0.001, 0, 5.0, 0, -0.001, 52.0), "EPSG:4326")
    poly = box(5.002, 51.995, 5.008, 51.999)
    calls = [(parcel_pixels, poly), (window_for, poly), (label_pixels, [poly]), (shared_pixels, [poly, poly])]
    for pixels, parcels in calls:
        with pytest.raises(InvalidRequestError, match="geographic"):
            pixels(parcels, geographic, buffer=-5.0)
    assert parcel_pixels(poly, geographic, buffer=0.0).any()
    assert shared_pixels([poly, poly], geographic, buffer=0.0).any()


@pytest.mark.parametrize("buffer", [float("nan"), float("inf"), -float("inf")])
def test_a_buffer_that_is_no_finite_number_is_refused(geobox: GeoBox, buffer: float) -> None:
    poly = box(5, 5, 45, 45)  # NaN gave shapely's None (an AttributeError), an infinity a GEOSException
    for pixels, parcels in [(parcel_pixels, poly), (window_for, poly), (label_pixels, [poly])]:
        with pytest.raises(InvalidRequestError, match="finite number of metres"):
            pixels(parcels, geobox, buffer=buffer)
