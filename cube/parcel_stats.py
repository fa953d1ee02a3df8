"""Statistics as users get them: :class:`ParcelStats` (one band, parcels x dates), :class:`ClassHistogram`
(SCL class counts), and the one tidy table both become, one row per parcel, date and band."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from cardcube.errors import InvalidRequestError
from cardcube.spec import DEFAULT_SCL_MASK
from cube.stats import FRAME_COLUMNS

__all__ = ["ClassHistogram", "ParcelStats", "stats_frame", "stats_table"]


@dataclass(frozen=True, eq=False)
class ParcelStats:
    """Statistics of one band for a set of parcels and dates; arrays are (n_parcels, time)."""

    band: str
    parcel_ids: np.ndarray
    times: np.ndarray
    values: Mapping[str, np.ndarray]
    units: str = ""

    def __post_init__(self) -> None:
        shape = (len(self.parcel_ids), len(self.times))
        for name, arr in self.values.items():
            if np.shape(arr) != shape:
                raise InvalidRequestError(f"{self.band} {name} has shape {np.shape(arr)}, expected {shape}")

    def __getitem__(self, stat: str) -> np.ndarray:
        return self.values[stat]

    @property
    def stats(self) -> tuple[str, ...]:
        return tuple(self.values)

    def to_frame(self, *, valid_only: bool = False) -> pd.DataFrame:
        """Tidy frame, one row per parcel and date: ``parcel_id, time, band, count, masked, <stats>``.

        Columns follow :data:`FRAME_COLUMNS` order (extra percentiles at the end). ``valid_only``
        drops rows without a valid pixel.
        """
        return stats_frame([self], valid_only=valid_only)


def stats_frame(results: Sequence[ParcelStats], *, valid_only: bool = False,
                per_date: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The frame users get: :func:`stats_table` as pandas; ``valid_only`` drops rows without a valid pixel."""
    if not results:
        return pd.DataFrame(columns=list(FRAME_COLUMNS))
    frame = stats_table(results, per_date=per_date).to_pandas()
    if valid_only:
        frame = frame[frame["count"] > 0].reset_index(drop=True)
    return frame


def _column(values: np.ndarray, rows: np.ndarray, *, encoded: bool = False) -> pa.Array:
    """``values[rows]`` as an Arrow column; strings and other objects are taken by Arrow, so a territory's
    millions of rows never become Python objects. ``encoded``: text as an Arrow dictionary column, its distinct
    values and each row's position among them, which a Parquet writer stores as they are, where it would otherwise
    hash every row's text again (values that are not all text: as without)."""
    if values.dtype == object:
        if encoded and all(isinstance(v, str) for v in values):
            distinct, position = np.unique(values, return_inverse=True)
            return pa.DictionaryArray.from_arrays(pa.array(position.astype(np.int32)[rows]),
                                                  pa.array(distinct, type=pa.string()))
        return pa.array(values).take(pa.array(rows))
    return pa.array(values[rows])


