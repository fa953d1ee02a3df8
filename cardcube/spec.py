"""What a cube holds: bands, chunk layout and the cube collections cardcube knows.

Specs are frozen dataclasses with ``to_dict``/``from_dict`` that round-trip through the Zarr group
attributes, so a cube describes itself and a reader never needs the writer's code defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from cardcube.errors import InvalidRequestError

# Sentinel-2 L2A scene classification (SCL) codes, as in the ESA product specification.
SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
SCL_NO_DATA = 0  # outside the swath or the tile's data: no observation, not a cloud
# What a check by monitoring treats as unusable: saturated, shadows, medium/high cloud, cirrus, snow.
DEFAULT_SCL_MASK: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
CLOUD_SCL_CLASSES: tuple[int, ...] = (3, 8, 9, 10)  # cloud shadows, clouds (medium, high probability), thin cirrus
# The parts of one satellite pass are seconds apart: Sentinel-1 GRD slices some 25 s each, Sentinel-2 granules of
# one datatake a few seconds from tile to tile. The next pass on the same relative orbit is 5 to 12 days later,
# another orbit's at least hours away. So two minutes joins every part of a pass, even with one missing, and
# never two passes.
PASS_GAP_S = 120.0


@dataclass(frozen=True, slots=True)
class BandSpec:
    """One variable of a cube: stored dtype, native resolution and CF packing (scale/offset/nodata)."""

    name: str
    dtype: str
    resolution: int
    nodata: float | int | None
    scale: float = 1.0
    offset: float = 0.0
    units: str = "1"
    long_name: str = ""
    common_name: str | None = None
    center_wavelength: float | None = None  # micrometres
    flag_values: tuple[int, ...] | None = None
    flag_meanings: tuple[str, ...] | None = None

    def _key(self) -> tuple[Any, ...]:
        """The fields, a NaN nodata as the text Zarr writes it: NaN != NaN, and hash(nan) is its object's id."""
        nan = isinstance(self.nodata, float) and math.isnan(self.nodata)
        return tuple("NaN" if nan and f.name == "nodata" else getattr(self, f.name) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        """Field by field, two NaN nodata equal: an S1 spec read back from the ledger is the spec it was written
        from (the dataclass's own ``==`` said not, so every S1 version looked like new data to the catalog)."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def fill(self) -> float | int:
        """The value the cube stores where there is no data (its arrays' fill value): ``nodata``, else 0."""
        return self.nodata if self.nodata is not None else 0

    @property
    def is_flag(self) -> bool:
        """True for a classification layer (SCL): never scaled, never averaged."""
        return self.flag_values is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("flag_values", "flag_meanings"):
            if d[key] is not None:
                d[key] = list(d[key])
        if isinstance(self.nodata, float) and math.isnan(self.nodata):
            d["nodata"] = "NaN"  # JSON has no NaN; Zarr v3 spells it this way too
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BandSpec:
        d = dict(d)
        if d.get("nodata") == "NaN":
            d["nodata"] = float("nan")
        for key in ("flag_values", "flag_meanings"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class ChunkLayout:
    """Time-first chunk and shard shapes, given at the finest (10 m) resolution.

    ``time`` dates per chunk, ``space`` pixels per chunk side, ``shard_space`` pixels per shard side.
    Coarser resolutions keep the same ground footprint (a 20 m chunk holds ``space / 2`` pixels), so a
    parcel touches the same number of chunks in every band. Cold (compacted) shards hold one time block;
    the hot buffer of recent dates uses one date per chunk and per shard.

    The defaults are kept on the evidence of the chunk-shape sweep in
    ``benchmarks/results/2026-11-25/report.md`` (S3 with 20 ms per request): 8 dates per chunk take 1.4x
    the requests of a parcel's season; 32 leave up to 31 dates in the one-date hot buffer (3x the requests
    and 1.6x the time at the end of a 49-date season); 64 px chunks need 1.9x the requests of a 128 px
    chip; 256 px chunks take the same requests for up to 1.35x the bytes (more on a fully covered tile)
    and no measurable gain. ``shard_space`` was not swept: one or two shards cover those few-km regions.
    """

    time: int = 16
    space: int = 128
    shard_space: int = 1024
    base_resolution: int = 10

    def __post_init__(self) -> None:
        if min(self.time, self.space, self.shard_space) < 1:
            raise InvalidRequestError(f"chunk sizes must be positive, got {self.text()}")
        if self.shard_space % self.space:
            raise InvalidRequestError(f"shard_space {self.shard_space} is not a multiple of space {self.space}")

    def _side(self, pixels: int, resolution: int) -> int:
        return max(1, pixels * self.base_resolution // resolution)

    def chunks(self, resolution: int, *, hot: bool = False) -> tuple[int, int, int]:
        """Inner chunk shape ``(time, y, x)`` at ``resolution`` metres."""
        side = self._side(self.space, resolution)
        return (1 if hot else self.time, side, side)

    def shards(self, resolution: int, *, hot: bool = False) -> tuple[int, int, int]:
        """Shard (stored object) shape ``(time, y, x)`` at ``resolution`` metres."""
        side = self._side(self.shard_space, resolution)
        return (1 if hot else self.time, side, side)

    def with_(self, **changes: int) -> ChunkLayout:
        """This layout with ``changes`` (field names as keywords)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def text(self) -> str:
        """The layout as ``--chunks`` takes it (:meth:`parse`): ``time=16,space=128,shard_space=1024``."""
        return f"time={self.time},space={self.space},shard_space={self.shard_space}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChunkLayout:
        return cls(**d)

    @classmethod
    def parse(cls, text: str) -> ChunkLayout:
        """Parse the CLI form ``time=16,space=128,shard_space=1024`` (any subset)."""
        items = {}
        for part in filter(str.strip, text.split(",")):
            key, sep, value = (p.strip() for p in part.partition("="))
            if key not in ("time", "space", "shard_space") or not sep:
                raise InvalidRequestError(f"{part.strip()!r}: use time=N, space=N, shard_space=N "
                                          f"(e.g. time=16,space=128)")
            try:
                items[key] = int(value)
            except ValueError:
                raise InvalidRequestError(f"{key} must be a whole number, not {value!r}") from None
        return cls(**items)


@dataclass(frozen=True, slots=True)
class CubeSpec:
    """A cube collection: its key in the store, the source scenes it takes, its bands and layout."""

    name: str
    title: str
    source_collection: str
    bands: tuple[BandSpec, ...]
    chunks: ChunkLayout = field(default_factory=ChunkLayout)
    compressor_level: int = 3
    description: str = ""

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(sorted({b.resolution for b in self.bands}))

    @property
    def backscatter(self) -> bool:
        """Whether the cube holds SAR backscatter (bands in dB)."""
        return any(b.units == "dB" for b in self.bands)

    def band(self, name: str) -> BandSpec:
        """The band named ``name``; an InvalidRequestError naming the cube's bands if none."""
        for b in self.bands:
            if b.name == name:
                return b
        raise InvalidRequestError(f"unknown band {name!r}: the {self.name} cube has {', '.join(self.band_names)}")

    def bands_at(self, resolution: int) -> tuple[BandSpec, ...]:
        """The bands stored at ``resolution`` metres, in the spec's order."""
        return tuple(b for b in self.bands if b.resolution == resolution)

    def with_chunks(self, chunks: ChunkLayout) -> CubeSpec:
        """This spec with ``chunks``, which must divide evenly at every resolution: a 20 m chunk covers the
        ground of a 10 m chunk, and shards hold whole chunks."""
        for res in self.resolutions:
            k = res // chunks.base_resolution
            if chunks.space % k or chunks.shard_space % k:
                raise InvalidRequestError(f"space ({chunks.space}) and shard_space ({chunks.shard_space}) must be "
                                          f"multiples of {k} for the {res} m bands of the {self.name} cube")
        return replace(self, chunks=chunks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "source_collection": self.source_collection,
            "bands": [b.to_dict() for b in self.bands],
            "chunks": self.chunks.to_dict(),
            "compressor_level": self.compressor_level,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CubeSpec:
        return cls(
            name=d["name"],
            title=d["title"],
            source_collection=d["source_collection"],
            bands=tuple(BandSpec.from_dict(b) for b in d["bands"]),
            chunks=ChunkLayout.from_dict(d["chunks"]),
            compressor_level=d.get("compressor_level", 3),
            description=d.get("description", ""),
        )


def _s2_band(name: str, res: int, common: str | None, wl: float, long_name: str) -> BandSpec:
    # L2A processing baseline >= 04.00: reflectance = (DN + BOA_ADD_OFFSET) / 10000, offset -1000.
    return BandSpec(
        name=name, dtype="uint16", resolution=res, nodata=0, scale=1e-4, offset=-0.1, units="1",
        long_name=f"surface reflectance, {long_name}", common_name=common, center_wavelength=wl,
    )


S2_L2A = CubeSpec(
    name="s2",
    title="Sentinel-2 L2A surface reflectance cube",
    source_collection="sentinel-2-l2a",
    description="Sentinel-2 MSI Level-2A bottom-of-atmosphere reflectance with the scene classification "
    "(SCL), reorganised into time-first Zarr v3 chunks on the native MGRS tile grids (10 m and 20 m).",
    bands=(
        _s2_band("B02", 10, "blue", 0.490, "blue"),
        _s2_band("B03", 10, "green", 0.560, "green"),
        _s2_band("B04", 10, "red", 0.665, "red"),
        _s2_band("B08", 10, "nir", 0.842, "near infrared"),
        _s2_band("B05", 20, "rededge", 0.705, "red edge 1"),
        _s2_band("B06", 20, "rededge", 0.740, "red edge 2"),
        _s2_band("B07", 20, "rededge", 0.783, "red edge 3"),
        _s2_band("B8A", 20, "nir08", 0.865, "narrow near infrared"),
        _s2_band("B11", 20, "swir16", 1.610, "short-wave infrared 1.6"),
        _s2_band("B12", 20, "swir22", 2.190, "short-wave infrared 2.2"),
        BandSpec(
            name="SCL", dtype="uint8", resolution=20, nodata=0, units="1", long_name="scene classification",
            flag_values=tuple(SCL_CLASSES), flag_meanings=tuple(SCL_CLASSES.values()),
        ),
    ),
)

S1_BACKSCATTER = CubeSpec(
    name="s1",
    title="Sentinel-1 CARD backscatter cube",
    source_collection="sentinel-1-card-bs",
    description="Sentinel-1 IW gamma0 backscatter (VV, VH, dB), analysis-ready, on the MGRS tile grids "
    "at 10 m, reorganised into time-first Zarr v3 chunks; ascending and descending orbits together.",
    bands=(
        BandSpec(name="VV", dtype="float32", resolution=10, nodata=float("nan"), units="dB",
                 long_name="gamma0 backscatter, VV polarisation"),
        BandSpec(name="VH", dtype="float32", resolution=10, nodata=float("nan"), units="dB",
                 long_name="gamma0 backscatter, VH polarisation"),
    ),
)

CUBE_SPECS: dict[str, CubeSpec] = {spec.name: spec for spec in (S2_L2A, S1_BACKSCATTER)}


def cube_spec(name: str) -> CubeSpec:
    """The built-in spec for collection key ``name`` (``"s2"`` or ``"s1"``)."""
    try:
        return CUBE_SPECS[name]
    except KeyError:
        raise InvalidRequestError(f"unknown cube collection {name!r}; known: {', '.join(CUBE_SPECS)}") from None
