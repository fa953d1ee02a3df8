"""Smoke test of the access-pattern benchmarks on the tiny region: one repetition, a few cells.

Checks that the harness runs end to end and that its figures are consistent, never how fast anything
is: the report, plots and raw JSON are written; every cell has counts from the server or the store;
the layouts give the same answers; the S3 request counts do not depend on the added latency; and a
report re-rendered from the JSON is the report the run printed. The chunk sweep's choice and its report
section are checked on made-up figures (its reads are the same cells as above).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from benchmarks import __main__ as cli
from benchmarks import harness, report, sweep
from benchmarks.config import BenchConfig

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def bench(tiny_region, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    cfg = BenchConfig(size="tiny", size_km=2.0, reps=1, min_reps=1, latencies_ms=(5.0,),
                      patterns=("parcel-small", "chip-1", "ingest", "append"), ingest_tiers=("folder",),
                      append_tiers=("folder",), appends=1, sweep=(), out=out, date="smoke")
    work, here = tmp_path_factory.mktemp("bench-work"), tmp_path_factory.getbasetemp()
    region = replace(tiny_region, out_dir=tiny_region.out_dir.relative_to(here))
    with pytest.MonkeyPatch.context() as patch:  # relative folders, as typed: the COG readers got them relative
        patch.chdir(here)
        results = harness.run(cfg, work.relative_to(here), region=region, log=lambda _: None)
    path = report.write(results, cfg.report_dir)
    return results, path


def test_report_plots_and_json_are_written(bench):
    _, path = bench
    folder = path.parent
    for name in ("report.md", "results.json", "latency.png", "requests.png"):
        assert (folder / name).stat().st_size > 0, name
    text = path.read_text()
    assert "## Headline" in text and "### Where the time-first sharded reads spend their requests" in text
    assert json.loads((folder / "results.json").read_text())["cells"]
    assert "timed on the plain `LocalStore`" in text  # the method of this run's folder reads, not an older one's
    assert "| append 1 of 1 | folder | 1 |" in text  # each append a row: their median is no append's time
    assert "made from the process's one botocore session" in text  # how this run's S3 clients were made


def test_every_cell_is_counted(bench):
    results, _ = bench
    read = [c for c in results["cells"] if c["pattern"] in ("parcel-small", "chip-1")]
    assert {c["tier"] for c in read} == {"folder", "s3", "s3-5ms"}
    assert {c["layout"] for c in read} == {"tf-sharded", "tf-unsharded", "space-first", "cog-rasterio", "cog-odc"}
    for c in results["cells"]:
        s = c["summary"]
        assert s["n"] == 1 and s["error"] is None, (c["pattern"], c["layout"], c["tier"], s["error"])
        assert s["requests"] > 0
        assert s["counted_by"] == ("proxy" if c["tier"] != "folder" else "os" if "cog" in c["layout"] else "store")
    for c in read:
        assert c["summary"]["bytes_read"] > 0
    # a parcel's pixels are a few hundred bytes; every layout reads at least whole (compressed) chunks or blocks
    for c in (c for c in read if c["pattern"] == "parcel-small"):
        assert c["summary"]["bytes_read"] >= c["summary"]["needed_bytes"] > 0


def test_zarr_reads_count_shards_and_data_requests(bench):
    results, _ = bench
    local = report.summary(results, "parcel-small", "tf-sharded", "folder")
    assert local["objects_read"] >= 3  # B04, B08 and SCL: at least one shard each
    assert local["data_gets"] >= local["objects_read"]


def test_request_counts_do_not_depend_on_latency(bench):
    results, _ = bench
    for layout in ("tf-sharded", "tf-unsharded", "space-first", "cog-rasterio"):
        plain = report.summary(results, "parcel-small", layout, "s3")
        slow = report.summary(results, "parcel-small", layout, "s3-5ms")
        assert {k: plain[k] for k in ("GET", "HEAD", "LIST")} == {k: slow[k] for k in ("GET", "HEAD", "LIST")}


def test_layouts_give_the_same_answers(bench):
    results, _ = bench
    assert set(results["checks"]) == {"parcel-small", "chip-1"}
    assert all(v["agree"] and v["cells"] == 15 for v in results["checks"].values())


def test_writes(bench):
    results, _ = bench
    writes = {(c["pattern"], c["tier"]): c["summary"] for c in results["cells"] if c["pattern"] in ("ingest", "append")}
    assert set(writes) == {("ingest", "folder"), ("append", "folder")}
    for s in writes.values():
        assert s["PUT"] > 0 and s["write_amplification"] >= 1.0


def test_the_report_is_what_the_json_renders(bench, capsys):
    _, path = bench
    cli.main(["--from-json", str(path.parent / "results.json")])
    printed = capsys.readouterr().out
    assert path.read_text() == report.render(json.loads((path.parent / "results.json").read_text()))
    assert path.read_text().strip() in printed


def _shape(label: str, default: bool, seconds: dict[str, float]) -> dict:
    cells = [{"pattern": p, "tier": "s3-20ms", "summary": {"n": 1, "median_s": v, "requests": 10, "bytes_read": 1e6}}
             for p, v in seconds.items()]
    return {"label": label, "slug": label, "default": default, "objects": 1, "bytes": 1, "ingest_s": 1.0,
            "write_amplification": 1.0, "cells": cells}


@pytest.mark.parametrize(("factor", "keeps"), [(0.95, True), (0.8, False)])
def test_sweep_keeps_the_default_unless_clearly_beaten(factor, keeps, tmp_path):
    base = {"parcel-small": 1.0, "parcel-large": 1.0, "chip-1": 1.0, "chip-10": 1.0}
    shapes = [_shape("time=16,space=128,shard_space=1024", True, base),
              _shape("time=8,space=128,shard_space=1024", False, {k: v * factor for k, v in base.items()})]
    rec = sweep.recommend(shapes, "s3-20ms")
    assert rec["keeps_default"] is keeps
    assert rec["choice"] == shapes[0 if keeps else 1]["label"]
    results = {"sweep": {"tiers": ["s3-20ms"], "patterns": list(base), "shapes": shapes, "recommendation": rec}}
    text = "\n".join(report.sweep_md(results))
    assert rec["choice"] in text and "score" in text
    report.plot_sweep(results, tmp_path)
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_the_sweep_is_scored_on_its_slowest_tier_as_its_report_says():
    """It was scored on the last tier given to --sweep-tiers: ``s3-50ms,s3-20ms`` scored on s3-20ms."""
    from benchmarks.storage import Tier

    assert sweep.scoring_tier([Tier.parse("s3-50ms"), Tier.parse("s3-20ms")]).name == "s3-50ms"
    assert sweep.scoring_tier([Tier.parse("s3-20ms"), Tier.parse("s3-20ms", bandwidth_mbps=50)]).bandwidth_mbps == 50
