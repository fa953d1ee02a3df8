"""``generate(out_dir, config)``: the whole synthetic region written to disk, and what it holds.

Output layout (all paths relative to ``out_dir``)::

    parcels.gpkg, parcels.parquet     declared parcels (parcel_id, crop_code, crop_name, area_ha, geometry)
    ground_truth.parquet              actual crop, anomalies, sowing/harvest/mowing dates per parcel
    weather.parquet, weather.csv      daily weather driving the phenology
    scenes/<collection>/<product>/    one COG per band and scene
    items.json                        STAC ItemCollection of every scene
    region.json                       the parameters and counts of this run (written last: the region is whole)
    synth-partial                     while a run writes (gone once region.json is): the folder is synth's

Scenes are rendered in a thread pool (numpy and GDAL release the GIL); every pass draws from its own
random stream, so the bytes do not depend on the number of threads or the order of completion.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio

from cardcube.errors import InvalidRequestError
from cardcube.grid import TileGrid
from cardcube.synth import s2
from cardcube.synth.acquisitions import Acquisition, s1_schedule, s2_schedule
from cardcube.synth.config import SynthConfig
from cardcube.synth.crops import crop
from cardcube.synth.scenes import SceneRecord, write_acquisition
from cardcube.synth.stac import item_collection, save_items
from cardcube.synth.world import World, build_world

# GeoPackage stores a "last change" timestamp; pin it so two runs give identical bytes.
FIXED_OGR_DATE = "2024-01-01T00:00:00Z"
# What a run writes at the top of its folder: files of that name there, no run's, are refused, not replaced.
OUTPUTS = ("parcels.gpkg", "parcels.parquet", "ground_truth.parquet", "weather.parquet", "weather.csv", "scenes",
           "items.json", "region.json")
PARTIAL = "synth-partial"  # a run's mark while it writes: one stopped (Ctrl-C) may be run again into its folder


@dataclass(frozen=True, slots=True)
class SynthResult:
    """Where a generated region lives and what it holds."""

    out_dir: Path
    config: SynthConfig
    tiles: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    n_parcels: int
    n_anomalies: int
    n_s2_scenes: int
    n_s1_scenes: int
    n_files: int
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def parcels(self) -> Path:
        return self.out_dir / "parcels.parquet"

    @property
    def parcels_gpkg(self) -> Path:
        return self.out_dir / "parcels.gpkg"

    @property
    def ground_truth(self) -> Path:
        return self.out_dir / "ground_truth.parquet"

    @property
    def weather(self) -> Path:
        return self.out_dir / "weather.parquet"

    @property
    def weather_csv(self) -> Path:
        return self.out_dir / "weather.csv"

    @property
    def items(self) -> Path:
        return self.out_dir / "items.json"

    @property
    def region_json(self) -> Path:
        return self.out_dir / "region.json"

    @classmethod
    def written(cls, out_dir: str | os.PathLike, config: SynthConfig) -> SynthResult | None:
        """The region of ``config`` as an earlier :func:`generate` left it in ``out_dir`` (its ``region.json``,
        written last, says so), or None if ``out_dir`` holds no complete region, or another one."""
        out = Path(out_dir)
        try:
            doc = json.loads((out / "region.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if doc.get("config") != json.loads(json.dumps(_content_config(config))) or not (out / "items.json").exists():
            return None
        n = doc["counts"]
        return cls(out_dir=out, config=config, tiles=tuple(doc["tiles"]), bbox=tuple(doc["bbox"]),
                   n_parcels=n["parcels"], n_anomalies=n["anomalies"], n_s2_scenes=n["s2_scenes"],
                   n_s1_scenes=n["s1_scenes"], n_files=n["files"])

    def counts(self) -> dict[str, int]:
        return {"parcels": self.n_parcels, "anomalies": self.n_anomalies, "s2_scenes": self.n_s2_scenes,
                "s1_scenes": self.n_s1_scenes, "files": self.n_files}

    def summary(self, *, paths: bool = True) -> str:
        """A few lines for people; ``paths=False`` leaves out where it was written (and the timing)."""
        c = self.config
        w, h = c.size_m
        lines = [
            f"synthetic region in {self.out_dir}" if paths else "synthetic region",
            f"  seed {c.seed}, tiles {', '.join(self.tiles)}, {w / 1000:g} x {h / 1000:g} km, "
            f"bbox {tuple(round(v) for v in self.bbox)} ({TileGrid.from_id(c.tile).crs})",
            f"  season {c.start} .. {c.end}",
            f"  {self.n_parcels} parcels, {self.n_anomalies} planted anomalies",
            f"  {self.n_s2_scenes} Sentinel-2 L2A scenes, {self.n_s1_scenes} Sentinel-1 CARD-BS scenes, "
            f"{self.n_files} files",
        ]
        if paths:
            lines.append(f"  STAC items: {self.items}")
        if paths and self.elapsed_s:
            lines.append(f"  generated in {self.elapsed_s:.1f} s")
        return "\n".join(lines)


def generate(out_dir: str | os.PathLike, config: SynthConfig | None = None, *,
             progress: Callable[[Acquisition], None] | None = None) -> SynthResult:
    """Generate the region of ``config`` (default: the demo) into ``out_dir``; deterministic for a seed. An
    earlier region's scenes there are replaced (a folder ingest read both regions' scenes as one), also a run's
    stopped halfway; files of synth's names (``scenes``, ``parcels.gpkg``, ...) that no run of synth left (no
    ``region.json`` nor ``synth-partial`` beside them) are refused, as is an ``out_dir`` that is a file."""
    t0 = time.perf_counter()
    config = config or SynthConfig.demo()
    out = Path(out_dir)
    world = build_world(config)  # checks the region before anything is written
    _clear_earlier(out)
    _write_tables(world, out)

    acquisitions = schedule(config)
    spectra = s2.background_spectra(world)

    def task(acq: Acquisition) -> list[SceneRecord]:
        records = write_acquisition(world, acq, out, spectra=spectra)
        if progress is not None:
            progress(acq)
        return records

    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool:
        scenes = [rec for recs in pool.map(task, acquisitions) for rec in recs]
    save_items(item_collection(scenes), out / "items.json")

    n_s2 = sum(1 for s in scenes if s.acquisition.is_s2)
    result = SynthResult(
        out_dir=out, config=config, tiles=world.region.tile_ids, bbox=world.region.bbox,
        n_parcels=len(world.truth), n_anomalies=int(world.truth["is_anomaly"].sum()),
        n_s2_scenes=n_s2, n_s1_scenes=len(scenes) - n_s2,
        n_files=sum(len(s.assets) for s in scenes) + 7,
    )
    _write_region_json(world, result, out / "region.json")
    (out / PARTIAL).unlink()
    return replace(result, elapsed_s=time.perf_counter() - t0)


def _clear_earlier(out: Path) -> None:
    """Make ``out`` (if missing) and mark it as a run's (:data:`PARTIAL`), then delete the scenes an earlier
    :func:`generate` wrote into it, whole or stopped halfway (its ``region.json`` first, so a run stopped meanwhile
    is no complete region); refuse ``out`` if it is a file, or holds files of synth's names that no run of synth
    left there (a ``scenes`` folder, parcels of the user's, beside no ``region.json`` or one synth did not write)."""
    if out.exists() and not out.is_dir():
        raise InvalidRequestError(f"{out} is a file: give synth a folder (made if missing)")
    scenes = out / "scenes"
    if not _is_synths_region(out / "region.json") and not (out / PARTIAL).is_file():
        if scenes.is_dir() and any(scenes.iterdir()):
            raise InvalidRequestError(f"{scenes} holds files, and no region.json says an earlier cardcube synth "
                                      f"wrote them: give another folder, or delete it (a folder ingest would read "
                                      f"them with the new scenes)")
        if held := [name for name in OUTPUTS if name != "scenes" and (out / name).exists()]:
            raise InvalidRequestError(f"{out} holds {', '.join(held)}, and no region.json says an earlier cardcube "
                                      f"synth wrote them: give another folder (synth would replace them)")
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL).touch()
    (out / "region.json").unlink(missing_ok=True)
    shutil.rmtree(scenes, ignore_errors=True)


