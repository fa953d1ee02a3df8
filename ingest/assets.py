"""Which asset of a provider's STAC item holds which band of the cube.

Providers key a scene's files differently: Planetary Computer (and ``cardcube synth``) by band name
(``B04``, ``SCL``, ``vv``), Earth Search by common name (``red``, ``nir08``, ``scl``, with a ``red-jp2``
duplicate of each COG), the Copernicus Data Space Ecosystem by band and resolution (``B04_10m``,
``B04_20m``, ``SCL_20m``), beside assets that are no band at all (``visual``, ``aot``, thumbnails,
metadata). :func:`band_of_asset` names the cube band of one asset and :func:`choose_assets` picks one
asset per band, so everything downstream sees cube band names only. Both are pure: no file is opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cardcube.spec import CubeSpec

# Common names (STAC eo extension, as Earth Search keys its assets) of the bands a cube may hold. The
# eo extension's plain "rededge" names three bands and is left out: Earth Search's rededge1..3 are not.
COMMON_NAMES: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06",
    "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09", "swir16": "B11", "swir22": "B12",
    "scl": "SCL", "vv": "VV", "vh": "VH",
}

_BAND_AT_RESOLUTION = re.compile(r"^(?P<band>[A-Za-z0-9]+)_(?P<res>\d+)m$")  # CDSE: B04_10m, SCL_20m


def _one_band(asset: Mapping[str, Any]) -> dict[str, Any]:
    """The asset's one band description (eo:bands of STAC 1.0, bands of STAC 1.1); empty if it has none or
    several (a true-colour ``visual`` asset has three: it is no band of the cube)."""
    for field in ("bands", "eo:bands"):
        bands = asset.get(field)
        if isinstance(bands, list) and bands:
            return bands[0] if len(bands) == 1 and isinstance(bands[0], dict) else {}
    return {}


def _cube_band(name: object, spec: CubeSpec) -> str | None:
    if not isinstance(name, str):
        return None
    wanted = name.upper()
    return next((b for b in spec.band_names if b.upper() == wanted), None)


def _common(name: object, spec: CubeSpec) -> str | None:
    band = COMMON_NAMES.get(name.lower()) if isinstance(name, str) else None
    return band if band in spec.band_names else None


def band_of_asset(key: str, asset: Mapping[str, Any], spec: CubeSpec) -> str | None:
    """The band of ``spec`` that asset ``key`` (its STAC dict ``asset``) holds, or None.

    In this order: the key is a band name (``B04``, ``vv``); the key is a band and a resolution
    (``B04_10m``); the asset's one ``eo:bands``/``bands`` entry is named after a band; the key, that
    entry's name or its common name is a common name of :data:`COMMON_NAMES` (``red``; ``nir`` is B08,
    ``nir08`` B8A). A ``-jp2`` suffix of the key is ignored. Bands outside the cube (B01, B09) are None,
    like ``visual``, ``aot`` and thumbnails.
    """
    key = key.removesuffix("-jp2")  # Earth Search's JPEG 2000 twin of a COG holds the same band
    if band := _cube_band(key, spec):
        return band
    if (m := _BAND_AT_RESOLUTION.match(key)) and (band := _cube_band(m["band"], spec)):
        return band
    entry = _one_band(asset)
    if band := _cube_band(entry.get("name"), spec):
        return band
    for name in (key, entry.get("name"), entry.get("eo:common_name", entry.get("common_name"))):
        if band := _common(name, spec):
            return band
    return None


def is_jp2(key: str, asset: Mapping[str, Any]) -> bool:
    """True for a JPEG 2000 asset: by media type, Earth Search's ``-jp2`` key suffix or the file name."""
    media = str(asset.get("type") or "").lower()
    href = str(asset.get("href") or "").lower().split("?", 1)[0]
    return media.startswith("image/jp2") or key.endswith("-jp2") or href.endswith((".jp2", ".j2k"))


def resolution_of(key: str, asset: Mapping[str, Any]) -> float | None:
    """The asset's pixel size in metres, as its key (``B04_20m``) or its metadata says; None if unsaid."""
    if m := _BAND_AT_RESOLUTION.match(key):
        return float(m["res"])
    raster = asset.get("raster:bands")
    entries = [*(raster if isinstance(raster, list) else []), _one_band(asset), asset]
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for field in ("spatial_resolution", "raster:spatial_resolution", "gsd"):
            value = entry.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def _is_cog(asset: Mapping[str, Any]) -> bool:
    """A Cloud-Optimized GeoTIFF by media type, its parameters in any order, case or spacing
    (``image/tiff; application=geotiff; profile=cloud-optimized``, ``image/vnd.stac.geotiff; cloud-optimized=true``)."""
    main, *params = (p.strip() for p in str(asset.get("type") or "").lower().split(";"))
    return main in ("image/tiff", "image/vnd.stac.geotiff") and bool(
        {"profile=cloud-optimized", "cloud-optimized=true"} & set(params))


