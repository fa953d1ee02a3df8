"""Anomaly markers: NDVI against numpy (the profiles: test_ndvi_profiles.py); planted anomalies found, others left
alone."""

from __future__ import annotations

import re
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from cardcube.errors import InvalidRequestError
from cube.anomalies import MarkerRules, flag_parcels, ndvi_by_date
from cube.timeseries import parcel_timeseries

DATES = pd.date_range("2024-03-01", "2024-10-31", freq="5D")
DAY = np.arange(DATES.size) * 5.0  # days since the first date


def _frame(curves: dict[str, np.ndarray], clear: dict[str, np.ndarray]) -> pd.DataFrame:
    """A statistics frame (B04 and B08 means, counts) whose mean-reflectance NDVI is ``curves[pid]``, with
    the dates where ``clear[pid]`` is False three-quarters masked."""
    rows = []
    for pid, ndvi in curves.items():
        red = np.full(ndvi.size, 0.04)
        nir = red * (1 + ndvi) / (1 - ndvi)
        count = np.where(clear[pid], 100, 25)
        for band, mean in (("B04", red), ("B08", nir)):
            rows.append(pd.DataFrame({"parcel_id": pid, "time": DATES, "band": band, "count": count,
                                      "masked": 100 - count, "mean": mean}))
    return pd.concat(rows, ignore_index=True)


def _arable(peak: float, rng: np.random.Generator) -> np.ndarray:
    """A crop's season: bare until sown, a bell of green around ``peak`` (days), bare after harvest."""
    return 0.15 + 0.7 * np.exp(-(((DAY - peak - rng.normal(0, 4)) / 35) ** 2)) + rng.normal(0, 0.015, DAY.size)


def _grass(cuts: list[float], rng: np.random.Generator) -> np.ndarray:
    """Grassland: green all season, dropping by 0.3 at each cut and growing back within 20 days."""
    ndvi = 0.75 + rng.normal(0, 0.01, DAY.size)
    for cut in cuts:
        since = DAY - cut
        after = (since >= 0) & (since < 20)
        ndvi[after] -= 0.3 * (1 - since[after] / 20)
    return ndvi


S1_DATES = pd.date_range("2024-03-01", "2024-10-31", freq="3D")  # ascending and descending passes in turn


def _meadow_vh(day: np.ndarray, cuts: list[float], rng: np.random.Generator) -> np.ndarray:
    """VH (dB) of a meadow on ``day``: -20 dB with speckle, 2.5 dB lower just after each cut and back within
    20 days."""
    vh = -20 + rng.normal(0, 0.15, day.size)
    for cut in cuts:
        since = day - cut
        after = (since >= 0) & (since < 20)
        vh[after] -= 2.5 * (1 - since[after] / 20)
    return vh


def _backscatter(pid: str, cuts: list[float], rng: np.random.Generator) -> pd.DataFrame:
    """Sentinel-1 VH statistics of a grassland parcel: -20 dB, 2.5 dB lower just after each cut and back
    within 20 days; the ascending passes see the field 1.5 dB brighter (from its other side)."""
    day = (S1_DATES - S1_DATES[0]).days.to_numpy(float)
    vh = _meadow_vh(day, cuts, rng)
    orbit = np.where(np.arange(day.size) % 2, "ascending", "descending")
    vh[orbit == "ascending"] += 1.5
    return pd.DataFrame({"parcel_id": pid, "time": S1_DATES, "band": "VH", "count": 60, "masked": 0, "mean": vh,
                         "orbit_state": orbit})


@pytest.fixture(scope="module")
def population() -> tuple[pd.DataFrame, pd.Series, dict[str, str]]:
    """Thirty parcels each of an early crop (1), a late crop (2) and grassland (3), 30 % of dates cloudy;
    five planted anomalies and what each should be flagged for."""
    rng = np.random.default_rng(7)
    curves, clear, declared = {}, {}, {}
    for i in range(30):
        curves[f"early-{i}"], declared[f"early-{i}"] = _arable(90, rng), 1
        curves[f"late-{i}"], declared[f"late-{i}"] = _arable(160, rng), 2
        curves[f"grass-{i}"], declared[f"grass-{i}"] = _grass(list(rng.normal([80, 125, 170], 5)), rng), 3
    planted = {"late-as-early-1": "crop_mismatch", "late-as-early-2": "crop_mismatch",
               "ploughed": "bare_soil", "never-mown": "no_mowing", "early-as-grass": "crop_mismatch bare_soil"}
    curves["late-as-early-1"], curves["late-as-early-2"] = _arable(160, rng), _arable(165, rng)
    declared["late-as-early-1"] = declared["late-as-early-2"] = 1
    ploughed = _grass([], rng)
    ploughed[(DAY > 80) & (DAY < 105)] = 0.12  # a few weeks of bare soil after ploughing in May
    curves["ploughed"], curves["never-mown"], curves["early-as-grass"] = ploughed, _grass([], rng), _arable(90, rng)
    declared.update({"ploughed": 3, "never-mown": 3, "early-as-grass": 3})
    curves["unseen-grass"], declared["unseen-grass"] = _grass([], rng), 3  # no cut seen, but cloudy for weeks
    for pid in curves:
        clear[pid] = rng.random(DAY.size) > 0.3
    clear["never-mown"][:] = True
    clear["unseen-grass"][(DAY > 100) & (DAY < 140)] = False
    return _frame(curves, clear), pd.Series(declared), planted


def test_ndvi_by_date_is_the_ndvi_of_the_mean_reflectances(population):
    frame, _, _ = population
    ndvi = ndvi_by_date(frame)
    b04 = frame[frame.band == "B04"].set_index(["parcel_id", "time"])
    b08 = frame[frame.band == "B08"].set_index(["parcel_id", "time"])
    want = ((b08["mean"] - b04["mean"]) / (b08["mean"] + b04["mean"])).where(b04["count"] / 100 >= 0.5)
    got = ndvi.stack(future_stack=True).reorder_levels([0, 1])
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-12)
    assert ndvi.isna().to_numpy().sum() == (b04["count"] < 50).sum() > 0
    with pytest.raises(InvalidRequestError, match="B04 and B08"):
        ndvi_by_date(frame[frame.band == "B04"])
    with pytest.raises(InvalidRequestError, match="mean"):
        ndvi_by_date(frame.drop(columns="mean"))


