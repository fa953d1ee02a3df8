"""The stand-alone benchmark scripts check their arguments before minutes of work, keep their figures where
asked, and say so when nothing is kept. No measuring here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import (
    buffer_trial,
    extraction,
    extraction_memory,
    extraction_update,
    ingest_throughput,
    ledger_size,
    retry_modes,
    service,
    service_load,
    tile_creation,
)
from benchmarks.options import check_out


def test_ingest_figures_go_to_a_file_or_into_a_folder(tmp_path: Path) -> None:
    assert ingest_throughput.output_path(tmp_path / "x.json", "s2", 4.0) == tmp_path / "x.json"
    assert ingest_throughput.output_path(tmp_path, "s2", 4.0) == tmp_path / "ingest-s2-4km.json"
    assert ingest_throughput.output_path(tmp_path / "new", "s1", 2.5) == tmp_path / "new" / "ingest-s1-2.5km.json"


def _no_run(*args, **kwargs):
    raise AssertionError("the benchmark ran")


def test_ingest_writes_its_figures_into_a_new_folder(tmp_path: Path, monkeypatch) -> None:
    figures = {"scenes": 1, "load_average": 0.5,
               "initial": {"scenes_per_min": 1.0, "MB_per_s": 1.0, "written_MB": 1.0, "write_amplification": 1.0,
                           "seconds": 1.0, "cpu_seconds": 1.5},
               "appends": {"scenes_per_min": 1.0, "written_MB": 1.0, "write_amplification": 1.0, "seconds": 1.0,
                           "cpu_seconds": 1.5},
               "expire": {"initial_stored_MB": 1.0, "appended_stored_MB_before": 1.0,
                          "appended_stored_MB_after": 1.0, "versions_expired": 0, "seconds": 0.0}}
    monkeypatch.setattr(ingest_throughput, "run", lambda *a: figures)
    ingest_throughput.main(["--out", str(tmp_path / "results" / "today"), "--size-km", "1"])
    saved = json.loads((tmp_path / "results" / "today" / "ingest-s2-1km.json").read_text())
    assert {k: saved[k] for k in figures} == figures
    # what repeats it, when and where (it had no command, date or machine)
    assert saved["command"] == "python -m benchmarks.ingest_throughput --size-km 1"
    assert saved["date"] and saved["environment"]["cpus"] and saved["targets"]["appends_write_amplification"] == 3
    assert ingest_throughput.command(4.0, "s2") == "python -m benchmarks.ingest_throughput"


@pytest.mark.parametrize("argv", [["--size-km", "0.1"], ["--out", "{file}/below-a-file"]])
def test_ingest_refuses_bad_arguments_before_running(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(ingest_throughput, "run", _no_run)
    with pytest.raises(SystemExit) as stop:
        ingest_throughput.main([a.format(file=tmp_path / "file") for a in argv])
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize("main", [extraction.main, lambda argv: extraction_memory.main(["--work", "w", *argv])])
@pytest.mark.parametrize("sizes", ["x", "0.1", ""])
def test_extraction_sizes_are_checked(main, sizes: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--sizes", sizes])
    assert stop.value.code == 2 and "--sizes" in capsys.readouterr().err


def test_extraction_sizes_take_km() -> None:
    assert extraction.parse_sizes("5, 10km") == (5.0, 10.0)


def test_a_report_not_kept_says_how_to_keep_it(tmp_path: Path, capsys) -> None:
    extraction.save_report(None, "extraction", lambda _: "text\n", [])
    assert "--out" in capsys.readouterr().err
    extraction.save_report(tmp_path / "out", "extraction", lambda _: "text\n", [{"a": 1}])
    assert (tmp_path / "out" / "extraction.md").read_text() == "text\n"
    assert json.loads((tmp_path / "out" / "extraction.json").read_text()) == [{"a": 1}]


def test_tile_creation_counts_the_requests_of_each_latency() -> None:
    """One short run (moto, no added latency): its row holds the requests the proxy counted, by kind."""
    rows = tile_creation.measure([0.0], collection="s1", repeats=1)
    assert [r["latency_ms"] for r in rows] == [0.0]
    assert rows[0]["by_kind"]["PUT"] > 0 and rows[0]["requests"] == sum(rows[0]["by_kind"].values())
    assert "| 0 ms |" in tile_creation.table(rows)


def test_retry_modes_counts_the_runs_of_each_mode_and_rate(tmp_path: Path) -> None:
    """The smallest run (two scenes, one repetition, unthrottled: every SlowDown costs seconds of back-off): an ingest
    and a parcel read per mode, each holding the requests the proxy counted and none injected; a ratio per step; a row
    of the table each."""
    measured = retry_modes.measure([0.0], size_km=0.4, repeats=1, parcels=1, scenes=2, work=tmp_path)
    assert measured["scenes"] == 2
    rows = measured["rows"]
    assert sorted((r["mode"], r["step"]) for r in rows) == [("adaptive", "ingest"), ("adaptive", "read"),
                                                            ("standard", "ingest"), ("standard", "read")]
    assert all(r["ok"] and r["requests"] > 0 and r["injected"] == 0 and len(r["runs_s"]) == 1 for r in rows)
    assert [(r["rate"], r["step"]) for r in retry_modes.ratios(rows)] == [(0.0, "ingest"), (0.0, "read")]
    assert retry_modes.table(rows).count("| 0% |") == 4


@pytest.mark.parametrize("argv", [["--rates", "x"], ["--rates", "1"], ["--rates", "0,-0.1"], ["--repeats", "0"],
                                  ["--size-km", "0.1"]])
def test_retry_modes_refuses_bad_options(argv: list[str], capsys, no_runs) -> None:
    assert argv[0] in _refuses(retry_modes.main, argv, capsys)


def test_ledger_size_measures_a_history_and_its_opening() -> None:
    """One short history (moto, no added latency): two versions, each its record and its details object; opening
    the latest lists the ledger and reads the record, and reads fewer bytes than the ledger holds."""
    (row,) = ledger_size.measure([(2, 3)], versions=2, latency_ms=0.0, repeats=1)
    assert (row["scenes"], row["versions"], row["ledger_objects"], row["open_s3_requests"]) == (6, 2, 4, 2)
    assert row["latest_record_bytes"] <= row["open_s3_bytes"] < row["ledger_bytes"]
    assert "| 2 x 3 |" in ledger_size.table([row], 0.0)


@pytest.mark.s3
def test_a_user_s_aws_profile_is_no_part_of_the_benchmarks_s3(monkeypatch, capsys) -> None:
    """``AWS_PROFILE`` of a profile this machine's config lacks (a shell set up for another account) ended every S3
    benchmark in botocore's ProfileNotFound before any figure; their S3 is their own moto server with its own keys."""
    import os

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.delenv("AWS_CONFIG_FILE", raising=False)
    results = tile_creation.main(["--latency-ms", "0", "--repeats", "1"])
    assert results["rows"][0]["requests"] > 0
    assert os.environ["AWS_PROFILE"] == "no-such-profile" and "AWS_CONFIG_FILE" not in os.environ  # as it was


