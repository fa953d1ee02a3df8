"""Pure builders: pystac objects from one committed :class:`~cube.ledger.CubeVersion` (no I/O here).

One item per cube tile (never per scene, so the catalog stays small however long the archive grows). Its
``data`` asset is the tile's Zarr group; one more asset per native resolution group (``r10m``, ``r20m``)
carries the projection shape and transform of that resolution. The datacube extension describes the tile
as the read side sees it: a ``time`` dimension over every date (compacted and hot), ``x``/``y`` at the
finest resolution and ``x_20m``/``y_20m`` (and so on) for coarser bands, since they sit on another grid.
Everything is derived from the ledger, so building twice from one version gives identical objects.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pystac
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pystac.extensions.datacube import (
    DatacubeExtension,
    DimensionType,
    HorizontalSpatialDimension,
    HorizontalSpatialDimensionAxis,
    TemporalDimension,
    Variable,
    VariableType,
)
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.sat import OrbitState, SatExtension
from shapely import orient_polygons

from cardcube.grid import TileGrid
from cardcube.spec import BandSpec, CubeSpec
from catalog import keys
from catalog.sources import CARDCUBE, ESA, LICENSE, Processing, SourceInfo, source_info
from cube.layout import ZARR_NAME, resolution_group
from cube.ledger import Acquisition, CubeVersion, data_footprint

CATALOG_ID = "cardcube"  # the root catalog's id: what tells a cube's catalog.json from another's
VERSION_FIELD = "cardcube:version"
# on each item link of a cube collection: the sha256 of the item's bytes, so a reader keeps what it parsed of an item
# a new version left as it was (catalog.route.ItemCache); a catalog written before 2026-12-06 has none
ITEM_DIGEST_FIELD = "cardcube:sha256"
# the datacube version whose variables have nodata and data_type (pystac declares v2.2.0, which has neither)
DATACUBE_SCHEMA = "https://stac-extensions.github.io/datacube/v2.3.0/schema.json"
# the SAR extension version of the offline copies (pystac declares v1.0.0, which has none); its fields are the same
SAR_SCHEMA = "https://stac-extensions.github.io/sar/v1.3.0/schema.json"
COORD_DIGITS = 7  # about 1 cm in WGS84 degrees
FOOTPRINT_SEGMENT_M = 5_000.0  # densify the UTM square before reprojecting, so WGS84 edges follow the curve
FOOTPRINT_CHECK_M = 250.0  # the spacing of the outline's points that measure what an edge cuts off (_sag)
METRES_PER_DEGREE = 111_700.0  # a degree of latitude at its longest (the poles'): an upper bound of a distance
FOOTPRINT_ROUNDING_M = 0.05  # beyond that: COORD_DIGITS' rounding (at most 1.1 cm) and the measure's own error
# per-date coordinates stored along time in every resolution group (see ingest.arrays)
_AUX_VARIABLES = {
    "scene_id": ("1", "id of the source scene of each date"),
    "platform": ("1", "satellite of each date"),
    "relative_orbit": ("1", "relative orbit number of each date"),
    "orbit_state": ("1", "orbit direction of each date (ascending/descending)"),
    "cloud_cover": ("%", "scene cloud cover of each date, when the source gives it"),
}


def item_digest(data: bytes) -> str:
    """The :data:`ITEM_DIGEST_FIELD` of an item whose document is ``data``."""
    return hashlib.sha256(data).hexdigest()


def parse_time(text: str) -> datetime:
    """An ISO 8601 UTC time of the ledger as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def dimension_names(spec: CubeSpec, resolution: int) -> tuple[str, str]:
    """Names of the ``(y, x)`` dimensions of bands at ``resolution`` (bare at the finest resolution)."""
    if resolution == min(spec.resolutions):
        return "y", "x"
    return f"y_{resolution}m", f"x_{resolution}m"


def _iso_step(times: list[datetime]) -> str | None:
    """ISO 8601 duration between dates when they are regular, else None (the datacube 'irregular')."""
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    if len(steps) != 1:
        return None
    seconds = int(steps.pop())
    days, rest = divmod(seconds, 86400)
    return f"P{days}D" if not rest else f"PT{seconds}S"


