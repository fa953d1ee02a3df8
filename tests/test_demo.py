"""``cardcube demo --tiny``: the one-command tour runs end to end and leaves what it announces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def test_the_tiny_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "cardcube.cli", "demo", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]  # said as a note, not as Python's warning with its file
    for step in (*(f"{i}/7" for i in range(1, 8)), "planted anomalies", "expired 1 version", ": sound",
                 "cardcube serve", "demo finished"):
        assert step in done.stdout
    assert (out / "timeseries.png").stat().st_size > 0 and (out / "cube" / "catalog.json").exists()
    optical = pd.read_csv(out / "timeseries_s2.csv")
    assert set(optical.band) == {"B04", "B08", "NDVI"} and optical["count"].gt(0).any()
    assert optical.time.str.endswith("Z").all()  # UTC, said so
    status = gpd.read_parquet(out / "extract" / "parcels.parquet")
    parcels = gpd.read_parquet(out / "source" / "parcels.parquet")
    assert len(status) == len(parcels) and status.status.isin(["ok", "too_small"]).all()
    extracted = pd.read_parquet(out / "extract" / "timeseries")
    assert set(extracted.parcel_id) == set(status.parcel_id[status.status == "ok"])
    flags = pd.read_csv(out / "flags.csv")
    assert set(flags.parcel_id) == set(status.parcel_id) and flags.flagged.any()  # every parcel accounted for
    measured = flags.parcel_id.isin(extracted.parcel_id)
    assert flags.not_judged[~measured].str.startswith("every marker: no statistics (too_small").all()
    assert not flags.flagged[~measured].any() and "parcel(s) could not be measured" in done.stdout
    assert flags.largest_vh_drop[measured].notna().all()  # the mowing marker read the S1 extraction
    assert flags.reasons[flags.flagged].str.len().gt(0).all() and flags.reasons[~flags.flagged].isna().all()
    assert flags.min_ndvi_date.dropna().str.endswith("Z").all()  # UTC, as cardcube flag writes it
    # the runs after the first in this process (cardcube.cli.main, as the console script calls it): the same code
    # without an interpreter's start and imports each
    from cardcube.cli import main

    scenes = {f: f.stat().st_mtime_ns for f in (out / "source").rglob("*.tif")}
    assert main(["demo", "--tiny", "--out", str(out)]) == 0
    again = capsys.readouterr()
    assert "kept from an earlier run" in again.out, again.err[-3000:]
    assert scenes and {f: f.stat().st_mtime_ns for f in (out / "source").rglob("*.tif")} == scenes  # not rewritten
    assert "demo finished" in again.out
    assert main(["demo", "--tiny", "--seed", "7", "--out", str(out)]) == 2
    assert "pass --fresh to replace it" in capsys.readouterr().err  # not mixed into seed 42's cube
    manifest = out / "extract" / "manifest.json"  # as a cardcube of another pixel rule left it
    manifest.write_text(manifest.read_text().replace('"pixel_rule": ', '"pixel_rule": 1, "was": '))
    assert main(["demo", "--tiny", "--out", str(out)]) == 2
    older = capsys.readouterr().err
    assert "pixel rule differs" in older, older[-3000:]
    assert f"({out} is the demo's own folder: `cardcube demo --fresh` starts it over)" in older


def test_a_folder_that_holds_no_demo_is_neither_deleted_nor_written_into(tmp_path, capsys):
    """``--fresh --out DIR`` deleted DIR whatever it held (a typo away from a home folder or a checkout), and
    without --fresh the steps wrote into it: both are refused now, and the folder is left as it was."""
    from cardcube.cli import main

    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years")
    for fresh in ([], ["--fresh"]):
        assert main(["demo", "--tiny", "--out", str(mine), *fresh]) == 2
        assert f"{mine} holds thesis.txt but no demo (demo.json): give --out a new or empty folder" in \
            capsys.readouterr().err
        assert [p.name for p in mine.iterdir()] == ["thesis.txt"] and (mine / "thesis.txt").read_text()
    assert main(["demo", "--tiny", "--out", str(mine / "thesis.txt")]) == 2
    assert "is a file: give the demo a folder of its own" in capsys.readouterr().err
    from cardcube.demo import _claim

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "demo.json").write_text('{"seed": 7, "tiny": true}')
    (earlier / "flags.csv").write_text("")
    _claim(earlier, {"seed": 42, "tiny": True}, fresh=True)  # an earlier demo's folder: emptied, then claimed
    assert [p.name for p in earlier.iterdir()] == ["demo.json"]
    assert (earlier / "demo.json").read_text() == '{"seed": 42, "tiny": true}'


def test_a_demo_json_the_demo_did_not_write_says_nothing_of_its_folder(tmp_path, capsys):
    """A folder holding a demo.json of the user's (a common name) was taken for a demo's: ``--fresh`` deleted it
    whole, and one that was no JSON stopped the demo with a JSONDecodeError traceback. Only the demo's own mark,
    its settings, says so; another folder is refused and left as it was."""
    from cardcube.cli import main

    mine = tmp_path / "talk"
    mine.mkdir()
    (mine / "slides.md").write_text("# the demo, explained")
    for content in ('{"title": "demo for the board"}', "[42]", "not JSON"):
        (mine / "demo.json").write_text(content)
        for fresh in ([], ["--fresh"]):
            assert main(["demo", "--tiny", "--out", str(mine), *fresh]) == 2
            assert f"{mine} holds demo.json, slides.md but no demo (demo.json) (its demo.json is no demo's): give " \
                "--out a new or empty folder" in capsys.readouterr().err
            assert sorted(p.name for p in mine.iterdir()) == ["demo.json", "slides.md"]
            assert (mine / "demo.json").read_text() == content


def test_the_score_counts_each_planted_kind_by_its_own_marker():
    """A wrong crop flagged for bare soil alone counted as found: the score's 'wrong_crop 63/64' could hide it."""
    from cardcube.demo import _score

    flags = pd.DataFrame({"parcel_id": ["a", "b", "c", "d"], "flagged": [True, True, True, False],
                          "crop_mismatch": [True, False, False, False], "bare_soil": [False, True, True, False],
                          "no_mowing": False, "not_judged": ""})
    truth = pd.DataFrame({"parcel_id": ["a", "b", "c", "d"],
                          "anomaly_kind": ["wrong_crop", "wrong_crop", "ploughed_grassland", None]})
    score = _score(flags, truth)
    assert "3 of the 3 planted anomalies (ploughed_grassland 1/1, wrong_crop 1/2 (+1 by another marker))" in score
    assert "0 of the 1 others measured" in score
