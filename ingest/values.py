"""From a source file's values to the values the cube stores: the file's nodata, and Sentinel-2's DN offset.

Providers do not all store L2A reflectance alike. Since processing baseline 04.00 (January 2022) ESA adds
1000 to every DN (reflectance = (DN - 1000) / 10000: the cube's convention, ``BandSpec.offset`` -0.1);
earlier products have no offset, and some providers shift new products back to the old scale. A cube that
took every scene's DNs as they are would read 0.1 too low on those dates, and NDVI with it. So each scene
says its offset -- the asset's ``raster:bands`` scale and offset, else ``s2:processing_baseline`` -- and its
DNs are shifted to the cube's when written (a scene saying neither is taken to follow the cube).

A file's own nodata value (-32768 or 0 in float backscatter, say) becomes the cube's nodata, so no
statistic counts it as a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardcube.errors import SceneContentError
from cardcube.spec import BandSpec
from ingest.sources import SourceScene

BASELINE_WITH_OFFSET = 4.0  # L2A processing baseline from which ESA adds BOA_ADD_OFFSET = -1000 DN


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@dataclass(frozen=True, slots=True)
class ValueMap:
    """How one band file's values become stored ones: ``nodata`` (the file's, where it differs from the
    cube's; None: the same) becomes ``fill`` (the cube's), and ``shift`` DN are added to every valid value."""

    fill: float | int
    nodata: float | None = None
    shift: int = 0

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` as the cube stores them (a new array only when something changes)."""
        if self.nodata is None and self.shift == 0:
            return values
        gone = np.isnan(values) if self.nodata is not None and math.isnan(self.nodata) else (
            values == self.nodata if self.nodata is not None else np.zeros(values.shape, bool))
        if self.shift:  # unsigned DN: shifted in a wider type, kept off the nodata value 0 and below 2**16
            info = np.iinfo(values.dtype)
            out = np.clip(values.astype(np.int64) + self.shift, max(info.min, 1), info.max).astype(values.dtype)
            out[values == self.fill] = self.fill
        else:
            out = values.copy()
        out[gone] = self.fill
        return out


def value_map(scene: SourceScene, band: BandSpec, file_nodata: float | None) -> ValueMap:
    """The :class:`ValueMap` of ``band``'s file in ``scene``; :class:`SceneContentError` if its scale is not the
    cube's or its offset is not a whole number of DN away."""
    fill = band.nodata if band.nodata is not None else 0
    nodata = None if file_nodata is None or _same(file_nodata, fill) else file_nodata
    if band.is_flag or (band.scale, band.offset) == (1.0, 0.0):
        return ValueMap(fill, nodata)
    scale, offset = scene.scaling.get(band.name, (None, None))
    if scale is None and offset is None and scene.processing_baseline is not None:
        scale, offset = band.scale, (0.0 if scene.processing_baseline < BASELINE_WITH_OFFSET else band.offset)
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
