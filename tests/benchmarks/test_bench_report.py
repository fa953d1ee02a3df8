"""The access-pattern report says what its run measured and how to repeat it: the committed report is what
its raw JSON renders, its command line gives back the run's settings, and its sentences follow the figures
(never how fast anything is)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import report, sweep

ROOT = Path(__file__).resolve().parents[2]
# the report the README calls the latest: the newest folder under benchmarks/results was a user's own run there (the
# README's quick look writes benchmarks/results/<today>/), and the suite failed against its single passes
LATEST = ROOT / re.search(r"Latest report:\s*\[[^]]*\]\(([^)]+)/report\.md\)", (ROOT / "README.md").read_text())[1]
# the run whose figures the tests below name: a fixed one, whichever the README calls the known_run
KNOWN_RUN = ROOT / "benchmarks" / "results" / "2026-12-01"


@pytest.fixture(scope="module")
def known_run() -> dict:
    return json.loads((KNOWN_RUN / "results.json").read_text())


@pytest.mark.parametrize("folder", [LATEST, KNOWN_RUN], ids=["latest", "2026-12-01"])
def test_a_committed_report_is_its_json(folder) -> None:
    assert (folder / "report.md").read_text() == report.render(json.loads((folder / "results.json").read_text()))


def _settings(argv: list[str]) -> dict:
    d = cli.config(argv)[0].to_dict()
    return {k: v for k, v in d.items() if k not in ("date", "out")}


@pytest.mark.parametrize("argv", [
    [],
    ["--size", "large", "--reps", "5"],
    ["--size", "3km", "--reps", "2", "--min-reps", "1", "--budget", "2.5", "--threads", "4", "--latency", "20,50",
     "--bandwidth", "0", "--patterns", "parcel-small,chip-1", "--bands", "b04,ndvi", "--sweep", "",
     "--ingest-tiers", "folder,s3", "--append-tiers", "folder", "--sweep-tiers", "s3"],
    ["--sweep", "time=8,space=128,shard_space=1024;time=16,space=64,shard_space=1024", "--bands", "all"],
])
def test_the_stated_command_repeats_the_run(argv: list[str]) -> None:
    cfg = cli.config(argv)[0].to_dict()
    stated = shlex.split(report.command(cfg))
    assert stated[:3] == ["python", "-m", "benchmarks"]
    assert _settings(stated[3:]) == _settings(argv)


def test_the_committed_run_states_its_command(known_run) -> None:
    assert report.command(known_run["config"]) == "python -m benchmarks --size default --reps 3"
    assert report.api_settings(known_run["config"]) == ""
    assert report.api_settings({**known_run["config"], "appends": 1}) == " (through the API: appends=1)"


def test_an_uncapped_bandwidth_is_said_so(known_run) -> None:
    results = copy.deepcopy(known_run)
    results["config"]["bandwidth_mbps"] = None
    text = report.render(results)
    assert "None" not in text and "no cap on bandwidth" in text


def _local(results: dict, pattern: str) -> dict:
    return next(c["summary"] for c in results["cells"]
                if (c["pattern"], c["layout"], c["tier"]) == (pattern, "tf-sharded", "folder"))


def test_data_gets_per_shard_come_from_the_key_log(known_run) -> None:
    assert "Each shard touched costs 2 data GETs (its index, then the chunk)." in report.render(known_run)
    results = copy.deepcopy(known_run)
    for pattern in ("parcel-small", "parcel-large"):
        s = _local(results, pattern)
        s["data_gets"] = s["objects_read"]  # one range request per shard, no separate index read
    text = report.render(results)
    assert "2 data GETs" not in text
    assert "Each shard touched costs 1 data GETs." in text and "1.0 data GETs per shard;" in text


def test_the_compacting_append_is_told_by_its_writes(known_run) -> None:
    assert "the append that compacts the hot buffer into a time block: 30.9 s" in report.render(known_run)
    results = copy.deepcopy(known_run)
    for c in results["cells"]:
        if c["pattern"] == "append":
            for r in c["reps"]:
                r["result"]["write_amplification"] = 1.2
    text = report.render(results)
    assert "compacts the hot buffer into" not in text
    assert "One-date appends on s3-20ms: 9.5 to 30.9 s (none compacted the hot buffer)." in text


def test_each_append_is_a_row_of_its_own(known_run) -> None:
    """An append cell's repetitions are different appends, one of them compacting the hot buffer: its "median ms" was
    no append's time (1,216 ms on the folder of 2026-12-01, of 2,044 and 387; 20,200 on S3, of 30,884 and 9,516), nor
    its PUTs and GETs any append's. A run whose method says so gets a row per append."""
    from benchmarks.harness import APPEND_ROWS

    results = copy.deepcopy(known_run)
    results["method"] = {**results.get("method", {}), "append_rows": APPEND_ROWS}
    table = report.write_table(results)
    for c in (c for c in results["cells"] if c["pattern"] == "append"):
        assert f"| append | {c['tier']} |" not in table and report.ms(c["summary"]["median_s"]) not in table
        for i, r in enumerate(c["reps"]):
            row = next(line for line in table.splitlines() if line.startswith(f"| append {i + 1} of {len(c['reps'])}")
                       and f"| {c['tier']} |" in line)
            assert f"| 1 | {report.ms(r['seconds'])} |" in row and f"| {report._num(r['counts']['GET'])} |" in row
            assert ("(compacts)" in row) == (r["result"]["write_amplification"] > report.COMPACTING)
    assert "| ingest | folder | 1 |" in table
    assert report.write_table(known_run) in report.render(known_run)  # its report unchanged