def test_ndvi_of_negative_mean_reflectances_stays_an_ndvi(population):
    """L2A reflectance is DN / 10000 - 0.1: over water or shadow a parcel's mean red or near-infrared can be below 0.
    Their NDVI was -5 or -inf: a meadow "bare soil (NDVI -inf)", and a crop's distances infinite, its ratio NaN, its
    crop_mismatch unjudged without a word in not_judged. A negative mean is taken as 0: NDVI stays in [-1, 1]."""
    frame, declared, _ = population
    frame = frame.copy()
    clear = ndvi_by_date(frame).notna()
    planted = {"early-0": (0.003, -0.003), "grass-0": (0.003, -0.002), "grass-1": (-0.003, 0.2),
               "grass-2": (-0.001, -0.002)}
    want = {"early-0": -1.0, "grass-0": -1.0, "grass-1": 1.0, "grass-2": np.nan}
    for pid, (red, nir) in planted.items():
        when = clear.loc[pid][clear.loc[pid]].index[20]
        row = (frame.parcel_id == pid) & (frame.time == when)
        frame.loc[row & (frame.band == "B04"), "mean"] = red
        frame.loc[row & (frame.band == "B08"), "mean"] = nir
        np.testing.assert_equal(ndvi_by_date(frame).loc[pid, when], want[pid])
    flags = flag_parcels(frame, declared, grassland=[3]).set_index("parcel_id")
    assert np.isfinite(flags.loc["early-0", ["distance_declared", "ratio", "distance_z"]].astype(float)).all()
    assert flags.loc["grass-0", "min_ndvi"] == -1 and "NDVI -1.00 < 0.3" in flags.loc["grass-0", "reasons"]


def test_planted_anomalies_are_flagged_and_nothing_else(population):
    frame, declared, planted = population
    flags = flag_parcels(frame, declared, grassland=[3]).set_index("parcel_id")
    assert len(flags) == len(declared)
    got = {pid: " ".join(m for m in ("crop_mismatch", "bare_soil", "no_mowing") if row[m])
           for pid, row in flags[flags.flagged].iterrows()}
    assert got == planted
    assert flags.loc["late-as-early-1", "nearest_crop"] == 2 and flags.loc["late-as-early-1", "ratio"] >= 2
    assert flags.loc["late-as-early-1", "distance_z"] >= 2
    assert "closer to crop 2 than to the declared 1 (an outlier among the 1 parcels" in \
        flags.loc["late-as-early-1", "reasons"]
    assert "no mowing seen" in flags.loc["never-mown", "reasons"]
    # a grassland parcel with no cut seen but weeks without a clear date is given the benefit of the doubt
    assert flags.loc["unseen-grass", "longest_gap"] > MarkerRules().max_gap and not flags.loc["unseen-grass", "flagged"]
    assert flags.flagged.iloc[: len(planted)].all()  # flagged parcels first
    strict = flag_parcels(frame, declared, grassland=[3], rules=MarkerRules(mowing_drop=0.5))
    assert strict.no_mowing.sum() > flags.no_mowing.sum()  # a rule that sees no cut anywhere flags more


@pytest.mark.parametrize("days", [("2024-06-04", "2024-06-04"), ("2024-06-01", "2024-06-30")])
def test_a_few_weeks_of_data_judge_no_meadow_unmown(population, days):
    """A day or a month of statistics shows no cut for most meadows: no_mowing is not judged on them."""
    frame, declared, _ = population
    short = frame[frame.time.between(*days)]
    with pytest.warns(UserWarning, match="no_mowing is not judged"):
        flags = flag_parcels(short, declared, grassland=[3])
    assert not flags.no_mowing.any()
    unjudged = flag_parcels(short, declared, grassland=[3], rules=MarkerRules(min_season_days=0))
    if days[0] == days[1]:  # one date shows no drop, so no absence of one either
        grass = unjudged[unjudged.declared == 3]
        assert not unjudged.no_mowing.any() and grass.not_judged.str.contains(
            "no_mowing: fewer than two clear dates in the season, so no drop to measure").sum() > 10
    else:
        assert unjudged.no_mowing.sum() > 10  # what such data would say of 33 meadows


