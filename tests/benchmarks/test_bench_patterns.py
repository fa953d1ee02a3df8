"""Which tiers each access pattern is measured on follows the run's tiers, whatever ``--latency`` names them."""

from __future__ import annotations

from benchmarks.patterns import PATTERNS
from benchmarks.storage import Tier


def test_the_extraction_runs_on_the_folder_and_every_latency_tier() -> None:
    extraction = PATTERNS["extraction"]
    assert extraction.runs_on(Tier("folder"))
    assert extraction.runs_on(Tier.of_latency(20, bandwidth_mbps=100))
    assert extraction.runs_on(Tier.of_latency(50, bandwidth_mbps=None))  # --latency 50: not silently skipped
    assert not extraction.runs_on(Tier("s3"))


def test_other_reads_run_on_every_tier() -> None:
    for tier in (Tier("folder"), Tier("s3"), Tier.of_latency(50, bandwidth_mbps=None)):
        assert PATTERNS["parcel-small"].runs_on(tier) and PATTERNS["chip-1"].runs_on(tier)


def test_a_region_under_a_relative_folder_makes_items_every_ingest_reads(tiny_region, tmp_path, monkeypatch):
    """``python -m benchmarks --work DIR`` with a relative DIR: the workload's items named their files relative
    to the current folder, ingest read them relative to the items file, and the measured ingest and appends
    rejected every scene ("file not found") yet were reported as measured. The hrefs are absolute now, and a
    measured ingest that rejects a scene fails its cell."""
    from types import SimpleNamespace

    import pytest

    from benchmarks.patterns import Workload, _ingest_result
    from cardcube.synth import SynthConfig
    from cardcube.synth.generate import SynthResult
    from cube.ledger import Rejection
    from ingest.job import ingest

    monkeypatch.chdir(tiny_region.out_dir.parent)
    region = SynthResult.written(tiny_region.out_dir.name, SynthConfig.tiny())
    workload = Workload.prepare(region, tmp_path / "items", appends=1)
    result = ingest(workload.append_items[0], tmp_path / "cube", collection="s2", progress=False, catalog=False)
    assert result.ok and len(result.added) == 1
    lost = SimpleNamespace(rejected=(Rejection("S2A_X", "read", "band B02 file not found: x.tif"),))
    with pytest.raises(RuntimeError, match=r"rejected 1 scene\(s\), so its figures measure no real run: S2A_X: band"):
        _ingest_result(lost)