def _nodata(band: BandSpec) -> float | int | str | None:
    if isinstance(band.nodata, float) and band.nodata != band.nodata:
        return "nan"  # as the raster extension spells NaN
    return band.nodata


def _new_variable(dimensions: list[str], var_type: VariableType, description: str, unit: str) -> Variable:
    variable = Variable({})
    variable.dimensions, variable.var_type, variable.description, variable.unit = (
        dimensions, var_type, description, unit)
    return variable


def _variable(band: BandSpec, spec: CubeSpec) -> Variable:
    y, x = dimension_names(spec, band.resolution)
    text = f"{band.long_name or band.name} at {band.resolution} m (group {resolution_group(band.resolution)})"
    if band.scale != 1.0 or band.offset != 0.0:
        sign = "-" if band.offset < 0 else "+"
        text += f"; physical value = stored × {band.scale:g} {sign} {abs(band.offset):g}"
    if band.flag_values is not None and band.flag_meanings is not None:
        text += "; classes " + ", ".join(f"{v} {m}" for v, m in zip(band.flag_values, band.flag_meanings, strict=True))
    variable = _new_variable(["time", y, x], VariableType.DATA, text, band.units)
    variable.properties.update({"data_type": band.dtype, "nodata": _nodata(band)})  # see DATACUBE_SCHEMA
    if band.flag_values is not None:
        variable.values = list(band.flag_values)
    return variable


def _spatial_dimensions(spec: CubeSpec, geoboxes: dict[int, GeoBox]) -> dict[str, HorizontalSpatialDimension]:
    dims = {}
    for res, gbox in geoboxes.items():
        bounds = gbox.extent.boundingbox
        y, x = dimension_names(spec, res)
        half = res / 2  # the extent of the x/y coordinates the Zarr arrays hold: pixel centres
        for name, axis, extent in ((x, HorizontalSpatialDimensionAxis.X, [bounds.left + half, bounds.right - half]),
                                   (y, HorizontalSpatialDimensionAxis.Y, [bounds.bottom + half, bounds.top - half])):
            dim = HorizontalSpatialDimension({})
            dim.dim_type, dim.axis, dim.extent, dim.step = DimensionType.SPATIAL, axis, extent, float(res)
            dim.reference_system = gbox.crs.epsg
            dim.description = (f"{'easting' if axis == 'x' else 'northing'} of pixel centres, {res} m pixels "
                               f"(the group's {axis} coordinate)")
            dims[name] = dim
    return dims


def _time_dimension(times: list[datetime]) -> TemporalDimension:
    dim = TemporalDimension({})
    dim.dim_type = DimensionType.TEMPORAL
    dim.extent = [_iso(times[0]), _iso(times[-1])] if times else [None, None]
    dim.step = _iso_step(times)
    if times:  # each one: a time range between two dates (Sentinel-1's are irregular) finds no tile in the router
        dim.values = [_iso(t) for t in times]
    dim.description = "acquisition times (UTC) of the tile's dates, compacted and hot buffer together"
    return dim


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def footprint(version: CubeVersion, tile: str) -> tuple[dict, list[float]]:
    """GeoJSON geometry and bbox in WGS84 of where ``tile`` holds data in ``version`` (its scenes' areas,
    :func:`~cube.ledger.data_footprint`; the whole tile square while it has none), its edges densified so
    they follow the UTM lines, and grown by the few centimetres to metres its straight lon/lat edges cut off the
    curved UTM ones (:func:`_sag`), so that it holds every pixel of the data: a STAC search of a parcel at the data's
    edge finds the tile. A STAC browser's map shows the data, not a 110 km square around it. Data across the
    antimeridian is cut there (RFC 7946 3.1.9), and its bbox runs from west to east across it (west > east)."""
    grid = TileGrid.from_id(tile)
    area = data_footprint(version, tile)
    extent = Geometry(area, grid.crs) if not area.is_empty else grid.geobox(10).extent
    grown = shapely.buffer(extent.geom, _sag(extent, _lonlat(extent)) + FOOTPRINT_ROUNDING_M, join_style="mitre")
    wgs84 = _lonlat(Geometry(grown, extent.crs))  # mitred: a square stays a square
    wgs84 = orient_polygons(wgs84.geom)
    wgs84 = shapely.transform(wgs84, lambda xy: np.round(xy, COORD_DIGITS))
    minx, _, maxx, _ = wgs84.bounds
    parts = [g.bounds for g in shapely.get_parts(wgs84)]
    return json.loads(shapely.to_geojson(wgs84)), _union(parts, across=minx == -180 and maxx == 180)