def test_bad_input_gets_a_clear_error(population):
    frame, declared, _ = population
    blank = declared.astype(object).copy()
    blank["early-0"], blank["late-0"] = np.nan, " "  # no declaration: nothing to check, not a crop "nan"
    flags = flag_parcels(frame, blank)
    assert set(flags.parcel_id) == set(declared.index) - {"early-0", "late-0"}
    assert not flags.not_judged.str.contains("nan").any()
    with pytest.raises(InvalidRequestError, match="none of the frame's parcels has a declaration"):
        flag_parcels(frame, pd.Series({"someone-else": 1}))
    with pytest.raises(InvalidRequestError, match=r"indexed by 0, 1, 2 \.\.\., the frame's parcels are '.*set_index"):
        flag_parcels(frame, declared.reset_index(drop=True))  # codes by row number, as a file's column comes
    table = declared.rename("crop_code").rename_axis("parcel_id").reset_index()  # the parcel table, not a Series
    with pytest.raises(InvalidRequestError, match="pass a Series of crop codes indexed by parcel id"):
        flag_parcels(frame, table)
    with pytest.raises(InvalidRequestError, match=r"marker rules out of range: mismatch_ratio = 0.5 \(must be > 1\)"):
        MarkerRules(mismatch_ratio=0.5)
    # rules that switch a marker off, or on for every parcel, without a word
    with pytest.raises(InvalidRequestError, match=r"max_interpolation_gap = 0 \(must be >= step \(5\): shorter"):
        MarkerRules(max_interpolation_gap=0)
    with pytest.raises(InvalidRequestError, match=r"mismatch_ratio = inf \(must be a finite number"):
        MarkerRules.from_dict({"mismatch_ratio": float("inf")})
    assert MarkerRules(outlier_z=-np.inf).outlier_z == -np.inf  # documented: the ratio alone decides
    # percents for shares and NDVI: every meadow bare, or no date clear; they were taken without a word
    with pytest.raises(InvalidRequestError, match=r"bare_ndvi = 30 \(must be an NDVI in \(-1, 1\)\); mowing_drop = 8 "):
        MarkerRules(bare_ndvi=30, mowing_drop=8)
    with pytest.raises(InvalidRequestError, match=r"min_clear = 50 \(must be a share in \(0, 1\]\)"):
        MarkerRules.from_dict({"min_clear": 50})
    # rules from an agency's JSON: some fields changed, the rest default; typos, text and odd seasons refused
    assert MarkerRules.from_dict({"bare_ndvi": 0.25, "season": ["04-15", "10-15"]}) == \
        MarkerRules(bare_ndvi=0.25, season=("04-15", "10-15"))
    for bad, message in [({"bare_nvdi": 0.2}, r"unknown marker rule\(s\) \['bare_nvdi'\]"),
                         ({"bare_ndvi": "0.2"}, "is no number"), ({"min_clear": True}, "is no number"),
                         ({"season": ["5-1", "9-30"]}, "two MM-DD dates"), ({"season": ["09-30", "05-01"]}, "in order"),
                         ({"season": ["02-30", "09-30"]}, "two MM-DD dates"), ([0.2], "an object of rule names"),
                         # text pandas reads as a date but the season compares as MM-DD text: "05/01" would
                         # start it in June, " 5-01" in January
                         ({"season": ["05/01", "09-30"]}, "two MM-DD dates"),
                         ({"season": [" 5-01", "09-30"]}, "two MM-DD dates"),
                         ({"season": ["05-01", "09 30"]}, "two MM-DD dates")]:
        with pytest.raises(InvalidRequestError, match=message):
            MarkerRules.from_dict(bad)
    with pytest.raises(InvalidRequestError, match=r"season 12-01 \.\. 12-31, which the grassland markers judge"):
        flag_parcels(frame, declared, grassland=[3], rules=MarkerRules(season=("12-01", "12-31")))
    early = flag_parcels(frame, declared, rules=MarkerRules(season=("12-01", "12-31")))  # crop_mismatch needs none
    assert early.crop_mismatch.sum() == flag_parcels(frame, declared).crop_mismatch.sum() > 0
    with pytest.raises(InvalidRequestError, match=r"no parcel declares the grassland code\(s\) abc; declared codes: "):
        flag_parcels(frame, declared, grassland=["abc"])  # a typo would switch the grassland markers off
    # statistics of some parcels, none of them grassland, checked against every parcel's declaration
    arable = declared[declared.astype(str) != "3"].index
    some = flag_parcels(frame[frame.parcel_id.isin(arable)], declared, grassland=3)
    assert len(some) == len(arable) and not some.bare_soil.any() and not some.no_mowing.any()
    # one code, as an int or a string, is one code (not three digits)
    assert flag_parcels(frame, declared, grassland=3).no_mowing.sum() == \
        flag_parcels(frame, declared, grassland="3").no_mowing.sum() > 0
    # several codes in one string, as the command line gives them, are several (it was one code, "3, 1")
    pd.testing.assert_frame_equal(flag_parcels(frame, declared, grassland="3, 1"),
                                  flag_parcels(frame, declared, grassland=[3, 1]))
    named = declared.map({1: "Mais", 2: "Tarwe", 3: "Grasland, blijvend"})  # a crop name holding a comma is one
    by_name = flag_parcels(frame, named, grassland="Grasland, blijvend")
    assert by_name.no_mowing.sum() == flag_parcels(frame, declared, grassland=3).no_mowing.sum() > 0
    with pytest.warns(UserWarning, match="crop_mismatch is not judged"):  # an area column given as the crop
        assert not flag_parcels(frame, pd.Series(range(len(declared)), index=declared.index)).crop_mismatch.any()
    s1 = frame[frame.band == "B04"].assign(band="VH")
    with pytest.raises(InvalidRequestError, match="Sentinel-1 statistics go to s1="):
        flag_parcels(s1, declared)
    with pytest.raises(InvalidRequestError, match="no VH mean measured"):
        flag_parcels(frame, declared, grassland=[3], s1=s1.assign(count=0))
    no_orbit = flag_parcels(frame, declared, grassland=[3], s1=s1.assign(orbit_state=None))  # not a crash
    assert no_orbit.largest_vh_drop.notna().any()


def test_markers_find_the_planted_anomalies_of_the_synthetic_region(tiny_cube, tiny_region):
    """End to end on the cube: S2 and S1 statistics read by parcel_timeseries, markers against the ground truth."""
    parcels = gpd.read_parquet(tiny_region.parcels)
    truth = pd.read_parquet(tiny_region.ground_truth).set_index("parcel_id")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # parcels too small to measure
        frame = parcel_timeseries(tiny_cube, parcels, bands=["B04", "B08"], stats=["mean"], histogram=False)
        s1 = parcel_timeseries(tiny_cube, parcels, collection="s1", bands=["VH"], stats=["mean"], histogram=False)
    flags = flag_parcels(frame, parcels.set_index("parcel_id").crop_code, grassland=[265, 266], s1=s1)
    flags = flags.set_index("parcel_id")
    kind = truth.anomaly_kind.reindex(flags.index)
    assert (kind == "wrong_crop").sum() >= 2 and flags.crop_mismatch[kind == "wrong_crop"].all()
    assert (kind == "ploughed_grassland").sum() >= 2 and flags.bare_soil[kind == "ploughed_grassland"].all()
    # radar speckle on a 0.4 ha parcel can pass for a cut: most, not all, unmown meadows are caught here
    assert (kind == "not_mown").sum() >= 3 and flags.no_mowing[kind == "not_mown"].sum() >= 2
    true_flags, false_flags = flags.flagged[kind.notna()].sum(), flags.flagged[kind.isna()].sum()
    assert true_flags > false_flags  # precision over a half, where anomalies are 4 % of the parcels


