"""Fixtures of the catalog tests: hand-made ledger versions, and tiny real cubes made by ``ingest``.

The scenes are a few dates of a 40 x 40 pixel window per tile, written as product folders of GeoTIFFs
(one of the source layouts ``ingest`` reads), so an ingest takes a second or two.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from cardcube.grid import TileGrid
from cardcube.spec import S2_L2A
from catalog.validate import SCHEMAS
from cube.ledger import Acquisition, CubeVersion, HotSlot, SceneRecord, TileState
from ingest.job import ingest

SCHEMA_DIR = SCHEMAS  # the extensions' schemas shipped with the package: every test validates offline
T0 = datetime(2024, 4, 1, 10, 50, 31, tzinfo=UTC)
# a window near the shared edge of 31UFU and 31UGU (both tiles hold x = 699960 ... 709800)
WINDOWS = {"31UFU": (700_000.0, 5_850_000.0), "31UGU": (700_000.0, 5_850_000.0)}
WINDOW_PX = 40  # at 10 m


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_scenes(folder: Path, *, tiles: tuple[str, ...] = ("31UFU",), days: tuple[int, ...] = (0, 5, 10),
                broken: bool = False) -> Path:
    """Write S2 L2A product folders for ``days`` after T0 on ``tiles``; ``broken`` makes every scene unreadable."""
    rng = np.random.default_rng(sum(days))
    folder.mkdir(parents=True, exist_ok=True)
    for tile in tiles:
        grid = TileGrid.from_id(tile)
        x0, y0 = WINDOWS[tile]
        assert (x0 - grid.ulx) % 20 == 0 and (grid.uly - y0) % 20 == 0
        for day in days:
            t = T0 + timedelta(days=day)
            stamp = f"{t:%Y%m%dT%H%M%S}"
            product = folder / f"S2A_MSIL2A_{stamp}_N0510_R051_T{tile}_{stamp}"
            product.mkdir(exist_ok=True)
            for band in S2_L2A.bands:
                n = WINDOW_PX * 10 // band.resolution
                high = 12 if band.name == "SCL" else 5000
                data = rng.integers(1, high, (n, n)).astype(band.dtype)
                path = product / f"T{tile}_{stamp}_{band.name}_{band.resolution:02d}m.tif"
                with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype=band.dtype,
                                   crs=grid.crs, transform=Affine(band.resolution, 0, x0, 0, -band.resolution, y0),
                                   nodata=0) as ds:
                    ds.write(data, 1)
                if broken:
                    path.write_bytes(path.read_bytes()[:200])
    return folder


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory) -> Path:
    """Three dates on 31UFU and 31UGU."""
    return make_scenes(tmp_path_factory.mktemp("scenes") / "first", tiles=("31UFU", "31UGU"))


@pytest.fixture(scope="session")
def base_cube(tmp_path_factory, scenes_dir) -> Path:
    """A cube with one committed s2 version and its catalog (never modified: copy it to change it)."""

    cube = tmp_path_factory.mktemp("cube") / "cube"
    result = ingest(scenes_dir, cube, collection="s2", progress=False)
    assert result.ok and result.version == 1, result.summary()
    return cube


@pytest.fixture
def cube(tmp_path, base_cube) -> Path:
    """A private copy of the base cube that a test may change."""
    return Path(shutil.copytree(base_cube, tmp_path / "cube"))


@pytest.fixture(scope="session")
def validator():
    from catalog.validate import OfflineValidator

    return OfflineValidator(SCHEMA_DIR)


def hand_version(*, tiles: dict[str, list[str]] | None = None, version: int = 3, hot: int = 1) -> CubeVersion:
    """A CubeVersion built by hand: ``tiles`` maps tile -> ISO times (the last ``hot`` in the hot buffer)."""
    tiles = tiles or {"31UFU": [iso(T0 + timedelta(days=d)) for d in (0, 5, 10, 15)]}
    states, scenes = {}, {}
    for tile, times in tiles.items():
        acqs = [Acquisition(t, f"S2A_{tile}_{t}", "sentinel-2a", 51, "descending", 12.5) for t in times]
        cold, hot_acqs = acqs[: len(acqs) - hot], acqs[len(acqs) - hot:]
        states[tile] = TileState(tile, tuple(cold), tuple(HotSlot(i, a) for i, a in enumerate(hot_acqs)),
                                 len(hot_acqs))
        scenes.update({a.scene_id: SceneRecord(a.scene_id, tile, a.time, version) for a in acqs})
    return CubeVersion("s2", version, S2_L2A, states, scenes, created="2024-06-01T00:00:00.000000Z")
