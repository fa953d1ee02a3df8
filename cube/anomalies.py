"""Parcels whose Sentinel-2 and Sentinel-1 signal does not fit their declaration: checks-by-monitoring markers.

Works on the per-date statistics that :func:`cube.timeseries.parcel_timeseries` returns and
:func:`cube.extract.extract` writes (band means of B04 and B08, with the clear and masked pixel counts), so
a territory is checked from its extraction output without reading the cube again:

1. **NDVI per parcel and clear date**: the NDVI of the parcel's mean red and near-infrared reflectance, on
   the dates where at least ``min_clear`` of its pixels are clear (the SCL mask removed the rest).
2. **Profiles**: each parcel's NDVI interpolated linearly onto a grid of ``step`` days (undefined before
   its first and after its last clear date, and inside a gap of more than ``max_interpolation_gap`` days
   between clear dates: a straight line across weeks of clouds would miss a crop's green peak, and make a
   well-declared crop look like another); a crop's *reference profile* is the median of the profiles
   of the parcels declaring it, which the few that do not grow it do not move.
3. **Markers**, each reported with the numbers behind it, so an inspector sees why a parcel is flagged:

   - ``crop_mismatch``: the RMS distance to the declared crop's reference profile is at least
     ``mismatch_ratio`` times the distance to the nearest other crop's (named in ``nearest_crop``), and
     unusual among the parcels declaring that crop (robust z-score, median and MAD, of at least
     ``outlier_z``; among at least ``min_parcels`` distances, else not judged): where two crops look alike, or a
     crop is sown in two waves, a parcel nearer the other crop's reference is not flagged as long as it is typical
     of its own;
   - ``bare_soil`` (declared grassland): a clear NDVI below ``bare_ndvi`` in the season, i.e. ploughed; a meadow
     whose clear dates there lie more than ``max_bare_gap`` days apart is not cleared of it (not judged);
   - ``no_mowing`` (declared grassland): no drop between observations at most ``max_gap`` days apart in
     the season, although no gap between its observations there is longer (a parcel seen too rarely is
     not flagged: a cut could hide in the gap). Judged only where the statistics' dates span at least
     ``min_season_days`` of the season: a month of data shows no cut for most meadows. With Sentinel-1
     statistics (``s1``), the drop is one of ``mowing_drop_db`` in VH backscatter between passes of the
     same track (orbit direction and relative orbit: tracks see a field at other incidence angles, at
     levels that differ), and the gap is that of the track that saw the season best (every cut falls
     between two of its passes); passes that saw less than ``min_clear`` of the parcel (a swath edge) are
     speckle, not a level, and are left out. Radar sees every cut, clouds or not, as the cut grass stops
     scattering. Without them, of ``mowing_drop`` in NDVI between clear dates, which misses the cuts made
     under a week of clouds.

A marker the data cannot judge for a parcel (no clear date in the season, a crop declared by too few parcels
for a reference, a meadow seen too rarely) is named with the reason in ``not_judged``: an unflagged parcel
is cleared of the other markers only, never silently of all.

The markers are screening rules of the kind paying agencies run before a field visit, with their
thresholds in :class:`MarkerRules`; which codes are grassland is the declaration system's business,
so it is a parameter.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from cardcube.errors import InvalidRequestError
from cube.curve_file import CurveArray, CurveFile, curve_table
from cube.marker_rules import MarkerRules
from cube.ndvi_profiles import (
    NDVI_BANDS,
    batch_ndvi,
    check_columns,
    check_ndvi_bands,
    file_references,
    ndvi_by_date,
    profiles,
    reference_profiles,
    second_pass,
)
from cube.parcel_batches import FrameBatches, ParcelBatches
from cube.season_evidence import (
    RadarRows,
    dates_union,
    epoch_days,
    season_evidence,
    season_mask,
    season_span,
    season_year,
)
from cube.statistics_checks import (
    UNRECORDED,
    check_cloud_masked,
    check_units,
    cloudy_rows,
    refuse_missing_times,
    refuse_repeats,
)

MARKERS = ("crop_mismatch", "bare_soil", "no_mowing")
# what the markers read of a statistics frame, beside the keys
COLUMNS = ("count", "masked", "mean", "orbit_state", "relative_orbit")

__all__ = ["BATCH_SIZE", "COLUMNS", "MARKERS", "MarkerRules", "OpticalRows", "RadarRows", "batch_parcels", "code_list",
           "declarations", "flag_batches", "flag_parcels", "ndvi_by_date", "profiles", "reference_profiles"]


def _robust_z(distance: np.ndarray, codes: np.ndarray, *, min_parcels: int = MarkerRules.min_parcels) -> np.ndarray:
    """Each distance as a robust z-score within its crop: (d - median) / (1.4826 MAD), 0 at the median itself (a MAD
    of 0: most of them alike); NaN without a distance, and for a crop of fewer than ``min_parcels`` distances, too few
    to tell an unusual one (of two, each is 0.67 from their median whatever they are: a wrong crop 20x nearer another
    crop's reference was cleared)."""
    d, crop = pd.Series(distance), pd.Series(codes).astype(str)
    median = d.groupby(crop).transform("median")
    mad = (d - median).abs().groupby(crop).transform("median")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = ((d - median) / (1.4826 * mad)).where(d != median, 0.0).where(d.notna())
    return z.where(d.groupby(crop).transform("count") >= min_parcels).to_numpy()


def _judged(no_cut: pd.Series, span: int, rules: MarkerRules, what: str) -> pd.Series:
    """``no_cut``, or all False (with a warning) where the dates span (``span`` days) too little of the season
    to judge."""
    if span >= rules.min_season_days:
        return no_cut
    warnings.warn(f"the {what} dates span {span} days of the season {rules.season[0]} .. {rules.season[1]}, fewer "
                  f"than {rules.min_season_days}: no_mowing is not judged on them", stacklevel=3)
    return pd.Series(False, index=no_cut.index)


def declarations(declared: Mapping[Any, Any] | pd.Series) -> pd.Series:
    """The declared crop code of each parcel that has one: a blank code is no declaration."""
    if isinstance(declared, pd.DataFrame):  # the parcel table itself, a common slip
        raise InvalidRequestError(f"declared is a DataFrame (columns: {', '.join(map(str, declared.columns[:8]))}): "
                                  f"pass a Series of crop codes indexed by parcel id, e.g. "
                                  f"parcels.set_index('parcel_id')['crop_code']")
    declared = pd.Series(declared)
    repeated = declared.index[declared.index.duplicated()]
    if len(repeated):
        raise InvalidRequestError(f"{len(repeated)} parcel id(s) are declared twice (e.g. {repeated[0]!r}): one "
                                  f"declaration per parcel")
    declared = declared[declared.notna() & (declared.astype(str).str.strip() != "")]
    if declared.dtype == object or pd.api.types.is_string_dtype(declared.dtype):  # "265 " of a padded export is 265:
        declared = declared.map(lambda v: v.strip() if isinstance(v, str) else v)  # it was a crop of its own, no meadow
    if pd.api.types.is_float_dtype(declared) and (declared == declared.round()).all():
        declared = declared.astype("int64")  # a blank code made the column float: code 265 is not "265.0"
    elif declared.dtype == object and len({isinstance(v, str) for v in declared}) > 1:
        # codes of two sources, numbers and text: 265 and "265" are one crop (as the grassland codes compare)
        text = declared.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip())
        declared = text.astype("int64") if text.str.fullmatch(r"-?\d+").all() else text
    return declared