def test_sentinel1_sees_the_cuts_that_ndvi_misses(population):
    """With VH backscatter, a light cut that NDVI hardly shows is seen, the unmown meadow is still
    flagged, and the two orbit directions are never compared with each other."""
    frame, declared, _ = population
    rng = np.random.default_rng(3)
    grass = [pid for pid in declared.index if declared[pid] == 3]
    cuts = {pid: [] if pid in ("never-mown", "early-as-grass") else [80.0, 125.0, 170.0] for pid in grass}
    cuts["ploughed"] = [80.0]  # ploughing changes the backscatter as a cut does
    curves = {"light-cut": _grass([], rng) - 0.05 * ((DAY >= 100) & (DAY < 110)), "light-unseen": _grass([], rng)}
    frame = pd.concat([frame, _frame(curves, {pid: np.ones(DAY.size, bool) for pid in curves})], ignore_index=True)
    declared = pd.concat([declared, pd.Series({"light-cut": 3, "light-unseen": 3})])
    s1 = pd.concat([_backscatter(pid, cuts[pid], rng) for pid in grass] + [_backscatter("light-cut", [100.0], rng)],
                   ignore_index=True)  # no radar for "light-unseen": NDVI decides for it
    without = flag_parcels(frame, declared, grassland=[3]).set_index("parcel_id")
    flags = flag_parcels(frame, declared, grassland=[3], s1=s1).set_index("parcel_id")
    assert without.loc["light-cut", "no_mowing"] and not flags.loc["light-cut", "no_mowing"]
    assert flags.loc["light-cut", "largest_vh_drop"] >= MarkerRules().mowing_drop_db
    assert flags.loc["never-mown", "no_mowing"] and flags.loc["never-mown", "largest_vh_drop"] < 1.0
    assert "VH drop" in flags.loc["never-mown", "reasons"] and "NDVI drop" in flags.loc["light-unseen", "reasons"]
    assert np.isnan(flags.loc["light-unseen", "longest_vh_gap"]) and flags.loc["light-unseen", "no_mowing"]
    assert set(flags.index[flags.no_mowing]) == {"never-mown", "light-unseen", "early-as-grass"}
    one_orbit = s1.assign(orbit_state="descending")  # passes of both sides compared: 1.5 dB steps everywhere
    assert not flag_parcels(frame, declared, grassland=[3], s1=one_orbit).set_index("parcel_id").loc[
        "never-mown", "no_mowing"]
    with pytest.raises(InvalidRequestError, match="VH"):
        flag_parcels(frame, declared, grassland=[3], s1=s1.assign(band="VV"))


def test_a_parcel_typical_of_its_crop_is_not_flagged_for_looking_like_another():
    """A crop sown in two waves (half its parcels a month late, like a crop declared next to it) has a
    reference between the waves: the late half is nearer the other crop's reference, but typical of its
    own declaration, so only the ratio and not the outlier test holds for it."""
    rng = np.random.default_rng(5)
    curves, declared = {}, {}
    for i in range(30):
        curves[f"two-waves-{i}"], declared[f"two-waves-{i}"] = _arable(130 if i % 2 else 165, rng), 6
        curves[f"alike-{i}"], declared[f"alike-{i}"] = _arable(165, rng), 7
    curves["odd"], declared["odd"] = _arable(60, rng), 7  # a declared 7 that grows an early crop
    frame = _frame(curves, {pid: rng.random(DAY.size) > 0.2 for pid in curves})
    flags = flag_parcels(frame, pd.Series(declared)).set_index("parcel_id")
    late = [f"two-waves-{i}" for i in range(0, 30, 2)]
    assert (flags.loc[late, "ratio"] >= MarkerRules().mismatch_ratio).sum() >= 5  # nearer crop 7's reference
    assert flags.loc[late, "distance_z"].max() < MarkerRules().outlier_z and not flags.loc[late, "flagged"].any()
    ratio_only = flag_parcels(frame, pd.Series(declared), rules=MarkerRules(outlier_z=-np.inf)).set_index("parcel_id")
    assert ratio_only.loc[late, "crop_mismatch"].sum() >= 5
    assert flags.loc["odd", "distance_z"] > 3  # what is unusual for its crop stands out


def test_a_crop_clouded_over_its_peak_is_not_flagged_as_another():
    """A late crop declared right but without a clear date for 100 days around its peak: a straight line
    across the gap looks like a flat fallow's profile, so its flag would be the clouds', not the field's."""
    rng = np.random.default_rng(7)
    curves, clear, declared = {}, {}, {}
    for i in range(30):
        curves[f"early-{i}"], declared[f"early-{i}"] = _arable(90, rng), 1
        curves[f"late-{i}"], declared[f"late-{i}"] = _arable(160, rng), 2
        curves[f"fallow-{i}"], declared[f"fallow-{i}"] = 0.3 + rng.normal(0, 0.02, DAY.size), 3
    for pid in curves:
        clear[pid] = rng.random(DAY.size) > 0.3
    curves["late-cloudy"], declared["late-cloudy"] = _arable(160, rng), 2
    clear["late-cloudy"] = ~((DAY > 110) & (DAY < 220))
    curves["late-as-fallow"], declared["late-as-fallow"] = 0.3 + rng.normal(0, 0.02, DAY.size), 2
    clear["late-as-fallow"] = rng.random(DAY.size) > 0.3
    flags = flag_parcels(_frame(curves, clear), pd.Series(declared)).set_index("parcel_id")
    assert not flags.loc["late-cloudy", "crop_mismatch"]
    assert flags.loc["late-as-fallow", "crop_mismatch"] and flags.loc["late-as-fallow", "nearest_crop"] == 3
    straight = flag_parcels(_frame(curves, clear), pd.Series(declared),
                            rules=MarkerRules(max_interpolation_gap=10**6)).set_index("parcel_id")
    assert straight.loc["late-cloudy", "crop_mismatch"]  # what the straight line across the clouds said