def test_ledger_size_states_the_command_that_repeats_it(capsys, monkeypatch) -> None:
    """The README says every benchmark's report states the command that repeats it; ledger_size printed a table alone,
    its sizes, versions, latency and repeats nowhere."""
    import shlex

    runs: list = []
    monkeypatch.setattr(ledger_size, "measure", lambda sizes, **kw: runs.append((sizes, kw)) or [])
    ledger_size.main(["1x49", "10x49", "--versions", "5", "--latency-ms", "50"])
    said = capsys.readouterr().out
    stated = "python -m benchmarks.ledger_size 1x49 10x49 --versions 5 --latency-ms 50 --repeats 3"
    assert f"`{stated}`" in said
    ledger_size.main(shlex.split(stated)[3:])  # the stated command runs the same
    assert runs[0] == runs[1]


@pytest.mark.parametrize("argv", [["0x4"], ["10"], ["1x501"], ["--versions", "0"], ["--latency-ms", "-1"]])
def test_ledger_size_refuses_bad_options(argv: list[str], capsys, no_runs) -> None:
    named = argv[0] if argv[0].startswith("--") else "argument sizes"
    assert named in _refuses(ledger_size.main, argv, capsys)


def test_the_figures_are_kept_before_the_report_is_made(tmp_path: Path) -> None:
    """A report that fails (one memory size: IndexError) used to lose the JSON too: it was rendered first."""
    def broken(results):
        raise IndexError("string index out of range")

    with pytest.raises(IndexError):
        extraction.save_report(tmp_path / "out", "extraction-memory", broken, [{"size_km": 0.4}])
    assert json.loads((tmp_path / "out" / "extraction-memory.json").read_text()) == [{"size_km": 0.4}]


