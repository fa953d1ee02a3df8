"""``python -m benchmarks`` refuses bad arguments with one line and exit status 2, before generating or
measuring anything (a bad tier or pattern used to surface as a traceback minutes into a run)."""

from __future__ import annotations

import pytest

from benchmarks import __main__ as cli


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
