"""When the satellites pass: the Sentinel-2 and Sentinel-1 acquisition schedules and product names.

Sentinel-2 passes every ``revisit`` days over the region, alternating S2A/S2B and the two relative
orbits that cover the Dutch polders (R051, full coverage, and R008, whose swath edge crosses the
region so its scenes are partly nodata). Sentinel-1 passes on a descending orbit at dawn and an
ascending orbit at dusk, each every ``revisit`` days. Names follow the real product conventions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

S2_COLLECTION = "sentinel-2-l2a"
S1_COLLECTION = "sentinel-1-card-bs"

# (relative orbit, sensing time of day, swath edge crossing the region?)
_S2_ORBITS = ((51, dt.time(10, 50, 31), False), (8, dt.time(10, 56, 21), True))
# (relative orbit, orbit state, time of day, day offset in the cycle)
_S1_ORBITS = ((37, "descending", dt.time(5, 49, 52), 0), (88, "ascending", dt.time(17, 23, 45), 3))


@dataclass(frozen=True, slots=True)
class Acquisition:
    """One pass of one satellite over the region (a datatake): one scene per MGRS tile it covers."""

    collection: str
    index: int  # position in its collection's schedule; seeds the pass's random stream
    platform: str  # "S2A", "S2B", "S1A", "S1B"
    datetime: dt.datetime  # UTC sensing start
    relative_orbit: int
    orbit_state: str
    partial_swath: bool = False

    @property
    def date(self) -> dt.date:
        return self.datetime.date()

    @property
    def is_s2(self) -> bool:
        return self.collection == S2_COLLECTION

    @property
    def platform_name(self) -> str:
        """STAC ``platform``: ``sentinel-2a`` etc."""
        return f"sentinel-{self.platform[1]}{self.platform[2].lower()}"

    def product_id(self, tile_id: str) -> str:
        """The product name of this pass's scene over ``tile_id``."""
        stamp = self.datetime.strftime("%Y%m%dT%H%M%S")
        if self.is_s2:
            processed = (self.datetime + dt.timedelta(hours=3, minutes=34, seconds=41)).strftime("%Y%m%dT%H%M%S")
            return f"{self.platform}_MSIL2A_{stamp}_N0510_R{self.relative_orbit:03d}_T{tile_id}_{processed}"
        state = "ASC" if self.orbit_state == "ascending" else "DSC"
        return f"{self.platform}_IW_CARD_BS_{stamp}_R{self.relative_orbit:03d}_{state}_T{tile_id}"

    def band_filename(self, tile_id: str, band: str) -> str:
        """File name of one band of the scene, as in the L2A SAFE (``T31UFU_..._B02_10m.tif``)."""
        if self.is_s2:
            res = 10 if band in ("B02", "B03", "B04", "B08") else 20
            return f"T{tile_id}_{self.datetime.strftime('%Y%m%dT%H%M%S')}_{band}_{res}m.tif"
        return f"{self.product_id(tile_id)}_{band}.tif"


def s2_schedule(start: dt.date, end: dt.date, *, revisit: int = 5) -> tuple[Acquisition, ...]:
    """Sentinel-2 passes from ``start`` to ``end``: one every ``revisit`` days."""
    out = []
    day, k = start + dt.timedelta(days=1), 0
    while day <= end:
        orbit, tod, partial = _S2_ORBITS[k % 2]
        when = dt.datetime.combine(day, tod) + dt.timedelta(seconds=(k * 7) % 5)
        out.append(Acquisition(S2_COLLECTION, k, "S2A" if k % 2 == 0 else "S2B", when, orbit, "descending",
                               partial_swath=partial))
        day += dt.timedelta(days=revisit)
        k += 1
    return tuple(out)


def s1_schedule(start: dt.date, end: dt.date, *, revisit: int = 6) -> tuple[Acquisition, ...]:
    """Sentinel-1 passes from ``start`` to ``end``: each orbit every ``revisit`` days, S1A/S1B alternating."""
    passes = []
    for orbit, state, tod, offset in _S1_ORBITS:
        day, k = start + dt.timedelta(days=offset), 0
        while day <= end:
            when = dt.datetime.combine(day, tod) + dt.timedelta(seconds=(k * 3) % 7)
            passes.append((when, orbit, state, "S1A" if k % 2 == 0 else "S1B"))
            day += dt.timedelta(days=revisit)
            k += 1
    passes.sort()
    return tuple(Acquisition(S1_COLLECTION, i, plat, when, orbit, state)
                 for i, (when, orbit, state, plat) in enumerate(passes))
