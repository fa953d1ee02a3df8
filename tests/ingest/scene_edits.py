"""Derive source-scene sets from a synthetic region: subsets, and broken copies of real scenes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform
from rasterio.warp import reproject as reproject_array

from cardcube.synth.stac import read_features, write_features


def write_items(items_path: Path, features: Iterable[dict], name: str) -> Path:
    """An ItemCollection of ``features`` beside ``items_path`` (so relative hrefs still resolve)."""
    return write_features(features, Path(items_path).parent / name)


def items_of(items_path: Path, collection: str) -> list[dict]:
    return read_features(items_path, collection)


def asset_path(items_path: Path, feature: dict, band: str) -> Path:
    return (Path(items_path).parent / feature["assets"][band]["href"]).resolve()


def broken_copy(items_path: Path, feature: dict, new_id: str, edit: Callable[[str, Path], None] | None = None,
                *, drop: str | None = None, props: dict | None = None) -> dict:
    """A copy of ``feature`` under ``new_id`` with its files copied, each passed to ``edit(band, path)``."""
    root = Path(items_path).parent
    folder = root / "broken" / new_id
    folder.mkdir(parents=True, exist_ok=True)
    item = json.loads(json.dumps(feature))
    item["id"] = new_id
    item["properties"].update(props or {})
    for band in list(item["assets"]):
        if band == drop:
            del item["assets"][band]
            continue
        target = folder / f"{band}.tif"
        shutil.copy(asset_path(items_path, feature, band), target)
        if edit is not None:
            edit(band, target)
        item["assets"][band]["href"] = str(target.relative_to(root))
    return item


def swap_assets(feature: dict, a: str, b: str) -> dict:
    """``feature`` with the files of bands ``a`` and ``b`` swapped: a hand-made catalog's copy-paste slip."""
    assets = dict(feature["assets"], **{a: feature["assets"][b], b: feature["assets"][a]})
    return dict(feature, assets=assets)


def later_on_tile(features: list[dict], tile: str, seconds: float) -> None:
    """Shift the acquisition time of ``features`` of ``tile`` by ``seconds``, in place: a pass whose products on two
    tiles carry sensing times seconds apart, as real granules and slices do."""
    import datetime as dt

    for f in features:
        if f["properties"]["grid:code"].endswith(tile):
            t = dt.datetime.fromisoformat(f["properties"]["datetime"].replace("Z", "+00:00"))
            f["properties"]["datetime"] = (t + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def without_href(feature: dict, band: str) -> dict:
    """``feature`` with band ``band``'s asset href empty: an asset whose file was never filled in."""
    return dict(feature, assets=dict(feature["assets"], **{band: dict(feature["assets"][band], href="")}))


def one_file_twice(feature: dict, band: str, twice: str) -> dict:
    """``feature`` with band ``twice`` read from ``band``'s file: an asset's href copied into another asset."""
    return dict(feature, assets=dict(feature["assets"], **{twice: feature["assets"][band]}))


def undescribed(band: str, path: Path) -> None:
    """The same pixels without a band description, as many providers' files have none."""
    _rewrite(path)


def truncate(band: str, path: Path) -> None:
    """Cut the last third of one band's file: the header still opens, the last blocks fail."""
    if band in ("B04", "VV"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])


def empty(band: str, path: Path) -> None:
    """Leave one band's file with no byte at all: a copy or a download cut at its start."""
    if band == "B08":
        path.write_bytes(b"")


def reproject_label(crs: int | str) -> Callable[[str, Path], None]:
    """Relabel every band with another CRS (an EPSG code or a PROJ string; same pixels): a mis-projected
    delivery."""
    def edit(band: str, path: Path) -> None:
        _rewrite(path, crs=f"EPSG:{crs}" if isinstance(crs, int) else crs)
    return edit