def _lonlat(extent: Geometry) -> Geometry:
    """``extent`` in WGS84, its edges densified first; cut at the antimeridian where it lies across it."""
    dense = extent.segmented(FOOTPRINT_SEGMENT_M)
    wgs84 = dense.to_crs("EPSG:4326")
    if wgs84.boundingbox.span_x > 180:  # round the world the long way: across the antimeridian (cut: 5 times slower)
        wgs84 = dense.to_crs("EPSG:4326", wrapdateline=True)
    return wgs84


def _sag(extent: Geometry, wgs84: Geometry) -> float:
    """How far, in metres, the outline of ``extent`` strays outside ``wgs84`` (:func:`_lonlat` of it), at most: between
    two vertices an edge is straight in lon/lat but curved on the UTM grid, and cuts off up to 0.1 m of a 2 km window
    and 2.6 m of a whole tile at 52 N (9.5 m at 79 N) on the side the UTM line bulges out. Measured in degrees with
    longitudes shrunk by the cosine of the latitude nearest the equator, and a degree taken as its longest, 111.7 km."""
    outline = shapely.segmentize(extent.geom.boundary, FOOTPRINT_CHECK_M)
    points = Geometry(shapely.MultiPoint(shapely.get_coordinates(outline)), extent.crs).to_crs("EPSG:4326").geom
    bounds = wgs84.boundingbox
    nearest = 0.0 if bounds.bottom <= 0 <= bounds.top else min(abs(bounds.bottom), abs(bounds.top))
    shrink = np.array([np.cos(np.radians(nearest)), 1.0])
    shape = shapely.transform(wgs84.geom, lambda xy: xy * shrink)
    spread = shapely.points(shapely.get_coordinates(points) * shrink)
    return float(shapely.distance(shape, spread).max(initial=0.0)) * METRES_PER_DEGREE


def _union(bboxes: list, *, across: bool = False) -> list[float]:
    """The WGS84 bbox around ``bboxes``. Where one runs across the antimeridian (west > east, as STAC writes it), or
    ``across`` they lie on both sides of it, longitudes are taken from 0 to 360, so the union runs across it too."""
    south, north = min(b[1] for b in bboxes), max(b[3] for b in bboxes)
    if not across and all(b[0] <= b[2] for b in bboxes):
        return [min(b[0] for b in bboxes), south, max(b[2] for b in bboxes), north]
    spans = [(b[0] % 360, b[0] % 360 + (b[2] - b[0] if b[0] <= b[2] else b[2] - b[0] + 360)) for b in bboxes]
    west, east = min(w for w, _ in spans), max(e for _, e in spans)
    if east - west >= 360:
        return [-180.0, south, 180.0, north]
    west, east = (round(lon - 360 if lon > 180 else lon, COORD_DIGITS) for lon in (west, east))
    return [west, south, east, north]


