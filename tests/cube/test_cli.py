"""``cardcube timeseries`` and ``cardcube chip``: the CLI writes what the Python API returns."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
from PIL import Image

from cardcube.cli import main
from cube.timeseries import parcel_timeseries


def test_timeseries_cli_writes_the_api_frame(tiny_cube, tiny_region, tmp_path, capsys):
    parcels = gpd.read_parquet(tiny_region.parcels)
    ids = list(parcels.parcel_id.iloc[10:12])
    out = tmp_path / "stats.parquet"
    code = main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), *ids,
                 "--bands", "B04,NDVI", "--out", str(out)])
    assert code == 0 and "from cube version 1" in capsys.readouterr().out
    written = pd.read_parquet(out)
    expected = parcel_timeseries(tiny_cube, ids, registry=parcels, bands=["B04", "NDVI"])
    pd.testing.assert_frame_equal(written.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_categorical=False, check_dtype=False)


def test_timeseries_cli_reports_unknown_ids(tiny_cube, tiny_region, tmp_path, capsys):
    code = main(["timeseries", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), "NOPE",
                 "--out", str(tmp_path / "x.csv")])
    assert code == 2 and "NOPE" in capsys.readouterr().err


def test_chip_cli_writes_a_png_per_date_and_a_sheet(tiny_cube, tiny_region, tmp_path):
    pid = gpd.read_parquet(tiny_region.parcels).parcel_id.iloc[20]
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "32",
                 "--out", str(tmp_path / "chips")]) == 0
    pngs = sorted((tmp_path / "chips").glob("*.png"))
    assert len(pngs) == 19 and Image.open(pngs[0]).size == (128, 128)
    assert main(["chip", "--cube", str(tiny_cube), "--parcels", str(tiny_region.parcels), pid, "--size", "32",
                 "--sheet", "--out", str(tmp_path / "sheet")]) == 0
    assert (tmp_path / "sheet" / f"{pid}_season.png").exists()
