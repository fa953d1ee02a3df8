"""From a source file's values to the values the cube stores: the file's nodata, and Sentinel-2's DN offset.

Providers do not all store L2A reflectance alike. Since processing baseline 04.00 (January 2022) ESA adds
1000 to every DN (reflectance = (DN - 1000) / 10000: the cube's convention, ``BandSpec.offset`` -0.1);
earlier products have no offset, and some providers shift new products back to the old scale. A cube that
took every scene's DNs as they are would read 0.1 too low on those dates, and NDVI with it. So each scene
says its offset -- the asset's ``raster:bands`` offset, else ``s2:processing_baseline`` (or the baseline its ESA
product name gives: :func:`ingest.sources.scene_from_item`; an asset stating its scale alone says nothing of the
offset) -- and its DNs are shifted to the cube's when written (a scene saying none is taken to follow the cube).

A file's own nodata value (-32768 or 0 in float backscatter, say) becomes the cube's nodata, so no
statistic counts it as a measurement.

Backscatter is stored in dB. A source in linear power (gamma0 as a power ratio, as Planetary Computer's
``sentinel-1-rtc`` and many agencies' own RTC chains deliver it) is converted, 10 log10, values <= 0 becoming
nodata -- but only when something says it is linear (:func:`linear_power_reason`): the asset's unit, a
provider convention, or the caller. A guess from the values alone would silently turn a dB scene with an
odd histogram into nonsense; :mod:`ingest.validate` rejects such a scene instead, naming the option.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from cardcube.decibels import db_to_linear, linear_to_db
from cardcube.errors import SceneContentError
from cardcube.spec import BandSpec
from ingest.sources import SourceScene

BASELINE_WITH_OFFSET = 4.0  # L2A processing baseline from which ESA adds BOA_ADD_OFFSET = -1000 DN

# How a STAC asset's unit (raster:bands ``unit``) names the scale of backscatter, in lower case.
DB_UNITS = frozenset({"db", "decibel", "decibels"})
LINEAR_POWER_UNITS = frozenset({"linear", "linear power", "power", "intensity"})
AMPLITUDE_UNITS = frozenset({"amplitude", "linear amplitude"})
_SCALES = {**dict.fromkeys(DB_UNITS, "dB"), **dict.fromkeys(LINEAR_POWER_UNITS, "linear power"),
           **dict.fromkeys(AMPLITUDE_UNITS, "amplitude")}
# Source collections whose backscatter is linear power although their items do not say so. Planetary Computer's
# sentinel-1-rtc: "calibrated intensity" gamma0 (its collection description), raster:bands without a unit, and
# its example notebook takes 10 log10 of the values for dB (microsoft/PlanetaryComputerExamples,
# datasets/sentinel-1-rtc).
LINEAR_POWER_COLLECTIONS: dict[str, str] = {
    "sentinel-1-rtc": "Planetary Computer's sentinel-1-rtc delivers gamma0 in linear power",
}
LINEAR_POWER_OPTION = "ingest(..., linear_power=True), cardcube ingest --linear-power"


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@dataclass(frozen=True, slots=True)
class ValueMap:
    """How one band file's values become stored ones: ``nodata`` (the file's, where it differs from the
    cube's; None: the same) becomes ``fill`` (the cube's), ``shift`` DN are added to every valid value, and
    with ``to_db`` linear power becomes dB (10 log10; values <= 0 become ``fill``)."""

    fill: float | int
    nodata: float | None = None
    shift: int = 0
    to_db: bool = False

    def missing(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` hold the file's own nodata value (all False when the file has the cube's)."""
        if self.nodata is None:
            return np.zeros(values.shape, bool)
        return np.isnan(values) if math.isnan(self.nodata) else values == self.nodata

    def power(self, values: np.ndarray) -> np.ndarray:
        """Backscatter ``values`` of the file as linear power, float64, NaN where there is none: a file in linear
        power as it is (not through dB and back), one in dB converted from its stored values."""
        if not self.to_db:
            return db_to_linear(self.apply(values))
        power = np.asarray(values, dtype=np.float64)
        power[self.missing(values) | ~(power > 0)] = np.nan
        return power

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` as the cube stores them (a new array only when something changes). An infinite float (a dB
        file's 10 log10 of zero power, -inf) is no measurement: it becomes ``fill``, as the cube's own dB of a
        power <= 0 does."""
        infinite = np.isinf(values) if values.dtype.kind == "f" else np.zeros((), bool)
        if self.nodata is None and self.shift == 0 and not self.to_db and not infinite.any():
            return values
        gone = self.missing(values) | infinite
        if self.to_db:
            out = stored_db(values).astype(values.dtype)
            out[np.isnan(out)] = self.fill
        elif self.shift:  # unsigned DN: shifted in a wider type, kept off the nodata value 0 and below 2**16
            info = np.iinfo(values.dtype)
            out = np.clip(values.astype(np.int64) + self.shift, max(info.min, 1), info.max).astype(values.dtype)
            out[values == self.fill] = self.fill
        else:
            out = values.copy()
        out[gone] = self.fill
        return out


def stored_db(power: np.ndarray) -> np.ndarray:
    """The dB the cube stores of linear ``power``, in float64: NaN (nodata) where a power is <= 0 or NaN -- it has
    no dB value, and -inf would pass for a measurement (:func:`cardcube.decibels.linear_to_db` gives -inf for 0)."""
    power = np.asarray(power, dtype=np.float64)
    return np.where(power > 0, linear_to_db(power), np.nan)


def linear_power_reason(scene: SourceScene, band: BandSpec, *, linear_power: bool = False) -> str | None:
    """Why ``band`` of ``scene`` is taken as linear power, to be converted to dB; None if it is taken as dB.

    In this order: the asset's unit (dB, or linear power; amplitude is refused), a provider convention
    (:data:`LINEAR_POWER_COLLECTIONS`), the caller's ``linear_power``. A unit saying dB while the caller says
    linear is a contradiction, refused with :class:`SceneContentError` rather than settled by a guess."""
    if band.units != "dB":
        return None
    said = scene.units.get(band.name)
    unit = unit_scale(scene.scene_id, band.name, said)
    if unit == "dB":
        if linear_power:
            raise SceneContentError(scene.scene_id, f"band {band.name} is linear power by linear_power=True "
                                                    f"(--linear-power), but its asset says unit {said!r}")
        return None
    if unit == "amplitude":
        raise SceneContentError(scene.scene_id, f"band {band.name} is in {said} (its asset's unit): the cube takes "
                                                f"backscatter in dB or linear power, not amplitude")
    if unit == "linear power":
        return f"its asset says unit {said!r}"
    if scene.collection in LINEAR_POWER_COLLECTIONS:
        return LINEAR_POWER_COLLECTIONS[scene.collection]
    if linear_power:
        return "linear_power=True (--linear-power)"
    return None


def unit_scale(scene_id: str, band: str, unit: str | None) -> str | None:
    """The scale of backscatter an asset's ``unit`` names ("dB", "linear power", "amplitude"), in any case, also
    spelled out with its symbol ("decibel (dB)", "Linear power (gamma0)": the parts it names agree); None if it
    names none ("m2/m2"). A unit naming two scales is refused (:class:`SceneContentError`), not settled by a guess."""
    text = (unit or "").strip().lower()
    parts = [text, re.sub(r"\(.*?\)", " ", text), *re.findall(r"\((.*?)\)", text)]
    scales = {_SCALES[p] for p in (" ".join(p.split()) for p in parts) if p in _SCALES}
    if len(scales) > 1:
        raise SceneContentError(scene_id, f"band {band}: its asset's unit {unit!r} names both "
                                          f"{' and '.join(sorted(scales))}")
    return scales.pop() if scales else None


def value_map(scene: SourceScene, band: BandSpec, file_nodata: float | None, *, to_db: bool = False) -> ValueMap:
    """The :class:`ValueMap` of ``band``'s file in ``scene`` (``to_db``: its values are linear power, see
    :func:`linear_power_reason`); :class:`SceneContentError` if its scale is not the cube's or its offset is not
    a whole number of DN away."""
    fill = band.fill
    nodata = None if file_nodata is None or _same(file_nodata, fill) else file_nodata
    if to_db:
        return ValueMap(fill, nodata, to_db=True)
    if band.is_flag or (band.scale, band.offset) == (1.0, 0.0):
        return ValueMap(fill, nodata)
    scale, offset = scene.scaling.get(band.name, (None, None))
    for name, said in (("scale", scale), ("offset", offset)):
        if said is not None and (isinstance(said, bool) or not isinstance(said, int | float)
                                 or not math.isfinite(said)):
            raise SceneContentError(scene.scene_id, f"band {band.name}: its asset's {name} {said!r} is no number")
    if offset is None and scene.processing_baseline is not None:  # an asset naming its scale alone names no offset
        offset = 0.0 if scene.processing_baseline < BASELINE_WITH_OFFSET else band.offset
    scale = band.scale if scale is None else scale
    offset = band.offset if offset is None else offset
    if not math.isclose(scale, band.scale, rel_tol=1e-6):
        raise SceneContentError(scene.scene_id, f"band {band.name} is scaled by {scale:g}, the cube's DN by "
                                                f"{band.scale:g}")
    shift = (offset - band.offset) / band.scale
    if abs(shift - round(shift)) > 1e-6:
        raise SceneContentError(scene.scene_id, f"band {band.name} has offset {offset:g}, not a whole number of DN "
                                                f"from the cube's {band.offset:g}")
    return ValueMap(fill, nodata, round(shift))
