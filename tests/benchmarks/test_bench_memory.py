"""The peak memory the benchmarks report is the measured process's own, not that of the process that started it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import flag_memory

HERE = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and the kernel's counts are Linux's")
def test_flag_memory_s_peak_is_the_child_s_own_not_its_parent_s() -> None:
    """``wait4``'s ru_maxrss of a child holds the RSS of the process that started it (the child was its copy until
    exec): from a driver of 600 MB, ``python -c pass`` was said to peak at 611 MB."""
    held = bytearray(400 * 2**20)
    held[:: 4096] = b"\1" * len(held[:: 4096])  # every page resident: this process is over 400 MB
    peak, _, said = flag_memory.peak_rss(["-c", "import sys; print('0 parcels flagged', sys.argv[1:])", "x"], HERE)
    assert len(held) and peak < 100  # an interpreter's own: some 10 MB
    assert said == "0 parcels flagged ['x']"  # the child's arguments and output as before
    with pytest.raises(ValueError, match="python -c CODE"):
        flag_memory.peak_rss(["-m", "cardcube.cli"], HERE)


def test_extraction_s_peak_is_taken_before_the_passes_that_only_measure(tiny_cube: Path, tiny_region, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """The 256 px blocks' peak RSS in extraction.md held the run under tracemalloc (its records of every allocation),
    and the default block's the run through a counting store (zarr's generic read path): passes that only
    measure, no part of an extraction as users run it."""
    import shutil
    import tracemalloc

    import cardcube.counting_store
    from benchmarks import extraction

    cube = tmp_path / "cube"
    shutil.copytree(tiny_cube, cube)  # the measurement rasterises the label layer anew beside the cube
    events: list[str] = []
    monkeypatch.setattr(extraction, "process_peak_mb", lambda: events.append("peak") or float(len(events)))
    start = tracemalloc.start
    monkeypatch.setattr(tracemalloc, "start", lambda *a: (events.append("traced"), start(*a))[1])

    class Counting(cardcube.counting_store.CountingStore):
        def __init__(self, *args, **kwargs) -> None:
            if not events or events[-1] != "counted":  # the store's copies (read_only, ...) are made alike
                events.append("counted")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cardcube.counting_store, "CountingStore", Counting)
    figures = extraction._measure_cardcube(str(cube), str(tiny_region.parcels), str(tmp_path / "out"), block=None,
                                           count=True, traced=True)
    assert events == ["peak", "traced", "counted"]
    assert figures["peak_rss_mb"] == 1.0 and figures["store_requests"] > 0 and figures["traced_peak_mb"] > 0
    assert json.loads(extraction.result_line(figures))["peak_rss_mb"] == 1.0  # not the process's peak after them
    without = json.loads(extraction.result_line({"seconds": 1.0}))  # a measurement that took none: the process's
    assert without["peak_rss_mb"] == float(len(events)) > 1.0


def test_ingest_throughput_gives_the_cpu_time_beside_the_wall_time(tiny_region, tmp_path: Path, monkeypatch) -> None:
    """Its figures were wall times alone: a 4 km initial load took 4.7 s on 2026-12-01 and 38 s on this shared
    machine at a load average near 12, with nothing to tell the code's cost from the others' load. The region's
    first 4 Sentinel-2 dates, not its 19: an initial load and appends all the same, at a fifth of the ingests."""
    import os
    import shutil

    from benchmarks import ingest_throughput
    from cardcube.synth.generate import SynthResult
    from tests.ingest.scene_edits import items_of, write_items

    shutil.copytree(tiny_region.out_dir, tmp_path / "source")  # the run writes its append items beside the scenes
    region = SynthResult.written(tmp_path / "source", tiny_region.config)
    write_items(region.items, items_of(region.items, "sentinel-2-l2a")[:4], region.items.name)
    monkeypatch.setattr(ingest_throughput, "generate", lambda out, config: region)
    figures = ingest_throughput.run(2.0, "s2", tmp_path)
    for step in ("initial", "appends"):
        cpu, wall = figures[step]["cpu_seconds"], figures[step]["seconds"]
        assert 0 < cpu <= wall * os.cpu_count() + 0.1, (step, cpu, wall)  # a process's threads on its cores
    assert figures["load_average"] >= 0 and figures["initial"]["write_amplification"] < 1.5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and the kernel's counts are Linux's")
def test_the_unbounded_buffer_s_peak_is_its_process_s_own() -> None:
    """``buffer_trial``'s process of its own gave getrusage's ru_maxrss as its peak, which holds the RSS of the
    driver that started it (hundreds of MB after the fields it buffered): here a buffer of a square, started from
    this process held over 400 MB."""
    import subprocess

    held = bytearray(400 * 2**20)
    held[:: 4096] = b"\1" * len(held[:: 4096])
    code = ("import shapely, benchmarks.buffer_trial as b; b.folded = lambda kind: shapely.box(0, 0, 100, 100); "
            "b.unbounded('teeth')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE)
    seconds, peak = map(float, done.stdout.split())
    assert len(held) and 0 < peak < 300 and seconds < 5  # its imports' (shapely, numpy, cardcube's): some 100 MB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and the kernel's counts are Linux's")
def test_peak_memory_is_in_the_megabytes_of_the_bytes_read_beside_it() -> None:
    """The reports' "peak MB" were MiB (/proc's kB divided by 1024) beside "MB read" of 10^6 bytes: 4.9 % low. Here
    300 MB held, every page resident, in a fresh process (no earlier peak of this one's)."""
    import subprocess

    code = ("import psutil; from benchmarks.measure import PeakMemory; from benchmarks.extraction import "
            "process_peak_mb\nwith PeakMemory() as m:\n    held = bytearray(300_000_000)\n    held[::4096] = "
            "b'\\1' * len(held[::4096])\nprint(m.mb, process_peak_mb(), psutil.Process().memory_info().rss / 1e6)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE)
    rise, peak, rss = map(float, done.stdout.split())
    assert 300 <= rise < 330  # the bytearray's 300 MB, and a little of the interpreter's
    assert rss >= 300 and peak > 0.99 * rss  # the resident set now or more, in the same megabytes (MiB: 0.95)
