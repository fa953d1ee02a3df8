"""What users pass as parcels, normalised to one object: ids and valid polygons in a target CRS.

:func:`as_parcels` accepts a GeoDataFrame/GeoSeries (ids from a ``parcel_id`` column or the index),
a GeoJSON geometry, Feature or FeatureCollection dict (EPSG:4326 per RFC 7946), a shapely polygon,
parcel ids looked up in a registered parcel set, or a point (lon/lat) looked up there. It returns a
:class:`ParcelSet`: immutable, every operation returns a new one. Reprojection is geopandas/pyproj's.
A parcel file is read by :mod:`cube.parcel_files`, and the parcels' ids checked by :mod:`cube.parcel_ids`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from cardcube.errors import InvalidRequestError, ParcelError, ParcelFileError, ParcelNotFoundError, ParcelTooSmallError
from cardcube.query import check_lonlat
from cardcube.source_files import local_copy
from cube.parcel_files import read_parcel_file, shapefile_parts
from cube.parcel_ids import check_ids, uniform_ids

WGS84 = CRS.from_epsg(4326)

__all__ = ["Overlay", "ParcelSet", "as_parcels", "crs_member", "needs_overlay", "parcel_at", "polygonal",
           "read_parcels", "too_small"]


@dataclass(frozen=True, eq=False)
class ParcelSet:
    """Parcels: ``ids`` and polygonal, valid ``geometries`` in ``crs``; ``repaired`` lists the ids
    whose geometry was invalid and made valid on the way in, ``rejected`` the ``(id, reason)`` of input
    parcels left out because no polygon could be made of them (``as_parcels(..., errors="collect")``)."""

    ids: tuple[Hashable, ...]
    geometries: tuple[BaseGeometry, ...]
    crs: CRS
    repaired: tuple[Hashable, ...] = field(default=())
    rejected: tuple[tuple[Hashable, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.geometries):
            raise InvalidRequestError(f"{len(self.ids)} parcel ids for {len(self.geometries)} geometries")
        check_ids(self.ids)
        object.__setattr__(self, "crs", CRS.from_user_input(self.crs))

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[Hashable, BaseGeometry]]:
        return iter(zip(self.ids, self.geometries, strict=True))

    def __contains__(self, parcel_id: object) -> bool:
        return parcel_id in self._index

    def __repr__(self) -> str:
        head = ", ".join(map(str, self.ids[:3])) + (", ..." if len(self) > 3 else "")
        return f"ParcelSet({len(self)} parcels [{head}], crs={self.crs.to_string()})"

    @cached_property
    def _index(self) -> dict[Hashable, int]:
        return {pid: i for i, pid in enumerate(self.ids)}

    @cached_property
    def _tree(self) -> shapely.STRtree:
        return shapely.STRtree(self.geometries)

    def geometry(self, parcel_id: Hashable) -> BaseGeometry:
        """The polygon of ``parcel_id``; :class:`ParcelNotFoundError` if there is none."""
        try:
            return self.geometries[self._index[parcel_id]]
        except KeyError:
            raise ParcelNotFoundError(f"parcel {parcel_id!r} is not in the parcel set ({len(self)} parcels)") from None

    @cached_property
    def _by_text(self) -> dict[str, Hashable]:
        """Each id by its text, a rejected one's where no parcel's id has the same text."""
        return {**{str(pid): pid for pid, _ in self.rejected}, **{str(pid): pid for pid in self.ids}}

    @cached_property
    def _kinds(self) -> set[str]:
        """The kinds (type names) of the ids, for the hint of an unknown id: found once, not at each one (a REST
        404 of a register of 300,000 parcels took 25 ms, a known id 0.1)."""
        return {type(p).__name__ for p in self.ids}

    @cached_property
    def _rejected(self) -> dict[Hashable, str]:
        return dict(self.rejected)

    @cached_property
    def _repaired_at(self) -> dict[Hashable, int]:
        return {pid: i for i, pid in enumerate(self.repaired)}

    def select(self, parcel_ids: Iterable[Hashable]) -> ParcelSet:
        """The named parcels, in the given order, each once; :class:`ParcelNotFoundError` names the unknown
        ones, and a parcel of the set's ``rejected`` is its :class:`ParcelError` (a file's empty geometry stops
        the parcels asked for, not the others). An id given as text names the parcel of that id as text
        (``"1042"`` from a command line or a URL is the integer id 1042 of a parcel file)."""
        rejected, by_text = self._rejected, self._by_text  # built once: a REST request selects one parcel of 300,000
        parcel_ids = list(dict.fromkeys(p if p in self._index or p in rejected else by_text.get(str(p), p)
                                        for p in parcel_ids))
        for pid in parcel_ids:
            if pid in rejected:
                raise ParcelError(pid, rejected[pid])
        missing = [p for p in parcel_ids if p not in self._index]
        if missing:
            shown = ", ".join(repr(p) for p in missing[:10]) + (" ..." if len(missing) > 10 else "")
            kinds = self._kinds
            kind = {"str": "text", "int": "integers"}.get(next(iter(kinds)), next(iter(kinds)))
            hint = (f"; the registered ids are {kind}, e.g. {', '.join(map(repr, self.ids[:3]))}"
                    if len(kinds) == 1 and type(missing[0]).__name__ not in kinds else "")  # 1 for 'NL-000001'
            raise ParcelNotFoundError(f"unknown parcel id(s) {shown} ({len(self)} parcels registered){hint}")
        repaired = sorted((p for p in set(parcel_ids) if p in self._repaired_at), key=self._repaired_at.__getitem__)
        return ParcelSet(tuple(parcel_ids), tuple(self.geometry(p) for p in parcel_ids), self.crs, tuple(repaired))

    def at(self, x: float, y: float) -> Hashable:
        """Id of the parcel covering point ``(x, y)`` given in this set's CRS (the first one, in set
        order, if the point lies on a shared border)."""
        hits = self._tree.query(Point(x, y), predicate="intersects")
        if hits.size == 0:
            raise ParcelNotFoundError(f"no parcel contains the point ({x:.2f}, {y:.2f}) in {self.crs.to_string()}")
        return self.ids[int(hits.min())]

    def to_crs(self, crs: Any) -> ParcelSet:
        """The same parcels reprojected to ``crs`` (pyproj, always x/y axis order)."""
        crs = CRS.from_user_input(crs)
        if crs == self.crs:
            return self
        geoms = gpd.GeoSeries(list(self.geometries), crs=self.crs).to_crs(crs)
        return ParcelSet(self.ids, tuple(geoms), crs, self.repaired, self.rejected)

    def buffered(self, distance: float) -> ParcelSet:
        """Every parcel buffered by ``distance`` (CRS units, negative = inward).

        :class:`ParcelTooSmallError` for the first parcel of which nothing remains.
        """
        if distance and self.crs.is_geographic:
            raise InvalidRequestError(f"buffer {distance} needs a projected CRS, not {self.crs.to_string()}")
        out = shapely.buffer(np.asarray(self.geometries, dtype=object), distance)
        for pid, geom, b in zip(self.ids, self.geometries, out, strict=True):
            if b.is_empty:
                raise too_small(pid, geom, buffer=distance)
        return ParcelSet(self.ids, tuple(out), self.crs, self.repaired)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of all parcels."""
        return tuple(shapely.total_bounds(np.asarray(self.geometries, dtype=object)).tolist())

    @property
    def areas(self) -> np.ndarray:
        """Area of each parcel in CRS units (m² on a projected grid)."""
        return shapely.area(np.asarray(self.geometries, dtype=object))

    def to_geodataframe(self) -> gpd.GeoDataFrame:
        """A GeoDataFrame with a ``parcel_id`` column."""
        return gpd.GeoDataFrame({"parcel_id": list(self.ids)}, geometry=list(self.geometries), crs=self.crs)


