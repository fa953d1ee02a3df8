"""The region's pixel frame: its GeoBox at 10 m / 20 m and the window of each MGRS tile it touches.

Everything is simulated once on the region grid and then cut per tile, so the scenes of two tiles that
overlap hold identical pixels there, as two tiles cut from one datatake do.
"""

from __future__ import annotations

from dataclasses import dataclass

import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from cardcube.errors import InvalidRequestError
from cardcube.grid import TileGrid, tiles_for_bbox
from cardcube.synth.config import SynthConfig

BASE_RES = 10
COARSE_RES = 20


@dataclass(frozen=True, slots=True)
class TileWindow:
    """The part of the region inside one tile, as a 20 m aligned window of the region's 10 m grid."""

    tile: TileGrid
    row: int  # offsets and size in 10 m pixels of the region grid
    col: int
    height: int
    width: int

    def slices(self, resolution: int = BASE_RES) -> tuple[slice, slice]:
        f = resolution // BASE_RES
        return (slice(self.row // f, (self.row + self.height) // f),
                slice(self.col // f, (self.col + self.width) // f))


@dataclass(frozen=True, slots=True)
class Region:
    """A north-up rectangle on the shared 20 m lattice of the UTM zone's MGRS tiles."""

    epsg: int
    ulx: float
    uly: float
    width_m: float
    height_m: float
    tiles: tuple[TileWindow, ...]

    @classmethod
    def from_config(cls, config: SynthConfig) -> Region:
        home = TileGrid.from_id(config.tile)
        ulx, uly = config.resolved_origin()
        w, h = config.size_m
        for value, ref, name in ((ulx, home.ulx, "x"), (uly, home.uly, "y")):
            off = (value - ref) / COARSE_RES
            if abs(off - round(off)) > 1e-9:
                raise InvalidRequestError(
                    f"origin {name}={value} is not on the 20 m lattice of tile {home.tile_id} "
                    f"(offset {value - ref} m from its corner)"
                )
        bbox = (ulx, uly - h, ulx + w, uly)
        windows = []
        for tile in tiles_for_bbox(bbox, home.epsg):
            x0, x1 = max(ulx, tile.ulx), min(ulx + w, tile.ulx + tile.size_m)
            y1, y0 = min(uly, tile.uly), max(uly - h, tile.uly - tile.size_m)
            if x1 - x0 < COARSE_RES or y1 - y0 < COARSE_RES:
                continue
            windows.append(TileWindow(
                tile, row=round((uly - y1) / BASE_RES), col=round((x0 - ulx) / BASE_RES),
                height=round((y1 - y0) / BASE_RES), width=round((x1 - x0) / BASE_RES),
            ))
        if not any(t.tile.tile_id == home.tile_id for t in windows):
            raise InvalidRequestError(f"region {bbox} does not intersect tile {home.tile_id}")
        region = cls(home.epsg, ulx, uly, w, h, tuple(windows))
        region._check_covered()
        return region

    def _check_covered(self) -> None:
        """The tiles' windows cover the whole region (measured on their bounds: a grid of the region at 20 m
        took 10 GB before a 2,000 km region was refused)."""
        covered = shapely.union_all([box(self.ulx + t.col * BASE_RES, self.uly - (t.row + t.height) * BASE_RES,
                                         self.ulx + (t.col + t.width) * BASE_RES, self.uly - t.row * BASE_RES)
                                     for t in self.tiles])
        if box(*self.bbox).difference(covered).area > 0:
            raise InvalidRequestError(f"region {self.bbox} reaches outside the MGRS tiles of UTM zone EPSG:"
                                      f"{self.epsg} (a synthetic region lies within one zone)")

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.ulx, self.uly - self.height_m, self.ulx + self.width_m, self.uly)

    @property
    def tile_ids(self) -> tuple[str, ...]:
        return tuple(t.tile.tile_id for t in self.tiles)

    def shape(self, resolution: int = BASE_RES) -> tuple[int, int]:
        return (round(self.height_m / resolution), round(self.width_m / resolution))

    def geobox(self, resolution: int = BASE_RES) -> GeoBox:
        a = Affine(resolution, 0.0, self.ulx, 0.0, -resolution, self.uly)
        return GeoBox(self.shape(resolution), a, self.crs)

    def window_geobox(self, window: TileWindow, resolution: int = BASE_RES) -> GeoBox:
        """The GeoBox of ``window`` at ``resolution``: what a scene file of that tile covers."""
        rows, cols = window.slices(resolution)
        return self.geobox(resolution)[rows, cols]
