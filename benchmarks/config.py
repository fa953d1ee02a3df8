"""What one benchmark run measures: region size, repetitions, storage tiers, I/O threads, sweep grid.

A run is described by a frozen :class:`BenchConfig` so that the report can print exactly what produced
its numbers (the config goes into the raw JSON). ``--size`` picks a preset or a side in km; everything
else keeps its default unless asked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cardcube.spec import ChunkLayout

# Side of the synthetic region (km) per named size; "default" must finish in < 10 min on 2 cores.
SIZES: dict[str, float] = {"small": 2.0, "default": 2.5, "large": 10.0}

# The chunk-shape sweep: (time, space, shard_space) at 10 m. The first is the shipped default.
SWEEP: tuple[str, ...] = (
    "time=16,space=128,shard_space=1024",
    "time=8,space=128,shard_space=1024",
    "time=32,space=128,shard_space=1024",
    "time=16,space=64,shard_space=1024",
    "time=16,space=256,shard_space=1024",
)


def parse_size(text: str) -> tuple[str, float]:
    """``"default"`` -> ("default", 2.5); ``"6"`` or ``"6km"`` -> ("6km", 6.0)."""
    if text in SIZES:
        return text, SIZES[text]
    try:
        km = float(text.lower().removesuffix("km"))
    except ValueError:
        raise ValueError(f"--size {text}: use {', '.join(SIZES)} or a side in km (e.g. 6 or 6km)") from None
    if km < 0.4:
        raise ValueError(f"--size {text}: the synthetic region needs at least 0.4 km per side")
    return f"{km:g}km", km


@dataclass(frozen=True)
class BenchConfig:
    """One run. Latencies are per request (ms) added by the loopback proxy; bandwidth is per response."""

    size: str = "default"
    size_km: float = SIZES["default"]
    reps: int = 3
    min_reps: int = 2
    cell_budget_s: float = 5.0  # stop repeating a read cell once it has used this much (after min_reps)
    threads: int = 8  # I/O concurrency given to every reader alike (dask workers, thread pools, odc-stac pool)
    latencies_ms: tuple[float, ...] = (20.0,)  # --latency 20,50 adds a 50 ms tier (about 2 more minutes)
    bandwidth_mbps: float | None = 100.0  # MB/s per response on the latency tiers; None = uncapped
    ingest_tiers: tuple[str, ...] = ("folder",)  # the folder always; an ingest on S3 takes minutes (--ingest-tiers)
    append_tiers: tuple[str, ...] = ("folder", "s3-20ms")  # S3 appends go to a copy of the folder's cube
    appends: int = 2  # one-date appends measured (the last dates of the season are held back for them)
    bands: tuple[str, ...] = ("B04", "B08", "NDVI")  # what a parcel season asks for; ("all",) = every band
    sweep: tuple[str, ...] = SWEEP
    sweep_reps: int = 2
    sweep_tiers: tuple[str, ...] = ("s3-20ms",)  # the slowest scores the shapes
    patterns: tuple[str, ...] | None = None  # None: every registered pattern
    out: Path = Path("benchmarks/results")
    date: str = field(default_factory=lambda: dt.date.today().isoformat())
    seed: int = 42

    def __post_init__(self) -> None:
        for text in self.sweep:
            ChunkLayout.parse(text)  # fail early on a bad grid
        if self.reps < 1 or self.min_reps < 1:
            raise ValueError("reps and min_reps must be at least 1")

    @property
    def report_dir(self) -> Path:
        return self.out / self.date

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d