def _tracks(pid: str, cuts: list[float], rng: np.random.Generator, *, every: int = 3,
            levels: tuple[float, ...] = (0.0, 1.5, 0.4, -1.0)) -> pd.DataFrame:
    """VH statistics of a meadow (as :func:`_backscatter`) seen by four tracks in turn, a pass every ``every``
    days: descending 37 and 139, ascending 88 and 161, each at its own level (``levels``, dB: the incidence
    angle differs from track to track, within an orbit direction too)."""
    dates = pd.date_range("2024-03-01", "2024-10-31", freq=f"{every}D")
    day = (dates - dates[0]).days.to_numpy(float)
    vh = _meadow_vh(day, cuts, rng)
    k = np.arange(day.size) % 4
    vh += np.asarray(levels)[k]
    return pd.DataFrame({"parcel_id": pid, "time": dates, "band": "VH", "count": 60, "masked": 0, "mean": vh,
                         "orbit_state": np.where(k < 2, "descending", "ascending"),
                         "relative_orbit": np.array([37, 139, 88, 161])[k]})


def test_backscatter_is_compared_within_one_track(population):
    """Two tracks of one orbit direction see a meadow at levels 1.5 dB apart: compared with each other they
    show a 'cut' at every pass, so an unmown meadow was never flagged. Within each track, it is."""
    frame, declared, _ = population
    rng = np.random.default_rng(11)
    grass = [pid for pid in declared.index if declared[pid] == 3]
    cuts = {pid: [] if pid in ("never-mown", "early-as-grass") else [80.0, 125.0, 170.0] for pid in grass}
    cuts["ploughed"] = [80.0]
    s1 = pd.concat([_tracks(pid, cuts[pid], rng) for pid in grass], ignore_index=True)
    flags = flag_parcels(frame, declared, grassland=[3], s1=s1).set_index("parcel_id")
    assert set(flags.index[flags.no_mowing]) == {"never-mown", "early-as-grass"}
    assert flags.loc["never-mown", "largest_vh_drop"] < 1.0
    assert "of one track" in flags.loc["never-mown", "reasons"]
    # each track passes every 12 days: that is the gap within which a cut is seen, not the 3 days between passes
    np.testing.assert_allclose(flags.loc["never-mown", "longest_vh_gap"], 12, atol=1)


def test_backscatter_seen_too_rarely_by_every_track_judges_no_meadow_unmown(population):
    """Four tracks in turn, a pass every 8 days, so each track every 32 days: no two passes of one track are
    close enough to see a cut, and a mown meadow is not flagged for showing none."""
    frame, declared, _ = population
    rng = np.random.default_rng(12)
    grass = [pid for pid in declared.index if declared[pid] == 3]
    s1 = pd.concat([_tracks(pid, [] if pid == "never-mown" else [80.0, 125.0, 170.0], rng, every=8,
                            levels=(0, 0, 0, 0)) for pid in grass], ignore_index=True)
    flags = flag_parcels(frame, declared, grassland=[3], s1=s1).set_index("parcel_id")
    assert (flags.loc[grass, "longest_vh_gap"] > MarkerRules().max_gap).all()
    assert not flags.no_mowing.any()


def test_a_pass_over_a_sliver_of_the_parcel_is_no_cut(population):
    """Passes that saw 3 of a parcel's 100 pixels (the edge of a swath) give a speckle mean, here 3 dB low:
    they are left out, as NDVI of a mostly cloudy date is, and the unmown meadow is flagged still."""
    frame, declared, _ = population
    rng = np.random.default_rng(13)
    s1 = pd.concat([_backscatter(pid, [], rng) for pid in ("never-mown", "grass-0")], ignore_index=True)
    edge = s1[s1.time.dt.month == 7].copy()
    edge["time"] += pd.Timedelta(hours=1)
    edge = edge.assign(count=3, masked=97, mean=edge["mean"] - 3)
    grass = int((declared == 3).sum())
    # radar of 2 meadows: the others fall back to NDVI, which is said (the README's false alarms are 5x higher)
    with pytest.warns(UserWarning, match=rf"^{grass - 2} of the {grass} grassland parcels have no Sentinel-1 "
                                         rf"statistics in the season: their mowing is judged on the Sentinel-2"):
        flags = flag_parcels(frame, declared, grassland=[3], s1=pd.concat([s1, edge], ignore_index=True))
    flags = flags.set_index("parcel_id")
    assert flags.loc["never-mown", "no_mowing"] and flags.loc["never-mown", "largest_vh_drop"] < 1.0
    # a frame whose masked column is empty (a CSV) cannot tell slivers: every pass counts, none is dropped
    unknown = flag_parcels(frame, declared, grassland=[3], s1=s1.assign(masked=np.nan)).set_index("parcel_id")
    plain = flag_parcels(frame, declared, grassland=[3], s1=s1.drop(columns="masked")).set_index("parcel_id")
    pd.testing.assert_series_equal(unknown.largest_vh_drop, plain.largest_vh_drop)
    assert unknown.largest_vh_drop.notna().sum() == 2


