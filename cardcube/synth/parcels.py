"""A polder landscape: roads and canals cut the region into blocks, blocks split into fields.

Blocks lie between slightly rotated, jittered roads (with ditches and verges) and a canal; each block is
split either into strips with skewed cuts or into Voronoi cells, farmyards are carved out, and every
field is shrunk by a ditch margin. The result is irregular, non-overlapping parcels with random float
vertices, mostly 0.3-20 ha, with some small ones and slivers, as a real parcel register has.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
import shapely.ops
from affine import Affine
from rasterio import features
from shapely import affinity
from shapely.geometry import LineString, MultiPoint, Polygon, box

from cardcube.synth.phenology import BUILT, N_BACKGROUND, ROAD, WATER
from cardcube.synth.region import Region

MIN_AREA_M2 = 150.0  # smaller pieces are dropped (a real register would not hold them)
MAX_AREA_M2 = 200_000.0  # 20 ha: larger fields are split


@dataclass(frozen=True, slots=True, eq=False)
class Landscape:
    """Parcels (GeoDataFrame with ``parcel_id``, ``area_ha``, geometry) and non-parcel land cover."""

    parcels: gpd.GeoDataFrame
    roads: tuple[Polygon, ...]
    water: tuple[Polygon, ...]
    yards: tuple[Polygon, ...]

    def label_raster(self, region: Region, resolution: int = 10) -> np.ndarray:
        """Label per pixel (pixel-centre rule): background codes, then ``N_BACKGROUND + parcel index``."""
        geobox = region.geobox(resolution)
        shapes = [(g, ROAD) for g in self.roads] + [(g, WATER) for g in self.water]
        shapes += [(g, BUILT) for g in self.yards]
        shapes += [(g, N_BACKGROUND + i) for i, g in enumerate(self.parcels.geometry)]
        return features.rasterize(shapes, out_shape=geobox.shape, transform=Affine(*geobox.affine[:6]),
                                  fill=0, dtype="int32")


def make_landscape(rng: np.random.Generator, region: Region, *, mean_parcel_ha: float) -> Landscape:
    """Draw roads, canal, ponds, farmyards and parcels over ``region``."""
    minx, miny, maxx, maxy = region.bbox
    frame = box(minx, miny, maxx, maxy)
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    angle = rng.uniform(-25, 25)
    span = 1.5 * max(maxx - minx, maxy - miny)

    corridors, road_surfaces, water = [], [], []
    for axis, spacing in ((0, rng.uniform(700, 1100)), (1, rng.uniform(900, 1500))):
        pos = -span / 2 + rng.uniform(0, spacing)
        while pos < span / 2:
            jitter = rng.uniform(-4, 4)
            line = LineString([(pos, -span / 2), (pos + rng.uniform(-60, 60), span / 2)])
            if axis:
                line = affinity.rotate(line, 90, origin=(0, 0))
            line = affinity.translate(affinity.rotate(line, angle + jitter, origin=(0, 0)), cx, cy)
            corridors.append(line.buffer(rng.uniform(6, 10), cap_style="flat"))
            road_surfaces.append(line.buffer(rng.uniform(2.5, 4.0), cap_style="flat"))
            pos += spacing * rng.uniform(0.7, 1.3)
    # a dike road crossing at an odd angle, and a canal
    dike = affinity.rotate(LineString([(cx - span, cy), (cx + span, cy)]), rng.uniform(30, 60) + angle,
                           origin=(cx + rng.uniform(-1, 1) * 0.3 * (maxx - minx), cy))
    corridors.append(dike.buffer(rng.uniform(8, 12), cap_style="flat"))
    road_surfaces.append(dike.buffer(3.5, cap_style="flat"))
    canal = affinity.rotate(LineString([(cx - span, cy), (cx + span, cy)]), angle + rng.uniform(-8, 8),
                            origin=(cx, cy + rng.uniform(-0.35, 0.35) * (maxy - miny)))
    water.append(canal.buffer(rng.uniform(14, 22), cap_style="flat"))
    corridors.append(canal.buffer(rng.uniform(24, 30), cap_style="flat"))
    n_ponds = 1 + int(rng.poisson((maxx - minx) * (maxy - miny) / 40e6))
    for _ in range(n_ponds):
        px, py = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        ring = _blob(rng, px, py, rng.uniform(40, 110))
        water.append(ring)
        corridors.append(ring.buffer(6))

    blocked = shapely.union_all(corridors)
    blocks = [b for b in _polygons(frame.difference(blocked)) if b.area > MIN_AREA_M2]
    target = mean_parcel_ha * 10_000
    fields: list[Polygon] = []
    for block in blocks:
        if block.area < 1.6 * target:
            fields.append(block)
        elif rng.random() < 0.55:
            fields.extend(_strips(rng, block, target))
        else:
            fields.extend(_voronoi(rng, block, target))

    yards = _farmyards(rng, fields, n=max(1, round(frame.area / 3e6)))
    yard_union = shapely.union_all(yards) if yards else Polygon()
    parcels: list[Polygon] = []
    for f in fields:
        if yards and f.intersects(yard_union):
            f = f.difference(yard_union.buffer(3))
        for part in _polygons(f):
            parcels.extend(_split_large(rng, part))
    parcels = _with_slivers(rng, parcels)
    parcels = [p for p in (_shrink(rng, p) for p in parcels) if p is not None]
    gdf = _register(parcels, region)
    roads = tuple(_polygons(shapely.union_all(road_surfaces).intersection(frame)))
    water_polys = tuple(_polygons(shapely.union_all(water).intersection(frame)))
    return Landscape(gdf, roads, water_polys, tuple(y for y in yards if not y.is_empty))


def _polygons(geom) -> list[Polygon]:
    """The polygon parts of any geometry, largest first."""
    if geom.is_empty:
        return []
    parts = shapely.get_parts(geom)
    polys = [p for p in parts if isinstance(p, Polygon) and not p.is_empty]
    for p in parts:
        if not isinstance(p, Polygon) and hasattr(p, "geoms"):
            polys.extend(_polygons(p))
    return sorted(polys, key=lambda p: -p.area)


def _blob(rng: np.random.Generator, x: float, y: float, radius: float) -> Polygon:
    theta = np.sort(rng.uniform(0, 2 * np.pi, 14))
    r = radius * rng.uniform(0.6, 1.3, 14)
    return Polygon(np.column_stack([x + r * np.cos(theta), y + r * np.sin(theta)])).buffer(radius * 0.2)


def _strips(rng: np.random.Generator, block: Polygon, target: float) -> list[Polygon]:
    """Cut ``block`` into rows along its long axis, then each row into strips with skewed cuts."""
    u, _, width = _axes(block)
    v = np.array([-u[1], u[0]])
    n_rows = max(1, round(width / rng.uniform(250, 500)))
    rows = _cut(rng, block, v, step=lambda: width / n_rows * rng.uniform(0.8, 1.2), skew=0.03)
    out = []
    for row in rows:
        _, _, row_width = _axes(row)
        out.extend(_cut(rng, row, u, step=lambda rw=row_width: target / max(rw, 30.0) * rng.lognormal(0, 0.4),
                        skew=0.08))
    return out


def _axes(poly: Polygon) -> tuple[np.ndarray, float, float]:
    """Unit vector of the long axis of ``poly``'s minimum rotated rectangle, its length and width."""
    coords = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)[:3]
    edges = np.diff(coords, axis=0)
    lengths = np.hypot(*edges.T)
    k = int(np.argmax(lengths))
    return edges[k] / max(lengths[k], 1e-9), float(lengths[k]), float(lengths[1 - k])