def reproject(epsg: int) -> Callable[[str, Path], None]:
    """Warp every band into another CRS, as gdalwarp -t_srs does (its own pixel size and origin there): a
    delivery mis-projected for real, not merely relabelled."""
    def edit(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            profile = src.profile
            transform, width, height = calculate_default_transform(src.crs, f"EPSG:{epsg}", src.width, src.height,
                                                                   *src.bounds)
            out = np.zeros((height, width), dtype=profile["dtype"])
            reproject_array(src.read(1), out, src_transform=src.transform, src_crs=src.crs,
                            dst_transform=transform, dst_crs=f"EPSG:{epsg}", resampling=Resampling.nearest)
        for key in ("blockxsize", "blockysize", "tiled"):
            profile.pop(key, None)
        profile.update(driver="GTiff", crs=f"EPSG:{epsg}", transform=transform, width=width, height=height)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(out, 1)
    return edit


def shift(metres: float) -> Callable[[str, Path], None]:
    """Move every band by ``metres`` east: the scene is off the tile's pixel lattice."""
    def edit(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            t = src.transform
        _rewrite(path, transform=Affine(t.a, t.b, t.c + metres, t.d, t.e, t.f))
    return edit


def stretch(factor: float) -> Callable[[str, Path], None]:
    """Pixels ``factor`` times their size, from the same origin: 10.0001 m pixels of a delivery off the tile grid."""
    def edit(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            t = src.transform
        _rewrite(path, transform=Affine(t.a * factor, t.b, t.c, t.d, t.e * factor, t.f))
    return edit


def blank(band: str, path: Path) -> None:
    """Every pixel nodata."""
    with rasterio.open(path) as src:
        nodata = src.nodata
    _rewrite(path, data=lambda a: np.full_like(a, nodata if nodata is not None and not np.isnan(nodata) else 0)
             if nodata is None or not np.isnan(nodata) else np.full_like(a, np.nan))


def blank_band(name: str) -> Callable[[str, Path], None]:
    """Band ``name`` nodata at every pixel, the others as they were: a failed download or conversion of one file."""
    def edit(band: str, path: Path) -> None:
        if band == name:
            blank(band, path)
    return edit


def foreign_classes(band: str, path: Path) -> None:
    """Some scene classification pixels of a value that is no SCL class (255): a corrupt or another product's."""
    if band == "SCL":
        def edit(a: np.ndarray) -> np.ndarray:
            a = a.copy()
            a[:10][a[:10] != 0] = 255
            return a
        _rewrite(path, data=edit)


SIGNED_NAN = np.copysign(np.float32(np.nan), np.float32(-1))  # what x86 gives for 0/0, log10(-1): 0xFFC00000


def signed_nan_west(band: str, path: Path) -> None:
    """The western 140 px of a backscatter band, and its other nodata, NaN with the sign bit set: what a provider's
    own processing on x86 writes; 140 px hold whole 64 px chunks of NaN only, however the scene sits in its shards."""
    if band in ("VV", "VH"):
        def edit(a: np.ndarray) -> np.ndarray:
            a = a.copy()
            a[:, :140] = np.nan
            a[np.isnan(a)] = SIGNED_NAN
            return a
        _rewrite(path, data=edit)


def west_part(share: float) -> Callable[[str, Path], None]:
    """Keep the west ``share`` of every band (a partial swath): the scene covers less of its tile."""
    def edit(band: str, path: Path) -> None:
        with rasterio.open(path) as src:
            profile = src.profile
            width = max(1, round(src.width * share))
            arr = src.read(1, window=rasterio.windows.Window(0, 0, width, src.height))
        for key in ("blockxsize", "blockysize", "tiled"):
            profile.pop(key, None)
        profile.update(driver="GTiff", width=width)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr, 1)
    return edit


def east_nodata(share: float) -> Callable[[str, Path], None]:
    """No data (NaN) over the east ``share`` of every band, within the scene's extent: a swath edge crossing it."""
    def edit(band: str, path: Path) -> None:
        def cut(arr: np.ndarray) -> np.ndarray:
            arr = arr.copy()
            arr[:, round(arr.shape[1] * (1 - share)):] = np.nan
            return arr
        _rewrite(path, data=cut)
    return edit


def shifted(band: str, dn: int) -> Callable[[str, Path], None]:
    """``dn`` added to ``band``'s values with data (not its nodata 0): the product of another tile of the same pass,
    whose L2A is corrected apart from this one's."""
    def edit(name: str, path: Path) -> None:
        if name == band:
            _rewrite(path, data=lambda arr: np.where(arr > 0, arr + dn, 0).astype(arr.dtype))
    return edit


def _rewrite(path: Path, *, crs: str | None = None, transform: Affine | None = None, data=None) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
        arr = src.read(1)
    profile.update(driver="GTiff")
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if data is not None:
        arr = data(arr)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