def test_bare_soil_names_the_date_to_look_at(population):
    """The inspector is told on which date the NDVI was that low, the date of a chip to look at."""
    frame, declared, _ = population
    flags = flag_parcels(frame, declared, grassland=[3]).set_index("parcel_id")
    ndvi = ndvi_by_date(frame).loc["ploughed"]
    in_season = ndvi[(ndvi.index >= "2024-05-01") & (ndvi.index < "2024-10-01")]
    assert flags.loc["ploughed", "min_ndvi_date"] == in_season.idxmin()
    assert f"on {in_season.idxmin():%Y-%m-%d}" in flags.loc["ploughed", "reasons"]


def test_a_reason_never_says_a_value_is_below_a_threshold_it_rounds_to(population):
    """A meadow at NDVI 0.2996 read "bare soil in the season (NDVI 0.30 < 0.3 ...)", and a drop of 0.0796 "largest
    NDVI drop 0.08 < 0.08": what an inspector reads as false. The value is written with the decimals that show it."""
    frame, declared, _ = population
    low, flat = np.full(DAY.size, 0.75), np.full(DAY.size, 0.75)
    low[(DAY > 90) & (DAY < 100)] = 0.2996
    flat[DAY == 100] -= 0.0796
    meadows = _frame({"low": low, "flat": flat}, {"low": np.ones(DAY.size, bool), "flat": np.ones(DAY.size, bool)})
    flags = flag_parcels(pd.concat([frame, meadows]), pd.concat([declared, pd.Series({"low": 3, "flat": 3})]),
                         grassland=[3]).set_index("parcel_id")
    assert flags.loc["low", "bare_soil"] and "(NDVI 0.2996 < 0.3 on" in flags.loc["low", "reasons"]
    assert flags.loc["flat", "no_mowing"] and "largest NDVI drop 0.0796 < 0.08," in flags.loc["flat", "reasons"]
    assert "(NDVI 0.12 < 0.3 on" in flags.loc["ploughed", "reasons"]  # two decimals where they show it


def test_what_cannot_be_judged_is_said_not_passed_as_fine(population):
    """A meadow never clear all season, a crop only two parcels declare, a meadow with weeks of clouds:
    not flagged, and not_judged says which markers the data could not judge and why; the others say nothing."""
    frame, declared, _ = population
    rng = np.random.default_rng(9)
    cloudy = np.zeros(DAY.size, bool)
    extra = {"never-clear": _grass([80.0], rng), "rare-1": _arable(120, rng), "rare-2": _arable(120, rng)}
    # six parcels declare crop 8, five of them never clear: one parcel's curve was the crop's "reference"
    extra.update({f"clouded-{i}": _arable(100, rng) for i in range(6)})
    clear = {"never-clear": cloudy, "rare-1": np.ones(DAY.size, bool), "rare-2": np.ones(DAY.size, bool),
             **{f"clouded-{i}": cloudy if i else np.ones(DAY.size, bool) for i in range(6)}}
    frame = pd.concat([frame, _frame(extra, clear)], ignore_index=True)
    declared = pd.concat([declared, pd.Series({"never-clear": 3, "rare-1": 9, "rare-2": 9,
                                               **{f"clouded-{i}": 8 for i in range(6)}})])
    with pytest.warns(UserWarning, match=r"2 declared crop\(s\) have fewer than 5 parcels with a profile in these "
                                         r"statistics, so no reference profile: crop_mismatch is not judged for their "
                                         r"8 parcel\(s\)"):
        flags = flag_parcels(frame, declared, grassland=[3]).set_index("parcel_id")
    assert not flags.loc[["never-clear", "rare-1", "rare-2", "unseen-grass"], "flagged"].any()
    never = flags.loc["never-clear", "not_judged"]
    assert "bare_soil: no clear date in the season" in never and "no_mowing: clear dates up to" in never
    assert "crop_mismatch: 0 clear date(s) give fewer than 6 profile points" in never
    assert flags.loc["rare-1", "not_judged"].startswith(
        "crop_mismatch: fewer than 5 parcels of the statistics declaring 9 have a profile")
    assert flags.loc["clouded-0", "not_judged"].startswith("crop_mismatch: fewer than 5 parcels")
    assert (flags.nearest_crop != 8).all()  # no other parcel judged against one parcel's curve
    assert "no_mowing: clear dates up to" in flags.loc["unseen-grass", "not_judged"]
    ndvi = ndvi_by_date(frame)  # the rest: only meadows with a longer gap between clear dates in the season
    season = ndvi.loc[:, (ndvi.columns >= "2024-05-01") & (ndvi.columns < "2024-10-01")]
    days = (season.columns - season.columns[0]).days.to_numpy()
    gaps = pd.Series({pid: np.diff(np.r_[0, days[row.notna().to_numpy()], days[-1]]).max()
                      for pid, row in season.iterrows()})
    rest = flags.index.difference(["never-clear", "rare-1", "rare-2", *(f"clouded-{i}" for i in range(6))])
    want = (declared[rest] == 3) & (gaps[rest] > MarkerRules().max_gap)
    assert want.sum() >= 2 and ((flags.loc[rest, "not_judged"] != "") == want).all()
    # a meadow seen clearly less often than a ploughing stays bare is not cleared of bare_soil (it was, on one date)
    unploughed = (declared[rest] == 3) & (gaps[rest] > MarkerRules().max_bare_gap) & ~flags.loc[rest, "bare_soil"]
    assert unploughed.sum() >= 1 and unploughed.sum() < want.sum()
    assert (flags.loc[rest, "not_judged"].str.contains("bare_soil: clear dates up to") == unploughed).all()
    assert re.search(r"bare_soil: clear dates up to \d+ days apart in the season, more than 30: a ploughing could "
                     r"hide in the gap", flags.loc["unseen-grass", "not_judged"])
    with pytest.warns(UserWarning, match="no_mowing is not judged"):
        june = flag_parcels(frame[frame.time.between("2024-06-01", "2024-06-30")], declared, grassland=[3])
    assert "no_mowing: the Sentinel-2 dates span" in june.set_index("parcel_id").loc["grass-0", "not_judged"]


