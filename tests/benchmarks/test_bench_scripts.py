"""The stand-alone benchmark scripts check their arguments before minutes of work, keep their figures where
asked, and say so when nothing is kept. No measuring here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import extraction, extraction_memory, ingest_throughput, tile_creation


def test_ingest_figures_go_to_a_file_or_into_a_folder(tmp_path: Path) -> None:
    assert ingest_throughput.output_path(tmp_path / "x.json", "s2", 4.0) == tmp_path / "x.json"
    assert ingest_throughput.output_path(tmp_path, "s2", 4.0) == tmp_path / "ingest-s2-4km.json"
    assert ingest_throughput.output_path(tmp_path / "new", "s1", 2.5) == tmp_path / "new" / "ingest-s1-2.5km.json"


def _no_run(*args, **kwargs):
    raise AssertionError("the benchmark ran")


def test_ingest_writes_its_figures_into_a_new_folder(tmp_path: Path, monkeypatch) -> None:
    figures = {"scenes": 1, "initial": {"scenes_per_min": 1.0, "MB_per_s": 1.0, "written_MB": 1.0,
                                        "write_amplification": 1.0},
               "appends": {"scenes_per_min": 1.0, "written_MB": 1.0, "write_amplification": 1.0},
               "expire": {"initial_stored_MB": 1.0, "appended_stored_MB_before": 1.0,
                          "appended_stored_MB_after": 1.0, "versions_expired": 0, "seconds": 0.0}}
    monkeypatch.setattr(ingest_throughput, "run", lambda *a: figures)
    ingest_throughput.main(["--out", str(tmp_path / "results" / "today")])
    assert json.loads((tmp_path / "results" / "today" / "ingest-s2-4km.json").read_text()) == figures


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
    extraction.save_report(None, "extraction", "text\n", [])
    assert "--out" in capsys.readouterr().err
    extraction.save_report(tmp_path / "out", "extraction", "text\n", [{"a": 1}])
    assert (tmp_path / "out" / "extraction.md").read_text() == "text\n"
    assert json.loads((tmp_path / "out" / "extraction.json").read_text()) == [{"a": 1}]


def test_tile_creation_counts_the_requests_of_each_latency() -> None:
    """One short run (moto, no added latency): its row holds the requests the proxy counted, by kind."""
    rows = tile_creation.measure([0.0], collection="s1", repeats=1)
    assert [r["latency_ms"] for r in rows] == [0.0]
    assert rows[0]["by_kind"]["PUT"] > 0 and rows[0]["requests"] == sum(rows[0]["by_kind"].values())
    assert "| 0 ms |" in tile_creation.table(rows)
