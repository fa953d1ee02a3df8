"""The region frame: tile windows on the shared 20 m lattice, straddling placement, coverage checks."""

from __future__ import annotations

import pytest

from cardcube.grid import TileGrid
from cardcube.synth import SynthConfig
from cardcube.synth.region import Region


def test_demo_region_inside_31ufu():
    region = Region.from_config(SynthConfig.demo())
    assert region.tile_ids == ("31UFU",)
    assert region.shape(10) == (1000, 1000) and region.shape(20) == (500, 500)
    tile = TileGrid.from_id("31UFU")
    for res in (10, 20):
        assert tile.window(region.geobox(res)) == (
            round((tile.uly - region.uly) / res), round((region.ulx - tile.ulx) / res))


def test_straddle_region_windows():
    region = Region.from_config(SynthConfig.demo(straddle=True))
    assert region.bbox[0] < 709_800 < region.bbox[2]
    windows = {w.tile.tile_id: w for w in region.tiles}
    assert set(windows) == {"31UFU", "31UGU"}
    ufu, ugu = windows["31UFU"], windows["31UGU"]
    assert ufu.col == 0 and ufu.col + ufu.width == round((709_800 - region.ulx) / 10)
    assert (ugu.width, ugu.height) == region.shape(10)[::-1]  # all of it lies in 31UGU
    for w in (ufu, ugu):
        assert w.row % 2 == 0 and w.col % 2 == 0 and w.width % 2 == 0 and w.height % 2 == 0
        for res in (10, 20):
            w.tile.window(region.window_geobox(w, res))  # on the tile's own lattice


def test_region_errors():
    with pytest.raises(ValueError, match="20 m lattice"):
        Region.from_config(SynthConfig.tiny(origin=(680_010.0, 5_845_000.0)))
    with pytest.raises(ValueError, match=r"outside the MGRS tiles of UTM zone|does not intersect"):
        Region.from_config(SynthConfig.tiny(origin=(400_000.0, 5_845_000.0)))
    with pytest.raises(ValueError, match=r"outside the MGRS tiles of UTM zone EPSG:32631 \(a synthetic region lies"):
        Region.from_config(SynthConfig.tiny(origin=(780_000.0, 5_845_000.0), tile="31UGU", size_m=40_000))
    with pytest.raises(ValueError, match="outside the MGRS tiles"):  # refused at once: a 20 m grid of it was 10 GB
        Region.from_config(SynthConfig.tiny(size_m=2_000_000))