def test_a_crop_with_too_few_distances_for_a_z_score_is_not_judged_rather_than_cleared():
    """Five parcels declare crop 5, enough for a reference, but three were clear on three dates only: two parcels have
    a distance to it, and of two each is 0.67 from their median whatever it grows. The late crop among them, far
    nearer crop 2's reference, was not flagged and not_judged said nothing; now it names the z-score's want."""
    rng = np.random.default_rng(11)
    curves, declared = {}, {}
    for i in range(20):
        curves[f"early-{i}"], declared[f"early-{i}"] = _arable(90, rng), 1
        curves[f"late-{i}"], declared[f"late-{i}"] = _arable(160, rng), 2
    curves["seen"], curves["late-as-5"] = _arable(90, rng), _arable(160, rng)
    curves.update({f"glimpsed-{i}": _arable(90, rng) for i in range(3)})
    declared.update({pid: 5 for pid in ("seen", "late-as-5", "glimpsed-0", "glimpsed-1", "glimpsed-2")})
    clear = {pid: np.ones(DAY.size, bool) for pid in curves}
    for i in range(3):
        first = 60 + 5 * i
        clear[f"glimpsed-{i}"] = np.isin(DAY, [first, first + 5, first + 10])  # a few profile points, not six
    flags = flag_parcels(_frame(curves, clear), pd.Series(declared)).set_index("parcel_id")
    wrong = flags.loc["late-as-5"]
    assert wrong.ratio > 5 and wrong.nearest_crop == 2 and not wrong.crop_mismatch and np.isnan(wrong.distance_z)
    for pid in ("late-as-5", "seen"):
        assert "fewer than 5 parcels declaring 5 have the 6 profile points" in flags.loc[pid, "not_judged"]
    assert (flags.loc[[f"late-{i}" for i in range(20)], "not_judged"] == "").all()


def test_gaps_are_counted_in_whole_days(population):
    """Two orbits pass minutes apart: a meadow clear every 25 days measured 25.004-day gaps, over a max_gap of 25,
    and was not judged."""
    frame, declared, _ = population
    clear = {"g": (np.arange(DAY.size) % 5) == 0}  # every fifth 5-day date: 25 days apart
    meadow = _frame({"g": _grass([], np.random.default_rng(1))}, clear)
    late = meadow.time.isin(DATES[(np.arange(DAY.size) % 10) == 5])
    meadow.loc[late, "time"] += pd.Timedelta(minutes=6)  # the other orbit
    flags = flag_parcels(pd.concat([frame, meadow]), pd.concat([declared, pd.Series({"g": 3})]), grassland=[3])
    g = flags.set_index("parcel_id").loc["g"]
    assert g.longest_gap == 25 and g.no_mowing and "no_mowing" not in g.not_judged


def test_statistics_of_two_seasons_or_of_other_parcels_are_refused(population):
    frame, declared, _ = population
    a_year_earlier = frame.assign(time=frame.time - pd.Timedelta(days=364))
    with pytest.raises(InvalidRequestError, match="dates in the seasons of 2023, 2024: flag one year at a time"):
        flag_parcels(pd.concat([a_year_earlier, frame]), declared, grassland=[3])
    s1 = pd.concat([_backscatter(pid, [80.0], np.random.default_rng(2)) for pid in ("grass-0", "grass-1")])
    with pytest.raises(InvalidRequestError, match="Sentinel-1 statistics are of the 2023 season, the Sentinel-2 ones"):
        flag_parcels(frame, declared, grassland=[3], s1=s1.assign(time=s1.time - pd.Timedelta(days=364)))
    with pytest.raises(InvalidRequestError, match="hold none of the parcels of the Sentinel-2 ones"):
        flag_parcels(frame, declared, grassland=[3], s1=s1.assign(parcel_id="elsewhere-" + s1.parcel_id))
    # without grassland codes the radar is still checked and shown, not dropped
    assert "largest_vh_drop" in flag_parcels(frame, declared, s1=s1).columns
    with pytest.raises(InvalidRequestError, match="VH"):
        flag_parcels(frame, declared, s1=s1.assign(band="VV"))
    # a radar season too short to judge leaves the judgement to the clear dates, not to nobody
    short = s1[s1.time.between("2024-06-01", "2024-07-15")]
    with pytest.warns(UserWarning, match="no_mowing is judged on the Sentinel-2 dates"):
        with_short = flag_parcels(frame, declared, grassland=[3], s1=short)
    without = flag_parcels(frame, declared, grassland=[3])
    pd.testing.assert_series_equal(with_short.set_index("parcel_id").no_mowing.sort_index(),
                                   without.set_index("parcel_id").no_mowing.sort_index())
    assert with_short.no_mowing.sum() > 0


def test_an_agricultural_year_of_winter_crops_is_judged_for_crop_mismatch(population):
    """Statistics from September to August (winter crops are sown the autumn before) hold dates of two seasons: they
    were refused ("flag one year at a time") also without grassland codes, where no marker reads the season; the
    advice, --time 2024, cut off the sowing. Now crop_mismatch is judged, and no season's evidence mixes two."""
    frame, declared, _ = population
    a_year_earlier = frame.assign(time=frame.time - pd.Timedelta(days=364))
    sown = pd.concat([a_year_earlier[a_year_earlier.time >= "2023-09-01"], frame])
    flags = flag_parcels(sown, declared)
    assert set(flags.parcel_id[flags.crop_mismatch]) == {"late-as-early-1", "late-as-early-2", "early-as-grass"}
    assert flags.min_ndvi.isna().all() and flags.longest_gap.isna().all()
    with pytest.raises(InvalidRequestError, match="dates in the seasons of 2023, 2024"):
        flag_parcels(sown, declared, grassland=[3])  # the winter would read as a gap in the season
    radar = sown[sown.band == "B04"].assign(band="VH")  # Sentinel-1 of the same year: no marker reads it here
    pd.testing.assert_frame_equal(flag_parcels(sown, declared, s1=radar)[flags.columns], flags)