def stats_table(results: Sequence[ParcelStats], *, per_date: Mapping[str, np.ndarray] | None = None,
                encoded: bool = False) -> pa.Table:
    """Several bands' :class:`ParcelStats` of the same parcels and dates as one Arrow table, one row per
    parcel, date and band, sorted by parcel, time and band. ``per_date`` adds columns that do not depend
    on the band (SCL class counts, acquisition metadata): arrays of shape (n_parcels, time) or (time,).
    ``encoded``: the text columns (ids, bands, per-date text) as Arrow dictionaries, for a Parquet file that stores
    no Arrow schema (:data:`cube.extraction_files.TIMESERIES_PARQUET`), whose readers get plain text back.

    Built by index arithmetic on the stacked arrays, never by sorting or merging rows: this is the
    output path of a territory-wide extraction.
    """
    if not results:
        raise InvalidRequestError("stats_table needs the statistics of at least one band")
    ids, times = np.asarray(results[0].parcel_ids), np.asarray(results[0].times)
    if any(not (np.array_equal(r.parcel_ids, ids) and np.array_equal(r.times, times)) for r in results[1:]):
        raise InvalidRequestError("stats_table needs the statistics of the same parcels and dates for every band")
    bands = np.array([r.band for r in results], dtype=object)
    by_id, by_time, by_band = (np.argsort(a, kind="stable") for a in (ids, times, bands))
    n, t, b = ids.size, times.size, bands.size
    parcel_row = np.repeat(np.arange(n), t * b)  # each row's parcel, date and band (positions in sorted order)
    time_row = np.tile(np.repeat(np.arange(t), b), n)
    # each row's place in a (band, parcel, time) stack and in a (parcel, time) array: one take per column
    per_parcel_time = (by_id[:, None] * t + by_time[None, :]).reshape(-1)
    stacked = (by_band[None, :] * (n * t) + per_parcel_time[:, None]).reshape(-1)
    parcel_time = np.repeat(per_parcel_time, b)

    data: dict[str, Any] = {"parcel_id": _column(ids[by_id], parcel_row, encoded=encoded),
                            "time": _column(times[by_time], time_row),
                            "band": _column(bands[by_band], np.tile(np.arange(b), n * t), encoded=encoded)}
    names = [c for c in FRAME_COLUMNS[3:] if any(c in r.values for r in results)]
    names += list(dict.fromkeys(c for r in results for c in r.values if c not in names))
    for name in names:
        fill = 0 if name in ("count", "masked") else np.nan
        data[name] = np.stack([np.asarray(r.values[name]) if name in r.values else np.full((n, t), fill)
                               for r in results]).reshape(-1).take(stacked)
    for name, arr in (per_date or {}).items():
        arr = np.asarray(arr)
        if arr.dtype == object and not arr.size:  # a text column (platform) of no date: text still, not Arrow's null
            arr = arr.astype(str)
        data[name] = (_column(arr[by_time], time_row, encoded=encoded) if arr.ndim == 1 else
                      _column(arr.reshape(-1), parcel_time, encoded=encoded))
    return pa.table(data)


@dataclass(frozen=True, eq=False)
class ClassHistogram:
    """Class counts (e.g. SCL) per parcel and date: ``counts`` is (n_parcels, time, n_classes).

    Kept apart from the band statistics because it is per date, not per band: its frame joins the
    band frame on ``(parcel_id, time)``.
    """

    parcel_ids: np.ndarray
    times: np.ndarray
    class_codes: tuple[int, ...]
    counts: np.ndarray
    prefix: str = "scl"

    def __post_init__(self) -> None:
        shape = (len(self.parcel_ids), len(self.times), len(self.class_codes))
        if np.shape(self.counts) != shape:
            raise InvalidRequestError(f"class counts have shape {np.shape(self.counts)}, expected {shape}")

    def fraction(self, codes: Iterable[int] = DEFAULT_SCL_MASK) -> np.ndarray:
        """Share of counted pixels in ``codes`` per parcel and date (n_parcels, time); NaN if none.

        With the default SCL mask this is the cloud/unusable fraction that marks cloudy dates.
        """
        sel = np.isin(np.asarray(self.class_codes), list(codes))
        total = self.counts.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.counts[:, :, sel].sum(axis=2) / total, np.nan)

    def to_frame(self) -> pd.DataFrame:
        """One row per parcel and date: ``parcel_id, time, <prefix>_<code>...`` pixel counts."""
        n, t, _ = self.counts.shape
        data: dict[str, object] = {
            "parcel_id": np.repeat(np.asarray(self.parcel_ids), t),
            "time": np.tile(np.asarray(self.times), n),
        }
        for i, code in enumerate(self.class_codes):
            data[f"{self.prefix}_{code}"] = self.counts[:, :, i].reshape(-1)
        return pd.DataFrame(data)