def _rank(key: str, asset: Mapping[str, Any], band: str, native: int) -> tuple:
    """Sort key of a candidate asset of ``band``: the native resolution first (ingest takes no other), then
    one whose resolution is unsaid, a finer one, a coarser one; then a COG before another format before
    JPEG 2000; then the key that is the band's own name; then the key."""
    res = resolution_of(key, asset)
    place = (0, 0.0) if res == native else (1, 0.0) if res is None else (2, native - res) if res < native else (
        3, res - native)
    fmt = 2 if is_jp2(key, asset) else 0 if _is_cog(asset) else 1
    return place, fmt, key.upper() != band, key


def choose_assets(assets: Mapping[str, Mapping[str, Any]], spec: CubeSpec) -> dict[str, str]:
    """The asset key chosen for each band of ``spec`` found in ``assets`` (key -> STAC asset dict).

    Of two assets of one band the one at the band's native resolution wins (CDSE's ``B04_10m`` over
    ``B04_20m``: ingest refuses any other), then the COG over anything else and anything over JPEG 2000
    (Earth Search's ``red`` over ``red-jp2``), then the key that is the band's own name.
    """
    candidates: dict[str, list[str]] = {}
    for key, asset in assets.items():
        band = band_of_asset(key, asset, spec)
        if band is not None:
            candidates.setdefault(band, []).append(key)
    chosen = {}
    for band, keys in candidates.items():
        native = spec.band(band).resolution
        chosen[band] = min(keys, key=lambda k: _rank(k, assets[k], band, native))
    return chosen


def scaling_of(asset: Mapping[str, Any]) -> tuple[float | None, float | None] | None:
    """The asset's scale and offset: ``raster:bands`` (raster extension 1.x), else its one ``bands`` entry
    or the asset itself (``raster:scale``/``raster:offset``, raster 2.0 with STAC 1.1, as CDSE writes
    them); None if it says neither."""
    raster = asset.get("raster:bands")
    first = raster[0] if isinstance(raster, list) and raster and isinstance(raster[0], dict) else {}
    if "scale" in first or "offset" in first:
        return _as_number(first.get("scale")), _as_number(first.get("offset"))
    for entry in (_one_band(asset), asset):
        if "raster:scale" in entry or "raster:offset" in entry:
            return _as_number(entry.get("raster:scale")), _as_number(entry.get("raster:offset"))
    return None


def _as_number(value: Any) -> Any:
    """A number written as text ("0.0001", off the schema, as for nodata) as that number; anything else as it is
    (:func:`ingest.values.value_map` refuses what is no number)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def unit_of(asset: Mapping[str, Any]) -> str | None:
    """The unit the asset says its values are in: ``raster:bands`` (raster extension 1.x), else its one
    ``bands`` entry or the asset itself (``unit``, STAC 1.1 common metadata); None if it says none."""
    raster = asset.get("raster:bands")
    first = raster[0] if isinstance(raster, list) and raster and isinstance(raster[0], dict) else {}
    for entry in (first, _one_band(asset), asset):
        unit = entry.get("unit")
        if isinstance(unit, str) and unit.strip():
            return unit.strip()
    return None


def nodata_of(asset: Mapping[str, Any]) -> float | None:
    """The nodata value the asset says its file has: ``raster:bands`` (raster extension 1.x), else its one
    ``bands`` entry or the asset itself (``nodata``, STAC 1.1 common metadata); a number, or "nan", "inf",
    "-inf" as the extension writes those (a number written as text, "-9999", off the schema, is read too: it
    was ignored, and -9999 went in as data); None if it says none."""
    raster = asset.get("raster:bands")
    first = raster[0] if isinstance(raster, list) and raster and isinstance(raster[0], dict) else {}
    for entry in (first, _one_band(asset), asset):
        value = _as_number(entry.get("nodata"))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def declared_file(asset: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """What the asset says of its file (STAC's file extension, as CDSE writes it): its size in bytes
    (``file:size``) and its multihash (``file:checksum``, hexadecimal); None where it says nothing usable."""
    size, digest = asset.get("file:size"), asset.get("file:checksum")
    return (size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None,
            digest.strip().lower() if isinstance(digest, str) and digest.strip() else None)


def no_band_reason(keys: list[str], spec: CubeSpec) -> str:
    """Why an item gave no band: what the cube wants, what the item has and what was tried (a Sentinel-1 product of
    the other polarisations, HH and HV, said so)."""
    reason = (f"no asset is a band of the {spec.name} cube ({', '.join(spec.band_names)}): its assets are "
              f"{', '.join(sorted(keys)) or 'none'}")
    if spec.backscatter and {"HH", "HV"} & {k.upper() for k in keys}:
        return (f"{reason}; HH and HV are the polarisations of a dual-pol HH+HV product, not the cube's "
                f"{' and '.join(spec.band_names)}: such a product is not read (Sentinel-1 acquires it over polar seas "
                "and some coasts)")
    return (f"{reason} (tried as band names, band and resolution like B04_10m, eo:bands/bands names, and common "
            f"names like red or nir08)")