def too_small(parcel_id: Hashable, geometry: BaseGeometry, *, buffer: float,
              all_touched: bool = False) -> ParcelTooSmallError:
    """The error for a parcel that keeps no pixel after ``buffer`` (one message everywhere), with what to change:
    never the ``all_touched`` already given."""
    smaller = "a smaller buffer (--buffer; Python and REST: buffer=)"
    more = (f"{smaller} keeps more of its pixels" if all_touched else
            f"{smaller} or --all-touched (all_touched=true) keeps more of its pixels" if buffer < 0 else
            "--all-touched (Python and REST: all_touched=true) counts every pixel it touches")
    return ParcelTooSmallError(
        parcel_id, f"area {geometry.area:.0f} m² leaves no pixel after an inward buffer of {abs(buffer):g} m; {more}"
    )


def polygonal(pid: Hashable, geom: BaseGeometry | None, *, repair: bool) -> tuple[BaseGeometry, bool]:
    """``geom`` as a valid (Multi)Polygon, and whether it had to be repaired; :class:`ParcelError` if it is none
    (``repair=False``: an invalid one too)."""
    if geom is None or geom.is_empty:
        raise ParcelError(pid, "has an empty geometry")
    if not np.isfinite(shapely.get_coordinates(geom)).all():  # the repair dropped the vertex: another polygon
        raise ParcelError(pid, "has a coordinate that is no finite number (NaN or infinite)")
    repaired = False
    if isinstance(geom, shapely.GeometryCollection):  # its polygons made valid first: GEOS's union of an invalid
        parts, flat = [], []  # one raised a TopologyException (a 500)
        for g in geom.geoms:
            if g.geom_type not in ("Polygon", "MultiPolygon") or g.is_empty:
                continue
            try:
                parts.append(polygonal(pid, g, repair=repair))
            except ParcelError as exc:  # no area left after repair: left out, as its lines are, if a polygon is left
                if not repair:
                    raise
                flat.append(exc)
        if flat and not parts:
            raise flat[0]
        geom, repaired = shapely.union_all([g for g, _ in parts]), bool(flat) or any(r for _, r in parts)
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise ParcelError(pid, f"is a {geom.geom_type}, not a polygon")
    if geom.is_valid:
        return geom, repaired
    reason = shapely.is_valid_reason(geom)
    if not repair:
        raise ParcelError(pid, f"invalid geometry ({reason})")
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    if fixed.is_empty or fixed.geom_type not in ("Polygon", "MultiPolygon"):
        raise ParcelError(pid, f"invalid geometry ({reason}) with no area left after repair")
    return fixed, True


