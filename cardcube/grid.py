"""MGRS tile grids: the spatial frame of every scene and every cube tile.

A :class:`TileGrid` names one Sentinel-2 MGRS tile (109.8 km square, UTM) and hands out
``odc.geo.GeoBox`` objects at any resolution; all pixel arithmetic is GeoBox arithmetic. Neighbouring
tiles of one UTM zone share the same 10 m and 20 m pixel lattice (their origins differ by multiples of
20 m), so pixels of a parcel that straddles two tiles line up exactly.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyproj
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box

from cardcube.errors import InvalidRequestError, SceneGridError

TILE_SIZE_M = 109_800.0
TILES_TABLE = Path(__file__).with_name("data") / "s2_tiles.csv.gz"  # every tile's upper-left corner (ESA grid)


_TILE_ID = re.compile(r"(?:MGRS-|T)?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})")


def normalise_tile_id(text: str) -> str:
    """A tile id as the grid spells it (``31UFU``, ``04QFJ``) from the ways products and STAC write it:
    ``T31UFU``, ``MGRS-31UFU``, lower case, a zone without its leading zero (``4QFJ``). Other text is
    returned upper-cased, for :meth:`TileGrid.from_id` to reject."""
    text = text.strip().upper()
    m = _TILE_ID.fullmatch(text)
    return f"{int(m[1]):02d}{m[2]}{m[3]}" if m else text


def is_tile_id(text: str) -> bool:
    """Whether ``text`` is a tile id as the grid spells it (``31UFU``, not ``T31UFU``): the name of a tile's folder."""
    return _TILE_ID.fullmatch(text) is not None and normalise_tile_id(text) == text


def tile_ids(tiles: str | Iterable[str]) -> list[str]:
    """Tile ids as the grid spells them (:func:`normalise_tile_id`) from one id, several separated by commas in a
    string (``"31UFU,31UGU"``: not the characters of one id), or an iterable of ids."""
    if isinstance(tiles, str):
        tiles = tiles.split(",")
    return [normalise_tile_id(t) for t in tiles if t.strip()]


def tile_epsg(tile_id: str) -> int:
    """The UTM CRS of an MGRS tile id: its zone, north for latitude bands N-X, south for C-M."""
    zone, band = int(tile_id[:2]), tile_id[2].upper()
    return (32600 if band >= "N" else 32700) + zone


@cache
def _origins() -> dict[str, tuple[float, float]]:
    """Upper-left corner ``(ulx, uly)`` of each of the ~57,000 tiles of ESA's Sentinel-2 tiling grid
    (``data/s2_tiles.csv.gz``, made by ``data/build_s2_tiles.py``), read once."""
    with gzip.open(TILES_TABLE, "rt") as f:
        next(f)
        return {tile: (float(x), float(y)) for tile, x, y in (line.rstrip().split(",") for line in f)}