def test_an_out_folder_is_checked_not_made(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    (tmp_path / "afile").write_text("")
    (tmp_path / "dir" / "report.md").mkdir(parents=True)
    check_out(parser, tmp_path / "new" / "deeper", names=("report.md",))
    assert not (tmp_path / "new").exists()
    for out, names in ((tmp_path / "afile", ()), (tmp_path / "afile" / "below", ()),
                       (tmp_path / "dir", ("report.md",))):
        with pytest.raises(SystemExit):
            check_out(parser, out, names=names)


def _refuses(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err
    return err


@pytest.fixture
def no_runs(monkeypatch) -> None:
    for module, name in ((extraction, "run_size"), (extraction_memory, "measure"), (extraction_update, "measure"),
                         (service, "run"), (service_load, "run"), (tile_creation, "measure"), (ledger_size, "measure"),
                         (ingest_throughput, "run"), (buffer_trial, "measure_fields"),
                         (buffer_trial, "measure_folded"), (retry_modes, "measure")):
        monkeypatch.setattr(module, name, _no_run)


@pytest.mark.parametrize(("main", "stem"), [
    (extraction.main, "extraction"), (extraction_update.main, "extraction-update"), (service.main, "service"),
    (service_load.main, "service-load"),
    (lambda argv: extraction_memory.main(["--work", "w", *argv]), "extraction-memory"),
    (tile_creation.main, "tile-creation"), (buffer_trial.main, "buffer-trial"), (retry_modes.main, "retry-modes")])
@pytest.mark.parametrize("out", ["afile", "afile/below", "new-with-a-folder-in-place"])
def test_a_bad_out_is_refused_before_the_run(main, stem: str, out: str, tmp_path: Path, no_runs, capsys) -> None:
    """A bad ``--out`` was found after the run (minutes of figures lost, with a traceback)."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "new-with-a-folder-in-place" / f"{stem}.json").mkdir(parents=True)
    assert "--out" in _refuses(main, ["--out", str(tmp_path / out)], capsys)


def test_extraction_memory_needs_two_sizes(capsys, no_runs) -> None:
    """One size measured for minutes, then failed in its report (IndexError), losing both files."""
    assert "at least two" in _refuses(extraction_memory.main, ["--work", "w", "--sizes", "0.4"], capsys)


@pytest.mark.parametrize("scenes", ["0", "1", "x"])
def test_extraction_refuses_fewer_than_two_scenes(scenes: str, capsys, no_runs) -> None:
    """``--scenes 0`` and ``1`` silently became 2."""
    assert "--scenes" in _refuses(extraction.main, ["--scenes", scenes], capsys)


@pytest.mark.parametrize("argv", [["--latency-ms", "abc"], ["--latency-ms", "-5"], ["--latency-ms", "0,-5"],
                                  ["--latency-ms", ""], ["--repeats", "0"]])
def test_tile_creation_refuses_bad_options(argv: list[str], capsys, no_runs) -> None:
    """``abc`` and ``--repeats 0`` were tracebacks; a negative latency was taken."""
    assert argv[0] in _refuses(tile_creation.main, argv, capsys)


def test_tile_creation_states_the_command_date_and_machine(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = [{"latency_ms": 20.0, "seconds": 1.0, "requests": 95, "by_kind": {"PUT": 75, "GET": 20},
             "peak_in_flight": 8}]
    monkeypatch.setattr(tile_creation, "measure", lambda latencies, **kw: rows)
    results = tile_creation.main(["--latency-ms", "20", "--repeats", "1", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "tile-creation.md").read_text()
    assert "one run of `python -m benchmarks.tile_creation --latency-ms 20 --repeats 1` on " + results["date"] in text
    assert f"Machine: {results['environment']['cpus']} CPUs" in text and "| 20 ms | 1.00 s | 95 |" in text
    assert json.loads((tmp_path / "out" / "tile-creation.json").read_text()) == results
    assert text in capsys.readouterr().out
    assert tile_creation.command({**results, "rows": [{**rows[0], "latency_ms": v} for v in (0, 20)],
                                  "repeats": 3}) == "python -m benchmarks.tile_creation"


def test_flag_memory_refuses_what_is_no_region_or_no_checkout_before_running(tmp_path: Path, capsys,
                                                                             monkeypatch) -> None:
    from benchmarks import flag_memory

    monkeypatch.setattr(flag_memory, "measure", _no_run)
    assert "not a region folder" in _refuses(flag_memory.main, ["--region", str(tmp_path)], capsys)
    (tmp_path / "extract-s1").mkdir()
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "parcels.parquet").write_text("")
    assert "--batch-sizes" in _refuses(flag_memory.main, ["--region", str(tmp_path), "--batch-sizes", "0"], capsys)
    assert "not a checkout" in _refuses(flag_memory.main, ["--region", str(tmp_path), "--before", str(tmp_path)],
                                        capsys)
    assert "--out" in _refuses(flag_memory.main, ["--region", str(tmp_path), "--out",
                                                  str(tmp_path / "source" / "parcels.parquet")], capsys)


@pytest.mark.parametrize("run", sorted(p.parent for p in (Path(__file__).parents[2] / "benchmarks" / "results")
                                       .glob("**/flag-memory.json"))[-1:], ids=lambda p: p.parent.parent.name)
def test_latest_flag_memory_report_is_its_json(run: Path) -> None:
    from benchmarks.flag_memory import report

    results = json.loads((run / "flag-memory.json").read_text())
    assert (run / "flag-memory.md").read_text() == report(results)
    assert [r["parcels"] for r in results] == sorted(r["parcels"] for r in results) and len(results) >= 2


@pytest.mark.parametrize("name", ["extraction", "extraction_memory", "extraction_update", "flag_memory",
                                  "ingest_throughput", "kernel", "ledger_size", "read_phase", "service",
                                  "service_load", "buffer_trial", "tile_creation"])
def test_each_script_s_usage_is_the_command_that_runs_it(name: str, capsys) -> None:
    """Six scripts' ``--help`` began ``usage: extraction.py ...`` (the file's name), where the README and the
    others say ``python -m benchmarks.extraction``: run as a file, a script fails on its package's imports."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m benchmarks.{name} ")