def _is_synths_region(path: Path) -> bool:
    """Whether ``path`` is a ``region.json`` :func:`_write_region_json` wrote: a file of that name of the user's (a
    common name) says nothing of the files beside it, which synth would replace or delete."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"config", "counts", "tiles"} <= doc.keys()


def schedule(config: SynthConfig) -> tuple[Acquisition, ...]:
    """Every pass of the season of ``config``: Sentinel-2 first, then Sentinel-1."""
    out: tuple[Acquisition, ...] = ()
    if config.s2:
        out += s2_schedule(config.start, config.end, revisit=config.s2_revisit_days)
    if config.s1:
        out += s1_schedule(config.start, config.end, revisit=config.s1_revisit_days)
    return out


def _write_tables(world: World, out: Path) -> None:
    truth = world.truth
    parcels = world.landscape.parcels.copy()
    parcels.insert(1, "crop_code", truth["declared_crop_code"].to_numpy())
    parcels.insert(2, "crop_name", [crop(c).name for c in parcels["crop_code"]])
    parcels = parcels[["parcel_id", "crop_code", "crop_name", "area_ha", "geometry"]]
    parcels.to_parquet(out / "parcels.parquet", index=False)
    gpkg = out / "parcels.gpkg"
    gpkg.unlink(missing_ok=True)
    with _ogr_config(OGR_CURRENT_DATE=FIXED_OGR_DATE):
        parcels.to_file(gpkg, layer="parcels", driver="GPKG", engine="pyogrio")

    pq.write_table(_truth_table(truth), out / "ground_truth.parquet")
    weather = world.weather.copy()
    weather["date"] = pd.to_datetime(weather["date"]).dt.date
    pq.write_table(pa.Table.from_pandas(weather, preserve_index=False), out / "weather.parquet")
    weather.to_csv(out / "weather.csv", index=False)


@contextmanager
def _ogr_config(**options: str):
    """Set GDAL config options of pyogrio's GDAL for the duration of a block, then restore them."""
    before = {k: pyogrio.get_gdal_config_option(k) for k in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(before)


def _truth_table(truth: pd.DataFrame) -> pa.Table:
    date = pa.date32()
    return pa.table({
        "parcel_id": pa.array(truth["parcel_id"], pa.string()),
        "declared_crop_code": pa.array(truth["declared_crop_code"], pa.int32()),
        "actual_crop_code": pa.array(truth["actual_crop_code"], pa.int32()),
        "actual_crop_name": pa.array(truth["actual_crop_name"], pa.string()),
        "is_anomaly": pa.array(truth["is_anomaly"], pa.bool_()),
        "anomaly_kind": pa.array(truth["anomaly_kind"], pa.string()),
        "sowing_date": pa.array(truth["sowing_date"], date),
        "harvest_date": pa.array(truth["harvest_date"], date),
        "ploughing_date": pa.array(truth["ploughing_date"], date),
        "mowing_dates": pa.array(truth["mowing_dates"], pa.list_(date)),
    })


def _content_config(config: SynthConfig) -> dict[str, Any]:
    """The settings that make a region's bytes: all but ``workers``, which only says how fast they are made."""
    return {k: v for k, v in config.to_dict().items() if k != "workers"}


def _write_region_json(world: World, result: SynthResult, path: Path) -> None:
    region = world.region
    doc = {
        "config": _content_config(world.config),
        "crs": region.crs,
        "bbox": list(region.bbox),
        "size_m": [region.width_m, region.height_m],
        "shape_10m": list(region.shape(10)),
        "tiles": {t.tile.tile_id: {"row": t.row, "col": t.col, "height": t.height, "width": t.width}
                  for t in region.tiles},
        "counts": result.counts(),
        "summary": result.summary(paths=False),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
