"""The access patterns, as a registry: what each one asks, how many bytes it needs, how each layout answers.

A :class:`Pattern` maps reader kinds (``zarr``: the cardcube API over any Zarr layout; ``cog-rasterio``
and ``cog-odc``: :mod:`benchmarks.cog`) to a function of one repetition (:class:`Run`) that returns a
small dict with a ``checksum`` of the answer (equal across layouts when they answered the same) and any
extra figures (write amplification for writes). To add a pattern (e.g. a COG baseline of extraction),
add an entry to :data:`PATTERNS`; the harness, report and plots pick it up.

The questions are fixed per run by a :class:`Workload`: a small parcel (10th percentile of area) and
the largest parcel over the full season (by default the README's NDVI request: B04, B08 and NDVI,
SCL-masked, so B04, B08 and SCL are read), a 128 x 128 true-colour chip at 1 date and at 10 dates, the
same statistics for every parcel of the territory, an initial ingest of the season but its last dates,
and one-date appends of those.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox

from benchmarks import cog
from benchmarks.storage import Access, Tier
from cardcube.grid import TileGrid
from cardcube.spec import S2_L2A
from cardcube.synth import SynthResult
from cardcube.synth.stac import read_features, write_features
from cube.chips import TRUE_COLOUR, chip
from cube.indices import bands_for
from cube.membership import window_for
from cube.pixels import physical
from cube.timeseries import parcel_timeseries
from ingest.job import ingest

DEFAULT_BANDS = ("B04", "B08", "NDVI")  # the README's parcel request; ("all",) for every band
CHIP_SIZE = 128


@dataclass(frozen=True, eq=False)
class Workload:
    """The questions of one run, fixed once: which parcels, which dates, which chip, which scenes."""

    source: Path
    features: tuple[dict, ...]  # S2 STAC items, oldest first, hrefs relative to ``source``
    parcels: gpd.GeoDataFrame  # in the tile CRS
    tile: str
    small: Any
    large: Any
    chip_parcel: Any
    chip_dates: Mapping[int, tuple[str, str]]
    chip_geobox: GeoBox | None
    initial_items: Path
    append_items: tuple[Path, ...]
    region_bbox: tuple[float, float, float, float]
    bands: tuple[str, ...] = DEFAULT_BANDS  # asked for (indices included)

    @property
    def stored_bands(self) -> tuple[str, ...]:
        """The stored bands a parcel request reads: its bands' inputs and SCL (cloud mask, histogram)."""
        return tuple(dict.fromkeys([*bands_for(self.bands), "SCL"]))

    @classmethod
    def prepare(cls, region: SynthResult, scratch: Path, *, appends: int,
                bands: tuple[str, ...] = DEFAULT_BANDS) -> Workload:
        """Pick the parcels and dates of ``region``; the item files of the initial ingest and of each
        append go to ``scratch``. The chip grid comes later, from the cube (:meth:`with_chip_grid`)."""
        features = read_features(region.items, S2_L2A.source_collection)
        tile = region.tiles[0]
        parcels = gpd.read_parquet(region.parcels).to_crs(TileGrid.from_id(tile).crs)
        inside = parcels[parcels.within(_box(region.bbox))]
        by_area = inside.assign(area=inside.area).sort_values(["area", "parcel_id"])
        small = by_area.parcel_id.iloc[len(by_area) // 10]
        large = by_area.parcel_id.iloc[-1]
        cx, cy = (region.bbox[0] + region.bbox[2]) / 2, (region.bbox[1] + region.bbox[3]) / 2
        centre = gpd.GeoSeries(gpd.points_from_xy([cx], [cy]), crs=parcels.crs).iloc[0]
        chip_parcel = inside.parcel_id.iloc[int(np.argmin(inside.centroid.distance(centre).values))]
        dates = sorted({f["properties"]["datetime"][:10] for f in features})
        mid = len(dates) // 2
        chip_dates = {1: (dates[mid], dates[mid]), 10: (dates[max(mid - 5, 0)], dates[min(mid + 4, len(dates) - 1)])}
        held = min(appends, len(features) - 1)
        scratch.mkdir(parents=True, exist_ok=True)
        absolute = [_absolute(f, region.out_dir) for f in features]
        initial = write_features(absolute[:len(features) - held], scratch / "initial.json")
        extra = tuple(write_features([f], scratch / f"append-{i:02d}.json")
                      for i, f in enumerate(absolute[len(features) - held:]))
        if tuple(bands) == ("all",):
            bands = tuple(b for b in S2_L2A.band_names if b != "SCL")
        return cls(region.out_dir, tuple(features), parcels, tile, small, large, chip_parcel, chip_dates,
                   None, initial, extra, tuple(region.bbox), tuple(bands))

    def with_chip_grid(self, cube: Path) -> Workload:
        """The same workload with the chip's grid: the one :func:`cube.chips.chip` reads from ``cube``, so
        the COG readers read exactly those pixels."""
        one = self.parcel(self.chip_parcel)
        grid = chip(cube, one, size=CHIP_SIZE, time=self.chip_dates[1], bands=TRUE_COLOUR).geobox
        return replace(self, chip_geobox=grid)

    def parcel(self, pid: Any) -> gpd.GeoDataFrame:
        return self.parcels[self.parcels.parcel_id == pid]

    def geometry(self, pid: Any) -> Any:
        return self.parcel(pid).geometry.iloc[0]

    def parcel_geobox(self, pid: Any) -> GeoBox:
        """The parcel's window on the tile's 10 m grid, widened to the 20 m lattice."""
        grid = TileGrid.from_id(self.tile).geobox(10)
        rows, cols = window_for(self.geometry(pid), grid)
        r0, r1 = rows.start - rows.start % 2, rows.stop + rows.stop % 2
        c0, c1 = cols.start - cols.start % 2, cols.stop + cols.stop % 2
        return grid[r0:r1, c0:c1]

    def features_between(self, lo: str, hi: str) -> list[dict]:
        return [f for f in self.features if lo <= f["properties"]["datetime"][:10] <= hi]

    @property
    def dates(self) -> int:
        return len(self.features)

    def describe(self) -> dict[str, Any]:
        area = {p: float(self.geometry(p).area / 1e4) for p in (self.small, self.large)}
        return {"scenes": self.dates, "parcels": len(self.parcels), "tile": self.tile,
                "small_parcel": {"id": _plain(self.small), "ha": round(area[self.small], 2)},
                "large_parcel": {"id": _plain(self.large), "ha": round(area[self.large], 2)},
                "chip_parcel": _plain(self.chip_parcel), "chip_dates": {str(k): v for k, v in self.chip_dates.items()},
                "appends": len(self.append_items), "bands": list(self.bands), "stored_bands": list(self.stored_bands)}


def _absolute(feature: dict, root: Path) -> dict:
    """``feature`` with its asset hrefs made absolute paths under ``root``."""
    assets = {k: {**a, "href": str(root.absolute() / a["href"])} for k, a in feature["assets"].items()}
    return {**feature, "assets": assets}


def _box(bbox: tuple[float, float, float, float]) -> Any:
    from shapely.geometry import box

    return box(*bbox)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Run:
    """One repetition: the workload, how to reach the data, the I/O threads allowed, the repetition number."""

    workload: Workload
    access: Access
    threads: int
    rep: int = 0


Reader = Callable[[Run], dict[str, Any]]


@dataclass(frozen=True)
class Pattern:
    """An access pattern: ``readers`` by reader kind; ``needed`` the raw bytes the answer needs."""

    key: str
    title: str
    kind: str  # "read" or "write"
    readers: Mapping[str, Reader]
    needed: Callable[[Workload], int | None] = lambda w: None
    layouts: tuple[str, ...] | None = None  # restrict to these layout keys (None: every layout with a reader)
    tiers: tuple[str, ...] | None = None  # restrict to these tiers ("latency": every s3-<N>ms; None: every tier)
    max_reps: int | None = None  # cap on repetitions (long batch jobs)
    requires: str | None = None  # a module that must be importable
    prepare: Callable[[Workload, Path], None] | None = None  # untimed set-up on the folder cube, before copies
    note: str = ""

    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def runs_on(self, tier: Tier) -> bool:
        """Whether this pattern is measured on ``tier`` (``"latency"`` in :attr:`tiers` names every tier with
        added latency, whatever ``--latency`` made them)."""
        if self.tiers is None:
            return True
        return tier.name in self.tiers or ("latency" in self.tiers and tier.latency_ms > 0)


# --- bytes needed ----------------------------------------------------------------------------------------
def _parcel_needed(which: str) -> Callable[[Workload], int]:
    def needed(w: Workload) -> int:
        pid = getattr(w, which)
        total = 0
        for band in (S2_L2A.band(b) for b in w.stored_bands):
            rows, cols = window_for(w.geometry(pid), TileGrid.from_id(w.tile).geobox(band.resolution), buffer=0.0)
            total += (rows.stop - rows.start) * (cols.stop - cols.start) * np.dtype(band.dtype).itemsize
        return total * w.dates
    return needed


def _chip_needed(n: int) -> Callable[[Workload], int]:
    def needed(w: Workload) -> int:
        per_date = sum((CHIP_SIZE * 10 // S2_L2A.band(b).resolution) ** 2 * np.dtype(S2_L2A.band(b).dtype).itemsize
                       for b in (*TRUE_COLOUR, "SCL"))
        return per_date * len(w.features_between(*w.chip_dates[n]))
    return needed


def _territory_needed(w: Workload) -> int:
    x0, y0, x1, y1 = w.region_bbox
    bands = [S2_L2A.band(b) for b in w.stored_bands]
    return int(sum((x1 - x0) * (y1 - y0) / b.resolution**2 * np.dtype(b.dtype).itemsize for b in bands) * w.dates)


# --- answers -----------------------------------------------------------------------------------------------
def frame_checksum(frame: pd.DataFrame) -> dict[str, float]:
    """What must agree across layouts for a statistics frame: the sum of means and of pixel counts."""
    return {"checksum": float(np.nansum(frame["mean"].to_numpy(dtype=float))),
            "pixels": float(frame["count"].sum())}


def _threads(run: Run) -> Any:
    return dask.config.set(scheduler="threads", num_workers=run.threads)


def _zarr_parcel(which: str) -> Reader:
    def read(run: Run) -> dict[str, Any]:
        w = run.workload
        with _threads(run):
            frame = parcel_timeseries(run.access.store(), w.parcel(getattr(w, which)), collection="s2",
                                      bands=list(w.bands))
        return frame_checksum(frame)
    return read


def _cog_parcel(which: str, loader: str) -> Reader:
    def read(run: Run) -> dict[str, Any]:
        w = run.workload
        pid = getattr(w, which)
        geobox = w.parcel_geobox(pid)
        pixels = cog.LOADERS[loader](w.features, w.stored_bands, geobox, run.access, threads=run.threads)
        return frame_checksum(cog.parcel_frame(pixels, w.bands, w.features, w.geometry(pid), geobox, pid))
    return read


def _chip_sum(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {"checksum": float(sum(np.nansum(values[b].astype("float64")) for b in TRUE_COLOUR)),
            "dates": float(values[TRUE_COLOUR[0]].shape[0])}


def _zarr_chip(n: int) -> Reader:
    def read(run: Run) -> dict[str, Any]:
        w = run.workload
        with _threads(run):
            c = chip(run.access.store(), w.parcel(w.chip_parcel), size=CHIP_SIZE, time=w.chip_dates[n],
                     bands=TRUE_COLOUR)
        return _chip_sum({b: c.data[b].values for b in TRUE_COLOUR})
    return read


def _cog_chip(n: int, loader: str) -> Reader:
    def read(run: Run) -> dict[str, Any]:
        w = run.workload
        feats = w.features_between(*w.chip_dates[n])
        raw = cog.LOADERS[loader](feats, [*TRUE_COLOUR, "SCL"], w.chip_geobox, run.access, threads=run.threads)
        return _chip_sum({b: physical(raw[b], cog.band_attrs(S2_L2A.band(b))) for b in TRUE_COLOUR})
    return read


def _extract(w: Workload, cube: Any, out: str) -> Any:
    from cube.extract import extract  # the full-territory extraction (issue 7)

    return extract(w.parcels, cube, out, collection="s2", bands=list(w.bands), progress=False)


def _zarr_extract(run: Run) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cardcube-bench-extract-") as out, _threads(run):
        res = _extract(run.workload, run.access.store(), out)
    return {"checksum": float(res.rows), "rows": res.rows, "parcels": res.parcels}


def _extract_layers(w: Workload, cube: Path) -> None:
    """Build the parcel-label layers beside the cube once (extraction stores them there and reuses them),
    so every timed extraction reads them rather than the first one building them."""
    with tempfile.TemporaryDirectory(prefix="cardcube-bench-extract-") as out:
        _extract(w, cube, out)


def _ingest_result(res: Any) -> dict[str, Any]:
    """The figures of a measured ingest; a scene rejected fails the cell (timed, it measured a run that read next
    to nothing: a relative --work once made every band file "not found")."""
    if res.rejected:
        first = res.rejected[0]
        raise RuntimeError(f"the measured ingest rejected {len(res.rejected)} scene(s), so its figures measure no "
                           f"real run: {first.scene_id}: {first.reason}")
    return {"checksum": float(len(res.added)), "scenes": len(res.added), "bytes_new_data": res.bytes_new_data,
            "bytes_written_store": res.bytes_written, "write_amplification": res.write_amplification}


def _ingest(run: Run) -> dict[str, Any]:
    """The season but its last dates, into a new cube under the cell's root."""
    target = run.access.store(f"{run.access.root}/rep{run.rep}", read_only=False)
    with _threads(run):
        res = ingest(run.workload.initial_items, target, collection="s2", progress=False, catalog=True)
    return _ingest_result(res)


def _append(run: Run) -> dict[str, Any]:
    """The next held-back date into the cube the ingest cell wrote (root of its first repetition)."""
    w = run.workload
    if run.rep >= len(w.append_items):
        raise IndexError(f"only {len(w.append_items)} dates are held back for appends")
    with _threads(run):
        res = ingest(w.append_items[run.rep], run.access.store(read_only=False), collection="s2", progress=False,
                     catalog=True)
    return _ingest_result(res)


def _reads(zarr: Reader, cog_reader: Callable[[str], Reader]) -> dict[str, Reader]:
    return {"zarr": zarr, **{k: cog_reader(k) for k in cog.LOADERS}}


PATTERNS: dict[str, Pattern] = {p.key: p for p in (
    Pattern("parcel-small", "parcel season, small parcel", "read",
            _reads(_zarr_parcel("small"), lambda k: _cog_parcel("small", k)), _parcel_needed("small")),
    Pattern("parcel-large", "parcel season, large parcel", "read",
            _reads(_zarr_parcel("large"), lambda k: _cog_parcel("large", k)), _parcel_needed("large")),
    Pattern("chip-1", "128 px chip, 1 date", "read", _reads(_zarr_chip(1), lambda k: _cog_chip(1, k)),
            _chip_needed(1)),
    Pattern("chip-10", "128 px chip, 10 dates", "read", _reads(_zarr_chip(10), lambda k: _cog_chip(10, k)),
            _chip_needed(10)),
    Pattern("extraction", "full-territory extraction", "read", {"zarr": _zarr_extract}, _territory_needed,
            tiers=("folder", "latency"), max_reps=1, requires="cube.extract", prepare=_extract_layers,
            note="every parcel, the parcel bands, written to a local Parquet folder; label layers built "
                 "beforehand. Its COG baseline (exactextract scene by scene) is `python -m benchmarks.extraction` "
                 "(extraction.md beside this report)"),
    Pattern("ingest", "initial ingest", "write", {"zarr": _ingest}, layouts=("tf-sharded",), max_reps=1,
            note="sources read from local COGs in every tier; the cube written to the tier; one repetition"),
    Pattern("append", "one-date append", "write", {"zarr": _append}, layouts=("tf-sharded",),
            note="each repetition appends the next held-back date to the ingested cube"),
)}
