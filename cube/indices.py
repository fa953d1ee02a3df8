"""Derived indices and cloud masking, as lazy variables on a cube Dataset.

Indices are computed from physical values (``open_cube(..., decode=True)``), stay lazy (dask), and
carry their formula in ``attrs``. Cloud masking uses the Sentinel-2 scene classification (SCL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from cardcube.decibels import db_to_linear
from cardcube.errors import InvalidRequestError
from cardcube.spec import CUBE_SPECS, DEFAULT_SCL_MASK

if TYPE_CHECKING:
    import pandas as pd

    from cube.chips import Chip


def _normalised_difference(a: str, b: str) -> Callable[[xr.Dataset], xr.DataArray]:
    """``(a - b) / (a + b)`` of two reflectances, each below 0 taken as 0 (L2A's offset leaves water and shadow
    pixels below 0, whose index was inf or -5), so it stays in [-1, 1]; NaN where both are 0."""
    def index(ds: xr.Dataset) -> xr.DataArray:
        x, y = ds[a].clip(min=0), ds[b].clip(min=0)
        return (x - y) / (x + y)
    return index


def _db_to_linear(x: xr.DataArray) -> xr.DataArray:
    """:func:`cardcube.decibels.db_to_linear` of a band, lazily (float64, block by block of a dask array)."""
    return xr.apply_ufunc(db_to_linear, x, dask="parallelized", output_dtypes=[np.float64])


# name -> (bands needed, formula, description)
INDICES: dict[str, tuple[tuple[str, ...], Callable[[xr.Dataset], xr.DataArray], str]] = {
    "NDVI": (("B08", "B04"), _normalised_difference("B08", "B04"), "(B08 - B04) / (B08 + B04)"),
    "NDWI": (("B03", "B08"), _normalised_difference("B03", "B08"), "(B03 - B08) / (B03 + B08), McFeeters"),
    "NDMI": (("B8A", "B11"), _normalised_difference("B8A", "B11"), "(B8A - B11) / (B8A + B11)"),
    "NBR": (("B08", "B12"), _normalised_difference("B08", "B12"), "(B08 - B12) / (B08 + B12)"),
    "NDRE": (("B8A", "B05"), _normalised_difference("B8A", "B05"), "(B8A - B05) / (B8A + B05)"),
    "VH_VV": (("VH", "VV"), lambda ds: ds["VH"] - ds["VV"], "VH - VV in dB, the cross-ratio (of a parcel: of its "
              "mean linear VH and VV powers)"),
    "RVI": (("VH", "VV"), lambda ds: 4 * _db_to_linear(ds["VH"]) / (_db_to_linear(ds["VV"]) + _db_to_linear(ds["VH"])),
            "4 VH / (VV + VH) in linear power, radar vegetation index"),
}


# indices that are a ratio of backscatter powers in dB, numerator over denominator (their INDICES inputs): a
# parcel's mean is the ratio of its mean linear powers (the mean of the pixels' dB ratios would average in dB)
DB_RATIOS = frozenset({"VH_VV"})


def units_of(name: str) -> str:
    """The units of a band's or index's physical values, as its variable's ``units`` attribute says them: ``dB`` for
    backscatter and a ratio of it (:data:`DB_RATIOS`), ``1`` for reflectances and the other indices."""
    if name in INDICES:
        return "dB" if name in DB_RATIOS else "1"
    return next((band.units for spec in CUBE_SPECS.values() for band in spec.bands if band.name == name), "1")


def bands_for(names: Sequence[str]) -> tuple[str, ...]:
    """The stored bands needed to compute the given bands and index names."""
    out: list[str] = []
    for name in names:
        for band in INDICES[name][0] if name in INDICES else (name,):
            if band not in out:
                out.append(band)
    return tuple(out)


def stored_bands(names: Sequence[str], available: Sequence[str], *, scl: bool = True) -> list[str]:
    """The stored bands to read for ``names`` (bands and indices): their inputs, then SCL if the cube (bands
    ``available``) has it and ``scl`` says it is wanted (a cloud mask, class counts, a chip's cloud frame)."""
    return list(dict.fromkeys([*bands_for(names), *(["SCL"] if scl and "SCL" in available else [])]))


def band_list(bands: Sequence[str] | str) -> list[str]:
    """Bands given as a list or as one string ``"B04, NDVI"`` ("B04" is one band, not three letters)."""
    return [b.strip() for b in bands.split(",") if b.strip()] if isinstance(bands, str) else list(bands)


def computable(available: Sequence[str]) -> list[str]:
    """The indices whose input bands are all in ``available``."""
    return [name for name, (needed, _, _) in INDICES.items() if set(needed) <= set(available)]


def _elsewhere(unknown: Sequence[str], available: Sequence[str]) -> str:
    """A hint for names of another collection's cube (VV asked of the s2 cube): which collection to ask instead.
    A collection whose bands hold all of ``available`` may be the one asked (a Dataset of some of its bands)."""
    hints = []
    for name in unknown:
        for spec in CUBE_SPECS.values():
            theirs = {b.upper(): b for b in [*spec.band_names, *computable(spec.band_names)]}
            if name.upper() in theirs and not {b.upper() for b in available} <= theirs.keys():
                kind = "an index" if name.upper() in INDICES else "a band"
                hints.append(f"{theirs[name.upper()]} is {kind} of the {spec.name} cube: add --collection {spec.name} "
                             f"(Python: collection={spec.name!r}; REST: /collections/{spec.name}/...)")
                break
    return "".join(f". {h}" for h in hints)


def check_bands(bands: Sequence[str] | str | None, available: Sequence[str], *, statistics: bool = False
                ) -> list[str]:
    """The requested bands and indices (:func:`band_list`, in any case: ``b04`` is B04; default: every band
    but SCL), or a clear error naming those the cube (bands ``available``) does not have or cannot compute.
    For ``statistics``, SCL is refused too: the mean of class codes means nothing (each row counts the
    classes instead)."""
    if bands is None:
        return [b for b in available if b != "SCL"]
    indices = computable(available)
    known = {name.upper(): name for name in [*available, *indices]}
    bands = list(dict.fromkeys(known.get(b.upper(), b) for b in band_list(bands)))  # "ndvi,NDVI" is one
    listed = [b for b in available if not (statistics and b == "SCL")]
    if not bands:
        raise InvalidRequestError(f"no band given; bands: {', '.join(listed)}")
    if statistics and "SCL" in bands:
        raise InvalidRequestError("SCL holds scene classes, not measurements: statistics of its codes mean nothing. "
                                  "Every row counts the parcel's pixels per class instead (its scl_<class> "
                                  "columns); leave SCL out of the bands")
    unknown = [b for b in bands if b not in known.values()]
    if unknown:
        raise InvalidRequestError(f"unknown band(s) {', '.join(unknown)}; bands: {', '.join(listed)}, "
                                  f"indices: {', '.join(indices) or 'none'}{_elsewhere(unknown, available)}")
    return bands


def check_decoded(ds: xr.Dataset, names: Sequence[str], what: str) -> None:
    """A clear error when a variable of ``names`` holds stored integers (``open_cube(..., decode=False)``), which
    ``what`` cannot use: their nodata is a number, not NaN, and they are no reflectance or dB (SCL is codes)."""
    if stored := [n for n in names if n != "SCL" and np.issubdtype(ds[n].dtype, np.integer)]:
        raise InvalidRequestError(f"{what} needs physical values, and {', '.join(stored)} holds stored integers: "
                                  f"open the cube with decode=True (the default)")


def add_indices(ds: xr.Dataset, names: Sequence[str] | str = ("NDVI",)) -> xr.Dataset:
    """``ds`` with the named indices (in any case: ``ndvi`` is NDVI; a list, or one string ``"NDVI, NDMI"``)
    added as lazy float32 variables."""
    out = {}
    for name in band_list(names):
        name = {k.upper(): k for k in INDICES}.get(str(name).upper(), name)
        if name not in INDICES:
            raise InvalidRequestError(f"unknown index {name!r}; known: {', '.join(INDICES)}")
        needed, formula, text = INDICES[name]
        missing = [b for b in needed if b not in ds]
        if missing:
            raise InvalidRequestError(f"index {name} needs band(s) {', '.join(missing)}, not in the Dataset")
        check_decoded(ds, needed, f"index {name}")
        out[name] = formula(ds).astype("float32").assign_attrs(long_name=name, formula=text,
                                                               units="dB" if name in DB_RATIOS else "1")
    return ds.assign(out)


def cloud_mask(ds: xr.Dataset, classes: Sequence[int] = DEFAULT_SCL_MASK) -> xr.DataArray:
    """True where the SCL class is one of ``classes`` (default: no data, saturated, shadows, cloud, cirrus, snow)."""
    if "SCL" not in ds:
        if ds.attrs.get("cardcube:collection", "s2") != "s2":  # radar sees through clouds: nothing to mask
            raise InvalidRequestError(f"cloud masking is for Sentinel-2 (its SCL band); the "
                                      f"{ds.attrs['cardcube:collection']} cube has no clouds to mask")
        raise InvalidRequestError("cloud masking needs the SCL band: include it in bands=")
    return ds["SCL"].isin(list(classes))


def mask_clouds(ds: xr.Dataset, classes: Sequence[int] = DEFAULT_SCL_MASK) -> xr.Dataset:
    """``ds`` with every non-SCL variable set to NaN where the SCL class is in ``classes`` (physical values:
    stored integers have no NaN, and were left unmasked)."""
    masked = cloud_mask(ds, classes)
    check_decoded(ds, list(ds.data_vars), "cloud masking")
    return ds.assign({name: ds[name].where(~masked) for name in ds.data_vars if name != "SCL"})


@xr.register_dataset_accessor("cardcube")
class CardcubeAccessor:
    """``ds.cardcube.mask_clouds()``, ``ds.cardcube.indices("NDVI")``, ``ds.cardcube.timeseries(parcels)``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def mask_clouds(self, classes: Sequence[int] = DEFAULT_SCL_MASK) -> xr.Dataset:
        return mask_clouds(self._ds, classes)

    def indices(self, *names: str) -> xr.Dataset:
        return add_indices(self._ds, names or ("NDVI",))

    def timeseries(self, parcels: Any, **kwargs: Any) -> pd.DataFrame:
        """:func:`cube.timeseries.parcel_timeseries` of this Dataset."""
        from cube.timeseries import parcel_timeseries

        return parcel_timeseries(self._ds, parcels, **kwargs)

    def chip(self, where: Any, **kwargs: Any) -> Chip:
        """:func:`cube.chips.chip` of this Dataset."""
        from cube.chips import chip

        return chip(self._ds, where, **kwargs)
