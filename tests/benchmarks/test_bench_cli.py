"""``python -m benchmarks`` refuses bad arguments with one line and exit status 2, before generating or
measuring anything (a bad tier or pattern used to surface as a traceback minutes into a run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import harness


@pytest.mark.parametrize(("argv", "message"), [
    (["--size", "abc"], "--size abc"),
    (["--size", "0.1"], "at least 0.4 km"),
    (["--reps", "0"], "at least 1"),
    (["--sweep", "time=x"], "whole number"),
    (["--patterns", "parcel-smal"], "unknown parcel-smal"),
    (["--append-tiers", "s3-slow"], "unknown storage tier 's3-slow'"),
    (["--sweep-tiers", ""], "--sweep-tiers"),
    (["--bands", "B99"], "B99"),
    (["--bands", "SCL"], "SCL"),
    (["--from-json", "no-such-results.json"], "no such file"),
    (["--threads", "0"], "--threads 0"),  # used to fail after generating the region, in the thread pool
    (["--latency", "-20"], "--latency -20"),  # used to run with a negative latency
    (["--latency", "20,nan"], "--latency 20,nan"),
    (["--latency", "0"], "give milliseconds > 0"),  # a second plain S3 tier, a ZeroDivisionError after the run
    (["--bandwidth", "-1"], "--bandwidth -1"),
])
def test_bad_arguments_stop_before_any_work(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.config(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


def test_bands_are_taken_in_any_case() -> None:
    assert cli.config(["--bands", "b04,ndvi"])[0].bands == ("B04", "NDVI")
    assert cli.config(["--bands", "all"])[0].bands == ("all",)


def test_an_earlier_runs_scratch_folder_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "writes").mkdir()  # the cubes an earlier run's ingest left: ingesting again would add nothing
    with pytest.raises(SystemExit):
        cli.config(["--work", str(tmp_path)])
    assert "must be new or empty" in capsys.readouterr().err
    assert cli.config(["--work", str(tmp_path / "new")])[1].work == tmp_path / "new"


@pytest.mark.parametrize("content", ["not json at all", "[1, 2]", "\xff\xfe"])
def test_a_from_json_that_is_no_results_json_is_one_line(content: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "afile"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(SystemExit) as stop:
        cli.config(["--from-json", str(path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--from-json {path}" in err and "Traceback" not in err


@pytest.mark.parametrize(("out", "date"), [("afile", None), ("afile/below", None), ("new", "afile")])
def test_a_bad_out_is_refused_before_the_run(out: str, date: str | None, tmp_path: Path, monkeypatch,
                                             capsys) -> None:
    """``--out`` a file, a folder below one, or ``OUT/DATE`` a file, was found by ``report.write`` after the whole
    run: a traceback, no report printed, no results.json."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "afile").write_text("")
    monkeypatch.setattr(harness, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    with pytest.raises(SystemExit) as stop:
        cli.main(["--out", str(tmp_path / out), *(["--date", date] if date else [])])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--out" in err and "not a folder" in err and "Traceback" not in err


def test_a_folder_holding_an_earlier_run_s_report_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """A second run of the day (or ``--date`` of a committed report) replaced that run's results.json and report."""
    earlier = tmp_path / "2026-12-01"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"config": {}, "cells": []}')
    monkeypatch.setattr(harness, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    with pytest.raises(SystemExit) as stop:
        cli.main(["--out", str(tmp_path), "--date", "2026-12-01"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "already holds the report of a run" in err and "--date" in err
    assert (earlier / "results.json").read_text() == '{"config": {}, "cells": []}'
    assert cli.config(["--out", str(tmp_path), "--date", "2026-12-02"])[0].report_dir == tmp_path / "2026-12-02"


def test_a_new_out_folder_is_taken_and_not_made_before_the_run(tmp_path: Path) -> None:
    cfg = cli.config(["--out", str(tmp_path / "a" / "b")])[0]
    assert cfg.report_dir.parent == tmp_path / "a" / "b" and not (tmp_path / "a").exists()


def test_a_report_rendered_again_keeps_its_results_and_a_write_cut_short_keeps_the_earlier_files(tmp_path, capsys):
    """--from-json wrote its results.json anew (the only copy of a run's figures: a write cut short by a full disk
    lost them), and every file was written in place: a run stopped while writing left a report cut short. The input
    is left as it is, and each file is written whole or not at all. Here the OS refuses writes past 4 KiB
    (``RLIMIT_FSIZE``, as a full disk would)."""
    resource, signal = pytest.importorskip("resource"), pytest.importorskip("signal")
    run = min(p.parent for p in (Path(__file__).resolve().parents[2] / "benchmarks" / "results").glob("*/results.json"))
    source = tmp_path / "results.json"
    source.write_text(json.dumps(json.loads((run / "results.json").read_text()), indent=2))  # as saved by hand
    before = source.read_bytes()
    cli.main(["--from-json", str(source)])
    assert source.read_bytes() == before
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"report.md", "latency.png"} <= earlier.keys() and len(earlier["latency.png"]) > 2**12
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**12, limits[1]))
        with pytest.raises(OSError):
            cli.main(["--from-json", str(source)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == earlier  # none cut short, no part left


@pytest.mark.parametrize(("signum", "code", "said"), [(2, 130, "Ctrl-C"), (15, 143, "SIGTERM")])
def test_a_stopped_run_says_so_and_leaves_no_scratch(signum: int, code: int, said: str, tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    """Ctrl-C ended a run in a traceback from deep in a reader; SIGTERM (``timeout``, ``kill``) killed it outright, its
    scratch folder (the region and every layout's copy) left in the temporary folder."""
    import os
    import signal
    import time

    scratch: list[Path] = []

    def run(cfg, work):
        scratch.append(work)
        (work / "source").mkdir()
        os.kill(os.getpid(), signum)
        time.sleep(5)
        pytest.fail("the signal did not stop the run")

    monkeypatch.setattr(harness, "run", run)
    former = signal.getsignal(signal.SIGTERM)
    # Ctrl-C as in a terminal: a background job (`make test &`, nohup) starts with SIGINT ignored, which Python keeps
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stop:
            cli.main(["--out", str(tmp_path / "out")])
    finally:
        signal.signal(signal.SIGINT, interrupt)
    err = capsys.readouterr().err
    assert stop.value.code == code and f"stopped ({said})" in err and "no report written" in err
    assert not scratch[0].exists() and not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) is former


@pytest.mark.parametrize(("module", "argv", "missing", "named"), [
    ("benchmarks", ["--size", "small"], "odc.stac", "odc-stac"),
    ("benchmarks.service", [], "httpx", "httpx"),
    ("benchmarks.extraction", ["--sizes", "2"], "exactextract", "exactextract"),
    ("benchmarks.tile_creation", [], "moto", "moto[server]"),
    ("benchmarks.retry_modes", [], "moto", "moto[server]"),
])
def test_a_module_of_the_bench_extra_missing_is_named_before_any_work(module, argv, missing, named, tmp_path):
    """Installed without the bench extra (`pip install cardcube`), each benchmark generated and ingested its region,
    minutes at the default size, then ended in an ImportError traceback (`python -m benchmarks`: moto's server;
    benchmarks.service: httpx). It is refused at once (exit 2), naming what is missing and the extra. The module is
    made missing as Python's import system takes it (a None in sys.modules)."""
    import subprocess
    import sys

    work = tmp_path / "work"
    extra = ["--work", str(work)] if module == "benchmarks" else []
    script = (f"import runpy, sys\nsys.modules[{missing!r}] = None\n"
              f"sys.argv = [{module!r}, *{[*argv, *extra, '--out', str(tmp_path / 'out')]!r}]\n"
              f"runpy.run_module({module!r}, run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert f"needs {named}, of cardcube's bench extra: pip install 'cardcube[bench]'" in run.stderr
    assert "Traceback" not in run.stderr and not work.exists() and not (tmp_path / "out").exists()