def code_list(codes: Iterable[Any] | str | int, known: Iterable[Any] = ()) -> list[str]:
    """Crop codes as text, each once: a list, one code, or one string of them ``"265, 266"`` (as the command line
    gives them), so that ``"265,266"`` is two codes, not one that no parcel declares; a string that is itself one
    of the ``known`` codes (a crop name, ``"Grasland, blijvend"``) is that code."""
    if isinstance(codes, str) and codes.strip() in {str(c) for c in known}:
        return [codes.strip()]
    items = codes.split(",") if isinstance(codes, str) else [codes] if isinstance(codes, int) else codes
    return list(dict.fromkeys(str(c).strip() for c in items if str(c).strip()))


def flag_parcels(
    frame: pd.DataFrame,
    declared: Mapping[Any, Any] | pd.Series,
    *,
    grassland: Iterable[Any] | str | int = (),
    s1: pd.DataFrame | None = None,
    rules: MarkerRules = MarkerRules(),  # noqa: B008  (frozen: the same rules for every call)
    batch_size: int | None = None,
) -> pd.DataFrame:
    """One row per parcel of ``frame`` (statistics with the ``B04`` and ``B08`` means per date, as
    ``parcel_timeseries`` or ``extract`` give them: NDVI is taken of the mean reflectances, so an ``NDVI``
    band alone does not do) with a declaration: the markers (``crop_mismatch``, ``bare_soil``,
    ``no_mowing``: booleans), ``flagged`` (any of them), ``reasons`` (text for the inspector),
    ``not_judged`` (the markers the data could not judge for the parcel and why, e.g. no clear date in the
    season or a crop too rare for a reference: an unflagged parcel is cleared of the others only) and the
    evidence (``clear_dates``, ``nearest_crop``, ``distance_declared``, ``distance_nearest``, ``ratio``,
    ``distance_z``, ``min_ndvi`` and its ``min_ndvi_date``, ``largest_drop``, ``longest_gap``, and with ``s1``
    ``largest_vh_drop`` and ``longest_vh_gap``), most suspicious first.

    ``declared`` maps parcel id to declared crop code; ``grassland`` lists the codes the grassland markers
    apply to (:func:`code_list`: ``"265,266"`` is two codes; compared as text: ``"265"`` is code 265; if no
    parcel of ``declared`` declares any of them, an error: a typo would switch the markers off; ``frame`` may hold
    none of them, a selection of parcels without grassland). ``s1``: Sentinel-1 statistics of
    the same parcels (``VH`` means per date, with ``orbit_state`` and ``relative_orbit``), for the mowing
    marker; parcels it lacks fall back to NDVI. Parcels of ``frame`` without a declaration are left out
    (there is nothing to check). Dates in two years' seasons are refused if a parcel declares grassland (the winter
    would read as a gap in the season); without, only crop_mismatch is judged, with no season evidence (``min_ndvi``
    ... ``longest_gap`` missing).

    ``batch_size``: parcels judged at a time (:func:`flag_batches`); the flags do not depend on it.
    """
    if frame.attrs.get("collection", "s2") == "s2":
        check_cloud_masked(frame, frame.attrs.get("mask", UNRECORDED))
    if s1 is not None:
        check_units(s1.attrs.get("units"))
    declared = declarations(declared)
    frame, s1 = _dated(frame, "statistics"), None if s1 is None else _dated(s1, "Sentinel-1 statistics")
    ids = declared.index.sort_values()
    batches = ParcelBatches(ids, batch_parcels(batch_size))
    optical = OpticalRows(ids)
    optical.observe(frame)
    radar = None if s1 is None else RadarRows(rules)
    if radar is not None:
        radar.observe(s1)
    return flag_batches(optical, FrameBatches(frame, batches), declared, grassland=grassland, radar=radar,
                        s1=None if s1 is None else FrameBatches(s1, batches, place=False), rules=rules,
                        profiles_on_disk=False)  # the frame in memory dwarfs its profiles: no TMPDIR needed