def test_declarations_and_statistics_that_would_be_guessed_at_are_refused_or_read_right(population):
    frame, declared, _ = population
    with pytest.raises(InvalidRequestError, match=r"1 parcel id\(s\) are declared twice \(e.g. 'grass-0'\)"):
        flag_parcels(frame, pd.concat([declared, pd.Series({"grass-0": 3})]), grassland=[3])
    with pytest.raises(InvalidRequestError, match=r"repeat a parcel, date and band .*parcel 'early-0'"):
        flag_parcels(pd.concat([frame, frame[frame.parcel_id == "early-0"]]), declared)
    # one blank code makes a file's column float: 3.0 is still code 3, as --grassland 3 says
    blank = declared.astype(float)
    blank["early-0"] = np.nan
    floats = flag_parcels(frame, blank, grassland="3").set_index("parcel_id")
    ints = flag_parcels(frame, declared.drop("early-0"), grassland="3").set_index("parcel_id")
    pd.testing.assert_frame_equal(floats, ints)
    # codes of two sources, 3 and "3": one crop (the reference profiles took them for two, the grassland for one)
    mixed = declared.astype(object)
    mixed.iloc[::2] = mixed.iloc[::2].astype(str)
    assert {type(c) for c in mixed} == {int, str}
    pd.testing.assert_frame_equal(flag_parcels(frame, mixed, grassland="3").set_index("parcel_id"),
                                  flag_parcels(frame, declared, grassland="3").set_index("parcel_id"))
    with pytest.warns(UserWarning, match=r"no parcel declares the grassland code\(s\) 33 \(a typo"):
        flag_parcels(frame, declared, grassland="3,33")
    for bad, message in [(dict(step=5.5), "step = 5.5 .must be a whole number"),
                         (dict(outlier_z=np.nan), "outlier_z = nan")]:
        with pytest.raises(InvalidRequestError, match=message):
            MarkerRules(**bad)
    assert MarkerRules(season=["04-15", "10-15"]).season == ("04-15", "10-15")  # as JSON gives it
    # the grassland codes as an array (a column's unique codes), and code 0 as a code
    pd.testing.assert_frame_equal(flag_parcels(frame, declared, grassland=np.array([3])),
                                  flag_parcels(frame, declared, grassland=[3]))
    zero = flag_parcels(frame, declared.replace(3, 0), grassland=0)
    assert zero.no_mowing.sum() == flag_parcels(frame, declared, grassland=3).no_mowing.sum() > 0


def test_statistics_whose_times_are_text_are_read_as_dates(population, tmp_path):
    """A ``cardcube timeseries`` CSV read with ``pd.read_csv`` has its times as text ("2024-05-07T10:50:31Z"): they
    matched none of the dates the profiles are taken at, so every parcel had 0 clear dates and none was flagged, the
    radar's passes none of the season's. They are read as UTC dates, as ``cardcube flag`` reads the file."""
    frame, declared, planted = population
    rng = np.random.default_rng(3)
    grass = [pid for pid in declared.index if declared[pid] == 3]
    s1 = pd.concat([_backscatter(pid, [] if pid == "never-mown" else [80.0, 125.0, 170.0], rng) for pid in grass],
                   ignore_index=True)
    want = flag_parcels(frame, declared, grassland=[3], s1=s1)
    frame.to_csv(tmp_path / "s2.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    s1.to_csv(tmp_path / "s1.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    text, radar = pd.read_csv(tmp_path / "s2.csv"), pd.read_csv(tmp_path / "s1.csv")
    assert not pd.api.types.is_datetime64_any_dtype(text.time) and pd.api.types.is_string_dtype(radar.time)
    got = flag_parcels(text, declared, grassland=[3], s1=radar)
    pd.testing.assert_frame_equal(got, want)
    assert set(got.parcel_id[got.flagged]) == set(planted) and got.longest_vh_gap.max() < 25
    with pytest.raises(InvalidRequestError, match="the time column of the statistics holds no dates"):
        flag_parcels(text.assign(time="spring"), declared)
    with pytest.raises(InvalidRequestError, match="the time column of the Sentinel-1 statistics holds int64"):
        flag_parcels(frame, declared, s1=s1.assign(time=1))


def test_crop_codes_padded_with_spaces_are_the_codes(population):
    """Text codes of a padded export ("3 " beside "3") were two crops: a reference profile each, and the padded
    meadows no grassland, so the ploughed one among them was cleared of bare soil without a word in not_judged."""
    frame, declared, planted = population
    text = declared.astype(str)
    padded = text.copy()
    padded[[pid for pid in padded.index if padded[pid] == "3"][::2]] = "3 "
    assert padded["ploughed"] == "3 "
    got = flag_parcels(frame, padded, grassland="3")
    pd.testing.assert_frame_equal(got, flag_parcels(frame, text, grassland="3"))
    assert set(got.parcel_id[got.flagged]) == set(planted)


def test_a_row_without_a_time_is_refused_clearly(population):
    """A row without its time (a blank in a CSV) made the profiles' grid run from NaT, 1677, to 2024: a MemoryError
    asking for 155 TiB. It is refused, naming a row."""
    frame, declared, _ = population
    blank = frame.copy()
    blank.loc[5, "time"] = pd.NaT
    with pytest.raises(InvalidRequestError, match=r"1 row\(s\) of the statistics have no time \(e.g. parcel 'early-0', "
                                                  r"band B04\)"):
        flag_parcels(blank, declared, grassland=[3])
    s1 = _backscatter("grass-0", [80.0], np.random.default_rng(1))
    s1.loc[3, "time"] = pd.NaT
    with pytest.raises(InvalidRequestError, match=r"1 row\(s\) of the Sentinel-1 statistics have no time"):
        flag_parcels(frame, declared, grassland=[3], s1=s1)