@dataclass(frozen=True, slots=True)
class TileGrid:
    """One MGRS tile: its id, UTM CRS and upper-left corner. Immutable and hashable."""

    tile_id: str
    epsg: int
    ulx: float
    uly: float
    size_m: float = TILE_SIZE_M

    @classmethod
    def from_id(cls, tile_id: str) -> TileGrid:
        key = normalise_tile_id(tile_id)
        try:
            ulx, uly = _origins()[key]
        except KeyError:
            raise InvalidRequestError(f"unknown MGRS tile {tile_id!r}: not a tile of the Sentinel-2 tiling grid (a "
                                      f"tile id is a UTM zone, a latitude band and a 100 km square, such as 31UFU)"
                                      ) from None
        return cls(key, tile_epsg(key), ulx, uly)

    @staticmethod
    def known_ids() -> tuple[str, ...]:
        """Every tile of the Sentinel-2 tiling grid."""
        return tuple(_origins())

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """The tile square ``(minx, miny, maxx, maxy)`` in its own CRS."""
        return self.ulx, self.uly - self.size_m, self.ulx + self.size_m, self.uly

    def geobox(self, resolution: float) -> GeoBox:
        """The whole tile at ``resolution`` metres (10980 x 10980 at 10 m)."""
        n = round(self.size_m / resolution)
        return GeoBox((n, n), Affine(resolution, 0.0, self.ulx, 0.0, -resolution, self.uly), self.crs)

    def window_bounds(self, window: tuple[int, int, int, int], resolution: float
                      ) -> tuple[float, float, float, float]:
        """The box ``(minx, miny, maxx, maxy)``, in the tile's CRS, of ``window`` (row, col, height, width in tile
        pixels of ``resolution`` metres)."""
        r, c, h, w = window
        return (self.ulx + c * resolution, self.uly - (r + h) * resolution, self.ulx + (c + w) * resolution,
                self.uly - r * resolution)

    def window(self, geobox: GeoBox, *, scene_id: str = "?") -> tuple[int, int]:
        """Pixel offset ``(row, col)`` of ``geobox`` inside this tile at the same resolution.

        Raises :class:`SceneGridError` if ``geobox`` is in another CRS, is rotated, has another pixel
        size, is not aligned with the tile's pixel lattice, or reaches outside the tile.
        """
        self.check_crs(geobox, scene_id=scene_id)
        a = geobox.affine
        res = a.a
        if a.b != 0 or a.d != 0 or not math.isclose(a.e, -res) or res <= 0:
            raise SceneGridError(scene_id, f"transform {tuple(a)[:6]} is not a north-up square-pixel grid")
        col_f = (a.c - self.ulx) / res
        row_f = (self.uly - a.f) / res
        col, row = round(col_f), round(row_f)
        if abs(col - col_f) > 1e-6 or abs(row - row_f) > 1e-6:
            raise SceneGridError(
                scene_id, f"origin ({a.c}, {a.f}) is off the {res:g} m pixel grid of tile {self.tile_id}"
            )
        full = self.geobox(res)
        h, w = geobox.shape
        if row < 0 or col < 0 or row + h > full.shape[0] or col + w > full.shape[1]:
            box = ", ".join(f"{v:.10g}" for v in geobox.boundingbox)
            tile_box = ", ".join(f"{v:.10g}" for v in self.bounds)
            raise SceneGridError(scene_id, f"extent ({box}) reaches outside tile {self.tile_id} ({tile_box}, "
                                           f"{self.crs}): larger than the tile, or on another tile than its item names")
        return row, col

    def check_crs(self, geobox: GeoBox, *, scene_id: str = "?") -> None:
        """:class:`SceneGridError` if ``geobox`` is not in this tile's CRS: checked before the pixel size, as a
        file reprojected to another CRS has pixels of another size too, and its CRS is what is wrong."""
        if geobox.crs is None or geobox.crs.epsg != self.epsg:
            found = "none" if geobox.crs is None else (f"EPSG:{geobox.crs.epsg}" if geobox.crs.epsg else
                                                       _describe(geobox.crs.proj))
            raise SceneGridError(scene_id, f"CRS {found} is not the CRS of tile {self.tile_id} ({self.crs})")


def _describe(crs: pyproj.CRS) -> str:
    """A CRS without an EPSG code in a line: its name, UTM zone and datum (its WKT would fill a screen)."""
    zone = f", UTM zone {crs.utm_zone}" if crs.utm_zone else ""
    return f"{crs.name!r}{zone}, datum {crs.datum.name if crs.datum else '?'!r}"


def tiles_for_bbox(bbox: tuple[float, float, float, float], epsg: int) -> tuple[TileGrid, ...]:
    """Tiles of UTM zone ``epsg`` that intersect ``bbox`` (minx, miny, maxx, maxy in that CRS), by id."""
    minx, miny, maxx, maxy = bbox
    zone = f"{epsg % 100:02d}"
    return tuple(t for t in (TileGrid.from_id(i) for i in TileGrid.known_ids() if i.startswith(zone))
                 if t.epsg == epsg and minx < t.ulx + t.size_m and maxx > t.ulx and miny < t.uly
                 and maxy > t.uly - t.size_m)


def tiles_overlapping(footprint: Geometry) -> tuple[TileGrid, ...]:
    """Tiles whose square overlaps ``footprint`` (any CRS) over some area, by id: in every UTM zone it reaches
    and the zones either side (a tile reaches beyond its zone's 6 degrees), in either hemisphere it nears.
    A footprint across the antimeridian is not split at it."""
    lonlat = footprint.to_crs("EPSG:4326", resolution=0.01 if footprint.crs.geographic else 1000.0)  # edges densified
    minlon, minlat, maxlon, maxlat = lonlat.boundingbox
    first, last = (min(max(math.floor((lon + 180) / 6) + 1, 1), 60) for lon in (minlon, maxlon))
    hemispheres = [base for base, near in ((32600, maxlat > -1), (32700, minlat < 1)) if near]
    found: dict[str, TileGrid] = {}
    for zone in range(max(first - 1, 1), min(last + 1, 60) + 1):
        for epsg in (base + zone for base in hemispheres):
            local = lonlat.to_crs(f"EPSG:{epsg}", resolution=0.01)
            for tile in tiles_for_bbox(tuple(local.boundingbox), epsg):
                if local.intersection(box(*tile.bounds, tile.crs)).area > 0:
                    found[tile.tile_id] = tile
    return tuple(found[i] for i in sorted(found))
