"""Smoke tests of ``benchmarks.service`` (the REST service with and without its array cache) and
``benchmarks.extraction_update`` (``extract --update`` against extracting again) at their tiniest: one
request or pass each, on the tests' tiny region. They check that the measurements run end to end and that the
reports hold their counts and say what was run, never how fast anything is; and that the committed reports are
what their JSON renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import extraction_update, service, service_load

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def served(tiny_region, tmp_path_factory):
    return service.run(2.0, 1, 0.0, None, tmp_path_factory.mktemp("service-bench"), region=tiny_region,
                       log=lambda _: None)


@pytest.mark.s3
@pytest.mark.slow
def test_the_service_is_measured_with_and_without_its_cache(served):
    assert set(served["routes"]) == {"season", "chip", "sheet"} and len(served["parcels"]) == 1
    for key, r in served["routes"].items():
        assert r["identical"], key  # the same bytes from both servers
        off, on = r["without_cache"], r["with_cache"]
        for side in (off, on):
            assert len(side["seconds"]) == len(side["requests"]) == 1 and side["GET"][0] > 0
            assert side["requests"][0] == side["GET"][0] + side["HEAD"][0] + side["LIST"][0]
        # the cache leaves the arrays' metadata and shard indexes unfetched: fewer requests, never more
        assert on["requests"][0] < off["requests"][0], key
        assert r["speedup"] == pytest.approx(off["median_s"] / on["median_s"])
    text = service.report(served)
    assert service.report(json.loads(json.dumps(served))) == text  # the report is its JSON's
    assert "one run of `python -m benchmarks.service --reps 1 --latency 0 --bandwidth 0`" in text
    assert "| a parcel's season of B04 (`timeseries?bands=B04`) |" in text and "**no**" not in text


@pytest.mark.s3
@pytest.mark.slow
def test_the_service_is_measured_under_concurrent_load(tiny_region, tmp_path):
    r = service_load.run((1, 2), (2,), 1, 5, 0.0, None, tmp_path, region=tiny_region, log=lambda _: None)
    assert [(c["reads"], c["clients"], c["requests"]) for c in r["cells"]] == [(1, 2, 2), (2, 2, 2)]
    for c in r["cells"]:
        assert c["not_200"] == [] and c["bytes"] > 0 and c["median_s"] <= c["slowest_s"]
        assert c["answers_per_s"] == pytest.approx(c["requests"] / c["wall_s"])
    text = service_load.report(r)
    assert service_load.report(json.loads(json.dumps(r))) == text  # the report is its JSON's
    assert ("one run of `python -m benchmarks.service_load --reads 1,2 --clients 2 --requests 1 --parcels 5 "
            "--latency 0 --bandwidth 0`") in text
    assert text.count("\n| 1 | 2 |") == text.count("\n| 2 | 2 |") == 1


@pytest.mark.slow
def test_an_update_is_measured_against_a_whole_extraction(tiny_region, tmp_path):
    r = extraction_update.measure(2.0, tmp_path, region=tiny_region, repeats=1)
    assert r["dates"] == r["dates_before"] + 1 and r["added_scenes"] >= 1
    first, update, whole = r["first"], r["update"], r["whole"]
    assert update["version"] == whole["version"] == first["version"] + 1
    assert update["parcels_ok"] == whole["parcels_ok"] == r["parcels_ok"] > 0
    assert 0 < update["rows"] < whole["rows"] and 0 < update["chunks"] <= whole["chunks"]
    assert len(update["seconds_runs"]) == len(whole["seconds_runs"]) == 1
    text = extraction_update.report([r])
    assert "one run of `python -m benchmarks.extraction_update --sizes 2`" in text and "one pass each" in text


@pytest.mark.parametrize(("main", "argv"), [
    (service.main, ["--reps", "0"]), (service.main, ["--size-km", "0.1"]), (service.main, ["--latency", "-1"]),
    (service.main, ["--from-json", "no-such.json"]), (extraction_update.main, ["--sizes", "0.1"]),
    (extraction_update.main, ["--from-json", "no-such.json"]), (service_load.main, ["--reads", "0"]),
    (service_load.main, ["--clients", "2,x"]), (service_load.main, ["--from-json", "no-such.json"])])
def test_bad_arguments_are_refused_before_any_work(main, argv, capsys, monkeypatch) -> None:
    monkeypatch.setattr(service, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    monkeypatch.setattr(extraction_update, "measure", lambda *a, **k: pytest.fail("the benchmark ran"))
    monkeypatch.setattr(service_load, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("error:") == 1


@pytest.mark.parametrize(("stem", "render"), [("service", service.report), ("service-load", service_load.report),
                                              ("extraction-update", extraction_update.report)])
def test_the_latest_committed_report_is_its_json(stem: str, render) -> None:
    runs = sorted(p.parent for p in RESULTS.glob(f"*/{stem}.json"))
    assert runs, f"no committed {stem}.json"
    assert (runs[-1] / f"{stem}.md").read_text() == render(json.loads((runs[-1] / f"{stem}.json").read_text()))
