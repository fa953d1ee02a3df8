"""Statistics the markers (:mod:`cube.anomalies`) refuse to read, each with why: Sentinel-2 statistics of cloudy
pixels (computed without the cloud mask, as recorded or as their rows tell), Sentinel-1 statistics whose VH is not in
dB, rows that repeat a parcel, date and band, and rows without a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cardcube.errors import InvalidRequestError
from cardcube.spec import CLOUD_SCL_CLASSES, DEFAULT_SCL_MASK, SCL_CLASSES
from cube.marker_rules import MarkerRules


def refuse_repeats(frame: pd.DataFrame, what: str) -> None:
    """Refuse a frame with two rows of one parcel, date and band (two files concatenated, a run appended twice):
    which one would count is a guess."""
    repeated = frame.duplicated(["parcel_id", "time", "band"], keep=False)
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise InvalidRequestError(f"the {what} hold {int(repeated.sum())} rows that repeat a parcel, date and band "
                                  f"(e.g. parcel {first.parcel_id!r}, {first.time}, {first.band}): one row each")


def refuse_missing_times(frame: pd.DataFrame, what: str) -> None:
    """Refuse rows of ``frame`` without a time (a blank in a CSV): the profiles' grid ran from NaT, read as 1677, to
    the season's dates, and the markers asked for 155 TiB."""
    missing = frame["time"].isna()
    if missing.any():
        first = frame[missing].iloc[0]
        raise InvalidRequestError(f"{int(missing.sum())} row(s) of the {what} have no time (e.g. parcel "
                                  f"{first.parcel_id!r}, band {first.band}): each row is of a date; drop those rows "
                                  f"or give them their dates")


UNRECORDED = object()  # statistics whose cloud mask no record gives: their rows must tell
CLOUD_COLUMNS = tuple(f"scl_{c}" for c in CLOUD_SCL_CLASSES)  # the rows' counts of cloud pixels, masked or not


def check_cloud_masked(frame: pd.DataFrame, mask: Sequence[int] | object | None = UNRECORDED,
                       where: str = "the statistics") -> None:
    """Refuse Sentinel-2 statistics of cloudy pixels: cloudy dates would read as bare soil and smear every crop's
    profile. ``mask``: the SCL classes they were computed without, as recorded (None: no mask); it must hold every
    cloud class (:data:`~cardcube.spec.CLOUD_SCL_CLASSES`). Without a record (a CSV without its ``.json``, batches
    joined by ``pd.concat``, which drops differing attrs) the rows tell, where they count the SCL classes of their
    pixels (``scl_<class>``): more cloud pixels than masked ones is no mask."""
    if not check_mask_record(mask, where):
        refuse_cloudy_rows(cloudy_rows(frame), len(frame), where)


ADVICE = "compute them with the cloud mask (the default)"


def check_units(units: Mapping[str, Any] | None, where: str = "the Sentinel-1 statistics") -> None:
    """Refuse Sentinel-1 statistics whose recorded ``units`` (band: units, as a frame's attrs, a manifest or a record
    give them) say VH is not in dB, the mowing marker's threshold (``mowing_drop_db``): VH averaged as linear power (a
    Dataset converted on purpose) was read as dB, every drop far below 1.2 and every meadow unmown. (NDVI is a ratio:
    the reflectances' units do not change it.)"""
    unit = units.get("VH") if isinstance(units, Mapping) else None  # no record: as cardcube computes them, dB
    if unit is not None and str(unit).strip().lower() not in ("db", "decibel"):
        raise InvalidRequestError(f"{where} give VH in {unit!r}: the mowing marker's drop "
                                  f"({MarkerRules.mowing_drop_db} dB by default) is of backscatter in dB; compute them "
                                  f"as cardcube does "
                                  f"(parcel_timeseries of the cube, or of a Dataset whose VH is in dB)")


def check_mask_record(mask: Sequence[int] | object | None, where: str = "the statistics") -> bool:
    """Refuse a recorded ``mask`` (:func:`check_cloud_masked`) that keeps clouds; whether there was a record (if
    not, the rows must tell)."""
    if isinstance(mask, str):  # as a timeseries file's record spells it
        mask = None if mask.strip().lower() == "none" else DEFAULT_SCL_MASK if mask == "default" else UNRECORDED
    if mask is None:
        raise InvalidRequestError(f"{where} were computed without the cloud mask (--no-mask, mask=None): cloudy "
                                  f"dates would read as bare soil and smear every crop's profile; {ADVICE}")
    if mask is UNRECORDED:
        return False
    kept = [c for c in CLOUD_SCL_CLASSES if c not in set(mask)]
    if kept:
        raise InvalidRequestError(f"{where} were computed with a mask of SCL classes {list(mask)}, which keeps "
                                  f"the cloud class(es) {', '.join(f'{c} ({SCL_CLASSES[c]})' for c in kept)}: "
                                  f"cloudy dates would read as bare soil; {ADVICE}")
    return True


def cloudy_rows(frame: pd.DataFrame) -> int:
    """How many rows of ``frame`` count more cloud pixels (``scl_<class>``) than masked ones: 0 where it has no such
    counts (made otherwise: nothing tells)."""
    if "masked" not in frame.columns or not set(CLOUD_COLUMNS) <= set(frame.columns):
        return 0
    return int((frame[list(CLOUD_COLUMNS)].fillna(0).sum(axis=1) > frame["masked"].fillna(0)).sum())


def refuse_cloudy_rows(cloudy: int, rows: int, where: str = "the statistics") -> None:
    """Refuse statistics ``cloudy`` of whose ``rows`` count more cloud pixels than masked ones."""
    if cloudy:
        classes = ", ".join(map(str, CLOUD_SCL_CLASSES))
        raise InvalidRequestError(f"{where} were computed without the cloud mask: {cloudy} of their {rows} rows "
                                  f"count more cloud pixels (SCL {classes}) than masked ones; {ADVICE}")