def build_tile_item(version: CubeVersion, tile: str) -> pystac.Item:
    """The STAC item of one cube tile at ``version``; asset hrefs are relative to the item.

    It describes the tile alone (STAC: an item's properties are of that item), so a version that leaves the tile as
    it was gives the same item, and publishing it rewrites the items of the tiles it changed only. What changes with
    every version of the cube (its number, its commit time) is the collection's (:func:`build_cube_collection`)."""
    spec, state = version.spec, version.tiles[tile]
    grid = TileGrid.from_id(tile)
    geoboxes = {res: grid.geobox(res) for res in spec.resolutions}
    finest = geoboxes[min(geoboxes)]
    times = sorted({parse_time(a.time) for a in state.acquisitions})
    geometry, bbox = footprint(version, tile)
    info = source_info(spec.source_collection)
    created = parse_time(version.created) if version.created else None
    done = Processing.of(version.scenes[sid] for sid in dict.fromkeys(a.scene_id for a in state.acquisitions)
                         if sid in version.scenes)
    properties = {
        "title": f"{spec.title}, tile {tile}",
        "description": " ".join(filter(None, (f"All dates of MGRS tile {tile} in one time-first Zarr v3 group.",
                                              done.sentence("its {} dates")))),
        "constellation": info.constellation or None,
        "instruments": list(info.instruments) or None,
        "platform": _one(a.platform for a in state.acquisitions),  # STAC's is one value: else see the summaries
        "cardcube:collection": version.collection,
        "cardcube:tile": tile,
        "cardcube:dates": len(times),
        "cardcube:hot_dates": len(state.hot),
        **done.fields(),
    }
    item = pystac.Item(
        id=keys.item_id(version.collection, tile), geometry=geometry, bbox=bbox, datetime=None,
        start_datetime=times[0] if times else created, end_datetime=times[-1] if times else created,
        properties={k: v for k, v in properties.items() if v not in (None, [])},
        collection=None,
    )

    item.add_asset("data", pystac.Asset(
        href=f"./{ZARR_NAME}", media_type=keys.ZARR_MEDIA_TYPE, roles=["data"],
        title=f"Zarr v3 cube of tile {tile}",
        description="Time-first Zarr v3 group: compacted dates under r<res>m/, recent dates under hot/r<res>m/; "
        "the ledger version the collection names (cardcube:version) lists which time indices are valid.",
    ))
    for res in geoboxes:
        item.add_asset(resolution_group(res), pystac.Asset(
            href=f"./{ZARR_NAME}/{resolution_group(res)}", media_type=keys.ZARR_MEDIA_TYPE, roles=["data"],
            title=_resolution_title(spec, res),
        ))

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(code=str(finest.crs), bbox=list(finest.extent.boundingbox.bbox), shape=list(finest.shape.yx),
               transform=list(finest.affine)[:6])
    for res, gbox in geoboxes.items():
        asset_proj = ProjectionExtension.ext(item.assets[resolution_group(res)])
        asset_proj.shape, asset_proj.transform = list(gbox.shape.yx), list(gbox.affine)[:6]

    cube = DatacubeExtension.ext(item, add_if_missing=True)
    aux = {
        name: _new_variable(["time"], VariableType.AUXILIARY, text, unit)
        for name, (unit, text) in _AUX_VARIABLES.items()
    }
    cube.apply(dimensions={"time": _time_dimension(times), **_spatial_dimensions(spec, geoboxes)},
               variables={**{b.name: _variable(b, spec) for b in spec.bands}, **aux})
    item.stac_extensions = [DATACUBE_SCHEMA if uri == DatacubeExtension.get_schema_uri() else uri
                            for uri in item.stac_extensions]
    return item


def _resolution_title(spec: CubeSpec, resolution: int) -> str:
    """The title of a tile's asset of one resolution group (and of its definition in the collection)."""
    return f"{resolution} m bands ({', '.join(b.name for b in spec.bands_at(resolution))}), compacted dates"