def test_a_run_without_a_parcel_season_neither_confirms_nor_refutes_the_headline(known_run) -> None:
    """``--patterns chip-1`` measured no parcel season, and its report said both expected headlines were "refuted"
    beneath an empty list of parcels."""
    results = copy.deepcopy(known_run)
    results["cells"] = [c for c in results["cells"] if c["pattern"] == "chip-1"]
    results["patterns"] = [p for p in results["patterns"] if p["key"] == "chip-1"]
    results["checks"] = {k: v for k, v in results["checks"].items() if k == "chip-1"}
    text = report.render(results)
    headline = text[text.index("## Headline"):text.index("## Latency")]
    said = headline.replace("neither confirmed nor refuted", "")
    assert "refuted" not in said and "confirmed" not in said
    assert "No parcel season was measured" in headline and "A 128 px chip at 1 date" in headline
    assert "**refuted** at this size" in report.render(known_run)  # a run that measured them says what they showed


def test_a_sweep_with_no_measured_shape_is_reported_not_raised(known_run) -> None:
    results = copy.deepcopy(known_run)
    for shape in results["sweep"]["shapes"]:
        for c in shape["cells"]:
            c["summary"] = {"n": 0, "error": "RuntimeError: boom"}
    rec = sweep.recommend(results["sweep"]["shapes"], "s3-20ms")
    assert rec["best"] is None and rec["keeps_default"]
    results["sweep"]["recommendation"] = rec
    text = "\n".join(report.sweep_md(results))
    assert "No recommendation" in text and "Recommendation:" not in text


def test_single_passes_are_not_passed_off_as_medians(known_run) -> None:
    assert "single cold pass" not in report.render(known_run)
    results = copy.deepcopy(known_run)
    results["config"]["reps"] = results["config"]["min_reps"] = 1
    assert "One repetition per cell: every time is a single cold pass, not a median" in report.render(results)


def test_every_request_of_the_headline_is_named(known_run) -> None:
    """A run whose S3 reads also counted the store's check that the endpoint answers said "33 requests (31 GET,
    0 HEAD, 1 LIST)" and "9 are metadata" with 8 itemised."""
    results = copy.deepcopy(known_run)
    for c in results["cells"]:
        if c["layout"] == "tf-sharded" and c["tier"].startswith("s3") and c["summary"]["n"]:
            c["summary"]["other"] += 1
            c["summary"]["requests"] += 1
    text = report.render(results)
    assert "33 requests (31 GET, 0 HEAD, 1 LIST, 1 other: the check that the S3 endpoint answers)" in text
    assert ("1 listing of the ledger's versions, 1 read of its record and 6 arrays' `zarr.json` (cold and hot parts "
            "holding the dates asked for), and 1 other request, `open_store`'s check that the S3 endpoint answers"
            in text)
    assert "of the 33 requests of a small parcel's season, 9 are metadata" in text
    assert "; and the check that the S3 endpoint answers, a `HEAD /` on the service)" in text
    # none counted: said as before
    assert "other" not in report.render(known_run).split("## Latency by pattern")[0].split("Other figures")[0]


def test_a_figure_of_another_run_is_said_to_be_one(known_run) -> None:
    """The report stated "about 2x over a whole season of appends" as if this run had measured it."""
    text = report.render(known_run)
    assert "over a whole season of one-date appends it is about 2x" not in text
    stated = report.SEASON_APPENDS
    assert (f"Not measured in this run: over a whole season of one-date appends (49 dates of a 4 km region), "
            f"another run, of `python -m benchmarks.ingest_throughput`, measured 1.95x cumulative (its figures: "
            f"`{stated['json']}`).") in text
    measured = json.loads((ROOT / stated["json"]).read_text())  # the figure is that file's
    assert (measured["size_km"], measured["scenes"]) == (stated["size_km"], stated["scenes"])
    assert round(measured["appends"]["write_amplification"], 2) == stated["write_amplification"]