def _cut(rng: np.random.Generator, poly: Polygon, u: np.ndarray, *, step, skew: float) -> list[Polygon]:
    """Split ``poly`` by lines roughly perpendicular to ``u``, ``step()`` metres apart."""
    proj = np.asarray(poly.exterior.coords) @ u
    lo, hi = proj.min(), proj.max()
    c = np.asarray(poly.centroid.coords[0])
    base = c - u * (c @ u - lo)
    n = np.array([-u[1], u[0]])
    half = 2 * (hi - lo) + 4000
    cuts, pos = [], step() * rng.uniform(0.5, 1.0)
    while pos < (hi - lo) - 0.5 * step():
        d = n + rng.uniform(-skew, skew) * u
        p = base + u * pos
        cuts.append(LineString([p - d * half, p + d * half]))
        pos += step()
    if not cuts:
        return [poly]
    return _polygons(shapely.ops.split(poly, shapely.MultiLineString(cuts)))


def _voronoi(rng: np.random.Generator, block: Polygon, target: float) -> list[Polygon]:
    """Split ``block`` into Voronoi cells of jittered points (about ``target`` m^2 each)."""
    n = max(2, round(block.area / target * rng.uniform(0.8, 1.2)))
    minx, miny, maxx, maxy = block.bounds
    pts = []
    while len(pts) < n:
        xy = rng.uniform((minx, miny), (maxx, maxy), size=(4 * n, 2))
        inside = shapely.contains_xy(block, xy[:, 0], xy[:, 1])
        pts.extend(map(tuple, xy[inside][: n - len(pts)]))
    cells = shapely.voronoi_polygons(MultiPoint(pts), extend_to=block)
    return [parts[0] for c in shapely.get_parts(cells) if (parts := _polygons(c.intersection(block)))]


