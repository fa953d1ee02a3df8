"""Determinism, configuration and the command line."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from cardcube.synth import SynthConfig, generate
from cardcube.synth.cli import config_from_args, register
from cardcube.synth.generate import SynthResult


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    config = SynthConfig.tiny(size_m=1000, end=dt.date(2024, 5, 20))
    a = generate(tmp_path / "a", config)
    b = generate(tmp_path / "b", config.with_(workers=1))
    c = generate(tmp_path / "c", config.with_(seed=7))
    da, db, dc = _digest(a.out_dir), _digest(b.out_dir), _digest(c.out_dir)
    assert len(da) == a.n_files
    assert da == db
    assert set(da) != set(dc) or da != dc
    changed = [k for k in da if k in dc and da[k] != dc[k]]
    assert "parcels.gpkg" in changed and "ground_truth.parquet" in changed


def test_config_validation():
    with pytest.raises(ValueError, match="20 m lattice"):
        generate("/nonexistent/never", SynthConfig.tiny(origin=(680_005.0, 5_845_000.0)))
    with pytest.raises(ValueError, match="after start"):
        SynthConfig(start=dt.date(2024, 5, 1), end=dt.date(2024, 4, 1))
    assert SynthConfig(size_m=2013).size_m == (2020.0, 2020.0)
    assert SynthConfig.tiny(straddle=True).resolved_origin()[0] < 709_800 < (
        SynthConfig.tiny(straddle=True).resolved_origin()[0] + 2000)


@pytest.mark.parametrize(("changes", "message"), [
    ({"size_m": float("nan")}, "is no size in metres"), ({"size_m": float("inf")}, "is no size in metres"),
    ({"seed": -1}, "seed -1 must be a whole number of at least 0"), ({"seed": 1.5}, "seed 1.5"),
    ({"workers": 0}, "workers 0 must be"), ({"s1": False, "s2": False}, "there is nothing to generate"),
    ({"straddle": True, "origin": (680_000, 5_845_000)}, "give one of them"),
    ({"start": dt.date(2024, 11, 1), "end": dt.date(2025, 8, 31)}, "spans more than one calendar year"),
])
def test_settings_that_would_fail_or_mislead_are_refused_before_anything_is_written(changes, message, tmp_path):
    """nan and inf sizes and a negative seed failed with tracebacks (and left an empty folder); zero workers, no
    satellite, straddle with an origin (ignored, while region.json said "straddle": true) went without a word;
    a season across the new year wrote a frozen landscape and a ground truth of events before its dates."""
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", SynthConfig.tiny(**changes))
    assert not (tmp_path / "out").exists()


def test_an_earlier_regions_scenes_are_replaced_and_a_foreign_scenes_folder_refused(tmp_path):
    """A second run into the same folder kept the first run's scene files: a folder ingest read both regions."""
    config = SynthConfig.tiny(size_m=1000, end=dt.date(2024, 5, 20), s1=False)
    first = generate(tmp_path / "out", config)
    again = generate(tmp_path / "out", config.with_(seed=5, start=dt.date(2024, 5, 11)))
    tifs = sorted(p.relative_to(again.out_dir) for p in (again.out_dir / "scenes").rglob("*.tif"))
    assert again.n_s2_scenes < first.n_s2_scenes and len(tifs) == again.n_files - 7
    assert SynthResult.written(tmp_path / "out", config) is None
    other = tmp_path / "other"
    (other / "scenes").mkdir(parents=True)
    (other / "scenes" / "mine.tif").write_bytes(b"not synth's")
    with pytest.raises(ValueError, match=r"no region\.json says an earlier cardcube synth wrote them"):
        generate(other, config)
    assert (other / "scenes" / "mine.tif").read_bytes() == b"not synth's"