def _dated(frame: pd.DataFrame, what: str = "statistics") -> pd.DataFrame:
    """``frame`` with its ``time`` column as dates: text (a ``cardcube timeseries`` CSV read by ``pd.read_csv``) is
    read as UTC, as :func:`cube.flag_files.read_statistics` reads the file. Text times matched none of the dates the
    profiles are taken at: every parcel had no clear date, and none was flagged."""
    if "time" not in frame.columns or pd.api.types.is_datetime64_any_dtype(frame["time"]):
        return frame
    if not pd.api.types.is_string_dtype(frame["time"]):
        raise InvalidRequestError(f"the time column of the {what} holds {frame['time'].dtype}, not dates")
    try:
        return frame.assign(time=pd.to_datetime(frame["time"], utc=True).dt.tz_localize(None))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the time column of the {what} holds no dates: {exc}") from None


BATCH_SIZE = 500  # parcels judged at a time: some 20 MB of their statistics and what is made of them in memory


def batch_parcels(batch_size: int | None) -> int:
    """``batch_size`` (None: :data:`BATCH_SIZE`), refused unless a whole number of parcels >= 1."""
    size = BATCH_SIZE if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise InvalidRequestError(f"batch_size must be a whole number of parcels >= 1, not {batch_size!r}")
    return int(size)