def needs_overlay(geom: BaseGeometry | None) -> bool:
    """Whether :func:`polygonal` makes ``geom`` a polygon by an overlay (an invalid one's repair, a collection's
    union): work that grows with the square of its vertices where its edges cross (an outline of 3,000 vertices
    crossing itself at random: 50 s and 2.3 GB), where a valid polygon is only checked."""
    if geom is None or geom.is_empty:
        return False
    return not geom.is_valid or (isinstance(geom, shapely.GeometryCollection) and len(geom.geoms) > 1)


Overlay = Callable[[Sequence[Hashable], Sequence[BaseGeometry], bool], list["tuple[BaseGeometry, bool] | ParcelError"]]


def _sound(geoms: Sequence[BaseGeometry | None]) -> np.ndarray:
    """Which of ``geoms`` :func:`polygonal` would return as they are: valid, non-empty (Multi)Polygons of finite
    coordinates, found for all at once (one by one, seconds of a register of 300,000)."""
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    known = np.array([isinstance(g, BaseGeometry) for g in arr], dtype=bool)
    ok = np.zeros(len(arr), dtype=bool)
    g = arr[known]
    ok[known] = np.isin(shapely.get_type_id(g), (3, 6)) & ~shapely.is_empty(g) & shapely.is_valid(g)
    coords, at = shapely.get_coordinates(arr[ok], return_index=True)
    finite = np.ones(int(ok.sum()), dtype=bool)
    finite[at[~np.isfinite(coords).all(axis=1)]] = False
    ok[np.flatnonzero(ok)[~finite]] = False
    return ok


