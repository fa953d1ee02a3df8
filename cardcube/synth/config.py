"""What to generate: :class:`SynthConfig`, a frozen description of one synthetic region and season.

The config holds only choices (seed, tile, size, dates, rates); everything derived from it, such as the
region's pixel grid and tile windows, lives in :mod:`cardcube.synth.region`.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import asdict, dataclass, replace
from typing import Any

from cardcube.errors import InvalidRequestError
from cardcube.grid import TileGrid

DEMO_START = dt.date(2024, 3, 1)
DEMO_END = dt.date(2024, 10, 31)

# Default placement, as an offset of the upper-left corner from the tile's upper-left corner (a 20 m
# multiple): in 31UFU that is (680000, 5845000), the Noordoostpolder. A straddling region puts 78 % of
# its width west of the tile's east edge (for 31UFU: x = 702000..712000 across x = 709800), so it
# reaches into the next tile east (31UGU, which overlaps 31UFU from x = 699960).
DEFAULT_OFFSET = (80_000.0, 55_040.0)
STRADDLE_WEST_SHARE = 0.78


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """One synthetic region and season; the same config and seed always give the same bytes.

    ``size_m`` is ``(width, height)`` in metres (rounded to the 20 m lattice); ``origin`` the upper-left
    corner in the tile CRS (``None``: a default placement, across the 31UFU/31UGU edge if ``straddle``).
    ``cloudiness`` is the mean cloud fraction of a Sentinel-2 date (0: every date clear, cirrus too);
    ``anomaly_fraction`` the share of parcels whose ground truth contradicts the declaration.
    """

    seed: int = 42
    tile: str = "31UFU"
    size_m: tuple[float, float] = (10_000.0, 10_000.0)
    origin: tuple[float, float] | None = None
    straddle: bool = False
    start: dt.date = DEMO_START
    end: dt.date = DEMO_END
    anomaly_fraction: float = 0.04
    cloudiness: float = 0.35
    mean_parcel_ha: float = 3.0
    s2: bool = True
    s1: bool = True
    s2_revisit_days: int = 5
    s1_revisit_days: int = 6
    workers: int = 2

    def __post_init__(self) -> None:
        size = self.size_m
        if isinstance(size, int | float):
            size = (float(size), float(size))
        if not all(math.isfinite(float(s)) for s in size):  # nan and inf failed in the rounding
            raise InvalidRequestError(f"size_m {tuple(size)} is no size in metres; give a number of at least 400")
        size = tuple(float(round(float(s) / 20.0) * 20) for s in size)
        object.__setattr__(self, "size_m", size)
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, dt.date.fromisoformat(value))
        if self.origin is not None:
            object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))
        if min(self.size_m) < 400:
            raise InvalidRequestError(f"size_m {self.size_m} is too small; use at least 400 m per side")
        if self.end <= self.start:
            raise InvalidRequestError(f"end {self.end} is not after start {self.start}")
        if not 0.0 <= self.anomaly_fraction <= 0.5:
            raise InvalidRequestError(f"anomaly_fraction {self.anomaly_fraction} must be within [0, 0.5]")
        if not 0.0 <= self.cloudiness <= 1.0:
            raise InvalidRequestError(f"cloudiness {self.cloudiness} must be within [0, 1]")
        if not 0.2 <= self.mean_parcel_ha <= 20:
            raise InvalidRequestError(f"mean_parcel_ha {self.mean_parcel_ha} must be within [0.2, 20]")
        if self.start.year != self.end.year:  # the crops' calendar (sowing, mowing, harvest) is one year's
            raise InvalidRequestError(f"the season {self.start} .. {self.end} spans more than one calendar year: "
                                      f"the crops are simulated for one year's calendar, so the dates after it "
                                      f"would show no growth nor any planted event; generate one year at a time")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise InvalidRequestError(f"seed {self.seed!r} must be a whole number of at least 0")
        if isinstance(self.workers, bool) or not isinstance(self.workers, numbers.Integral) or self.workers < 1:
            raise InvalidRequestError(f"workers {self.workers!r} must be a whole number of at least 1")
        if not (self.s1 or self.s2):
            raise InvalidRequestError("neither Sentinel-1 nor Sentinel-2 scenes asked for: there is nothing to "
                                      "generate")
        if self.straddle and self.origin is not None:
            raise InvalidRequestError("straddle places the region across the 31UFU/31UGU edge and origin places it "
                                      "where it says: give one of them")

    @classmethod
    def demo(cls, **changes: Any) -> SynthConfig:
        """The demo region: 10 x 10 km of Dutch polder in 31UFU, March to October 2024."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> SynthConfig:
        """A 2 x 2 km region over three months, for tests: generates in a couple of seconds."""
        base = dict(size_m=(2_000.0, 2_000.0), start=dt.date(2024, 5, 1), end=dt.date(2024, 7, 31),
                    mean_parcel_ha=2.0, workers=2)
        base.update(changes)
        return cls(**base)

    def with_(self, **changes: Any) -> SynthConfig:
        """This configuration with ``changes`` (field names as keywords)."""
        return replace(self, **changes)

    def resolved_origin(self) -> tuple[float, float]:
        """The upper-left corner actually used (the default placement when ``origin`` is None)."""
        if self.origin is not None:
            return self.origin
        tile = TileGrid.from_id(self.tile)
        y = tile.uly - DEFAULT_OFFSET[1]
        if self.straddle:
            west = round(self.size_m[0] * STRADDLE_WEST_SHARE / 20) * 20
            return (tile.ulx + tile.size_m - west, y)
        return (tile.ulx + DEFAULT_OFFSET[0], y)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        d["size_m"] = list(self.size_m)
        d["origin"] = list(self.resolved_origin())
        return d
