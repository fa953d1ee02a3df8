"""One acquisition to files: render it over the region, cut one scene per MGRS tile, write the COGs.

This is the I/O edge of the generator; :class:`SceneRecord` says what was written so that
:mod:`cardcube.synth.stac` can describe it without opening any file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox
from shapely.geometry import Polygon, box

from cardcube.spec import S1_BACKSCATTER, S2_L2A, CubeSpec
from cardcube.synth import s1, s2
from cardcube.synth.acquisitions import Acquisition
from cardcube.synth.cog import write_cog
from cardcube.synth.region import BASE_RES, TileWindow
from cardcube.synth.world import World

SCENES_DIR = "scenes"


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """One written band file: its key, path relative to the output root and its grid."""

    band: str
    href: str
    geobox: GeoBox


@dataclass(frozen=True, slots=True, eq=False)
class SceneRecord:
    """One scene (acquisition x tile) as written."""

    acquisition: Acquisition
    tile_id: str
    product_id: str
    assets: tuple[AssetRecord, ...]
    footprint: Polygon  # valid-data outline in the tile CRS
    epsg: int
    cloud_cover: float | None = None  # percent of valid pixels (S2)


def write_acquisition(
    world: World, acq: Acquisition, out_dir: Path, *, spectra: np.ndarray | None = None
) -> list[SceneRecord]:
    """Render ``acq`` and write its scene over every tile of the region; returns what was written."""
    if acq.is_s2:
        render = s2.render(world, acq, spectra if spectra is not None else s2.background_spectra(world))
        footprint = s2.swath_footprint(world, acq)
        arrays, spec = {**render.bands, "SCL": render.scl}, S2_L2A
    else:
        arrays, spec = s1.render(world, acq), S1_BACKSCATTER
        footprint = box(*world.region.bbox)
    records = []
    for window in world.region.tiles:
        tile_fp = footprint.intersection(box(*world.region.window_geobox(window).boundingbox))
        if tile_fp.area < (2 * BASE_RES) ** 2:
            continue  # the swath misses this tile's part of the region: no product
        records.append(_write_scene(world, acq, window, arrays, spec, tile_fp, out_dir))
    return records


def _write_scene(world: World, acq: Acquisition, window: TileWindow, arrays: dict[str, np.ndarray], spec: CubeSpec,
                 footprint: Polygon, out_dir: Path) -> SceneRecord:
    tile_id = window.tile.tile_id
    pid = acq.product_id(tile_id)
    rel_dir = f"{SCENES_DIR}/{acq.collection}/{pid}"
    assets = []
    cloud_cover = None
    for band in spec.bands:
        gb = world.region.window_geobox(window, band.resolution)
        data = arrays[band.name][window.slices(band.resolution)]
        href = f"{rel_dir}/{acq.band_filename(tile_id, band.name)}"
        write_cog(out_dir / href, np.ascontiguousarray(data), gb, nodata=band.nodata,
                  description=band.name, scale=band.scale, offset=band.offset, categorical=band.is_flag)
        assets.append(AssetRecord(band.name, href, gb))
        if band.name == "SCL":
            valid = np.count_nonzero(data)
            cloudy = np.count_nonzero(np.isin(data, (8, 9, 10)))
            cloud_cover = round(100.0 * cloudy / valid, 2) if valid else 100.0
    return SceneRecord(acq, tile_id, pid, tuple(assets), footprint, window.tile.epsg, cloud_cover)