def _build(
    ids: Sequence[Hashable], geoms: Sequence[BaseGeometry | None], src: Any, crs: Any, *, repair: bool,
    errors: str = "raise", overlay: Overlay | None = None,
) -> ParcelSet:
    if not ids:
        raise InvalidRequestError("no parcels given")
    ids = uniform_ids(ids)
    check_ids(ids)  # of every row: a repeated id on a row of no polygon was "has an empty geometry"
    if errors not in ("raise", "collect"):
        raise InvalidRequestError(f"errors must be 'raise' or 'collect', not {errors!r}")
    src = CRS.from_user_input(src)
    overlaid: dict[int, tuple[BaseGeometry, bool] | ParcelError] = {}
    sound = _sound(geoms)
    if overlay is not None and (costly := [k for k, g in enumerate(geoms) if not sound[k] and needs_overlay(g)]):
        overlaid = dict(zip(costly, overlay([ids[k] for k in costly], [geoms[k] for k in costly], repair),
                            strict=True))
    kept, fixed, repaired, rejected = [], [], [], []
    for k, (pid, g) in enumerate(zip(ids, geoms, strict=True)):
        if sound[k]:
            kept.append(pid)
            fixed.append(g)
            continue
        try:
            done = overlaid[k] if k in overlaid else polygonal(pid, g, repair=repair)
            if isinstance(done, ParcelError):
                raise done
            geom, was_repaired = done
        except ParcelError as exc:
            if errors == "raise":
                raise
            rejected.append((pid, exc.reason))
            continue
        kept.append(pid)
        fixed.append(geom)
        if was_repaired:
            repaired.append(pid)
    if not kept:
        raise ParcelError(rejected[0][0], f"{rejected[0][1]}; none of the {len(ids)} parcels is a polygon")
    if src.is_geographic:
        check_lonlat(tuple(shapely.total_bounds(np.asarray(fixed, dtype=object))), src.to_string(),
                     what="parcel coordinates", advice="say their CRS (a GeoDataFrame's own; a shapely geometry's "
                     "as geopandas.GeoSeries([geometry], crs=...), which parcel_timeseries and chip take, or "
                     "as_parcels(..., src_crs=...); crs= in a REST request, e.g. crs=EPSG:32631)")
    parcels = ParcelSet(tuple(kept), tuple(fixed), src, tuple(repaired), tuple(rejected))
    return parcels if crs is None else parcels.to_crs(crs)


def read_parcels(parcels: Any, *, id_column: str = "parcel_id", layer: str | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> gpd.GeoDataFrame:
    """A parcel file (GeoParquet, GeoPackage, GeoJSON, shapefile) or GeoDataFrame as a GeoDataFrame. A file
    must have ``id_column``: its row numbers are no parcel ids (a GeoDataFrame may use its index). A file of
    several layers (a GeoPackage with a layer per year) needs ``layer``: the first one may be the wrong one.

    The file may be a local path or a URL: ``s3://`` (``storage_options`` as for the cube, e.g. its
    ``endpoint_url``; the environment's endpoint and keys otherwise), ``http(s)://`` (a pre-signed URL too), read
    through fsspec into a temporary copy (:func:`cardcube.source_files.local_copy`): read once, by the process that
    asked (a cluster's workers get the parcels with their tasks)."""
    if isinstance(parcels, gpd.GeoDataFrame):
        return parcels
    if not isinstance(parcels, str | os.PathLike):
        return as_parcels(parcels, id_column=id_column).to_geodataframe()
    path = os.fspath(parcels).removeprefix("file://")
    if "://" not in path:
        if not os.path.exists(path):
            raise ParcelFileError(f"no parcel file at {path}")
        return read_parcel_file(path, path, id_column=id_column, layer=layer)
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(local_copy(path, storage_options=storage_options,
                                                   companions=shapefile_parts(path)))
        except FileNotFoundError as exc:
            raise ParcelFileError(f"no parcel file at {exc}") from None
        return read_parcel_file(os.fspath(local), path, id_column=id_column, layer=layer)


def _clean_id(value: Any) -> Hashable:
    return value.item() if isinstance(value, np.generic) else value


def _row_numbers(index: pd.Index) -> bool:
    """Whether ``index`` may be the one a frame gets when nobody chose one: unnamed integers, 0, 1, 2, ... or some of
    them (a frame filtered, ``parcels[parcels.crop == 233]``, or sliced keeps the numbers of its rows in the whole):
    ids set as the index are named by ``set_index``, and such an unnamed index may be given a name to be read so."""
    return index.name is None and (isinstance(index, pd.RangeIndex) or pd.api.types.is_integer_dtype(index.dtype))


def _index_name(index: pd.Index) -> str:
    return "unnamed" if index.name is None else f"named {index.name!r}"


def _from_frame(gdf: gpd.GeoDataFrame | gpd.GeoSeries, id_column: str) -> tuple[list, list, CRS]:
    if gdf.crs is None:
        raise InvalidRequestError("the parcels have no CRS; set one with GeoDataFrame.set_crs")
    if isinstance(gdf, gpd.GeoDataFrame) and id_column in gdf.columns:
        ids = gdf[id_column].tolist()
    elif isinstance(gdf, gpd.GeoDataFrame) and id_column != "parcel_id" and gdf.index.name != id_column:
        columns = [str(c) for c in gdf.columns if c != gdf.geometry.name]  # a misspelt name read another index's ids
        otherwise = "" if _row_numbers(gdf.index) else ", or leave id_column out to read the index as the ids"
        raise InvalidRequestError(f"the parcels have no {id_column!r} column (columns: {', '.join(columns) or 'none'}) "
                                  f"and their index is {_index_name(gdf.index)}: name the id column (id_column=, "
                                  f"--id-column){otherwise}")
    elif isinstance(gdf, gpd.GeoDataFrame) and _row_numbers(gdf.index):
        columns = [str(c) for c in gdf.columns if c != gdf.geometry.name]
        raise InvalidRequestError(f"the parcels have no {id_column!r} column (columns: {', '.join(columns) or 'none'}) "
                                  f"and their index is row numbers (unnamed integers: those of the rows kept, of a "
                                  f"frame filtered or sliced), which are no parcel ids: name the id column "
                                  f"(id_column=, --id-column) or make it the index (parcels.set_index(...)); an "
                                  f"index holding the ids is named (parcels.rename_axis({id_column!r}))")
    else:
        ids = gdf.index.tolist()
    geoms = list((gdf.geometry if isinstance(gdf, gpd.GeoDataFrame) else gdf).to_numpy())  # not tolist(): one by one
    return [_clean_id(i) for i in ids], geoms, gdf.crs


def _shape(obj: Any, where: str) -> BaseGeometry:
    """A shapely geometry of GeoJSON ``obj``; malformed coordinates are the user's input error."""
    try:
        return shape(obj)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,  # an integer beyond floats
            shapely.errors.ShapelyError) as exc:  # GEOS's, and an unknown type within a GeometryCollection
        raise InvalidRequestError(f"{where}: malformed GeoJSON geometry ({type(exc).__name__}: {exc})") from None
    except RecursionError:  # coordinates nested hundreds of levels deep
        raise InvalidRequestError(f"{where}: malformed GeoJSON geometry (coordinates nested too deep)") from None