class OpticalRows:
    """What the markers must know of all the Sentinel-2 rows before they judge a batch of parcels: their bands, the
    dates of their B04 and B08 rows (the profiles' grid, the season), which of the declared parcels (``ids``,
    sorted) have such rows and which parcels are not declared, and how many rows count clouds as clear pixels.
    :meth:`observe` each part of the rows."""

    def __init__(self, ids: pd.Index) -> None:
        self.ids = ids
        self.bands: set[Any] = set()
        self.times: pd.DatetimeIndex | None = None
        self.seen = np.zeros(len(ids), dtype=bool)  # a row of any band
        self.measured = np.zeros(len(ids), dtype=bool)  # a B04 or B08 row
        self.undeclared: set[Any] = set()
        self.undeclared_measured: set[Any] = set()
        self.rows = self.cloudy = 0

    def observe(self, part: pd.DataFrame) -> None:
        check_columns(part)
        refuse_missing_times(part, "statistics")
        self.rows += len(part)
        self.cloudy += cloudy_rows(part)
        self.bands.update(part["band"].unique())
        at = self.ids.get_indexer(part["parcel_id"])
        ndvi = part["band"].isin(NDVI_BANDS).to_numpy()
        self.seen[at[at >= 0]] = True
        self.measured[at[(at >= 0) & ndvi]] = True
        self.undeclared.update(part["parcel_id"][at < 0].unique())
        self.undeclared_measured.update(part["parcel_id"][(at < 0) & ndvi].unique())
        if ndvi.any():
            self.times = dates_union(self.times, part["time"][ndvi])

    def parcels(self) -> int:
        """How many parcels the rows are of."""
        return int(self.seen.sum()) + len(self.undeclared)