def _split_large(rng: np.random.Generator, field: Polygon) -> list[Polygon]:
    if field.area <= MAX_AREA_M2:
        return [field]
    return [q for p in _voronoi(rng, field, field.area / np.ceil(field.area / 120_000)) for q in _split_large(rng, p)]


def _farmyards(rng: np.random.Generator, fields: list[Polygon], *, n: int) -> list[Polygon]:
    """Small rotated rectangles (farm buildings and yards) at the corners of some fields."""
    yards = []
    big = [f for f in fields if f.area > 40_000]
    for i in rng.choice(len(big), size=min(n, len(big)), replace=False) if big else []:
        f = big[int(i)]
        corner = np.asarray(f.exterior.coords)[int(rng.integers(0, len(f.exterior.coords) - 1))]
        w, h = rng.uniform(45, 90), rng.uniform(35, 70)
        rect = affinity.rotate(box(-w / 2, -h / 2, w / 2, h / 2), rng.uniform(0, 90), origin=(0, 0))
        rect = affinity.translate(rect, *corner)
        yards.append(rect.intersection(f))
    return [y for y in yards if not y.is_empty and y.area > 500]


def _with_slivers(rng: np.random.Generator, parcels: list[Polygon]) -> list[Polygon]:
    """Cut a narrow strip off a few fields: the long, thin parcels that a register always has."""
    out = []
    for p in parcels:
        if p.area > 30_000 and rng.random() < 0.04:
            mrr = np.asarray(p.minimum_rotated_rectangle.exterior.coords)
            a, b = mrr[0], mrr[1]
            d = (b - a) / max(np.hypot(*(b - a)), 1e-9)
            normal = np.array([-d[1], d[0]])
            width = rng.uniform(7, 16)
            strip = Polygon([a - 0.1 * (b - a), b + 0.1 * (b - a), b + 0.1 * (b - a) + normal * width,
                             a - 0.1 * (b - a) + normal * width])
            if not p.contains(shapely.centroid(strip)):
                strip = affinity.translate(strip, *(-normal * width))
            sliver, rest = p.intersection(strip), p.difference(strip)
            out.extend(_polygons(rest)[:1] + _polygons(sliver)[:1])
        else:
            out.append(p)
    return out


def _shrink(rng: np.random.Generator, p: Polygon) -> Polygon | None:
    """Ditch margin: shrink by a random float distance; keep the largest part if it splits."""
    parts = _polygons(shapely.make_valid(p.buffer(-rng.uniform(0.8, 2.6), join_style="mitre")))
    if not parts or parts[0].area < MIN_AREA_M2:
        return None
    return parts[0]


def _register(parcels: list[Polygon], region: Region) -> gpd.GeoDataFrame:
    """Number parcels north to south, west to east, as ``NL-000001``..."""
    cent = shapely.centroid(np.asarray(parcels, dtype=object))
    order = np.lexsort((shapely.get_x(cent), -np.round(shapely.get_y(cent), -2)))
    geoms = [shapely.normalize(parcels[i]) for i in order]
    areas = np.array([g.area for g in geoms]) / 10_000
    return gpd.GeoDataFrame(
        {"parcel_id": [f"NL-{i + 1:06d}" for i in range(len(geoms))], "area_ha": np.round(areas, 4)},
        geometry=geoms, crs=region.crs,
    )
