"""The committed extraction reports are what their raw JSON says: re-rendered, they come out the same, so no
figure in a report was edited by hand. The figures themselves come from ``python -m benchmarks.extraction``
(minutes on the demo territories: a benchmark, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.extraction import report

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# every run, the latest last: a day's folder, or a session's in it (2026-12-06/session45/extraction/)
RUNS = sorted(p.parent for p in RESULTS.rglob("extraction.json"))
MEMORY_RUNS = sorted(p.parent for p in RESULTS.rglob("extraction-memory.json"))


@pytest.mark.parametrize("run", RUNS[-1:], ids=lambda p: p.name)
def test_latest_report_is_its_json(run: Path) -> None:
    results = json.loads((run / "extraction.json").read_text())
    assert (run / "extraction.md").read_text() == report(results)
    for r in results:  # the ratios in the JSON are the ratios of its own figures
        rates = r["parcel_dates_per_s"]
        assert rates["cardcube"] == pytest.approx(r["parcels_ok"] * r["dates"] / r["cardcube"]["seconds"])
        for k, up in r["speedup_vs_exactextract"].items():
            assert up == pytest.approx(rates["cardcube"] / rates[f"exactextract_{k}"])


@pytest.mark.parametrize("run", MEMORY_RUNS[-1:], ids=lambda p: p.name)
def test_latest_memory_report_is_its_json(run: Path) -> None:
    from benchmarks.extraction_memory import report as memory_report

    results = json.loads((run / "extraction-memory.json").read_text())
    assert (run / "extraction-memory.md").read_text() == memory_report(results)
    assert [r["size_km"] for r in results] == sorted(r["size_km"] for r in results) and len(results) >= 2


def test_the_report_states_the_command_of_its_run() -> None:
    from benchmarks.extraction import command

    results = json.loads((RUNS[-1] / "extraction.json").read_text())
    assert command(results) == "python -m benchmarks.extraction"
    small = [{**results[0], "size_km": 1.0,
              "exactextract": {k: {**v, "scenes": 2} for k, v in results[0]["exactextract"].items()}}]
    assert command(small) == "python -m benchmarks.extraction --sizes 1 --scenes 2"
    assert "one run of `python -m benchmarks.extraction --sizes 1 --scenes 2`" in report(small)


def test_one_territory_claims_no_growth() -> None:
    results = json.loads((RUNS[-1] / "extraction.json").read_text())
    text = report(results[:1])
    assert "one territory was measured, so this run shows no growth" in text and "+0%" not in text


def test_the_memory_report_states_a_command_that_runs() -> None:
    from benchmarks.extraction_memory import command

    run = MEMORY_RUNS[-1]
    results = json.loads((run / "extraction-memory.json").read_text())
    assert command(results) == "python -m benchmarks.extraction_memory --work DIR"  # --work is required
    assert command(results[:2]) == "python -m benchmarks.extraction_memory --work DIR --sizes 10,20"


def test_small_counts_of_rows_are_written_out() -> None:
    """A 1 km run said "0.0 million rows of statistics encoded"."""
    results = json.loads((RUNS[-1] / "extraction.json").read_text())
    assert " million rows of statistics encoded" in report(results)
    small = [{**results[0], "cardcube": {**results[0]["cardcube"], "rows": 33_140}}]
    assert "and 33,140 rows of statistics encoded" in report(small)


def test_the_read_phase_is_set_against_the_raw_floor_s_cpu_time_when_measured() -> None:
    """The raw floor's wall time is its threads' CPU spread over the cores, the read phase's CPU their sum: a run
    that measured the floor's CPU sets the two side by side, and says where the chunks decoded twice come from."""
    before = next(r for r in reversed(RUNS) if "cpu_seconds" not in json.loads((r / "extraction.json").read_text())[
        -1]["read_decompress"]["raw"])  # the latest run that did not measure the floor's CPU (before 2026-12-06)
    results = json.loads((before / "extraction.json").read_text())
    assert "The read phase's CPU time" not in report(results)
    big = results[-1]
    measured = [{**big, "read_decompress": {**big["read_decompress"],
                                            "raw": {**big["read_decompress"]["raw"], "cpu_seconds": 0.5}},
                 "cardcube": {**big["cardcube"], "chunks": 3960,
                              "phase_cpu_seconds": {"read": 0.8, "statistics": 1.0, "write": 0.4}}}]
    text = report(measured)
    raw_chunks = big["read_decompress"]["raw"]["chunks"]
    assert f"{big['size_km']:g} km: 0.80 s against 0.50 s (1.6x), {3960 / raw_chunks - 1:.0%} more chunks" in text
    assert "stretched right and down by its parcels that cross the block's edges" in text
    assert "decoded twice" in text  # a run before the units shared the chunks they both read
    shared = report([{**measured[0], "cardcube": {**measured[0]["cardcube"], "decoded_once": True}}])
    assert "read twice but decoded once" in shared and "decoded twice" not in shared


def test_a_run_without_percentiles_slower_beyond_the_noise_is_not_called_noise() -> None:
    """A 1 km run took 0.20 s without the percentiles against 0.14 s with them, and its report said "slower without
    them: 40 %, within this machine's run-to-run noise of about 15 %"."""
    from benchmarks.extraction import _noise

    assert _noise(1.0, 1.2) == ""
    assert "10 %, within this machine's run-to-run noise of about 15 %" in _noise(1.1, 1.0)
    far = _noise(0.20, 0.14)
    assert "43 %, beyond this machine's run-to-run noise of about 15 %" in far and "within" not in far