def flag_batches(
    optical: OpticalRows,
    s2: Sequence[pd.DataFrame],
    declared: pd.Series,
    *,
    grassland: Iterable[Any] | str | int = (),
    radar: RadarRows | None = None,
    s1: Sequence[pd.DataFrame] | None = None,
    rules: MarkerRules = MarkerRules(),  # noqa: B008  (frozen: the same rules for every call)
    profiles_on_disk: bool = True,
) -> pd.DataFrame:
    """:func:`flag_parcels` of statistics in batches of parcels: ``s2[k]`` (and ``s1[k]``) holds every row of the
    ``k``-th batch of the declared parcels, in any order (:mod:`cube.parcel_batches`: as the rows first show them),
    ``optical`` (and ``radar``) what was observed of all the rows; ``declared`` as :func:`declarations` gives it.

    Two passes, so that memory holds one batch's statistics and a few numbers per parcel, never the territory's
    rows, and the flags are those of all parcels at once: the first computes each parcel's NDVI profile (kept on
    local disk, :class:`~cube.curve_file.CurveFile`, or in memory without ``profiles_on_disk``) and its season
    evidence, and puts them in id order; each crop's reference profile is then the median over all its parcels,
    exact; the second measures each profile's distances to the references, and the robust z-scores are taken over
    all parcels of a crop."""
    grassland = set(code_list(() if grassland is None else grassland, known=declared.unique()))
    unknown = sorted(grassland - set(declared.astype(str)))
    if unknown:
        known = sorted(set(map(str, declared)))
        said = f"declared codes: {', '.join(known[:30])}{' ...' if len(known) > 30 else ''}"
        if len(unknown) == len(grassland):
            raise InvalidRequestError(f"no parcel declares the grassland code(s) {', '.join(unknown)}; {said}")
        warnings.warn(f"no parcel declares the grassland code(s) {', '.join(unknown)} (a typo leaves the parcels of "
                      f"the code meant unchecked); {said}", stacklevel=3)
    check_ndvi_bands(optical.bands)
    measured = optical.ids[optical.measured]
    if not len(measured):
        def some(ids: Iterable[Any]) -> str:
            ids = list(ids)
            return ", ".join(map(repr, ids[:3])) + (" ..." if len(ids) > 3 else "") or "none"

        raise InvalidRequestError(f"none of the frame's parcels has a declaration to check: the declarations are "
                                  f"indexed by {some(declared.index)}, the frame's parcels are "
                                  f"{some(sorted(optical.undeclared_measured))}; index the crop codes by parcel id "
                                  f"(parcels.set_index('parcel_id').crop_code; cardcube flag: --id-column names the "
                                  f"parcel file's column of the ids the statistics were computed by)")
    codes = declared.reindex(measured).to_numpy()
    times = optical.times
    days = epoch_days(times)
    grid = np.arange(days.min(), days.max() + rules.step, rules.step)
    grass = pd.Series(codes).astype(str).isin(grassland).to_numpy()
    # crop_mismatch reads no season: without grassland, dates of two seasons (winter crops' September to August) are
    # judged, their season evidence left blank rather than two seasons' taken for one
    seasons = set(times[season_mask(times, rules)].year)
    two_seasons = len(seasons) > 1 and not grass.any()
    year = None if two_seasons else season_year(times, rules, "Sentinel-2")
    if year is None and grass.any():
        raise InvalidRequestError(f"no date of the frame lies in the season {rules.season[0]} .. {rules.season[1]}, "
                                  f"which the grassland markers judge")
    if radar is not None:
        radar.check()
    with curve_table(len(measured), grid.size, on_disk=profiles_on_disk) as curves:
        evidence, radar_parcels = _first_pass(optical, s2, s1, radar, curves, grid, times, two_seasons, rules)
        place = measured.get_indexer(evidence.index)  # where each profile, in the batches' order, goes in id order
        if len(place) != len(measured) or (place < 0).any() or len(np.unique(place)) != len(place):
            raise RuntimeError("the statistics changed between their observation and their batches")
        if (place != np.arange(len(place))).any():  # batches in another order than the ids': put in id order
            curves.reorder(place)
            evidence = evidence.iloc[np.argsort(place)]
        refs = file_references(curves, codes, evidence.pop("profiled").to_numpy(), rules.min_parcels)
        _warn_rare(codes, refs, rules)
        own, other, nearest = second_pass(curves, codes, refs, rules)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = own / other
    # the codes' own type, missing where no other crop compares (nullable: a file keeps 2014 a code, not 2014.0)
    nearest = pd.array(nearest.tolist(), dtype=pd.Series(codes).convert_dtypes().dtype)
    out = pd.DataFrame({"declared": codes, "clear_dates": evidence["clear_dates"].to_numpy(),
                        "nearest_crop": nearest, "distance_declared": own, "distance_nearest": other,
                        "ratio": ratio, "distance_z": _robust_z(own, codes, min_parcels=rules.min_parcels)},
                       index=evidence.index)  # the statistics' ids, as they spell them
    out = out.join(evidence[["min_ndvi", "min_ndvi_date", "largest_drop", "longest_gap"]])
    out["crop_mismatch"] = (ratio >= rules.mismatch_ratio) & (out["distance_z"] >= rules.outlier_z).to_numpy()
    out["bare_soil"] = grass & (out["min_ndvi"] < rules.bare_ndvi).to_numpy()
    span = {"Sentinel-2": season_span(times, rules), "Sentinel-1": 0}  # days of the season each spans
    # a drop needs two observations: a meadow seen once (or never) in the season shows no cut, nor its absence
    no_cut = _judged((out["longest_gap"] <= rules.max_gap) & (out["largest_drop"] < rules.mowing_drop),
                     span["Sentinel-2"], rules, "Sentinel-2") if grass.any() else pd.Series(False, index=out.index)
    radar_judged = pd.Series(False, index=out.index)
    if radar is not None:
        out = out.join(evidence[["largest_vh_drop", "longest_vh_gap"]])
        _check_radar(radar, radar_parcels, measured, year, rules)
        span["Sentinel-1"] = season_span(radar.times, rules)
        if grass.any() and span["Sentinel-1"] >= rules.min_season_days:
            radar_judged = out["longest_vh_gap"].notna()
            if without := int((grass & ~radar_judged.to_numpy()).sum()):
                warnings.warn(f"{without} of the {int(grass.sum())} grassland parcels have no Sentinel-1 statistics "
                              f"in the season: their mowing is judged on the Sentinel-2 dates", stacklevel=3)
            no_cut = no_cut.where(~radar_judged, (out["longest_vh_gap"] <= rules.max_gap)
                                  & (out["largest_vh_drop"] < rules.mowing_drop_db))
        elif grass.any():  # too short a radar season: the clear dates judge, as without radar
            warnings.warn(f"the Sentinel-1 dates span {span['Sentinel-1']} days of the season {rules.season[0]} .. "
                          f"{rules.season[1]}, fewer than {rules.min_season_days}: no_mowing is judged on the "
                          f"Sentinel-2 dates", stacklevel=3)
    out["no_mowing"] = grass & no_cut.to_numpy(dtype=bool)
    out["flagged"] = out[list(MARKERS)].any(axis=1)
    out["reasons"] = [_reasons(row, rules, radar=r) for row, r in zip(out.itertuples(), radar_judged, strict=True)]
    out["not_judged"] = [_not_judged(row, rules, grass=g, reference=c in refs, radar=r, span=span)
                         for row, g, c, r in zip(out.itertuples(), grass, codes, radar_judged, strict=True)]
    out.index.name = "parcel_id"
    out = out.reset_index().sort_values(["flagged", "ratio"], ascending=False, kind="stable", ignore_index=True)
    out.attrs["rules"] = asdict(rules)
    return out