def build_cube_collection(version: CubeVersion, items: Iterable[pystac.Item]) -> pystac.Collection:
    """The STAC collection of one cube collection, holding its tile ``items``."""
    spec = version.spec
    items = list(items)
    info = source_info(spec.source_collection)
    bboxes = [i.bbox for i in items if i.bbox]
    union = _union(bboxes) if bboxes else [-180.0, -90.0, 180.0, 90.0]
    span = version.time_range
    start, end = (parse_time(span[0]), parse_time(span[1])) if span else (None, None)
    acquisitions = [a for t in version.tiles.values() for a in t.acquisitions]
    summaries = {"cardcube:tile": sorted(version.tiles), "platform": sorted({a.platform for a in acquisitions
                                                                             if a.platform}),
                 # the STAC collections the scenes were read from (an Earth Search ingest: sentinel-2-c1-l2a)
                 "cardcube:source_collections": sorted({s.collection for s in version.scenes.values()
                                                        if s.collection}),
                 **_orbit_summaries(acquisitions), **_sar_summaries(spec, info)}
    summaries = {k: v for k, v in summaries.items() if v}  # STAC: a summary lists at least one value
    if info.constellation:
        summaries.update(constellation=[info.constellation], instruments=list(info.instruments))
    extensions = [uri for prefix, uri in (("sat:", SatExtension.get_schema_uri()), ("sar:", SAR_SCHEMA))
                  if any(k.startswith(prefix) for k in summaries)]
    collection = pystac.Collection(
        id=cube_collection_id(spec),
        title=spec.title,
        description=spec.description or spec.title,
        extent=pystac.Extent(pystac.SpatialExtent([union, *bboxes] if len(bboxes) > 1 else [union]),
                             pystac.TemporalExtent([[start, end]])),
        license=LICENSE,
        keywords=[*info.keywords, "datacube", "Zarr", "time series", "CAP", "checks by monitoring"],
        providers=[ESA, CARDCUBE],
        summaries=pystac.Summaries(summaries),
        stac_extensions=extensions,
        # updated: when the version was committed (STAC common metadata), which tells a cube rebuilt at the same
        # place (its versions numbered anew) from the one before (catalog.route.ItemCache)
        extra_fields={"cardcube:collection": version.collection, VERSION_FIELD: version.version,
                      "cardcube:scenes": len(version.scenes),
                      **({"updated": version.created} if version.created else {})},
    )
    collection.add_links(info.links()[:1])  # the licence link
    collection.item_assets = {"data": pystac.ItemAssetDefinition.create(  # every asset its items have
        title="Zarr v3 cube of the tile", description=None, media_type=keys.ZARR_MEDIA_TYPE, roles=["data"]),
        **{resolution_group(res): pystac.ItemAssetDefinition.create(
            title=_resolution_title(spec, res), description=None, media_type=keys.ZARR_MEDIA_TYPE, roles=["data"])
           for res in spec.resolutions}}
    for item in items:
        collection.add_item(item)
    return collection


def _one(values: Iterable[str]) -> str | None:
    """The one value of ``values`` (empty ones aside), None for none or several."""
    distinct = set(filter(None, values))
    return distinct.pop() if len(distinct) == 1 else None


def _orbit_summaries(acquisitions: Iterable[Acquisition]) -> dict[str, list]:
    """The orbit directions and relative orbits of the dates (sat extension), those the sources gave: a cube of
    two passes a day says it holds dawn-descending and dusk-ascending dates, on which tracks."""
    acquisitions = list(acquisitions)
    states = {a.orbit_state for a in acquisitions} & {s.value for s in OrbitState}
    return {"sat:orbit_state": sorted(states),
            "sat:relative_orbit": sorted({a.relative_orbit for a in acquisitions if a.relative_orbit > 0})}


def _sar_summaries(spec: CubeSpec, info: SourceInfo) -> dict[str, list]:
    """The SAR fields of a backscatter cube (sar extension): its bands' polarisations, and the source's mode and
    radar band."""
    if not spec.backscatter:
        return {}
    return {"sar:polarizations": [b.name for b in spec.bands if b.units == "dB"],
            "sar:instrument_mode": [info.instrument_mode] if info.instrument_mode else [],
            "sar:frequency_band": [info.frequency_band] if info.frequency_band else []}


def cube_collection_id(spec: CubeSpec) -> str:
    """STAC id of a cube collection: its source collection's id with ``-cube`` (``sentinel-2-l2a-cube``)."""
    return f"{spec.source_collection}-cube"


def build_root(*, title: str = "cardcube", description: str | None = None) -> pystac.Catalog:
    """The root catalog of a cube root (children are added by the writer)."""
    return pystac.Catalog(
        id=CATALOG_ID, title=title,
        description=description or "Sentinel-1/2 CARD scenes reorganised into time-first Zarr v3 cubes per MGRS "
        "tile, for EU Common Agricultural Policy checks by monitoring.",
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