def _json_kind(value: Any) -> str:
    """What ``value`` is in JSON's words (a client posting GeoJSON knows no Python types)."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return next((kind for t, kind in kinds.items() if isinstance(value, t)), "an object")


def _from_geojson(obj: Mapping[str, Any], id_column: str) -> tuple[list, list]:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features") or []
        if isinstance(features, str | bytes | Mapping) or not isinstance(features, Iterable):  # list() of a dict
            raise InvalidRequestError(f"the features of a FeatureCollection are an array of Features, not "  # took
                                      f"{_json_kind(features)}")  # its keys for the features, of a number: a 500
        features = list(features)
    elif kind == "Feature":
        features = [obj]
    elif kind in ("Polygon", "MultiPolygon", "GeometryCollection", "Point", "LineString", "MultiLineString"):
        return [0], [_shape(obj, "parcel 0")]
    else:
        raise InvalidRequestError(f"not a GeoJSON geometry, Feature or FeatureCollection: type {kind!r}")
    ids, geoms = [], []
    for i, feat in enumerate(features):
        if not isinstance(feat, Mapping):
            raise InvalidRequestError(f"feature {i} is not a GeoJSON Feature: {str(feat)[:80]}")
        if "geometry" not in feat and ("coordinates" in feat or "geometries" in feat):  # "has an empty geometry"
            raise InvalidRequestError(f"feature {i} is a bare geometry ({str(feat.get('type'))[:40]}), not a "
                                      f"Feature: wrap it as {{\"type\": \"Feature\", \"geometry\": ..., "
                                      f"\"properties\": {{\"{id_column}\": ...}}}}")
        props = feat.get("properties") or {}
        if not isinstance(props, Mapping):
            raise InvalidRequestError(f"feature {i}: its properties are an object (or null), not "
                                      f"{_json_kind(props)}")
        pid = props.get(id_column, feat.get("id", i))
        if not isinstance(pid, str | int) or isinstance(pid, bool):
            raise InvalidRequestError(f"feature {i}: its id {str(pid)[:40]!r} is not a string or an integer")
        if isinstance(pid, int) and not -(2**63) <= pid < 2**63:  # no column of integers holds it
            raise InvalidRequestError(f"feature {i}: its id {str(pid)[:40]} is an integer beyond 64 bits: give it as "
                                      f"a string")
        ids.append(pid)
        geom = feat.get("geometry")
        geoms.append(_shape(geom, f"parcel {ids[-1]}") if geom else None)
    return ids, geoms  # "a" and 2 (a feature without id) are made text by _build


def crs_member(obj: Mapping[str, Any]) -> str | None:
    """The CRS the ``crs`` member of GeoJSON ``obj`` names (GeoJSON of 2008, which GDAL and QGIS write for a CRS
    other than lon/lat; RFC 7946 dropped it), or None without one; :class:`InvalidRequestError` for a member that
    names none: its coordinates would be read as lon/lat."""
    member = obj.get("crs")
    if member is None:
        return None
    props = member.get("properties") if isinstance(member, Mapping) and member.get("type") == "name" else None
    name = props.get("name") if isinstance(props, Mapping) else None
    try:
        CRS.from_user_input(name)
    except (CRSError, TypeError):
        raise InvalidRequestError(f"the GeoJSON's crs member {json.dumps(member)[:120]} names no CRS known here: "
                                  f"write it as {{\"type\": \"name\", \"properties\": {{\"name\": \"EPSG:28992\"}}}}, "
                                  f"or leave it out and say the CRS (REST: crs=EPSG:28992)") from None
    return name


def _geojson_crs(obj: Mapping[str, Any], src_crs: Any) -> CRS:
    """The CRS of GeoJSON ``obj``'s coordinates: ``src_crs``, else its ``crs`` member's, else lon/lat (RFC 7946);
    a ``src_crs`` other than the member's is refused (coordinates of one read as the other's land elsewhere)."""
    member = crs_member(obj)
    if src_crs is None:
        return CRS.from_user_input(member) if member is not None else WGS84
    src = CRS.from_user_input(src_crs)
    if member is not None and not src.equals(CRS.from_user_input(member), ignore_axis_order=True):
        raise InvalidRequestError(f"the GeoJSON's crs member says {member}, and its CRS is given as "
                                  f"{src.to_string()}: which one are its coordinates in? Give one (REST: crs=, "
                                  f"which may be left out for the member's)")
    return src


def as_parcels(
    parcels: Any,
    *,
    crs: Any = None,
    registry: ParcelSet | gpd.GeoDataFrame | None = None,
    src_crs: Any = None,
    id_column: str = "parcel_id",
    repair: bool = True,
    errors: str = "raise",
    overlay: Overlay | None = None,
) -> ParcelSet:
    """Normalise user input to a :class:`ParcelSet` in ``crs`` (None: keep the input CRS).

    ``parcels`` may be a ParcelSet, a GeoDataFrame or GeoSeries (ids from ``id_column`` or the index; a
    GeoDataFrame without that column whose index is unnamed integers, row numbers or some of them, is refused, naming
    its columns),
    a parcel file given as a ``Path`` (:func:`read_parcels`; a ``str`` is an id), a GeoJSON dict (ids from
    ``properties[id_column]``, the Feature ``id`` or the position), a shapely polygon (id 0), a shapely
    Point (the registered parcel containing it), or one id / a list, array, pandas column or index of ids
    looked up in ``registry``.
    ``src_crs`` is the CRS of GeoJSON and shapely input (default: a GeoJSON's ``crs`` member, else EPSG:4326; a
    ``src_crs`` other than the member says is refused). Invalid polygons are
    made valid (``repair=True``, listed in ``.repaired``) or raise :class:`ParcelError`; with
    ``errors="collect"`` parcels that are no polygon (empty, a line, beyond repair) are left out and
    listed in ``.rejected`` with the reason instead. ``overlay``: where the parcels that need an overlay
    (:func:`needs_overlay`) are made polygons, all at once, as :func:`polygonal` each (None: here); for input of
    unknown origin, in a child process with limits (:func:`cube.geometry_trial.polygonal_in_child`: a posted parcel).
    """
    if isinstance(parcels, ParcelSet):
        return parcels if crs is None else parcels.to_crs(crs)
    if isinstance(parcels, os.PathLike):  # a parcel file (a str is a parcel id)
        parcels = read_parcels(parcels, id_column=id_column)
    if isinstance(parcels, gpd.GeoDataFrame | gpd.GeoSeries):
        ids, geoms, src = _from_frame(parcels, id_column)
        return _build(ids, geoms, src, crs, repair=repair, errors=errors, overlay=overlay)
    if isinstance(parcels, Point):
        reg = _registry(registry, "a point", id_column)
        pid = parcel_at(parcels.x, parcels.y, reg, crs=src_crs or WGS84)
        return as_parcels(reg.select([pid]), crs=crs)
    if isinstance(parcels, BaseGeometry):
        return _build([0], [parcels], src_crs or WGS84, crs, repair=repair, errors=errors, overlay=overlay)
    if isinstance(parcels, Mapping):
        ids, geoms = _from_geojson(parcels, id_column)
        src = _geojson_crs(parcels, src_crs)
        return _build(ids, geoms, src, crs, repair=repair, errors=errors, overlay=overlay)
    if isinstance(parcels, str | int | np.integer):
        parcels = [parcels]
    if (column := _id_column_values(parcels)) is not None:
        parcels = column
    if isinstance(parcels, Sequence | np.ndarray) and not isinstance(parcels, bytes):
        if len(parcels) == 0:
            raise InvalidRequestError("no parcel ids given")
        reg = _registry(registry, "parcel ids", id_column)
        return as_parcels(reg.select(_clean_id(p) for p in parcels), crs=crs)
    hint = (": one row of a frame (parcels.iloc[0]) is a Series of its fields; select rows with a list, "
            "parcels.iloc[[0]], or name the parcel's id") if isinstance(parcels, pd.Series) else ""
    raise InvalidRequestError(f"cannot read parcels from a {type(parcels).__name__}{hint}")


def _id_column_values(parcels: Any) -> list | None:
    """The ids of a pandas column, index or array of them (``parcels.parcel_id.head()``, ``.values``: an
    ArrowStringArray under pandas 3) as a list, else None; a row of a frame (a Series holding its geometry)
    is no column of ids."""
    if isinstance(parcels, pd.Series):
        return None if any(isinstance(v, BaseGeometry) for v in parcels) else parcels.tolist()
    if isinstance(parcels, pd.Index | pd.api.extensions.ExtensionArray):
        return list(parcels)
    return None


def _registry(registry: ParcelSet | gpd.GeoDataFrame | None, what: str, id_column: str = "parcel_id") -> ParcelSet:
    if registry is None:
        hint = ("; a str is taken as a parcel id (a list or tuple as parcel ids): pass a pathlib.Path for a parcel "
                "file, a shapely Point for a location") if what == "parcel ids" else ""
        raise InvalidRequestError(f"{what} can only be looked up in a registered parcel set (registry=); none is "
                                  f"given{hint}")
    if isinstance(registry, str | bytes):  # read as ids, it was "none is given" and "a str is taken as a parcel id"
        raise InvalidRequestError(f"registry={registry!r} is text: give the registered parcels as a GeoDataFrame or "
                                  f"ParcelSet (cube.parcels.read_parcels reads a file or URL), or a local parcel "
                                  f"file as a pathlib.Path")
    return registry if isinstance(registry, ParcelSet) else as_parcels(registry, id_column=id_column)


def parcel_at(
    x: float, y: float, registry: ParcelSet | gpd.GeoDataFrame, *, crs: Any = WGS84
) -> Hashable:
    """Id of the registered parcel containing point ``(x, y)`` (lon/lat unless ``crs`` says otherwise).

    :class:`ParcelNotFoundError` names the point when no parcel contains it. Pass the registry as a
    ParcelSet to look up many points: its spatial index is built once and kept.
    """
    reg = registry if isinstance(registry, ParcelSet) else as_parcels(registry)
    src = CRS.from_user_input(crs)
    if src.is_geographic:  # metres read as degrees: "no position", naming no cause
        check_lonlat((x, y, x, y), src, what="the point's coordinates",
                     advice="give lon, lat (Python: or name their CRS, crs=)")

    def on_registry(a: float, b: float) -> tuple[float, float]:
        return gpd.GeoSeries([Point(a, b)], crs=src).to_crs(reg.crs).iloc[0].coords[0]

    px, py = on_registry(x, y)
    if not (math.isfinite(px) and math.isfinite(py)):
        raise ParcelNotFoundError(f"point ({x}, {y}) in {src.to_string()} has no position in {reg.crs.to_string()}")
    try:
        return reg.at(px, py)
    except ParcelNotFoundError:
        where = f"lon {x:.6f}, lat {y:.6f}" if src.is_geographic else f"({x}, {y}) in {src.to_string()}"
        hint = ""
        if src.is_geographic and abs(x) <= 90:  # the usual slip: lat, lon given as lon, lat
            with contextlib.suppress(ParcelNotFoundError):
                hint = f"; lon and lat swapped? lon {y:.6f}, lat {x:.6f} is in parcel {reg.at(*on_registry(y, x))}"
        raise ParcelNotFoundError(f"no registered parcel contains {where}{hint}") from None
