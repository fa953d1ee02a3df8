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