def test_a_region_json_synth_did_not_write_says_nothing_of_the_files_beside_it(tmp_path):
    """A folder holding a region.json of the user's (a common name) was taken for synth's: its scenes folder was
    deleted, its parcels and its region.json replaced, without a word. Only a region.json synth wrote says so."""
    config = SynthConfig.tiny(size_m=1000, end=dt.date(2024, 5, 20), s1=False)
    mine = tmp_path / "project"
    (mine / "scenes").mkdir(parents=True)
    (mine / "scenes" / "flight.tif").write_bytes(b"a drone's")
    (mine / "region.json").write_text('{"name": "polder"}\n')
    before = _digest(mine)
    with pytest.raises(ValueError, match=rf"{mine / 'scenes'} holds files, and no region\.json says an earlier "
                       r"cardcube synth wrote them"):
        generate(mine, config)
    assert _digest(mine) == before
    (mine / "scenes" / "flight.tif").unlink()
    (mine / "scenes").rmdir()
    (mine / "parcels.gpkg").write_bytes(b"the register")
    (mine / "region.json").write_text("[1, 2]\n")  # JSON, of no region
    before = _digest(mine)
    with pytest.raises(ValueError, match=r"holds parcels\.gpkg, region\.json, and no region\.json says"):
        generate(mine, config)
    assert _digest(mine) == before


def test_a_run_stopped_halfway_is_run_again_and_files_of_another_refused(tmp_path):
    """A run stopped while writing scenes (Ctrl-C in the first step of `make demo`) left a scenes folder and no
    region.json: the same command was then refused, the folder "not synth's"; and parcels of the user's in the
    folder (no scenes) were replaced without a word, as was a file given for the folder failed with a bare
    FileExistsError."""
    config = SynthConfig.tiny(size_m=1000, end=dt.date(2024, 5, 20), s1=False)

    def stop(acquisition) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", config, progress=stop)
    assert any((tmp_path / "out" / "scenes").rglob("*.tif")) and not (tmp_path / "out" / "region.json").exists()
    again = generate(tmp_path / "out", config)
    assert SynthResult.written(tmp_path / "out", config) == again
    assert len(_digest(again.out_dir)) == again.n_files  # the stopped run's mark gone too
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "parcels.gpkg").write_bytes(b"the register")
    with pytest.raises(ValueError, match=r"holds parcels\.gpkg, and no region\.json says an earlier cardcube synth"):
        generate(mine, config)
    assert [p.name for p in mine.iterdir()] == ["parcels.gpkg"]
    assert (mine / "parcels.gpkg").read_bytes() == b"the register"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file: give synth a folder"):
        generate(tmp_path / "file", config)


def test_a_cloudiness_of_zero_is_a_clear_season(tmp_path):
    """--cloudiness 0 gave dates up to 22 % cloud: a cover floored at 2 %, and cirrus on a quarter of dates."""
    region = generate(tmp_path / "clear", SynthConfig.tiny(cloudiness=0.0, s1=False))
    covers = [f["properties"]["eo:cloud_cover"] for f in json.loads(region.items.read_text())["features"]]
    assert len(covers) == region.n_s2_scenes > 10 and max(covers) == 0


def test_region_json(tiny_region):
    doc = json.loads(tiny_region.region_json.read_text())
    assert doc["config"]["seed"] == tiny_region.config.seed
    assert doc["tiles"]["31UFU"]["width"] == 200
    assert doc["counts"]["parcels"] == tiny_region.n_parcels
    assert "Sentinel-2" in doc["summary"]


def test_cli_runs(tmp_path, capsys):
    import argparse

    from cardcube import cli

    argv = ["synth", str(tmp_path / "out"), "--tiny", "--seed", "3", "--end", "2024-05-12", "--quiet"]
    try:
        code = cli.main(argv)
    except ModuleNotFoundError as exc:  # another package's CLI module is not there yet
        if "synth" in str(exc):
            raise
        parser = argparse.ArgumentParser(prog="cardcube")
        register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(argv)
        code = args.func(args)
    assert code == 0
    out, err = capsys.readouterr()
    assert "parcels" in out and "Sentinel-1" in out
    assert "acquisitions" not in err and "pass/s" not in err  # --quiet (as ingest's, extract's): no progress bar
    assert (tmp_path / "out" / "items.json").exists()


def test_cli_config():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["synth", "x", "--size-km", "4", "--straddle", "--start", "2024-04-01"])
    config = config_from_args(args)
    assert config.size_m == (4000.0, 4000.0) and config.straddle and config.start == dt.date(2024, 4, 1)