def _first_pass(optical: OpticalRows, s2: Sequence[pd.DataFrame], s1: Sequence[pd.DataFrame] | None,
                radar: RadarRows | None, curves: CurveFile | CurveArray, grid: np.ndarray, times: pd.DatetimeIndex,
                two_seasons: bool, rules: MarkerRules) -> tuple[pd.DataFrame, bool]:
    """Batch by batch, each parcel's NDVI profile (written to ``curves`` in the batches' order, the evidence's rows'
    order) and its evidence: clear dates, whether it has a profile, the season's (not of ``two_seasons``) and with
    ``radar`` the backscatter's; and whether the Sentinel-1 statistics hold any of the parcels."""
    parts, done, radar_parcels = [], 0, False
    for k in range(len(s2)):
        rows = s2[k]
        rows = rows[rows["band"].isin(NDVI_BANDS)]
        if rows.empty:
            continue
        refuse_repeats(rows, "statistics")
        ndvi = batch_ndvi(rows, rules.min_clear).reindex(columns=times)  # every date of the statistics, as one frame's
        profile = profiles(ndvi, grid, max_gap=rules.max_interpolation_gap)
        curves.write(done, profile)
        done += len(ndvi)
        seasonal = ndvi.iloc[:, :0] if two_seasons else ndvi
        part = pd.DataFrame({"clear_dates": ndvi.notna().sum(axis=1).to_numpy(),
                             "profiled": ~np.isnan(profile).all(axis=1)}, index=ndvi.index)
        part = part.join(season_evidence(seasonal, rules).set_axis(["min_ndvi", "min_ndvi_date", "largest_drop",
                                                                     "longest_gap"], axis=1))
        if radar is not None and s1 is not None:
            backscatter = s1[k]
            radar_parcels = radar_parcels or bool(backscatter["parcel_id"].isin(ndvi.index).any())
            part = part.join(radar.evidence(backscatter))
        parts.append(part)
    evidence = pd.concat(parts)
    dates = evidence["min_ndvi_date"]
    if dates.notna().any():  # a batch without a date in the season has its own type of NaT
        evidence["min_ndvi_date"] = dates.astype(times.dtype)
    return evidence, radar_parcels


def _warn_rare(codes: np.ndarray, refs: Mapping[Any, np.ndarray], rules: MarkerRules) -> None:
    """Warn of the declared crops too rare for a reference profile: crop_mismatch is not judged for them."""
    declaring = pd.Series(codes)
    rare = declaring[~declaring.isin(list(refs))].value_counts()
    if not refs:
        warnings.warn(f"no declared crop has the {rules.min_parcels} parcels with a profile in these statistics that a "
                      f"reference profile needs: crop_mismatch is not judged (statistics of more parcels are needed, "
                      f"or is the crop column right?)", stacklevel=4)
    elif len(rare):
        warnings.warn(f"{len(rare)} declared crop(s) have fewer than {rules.min_parcels} parcels with a profile in "
                      f"these statistics, so no reference profile: crop_mismatch is not judged for their "
                      f"{int(rare.sum())} parcel(s) (column not_judged; e.g. crop {rare.index[0]}: {rare.iloc[0]} "
                      f"parcel(s))", stacklevel=4)


def _check_radar(radar: RadarRows, held: bool, parcels: pd.Index, year: int | None, rules: MarkerRules) -> None:
    """Refuse Sentinel-1 statistics that cannot be of these parcels' season: none of their parcels (``held``: any
    of ``parcels``), or another year's season (the marker would judge 2024's declarations on 2023's radar without a
    word)."""
    if not held:
        raise InvalidRequestError(f"the Sentinel-1 statistics hold none of the parcels of the Sentinel-2 ones (e.g. "
                                  f"{radar.first!r} against {parcels[0]!r}): are they of this territory?")
    if year is None:  # two seasons without grassland: no marker reads Sentinel-1, nor a season
        return
    radar_year = season_year(radar.times, rules, "Sentinel-1")
    if radar_year is not None and radar_year != year:
        raise InvalidRequestError(f"the Sentinel-1 statistics are of the {radar_year} season, the Sentinel-2 ones of "
                                  f"{year}'s")


