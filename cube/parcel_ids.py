"""Parcel ids: each parcel of a set has one of its own, of one kind (text or integers), that a column holds.

:func:`check_ids` refuses, naming the rows, ids missing or shared, tuples or geometries given as ids, integers
beyond 64 bits and reals beyond 2**53; :func:`uniform_ids` makes integers and text mixed all text.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from cardcube.errors import InvalidRequestError


def uniform_ids(ids: Sequence[Hashable]) -> list[Hashable]:
    """Ids of one type: integers and text mixed (two registers joined: 1 and "A-4") become text, as GeoJSON's
    do, so that they compare, sort and are stored (Arrow) as one column."""
    if len(set(map(type, ids))) < 2 or len({type(pid) for pid in ids if not pd.isna(pid)}) < 2:  # one kind: at once
        return list(ids)
    return [pid if pd.isna(pid) else str(pid) for pid in ids]  # a missing id stays missing, and refused as such


def check_ids(ids: Sequence[Hashable]) -> None:
    """:class:`InvalidRequestError` unless every parcel of ``ids`` (in the file's order: the rows named are its
    rows) has an id of its own: none missing (None, NaN, a nullable column's ``pd.NA``), none shared. Ids all text
    or all whole numbers, as registers have them, are checked by their kind (each parcel set checks its ids: one
    by one, a register's took a noticeable share of an extraction, which makes several sets)."""
    kinds = set(map(type, ids))
    if kinds == {str}:
        _refuse_missing([k for k, i in enumerate(ids) if not i.strip()])
    elif not all(issubclass(kind, int | np.integer) for kind in kinds):
        _check_each_id(ids)
    elif ids and not (min(ids) >= -(2**63) and max(ids) < 2**63):
        _refuse_beyond_64_bits(ids)
    if len(set(ids)) != len(ids):
        _refuse_shared(ids)


def _refuse_missing(missing: Sequence[int]) -> None:
    """The error of parcels with no id at the rows ``missing``, if any (:func:`check_ids`)."""
    if missing:
        raise InvalidRequestError(f"{len(missing)} parcel(s) have no id (row(s) {', '.join(map(str, missing[:10]))}"
                                  f"{' ...' if len(missing) > 10 else ''}): every parcel needs one")


def _check_each_id(ids: Sequence[Hashable]) -> None:
    """:func:`check_ids` of ids of mixed or other kinds (reals, tuples, missing values), one by one."""
    if tuples := [k for k, i in enumerate(ids) if isinstance(i, tuple)]:  # a frame's MultiIndex: a 2-D id array
        raise InvalidRequestError(f"parcel ids are single values (text or integers), not tuples such as "
                                  f"{ids[tuples[0]]!r} (row {tuples[0]}): a frame indexed by several levels needs its "
                                  f"id column named (id_column=, after reset_index()), or one id made of the levels")
    if shapes := [k for k, i in enumerate(ids) if isinstance(i, BaseGeometry)]:  # --id-column geometry: a traceback
        raise InvalidRequestError(f"parcel ids are single values (text or integers), not geometries such as "  # (Arrow)
                                  f"{ids[shapes[0]].geom_type} (row {shapes[0]}): the id column named is the parcels' "
                                  f"geometry; name the column of their ids (--id-column; Python: id_column=)")
    _refuse_missing([k for k, i in enumerate(ids) if i is None or i is pd.NA or i is pd.NaT
                     or (isinstance(i, float | np.floating) and math.isnan(i))  # pd.NA: a nullable column's gap
                     or (isinstance(i, str) and not i.strip())])  # blank: a shapefile's gap (GDAL reads it so), a CSV's
    _refuse_beyond_64_bits(ids)
    if inexact := [k for k, i in enumerate(ids) if isinstance(i, float | np.floating) and abs(i) > 2**53]:
        raise InvalidRequestError(
            f"{len(inexact)} parcel id(s) are floating-point numbers beyond 2**53, e.g. {ids[inexact[0]]!r} (row "
            f"{inexact[0]}), which keep no more than 16 digits: the ids' last digits are lost (a shapefile reads "
            f"integers of more than 18 digits as reals; a spreadsheet stores every number so); store them as text, "
            f"or in a GeoPackage or GeoParquet as integers")


def _refuse_beyond_64_bits(ids: Sequence[Hashable]) -> None:
    """The error of integer ids no column of integers holds (a uint64 column's above 2**63: a 64-bit hash), if any
    (:func:`check_ids`): the label layer's table of ids failed with pyarrow's OverflowError, after the run began."""
    if beyond := [k for k, i in enumerate(ids) if isinstance(i, int | np.integer) and not -(2**63) <= i < 2**63]:
        raise InvalidRequestError(
            f"{len(beyond)} parcel id(s) are integers beyond 64 bits (signed), e.g. {ids[beyond[0]]} (row "
            f"{beyond[0]}), which no column of integers holds: store them as text")


def _refuse_shared(ids: Sequence[Hashable]) -> None:
    """The error of ids shared by several parcels (:func:`check_ids`)."""
    rows: dict[Hashable, list[int]] = {}
    for k, i in enumerate(ids):
        rows.setdefault(i, []).append(k)
    shared = [(i, r) for i, r in rows.items() if len(r) > 1]
    named = ", ".join(f"{i} (rows {', '.join(map(str, r[:3]))}{' ...' if len(r) > 3 else ''})" for i, r in shared[:10])
    raise InvalidRequestError(
        f"{len(shared)} parcel id{' is' if len(shared) == 1 else 's are'} shared by several parcels: {named}"
        f"{' ...' if len(shared) > 10 else ''}; give each parcel its own id, or name the id column with "
        f"--id-column (Python: id_column=; GeoJSON: properties.parcel_id or the Feature's id, else its "
        f"position)")
