"""Reading a parcel file (GeoParquet, GeoPackage, GeoJSON, shapefile) into a GeoDataFrame of ids and outlines.

:func:`read_parcel_file` reads a local file, for :func:`cube.parcels.read_parcels` (which fetches a URL's copy
first): the format by its name or first bytes, the layer of a file of several, a shapefile's parts beside it and
the encoding of its text, a GeoJSON file's Feature ids; and refuses, naming the file, what would otherwise fail
later naming none (no id column, no geometry, no CRS, coordinates not in the CRS the file says).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any
from urllib.parse import urlparse

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import shapely

from cardcube.errors import InvalidRequestError, ParcelFileError
from cardcube.query import check_lonlat

SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg")  # beside a .shp: its index, fields, CRS, fields' encoding


def shapefile_parts(path: str) -> tuple[str, ...]:
    """The suffixes of the files beside the shapefile ``path`` (a local path or URL) that are part of it, in the
    case of its own (``.SHP``: ``.SHX``, ...); none for another file."""
    suffix = os.path.splitext(urlparse(path).path if "://" in path else path)[1]
    if suffix.lower() != ".shp":
        return ()
    return tuple(part.upper() if suffix.isupper() else part for part in SHAPEFILE_PARTS)


def _check_shapefile(path: str, name: str) -> None:
    """:class:`ParcelFileError` for a shapefile at local ``path`` without its ``.shx`` or ``.dbf`` (one uploaded
    alone to a bucket): GDAL said "Unable to open /tmp/.../p.shx ... Set SHAPE_RESTORE_SHX", or read no fields."""
    parts = shapefile_parts(path)
    stem = os.path.splitext(path)[0]
    missing = [part for part in parts[:2]
               if not any(os.path.exists(stem + suffix) for suffix in (part.lower(), part.upper()))]
    if missing:
        raise ParcelFileError(f"{name} is a shapefile without its {' and '.join(missing)}: a shapefile is the "
                              f".shp with its .shx, .dbf and .prj beside it, of the same name (a pre-signed URL names "
                              f"its one object alone); put them there, or give the parcels as one file: the parts "
                              f"zipped (.shp.zip), a GeoPackage or GeoParquet")


PARQUET_MAGIC = b"PAR1"  # the first (and last) bytes of a Parquet file


def _is_parquet(path: str) -> bool:
    """Whether the file at local ``path`` is Parquet, by its name or its first bytes: a GeoParquet named
    ``.geoparquet``, ``.pq`` or ``.PARQUET`` went to GDAL, which refused it as "libduckdb.so: cannot open shared
    object file"."""
    if path.lower().endswith(".parquet"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
    except OSError:  # a folder (GDAL reads a folder of shapefiles), or no file: GDAL says which
        return False


def read_parcel_file(path: str, name: str, *, id_column: str, layer: str | None) -> gpd.GeoDataFrame:
    """The parcel file at local ``path``, called ``name`` in messages (its URL, for a copy)."""
    _check_shapefile(path, name)
    try:
        if _is_parquet(path):
            if layer is not None:  # ignored without a word, the whole file was read
                raise ParcelFileError(f"{name} is GeoParquet, of one layer: --layer {layer} (Python: layer=) names a "
                                      f"layer of a GeoPackage")
            if b"geo" not in (pq.read_schema(path).metadata or {}):  # a table of numbers (weather, statistics)
                raise ParcelFileError(f"{name} is not a GeoParquet file (no geometry column): give the parcels with "
                                      f"their geometries (GeoParquet, GeoPackage, GeoJSON)")
            frame, driver = gpd.read_parquet(path), "Parquet"
            # Arrow's pool kept the read's buffers, freed, for later allocations (140 MB of a register of 300,000
            # parcels, above every outline held) until its next ones purge them: given back to the system now
            pa.default_memory_pool().release_unused()
        else:
            found = {str(each): kind for each, kind in pyogrio.list_layers(path)}
            layers = [each for each, kind in found.items() if kind is not None]  # a table of codes beside is none
            if layer is None and len(layers) > 1:
                raise ParcelFileError(f"{name} holds {len(layers)} layers ({', '.join(layers)}): name one with "
                                      f"--layer (Python: read_parcels(..., layer=...))")
            if layer is not None and str(layer) not in layers:
                what = f"layer {layer!r} is a table without geometries" if str(layer) in found else \
                    f"has no layer {layer!r}"
                raise ParcelFileError(f"{name} {what}; its layers: {', '.join(layers) or 'none'}")
            if layer is None and len(layers) == 1 < len(found):  # GDAL read the first, which may be the table
                layer = layers[0]
            info = pyogrio.read_info(path, layer=layer)
            driver = info.get("driver")
            keyed = info.get("fid_column") == id_column  # a GeoPackage's primary key
            frame = gpd.read_file(path, layer=layer, fid_as_index=keyed)  # GDAL reads as its FID, not as a field
            if keyed:
                frame = frame.rename_axis(id_column).reset_index()
            if driver == "ESRI Shapefile" and info.get("encoding") == "ISO-8859-1":
                frame = _guessed_text(frame, name)
    except ParcelFileError:
        raise
    except Exception as exc:  # pyogrio, pyarrow and geopandas each raise their own kinds
        if os.path.isdir(path):  # GDAL reads a folder of shapefiles; of anything else it said "not recognized"
            raise ParcelFileError(f"{name} is a folder, of no parcel file GDAL reads: give the parcel file "
                                  f"(GeoPackage, GeoParquet, GeoJSON, shapefile)") from None
        raise ParcelFileError(f"{name} is not a readable parcel file: {str(exc).replace(path, name)}") from None
    if id_column not in frame.columns and id_column in frame.index.names:  # a GeoParquet of the ids as its index
        frame = frame.reset_index(id_column)  # (written from parcels.set_index(...)): gpd.read_parquet restores it
    if frame.empty:  # "no parcels given", later, named no file
        raise ParcelFileError(f"{name} holds no parcel{f' in layer {layer!r}' if layer is not None else ''}")
    if (id_column not in frame.columns and driver == "GeoJSON" and id_column in FEATURE_ID_COLUMNS
            and (ids := _feature_ids(path, len(frame)))):
        frame[id_column] = ids
    if id_column not in frame.columns:
        cut = id_column[:10]  # a shapefile's .dbf keeps 10 characters of a name
        hint = (f" (a shapefile keeps the first 10 characters of a column's name: --id-column {cut})"
                if driver == "ESRI Shapefile" and cut != id_column and cut in frame.columns else "")
        raise ParcelFileError(f"{name} has no {id_column!r} column (columns: "
                              f"{', '.join(map(str, frame.columns))}); name the parcel id column with --id-column "
                              f"(Python: id_column=){hint}")
    if not isinstance(frame, gpd.GeoDataFrame):  # a table without geometry (a CSV export of the register)
        raise ParcelFileError(f"{name} has no geometry column: give the parcels with their geometries (GeoParquet, "
                              f"GeoPackage, GeoJSON)")
    if frame.crs is None:  # refused later as "set one with GeoDataFrame.set_crs", naming no file: no help on the CLI
        raise ParcelFileError(f"{name} has no CRS: its coordinates could be in any, so no parcel can be placed on the "
                              f"cube; give it one (ogr2ogr -a_srs EPSG:<code>, or in Python "
                              f"read the file with geopandas and .set_crs)")
    placed = frame.geometry[~frame.geometry.is_empty & ~shapely.is_missing(np.asarray(frame.geometry.array))]
    if frame.crs.is_geographic and len(placed):  # refused later naming no file, with advice for Python and REST
        said = " (a GeoJSON file without a crs member is lon/lat: RFC 7946)" if driver == "GeoJSON" else ""
        try:
            check_lonlat(tuple(placed.total_bounds), frame.crs.to_string(), what=f"the coordinates of {name}",
                         advice=f"the CRS the file says{said}; give it the CRS of its coordinates (ogr2ogr -a_srs "
                                f"EPSG:<code>, or in Python read the file with geopandas and .set_crs(..., "
                                f"allow_override=True))")
        except InvalidRequestError as exc:
            raise ParcelFileError(str(exc)) from None
    return frame


def _guessed_text(frame: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """The text of a shapefile GDAL read as ISO-8859-1, which it takes where nothing says the encoding (no .cpg
    beside it, no code page in the .dbf), read as UTF-8 where its bytes are UTF-8 (what geopandas, QGIS and most
    tools write): its ids and column names came out changed without a word ("Žitné" as "Å½itnÃ©"). Else, if any is
    beyond ASCII, kept as read, with a warning saying how to name the encoding (a cp1250 "Ž" reads as a control
    character)."""
    # of the dtype: an object column holding a None (pandas 2) is no string column by its values
    text = [c for c in frame.columns if c != frame.geometry.name and pd.api.types.is_string_dtype(frame[c].dtype)]
    beyond = {v for c in text for v in frame[c] if isinstance(v, str) and not v.isascii()}
    beyond |= {c for c in frame.columns if isinstance(c, str) and not c.isascii()}
    if not beyond:
        return frame
    try:
        for value in beyond:
            value.encode("latin-1").decode("utf-8")  # ISO-8859-1 maps each byte to one character: the bytes again
    except UnicodeDecodeError:
        shown = min(beyond, key=lambda v: (not any("\x80" <= c <= "\x9f" for c in v), v))  # a control char first
        warnings.warn(f"{name} does not say the encoding of its text (no .cpg file beside it): read as ISO-8859-1 "
                      f"(Latin-1), e.g. {shown!r}; if its ids or names look wrong, put a .cpg file beside "
                      f"it naming its code page (e.g. a line CP1250 or CP1252) and run again", stacklevel=4)
        return frame

    def utf8(value: Any) -> Any:
        return value.encode("latin-1").decode("utf-8") if isinstance(value, str) else value

    frame = frame.rename(columns=utf8)
    for column in map(utf8, text):
        frame[column] = frame[column].map(utf8)
    return frame


# the id columns a GeoJSON file's Feature ids stand for, without such a property: the default, and the member's name;
# another (--id-column PERCEEL) names a property, and one the file lacks is refused (a misspelt name read ArcGIS's
# Feature ids, its OBJECTIDs 1, 2, 3 ..., for the parcel ids without a word)
FEATURE_ID_COLUMNS = ("parcel_id", "id")


def _feature_ids(path: str, count: int) -> list[Any] | None:
    """The ids of the ``count`` features of the GeoJSON file at ``path`` (RFC 7946's Feature ``id``, as a
    FeatureCollection given in Python or posted uses them), if every feature has one, else None.
    GDAL takes integer ids for its feature ids, which a read leaves out: the file had "no 'parcel_id' column"."""
    try:
        with open(path, "rb") as f:
            features = json.load(f).get("features")
    except (OSError, ValueError, AttributeError):  # GeoJSON sequences, a bare Feature: no ids to take
        return None
    if not isinstance(features, list) or len(features) != count:
        return None
    ids = [f.get("id") if isinstance(f, dict) else None for f in features]
    return None if any(i is None for i in ids) else ids