def _reasons(row: Any, rules: MarkerRules, *, radar: bool) -> str:
    out = []
    if row.crop_mismatch:
        out.append(f"NDVI profile {row.ratio:.1f}x closer to crop {row.nearest_crop} than to the declared "
                   f"{row.declared} (an outlier among the {row.declared} parcels: z = {row.distance_z:.1f})")
    if row.bare_soil:
        out.append(f"bare soil in the season (NDVI {_below(row.min_ndvi, rules.bare_ndvi, 2)} < {rules.bare_ndvi} on "
                   f"{row.min_ndvi_date:%Y-%m-%d})")
    if row.no_mowing and radar:
        out.append(f"no mowing seen: largest VH drop {_below(row.largest_vh_drop, rules.mowing_drop_db, 1)} dB < "
                   f"{rules.mowing_drop_db} between Sentinel-1 passes of one track, which saw the season at most "
                   f"{row.longest_vh_gap:.0f} days apart")
    elif row.no_mowing:
        out.append(f"no mowing seen: largest NDVI drop {_below(row.largest_drop, rules.mowing_drop, 2)} < "
                   f"{rules.mowing_drop}, clear dates at most {row.longest_gap:.0f} days apart")
    return "; ".join(out)


def _below(value: float, limit: float, digits: int) -> str:
    """``value`` (below ``limit``) with ``digits`` decimals, or more where those round it to the limit: 0.2996 is
    "0.2996", not "0.30", which a reason would say is below 0.3."""
    for d in range(digits, 10):
        if float(text := f"{value:.{d}f}") < limit:
            return text
    return repr(value)


def _not_judged(row: Any, rules: MarkerRules, *, grass: bool, reference: bool, radar: bool,
                span: Mapping[str, int]) -> str:
    """The markers the data could not judge for a parcel, each with why: a parcel that is not flagged is
    cleared of the other markers only (an inspector looks at these by other means)."""
    out = []
    if not reference:
        out.append(f"crop_mismatch: fewer than {rules.min_parcels} parcels of the statistics declaring {row.declared} "
                   f"have a profile (clear dates), so it has no reference profile")
    elif np.isnan(row.distance_declared):
        out.append(f"crop_mismatch: {row.clear_dates} clear date(s) give fewer than {rules.min_points} profile "
                   f"points to compare with the {row.declared} reference")
    elif np.isnan(row.distance_nearest):
        out.append("crop_mismatch: no other crop's reference profile shares enough points to compare with")
    elif np.isnan(row.distance_z):
        out.append(f"crop_mismatch: fewer than {rules.min_parcels} parcels declaring {row.declared} have the "
                   f"{rules.min_points} profile points a distance to its reference needs, too few to tell an unusual "
                   f"one")
    if grass:
        if np.isnan(row.min_ndvi):
            out.append("bare_soil: no clear date in the season")
        elif not row.bare_soil and row.longest_gap > rules.max_bare_gap:
            out.append(f"bare_soil: clear dates up to {row.longest_gap:.0f} days apart in the season, more than "
                       f"{rules.max_bare_gap}: a ploughing could hide in the gap")
        what, gap, drop = ("Sentinel-1", row.longest_vh_gap, row.largest_vh_drop) if radar else (
            "Sentinel-2", row.longest_gap, row.largest_drop)
        seen = "passes of the best Sentinel-1 track" if radar else "clear dates"
        if span[what] < rules.min_season_days:
            out.append(f"no_mowing: the {what} dates span {span[what]} days of the season, fewer than "
                       f"{rules.min_season_days}")
        elif gap > rules.max_gap:
            out.append(f"no_mowing: {seen} up to {gap:.0f} days apart in the season, more than {rules.max_gap}: a "
                       f"cut could hide in the gap")
        elif np.isnan(drop):
            out.append(f"no_mowing: fewer than two {seen} in the season, so no drop to measure")
    return "; ".join(out)
