"""Source scenes: what an ingest is asked to take in, read from STAC or from a folder of COGs.

A :class:`SourceScene` is one acquisition on one MGRS tile with one file per band. Sources are a STAC
ItemCollection (what ``cardcube synth`` writes and a provider's STAC API returns), a static STAC
catalog, or a folder of product directories named like real products.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pystac
from botocore.exceptions import BotoCoreError
from pystac.stac_io import DefaultStacIO

from cardcube.errors import InvalidRequestError, SourceNotFoundError, StoreUnavailableError
from cardcube.grid import normalise_tile_id
from cardcube.source_files import source_options
from cardcube.spec import CubeSpec
from cardcube.storage import check_reachable, listed_names, s3_options_from_env
from cardcube.store_errors import unavailable
from ingest.assets import choose_assets, declared_file, no_band_reason, nodata_of, scaling_of, unit_of

log = logging.getLogger(__name__)
_PLATFORMS = {"S2A": "sentinel-2a", "S2B": "sentinel-2b", "S2C": "sentinel-2c",
              "S1A": "sentinel-1a", "S1B": "sentinel-1b", "S1C": "sentinel-1c"}


@dataclass(frozen=True, slots=True)
class SourceScene:
    """One acquisition on one tile: identity, acquisition metadata and the href of each band file."""

    scene_id: str
    collection: str
    tile: str
    time: str  # ISO 8601 UTC with "Z"
    platform: str
    relative_orbit: int
    orbit_state: str
    cloud_cover: float | None
    assets: dict[str, str] = field(default_factory=dict)
    scaling: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # raster:bands scale, offset
    units: dict[str, str] = field(default_factory=dict)  # raster:bands unit, where the asset says one ("dB", "linear")
    nodata: dict[str, float] = field(default_factory=dict)  # raster:bands nodata, where the asset says one
    processing_baseline: float | None = None  # Sentinel-2 L2A: from 04.00, DN carry an offset of -1000
    other_assets: tuple[str, ...] = ()  # the item's asset keys taken for no band (visual, thumbnail, a JP2 twin)
    geometry: dict | None = None  # the item's GeoJSON footprint (lon/lat), to split an item of no tile by
    item_id: str = ""  # the STAC item this scene is one tile's piece of (ingest.split); "" for an item of one tile
    declared: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)  # file:size, file:checksum


def _iso(when: dt.datetime) -> str:
    """ISO 8601 in UTC with "Z": an offset is converted (a naive time is taken as UTC, as STAC requires)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _tile_of(props: dict) -> str | None:
    for key in ("grid:code", "mgrs:tile", "s2:mgrs_tile", "mgrs_tile", "tile"):
        value = props.get(key)
        if isinstance(value, str) and value:
            return normalise_tile_id(value)
    zone, band, square = props.get("mgrs:utm_zone"), props.get("mgrs:latitude_band"), props.get("mgrs:grid_square")
    return normalise_tile_id(f"{zone}{band}{square}") if zone and band and square else None


def join_href(base: str, href: str) -> str:
    """``href`` relative to the folder ``base``: a local path, or a URL of any scheme (``s3://``, ``https://``;
    :func:`urllib.parse.urljoin` leaves ``s3://`` alone and drops a base's last segment without a slash)."""
    if "://" not in base:
        return os.path.normpath(os.path.join(base, href))
    scheme, rest = base.split("://", 1)
    root, _, path = rest.partition("/")
    joined = posixpath.normpath(posixpath.join("/" + path, href)).lstrip("/")
    return f"{scheme}://{root}/{joined}"


REFUSED_ADVICE = ("the URL's signature may have expired (a Planetary Computer SAS token lasts about an hour): sign "
                  "the items again and run ingest again; the scenes already in the cube are skipped")


class _FsspecStacIO(DefaultStacIO):
    """pystac reading through fsspec, so a static catalog on S3 is read like a local one."""

    def read_text_from_href(self, href: str) -> str:
        with fsspec.open(href, "rt", **source_options(href)) as f:
            return f.read()


def scene_from_item(item: pystac.Item, spec: CubeSpec, *, base: str | None = None) -> SourceScene:
    """A SourceScene from a STAC item, its assets and their scaling keyed by ``spec``'s band names
    (:func:`ingest.assets.choose_assets`: one asset per band, whatever the provider calls it); relative asset
    hrefs are resolved against ``base``."""
    props = item.properties
    when = item.datetime or item.common_metadata.start_datetime  # a range: its start (pystac requires one)
    orbit = _number(item, "sat:relative_orbit", int)
    raw = {key: asset.to_dict() for key, asset in item.assets.items()}
    chosen = choose_assets(raw, spec)
    assets, scaling, units, nodata, declared = {}, {}, {}, {}, {}
    for band, key in chosen.items():
        if not str(raw[key].get("href") or "").strip():  # pystac would make it the item's folder: "Is a directory"
            assets[band] = ""  # validate's reason: no href
            continue
        # relative to the item's own file when it has one (an item of a static catalog), not to the cwd
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        if base and not re.match(r"^[a-z][a-z0-9+.-]*://", href) and not os.path.isabs(href):
            href = join_href(base, href)
        assets[band] = href
        if (said := scaling_of(raw[key])) is not None:
            scaling[band] = said
        if (unit := unit_of(raw[key])) is not None:
            units[band] = unit
        if (value := nodata_of(raw[key])) is not None:
            nodata[band] = value
        if (said := declared_file(raw[key])) != (None, None):
            declared[band] = said
    return SourceScene(
        scene_id=item.id,
        collection=item.collection_id or "",
        tile=_tile_of(props) or "",
        time=_iso(when),
        platform=platform_name(props.get("platform")),
        relative_orbit=-1 if orbit is None else orbit,
        orbit_state=_orbit_state(item),
        cloud_cover=_number(item, "eo:cloud_cover", float),
        assets=assets,
        scaling=scaling,
        units=units,
        nodata=nodata,
        processing_baseline=_baseline_of(item),
        other_assets=tuple(sorted(set(raw) - set(chosen.values()))),
        geometry=item.geometry,
        declared=declared,
    )


_SENTINEL = re.compile(r"(?:sentinel[-_ ]?|s)([12][a-z])", re.IGNORECASE)


def platform_name(value: object) -> str:
    """An item's ``platform`` as STAC's Sentinel items write it, ``sentinel-1a`` (``Sentinel-1A``, ``S1A``,
    ``sentinel1a`` alike); another name as given, trimmed; "" if none. A time series' ``platform`` column and the
    passes a mosaic of tiles joins are told by it: two spellings of one satellite were two."""
    text = "" if value is None else str(value).strip()
    return f"sentinel-{m.group(1).lower()}" if (m := _SENTINEL.fullmatch(text)) else text


# orbit directions abbreviated, as ESA's CARD product names (ASC, DSC) and other tools write them
_DIRECTIONS = {"asc": "ascending", "dsc": "descending", "des": "descending", "desc": "descending"}


def orbit_direction(value: object) -> str:
    """An item's ``sat:orbit_state`` in lower case, as STAC writes it (``DESCENDING``, as ESA's manifests write it,
    and ``DSC``, as its product names abbreviate it, are ``descending``); "" if none. A Sentinel-1 track is its
    orbit direction and relative orbit (the mowing marker's passes, the plots' lines, the contact sheet's
    asc/desc): two spellings of one were two tracks."""
    said = "" if value is None else str(value).strip().lower()
    return _DIRECTIONS.get(said, said)


ORBIT_STATES = ("ascending", "descending", "geostationary")  # STAC's sat:orbit_state values


def _orbit_state(item: pystac.Item) -> str:
    """An item's orbit direction (:func:`orbit_direction`); "" with a warning if it is none of STAC's ("decending"),
    as a relative orbit that is no number is taken as unknown: stored as given, it was a track of its own."""
    said = orbit_direction(item.properties.get("sat:orbit_state"))
    if said and said not in ORBIT_STATES:
        log.warning("item %s: sat:orbit_state %r is no orbit direction (ascending, descending); taken as unknown",
                    item.id, item.properties.get("sat:orbit_state"))
        return ""
    return said


def _number(item: pystac.Item, name: str, kind: type) -> Any:
    """Property ``name`` of ``item`` as a number of ``kind``; None if absent or no number ("4%", "R051": taken as
    unknown, with a warning: metadata, not pixels, and a run is no place to lose 18 scenes for one field)."""
    value = item.properties.get(name)
    if value is None:
        return None
    try:
        number = float(value)
        if not math.isfinite(number) or (kind is int and number != int(number)):
            raise ValueError(value)
        return kind(number)
    except (TypeError, ValueError):
        log.warning("item %s: %s %r is no number; taken as unknown", item.id, name, value)
        return None


def _baseline(value: object) -> float | None:
    """``s2:processing_baseline`` or the processing extension's ``processing:version`` (CDSE) ("05.10") as a
    number; None if absent or not one."""
    try:
        return None if value is None else float(str(value))
    except ValueError:
        return None


# an ESA L2A product name holds its processing baseline (N0213: 02.13), as the item's id, Planetary Computer's
# s2:product_uri or Earth Search v0's sentinel:product_id give it
_PRODUCT_BASELINE = re.compile(r"S2[A-D]_MSIL2A_\d{8}T\d{6}_N(\d{4})_R\d{3}_T\d{2}[A-Z]{3}_")


def _baseline_of(item: pystac.Item) -> float | None:
    """The processing baseline an item says: its ``s2:processing_baseline`` or ``processing:version``, else the one
    its ESA product name gives (an item naming N0213 and saying nothing else was taken to follow the cube's offset:
    its DN, without ESA's 1000 of baselines from 04.00, were read 0.1 too low in reflectance); None if none does."""
    props = item.properties
    if (said := _baseline(props.get("s2:processing_baseline", props.get("processing:version")))) is not None:
        return said
    for name in (props.get("s2:product_uri"), props.get("sentinel:product_id"), item.id):
        if isinstance(name, str) and (m := _PRODUCT_BASELINE.match(name)):
            return int(m[1]) / 100
    return None


def _collection_items(doc: dict) -> list[pystac.Item]:
    """The items of an ItemCollection document, read one by one so that a broken one is named: in a delivery of
    hundreds, an error of pystac's own names no item."""
    if not pystac.ItemCollection.is_item_collection(doc):
        raise pystac.STACTypeError(doc, pystac.ItemCollection)
    features = doc.get("features") or []
    items = []
    for n, feature in enumerate(features, 1):
        try:
            if (fault := _shape_fault(feature)) is not None:
                raise pystac.STACError(fault)
            items.append(pystac.Item.from_dict(feature, preserve_dict=False))
        except (pystac.STACError, pystac.STACTypeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # AttributeError: pystac's own, of a member of another JSON type than the shape check knows
            name = f" ({feature.get('id')})" if isinstance(feature, dict) and feature.get("id") else ""
            raise pystac.STACError(f"item {n} of {len(features)}{name}: {str(exc).rstrip('.')}; no item was "
                                   f"ingested: correct that item or leave it out") from None
    return items


def _shape_fault(feature: object) -> str | None:
    """What makes ``feature`` no STAC item by the JSON types of its members alone, or None: pystac answers an
    ``"assets": null`` with its internals ("'NoneType' object has no attribute 'values'"), and takes an id of 5
    or null, which stopped the ingest at its commit."""
    if not isinstance(feature, dict):
        return f"it is {_json_type(feature)}, not an object"
    if not isinstance(feature.get("id"), str):  # a number or null: ids are sorted, as strings, into the ledger
        return f'its "id" is {"missing" if "id" not in feature else _json_type(feature["id"])}, not a string'
    if not feature["id"].strip():
        return 'its "id" is blank: a scene is known by its id'
    for member in ("properties", "assets"):
        if not isinstance(feature.get(member), dict):
            said = "missing" if member not in feature else _json_type(feature[member])
            return f'its "{member}" member is {said}, not an object'
    for key, asset in feature["assets"].items():
        if not isinstance(asset, dict):
            return f'its asset "{key}" is {_json_type(asset)}, not an object'
        if "href" not in asset:  # pystac's KeyError said "'href'", no more
            return f'its asset "{key}" has no "href" member (its file)'
    return None


def _json_type(value: object) -> str:
    return ("null" if value is None else "a boolean" if isinstance(value, bool) else "a number"
            if isinstance(value, int | float) else "a string" if isinstance(value, str) else "an array"
            if isinstance(value, list) else "an object")


def _items_from_collection_file(path: str) -> tuple[list[pystac.Item], str]:
    try:  # an endpoint where nothing listens fails at once, not after botocore's retries of the connection
        check_reachable(path)
    except StoreUnavailableError as exc:
        raise StoreUnavailableError(f"cannot read the source {path}: {exc}{_endpoint_note(path)}") from None
    try:
        with fsspec.open(path, "rb", **source_options(path)) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise SourceNotFoundError(f"source {path} does not exist") from None
    except ValueError:  # not UTF-8, or not JSON: a Parquet or GeoPackage file given as scenes
        raise InvalidRequestError(f"{path} is not STAC JSON (an ItemCollection, a catalog) or a folder of scenes: "
                                  f"give the scenes' STAC document or their folder") from None
    except (OSError, BotoCoreError) as exc:  # s3fs's OSError after its retries, botocore's own when unreachable
        raise InvalidRequestError(f"cannot read the source {path}: {exc}{_endpoint_note(path)}") from None
    except Exception as exc:  # an answer cut off midway after s3fs's tries (aiohttp's ClientPayloadError): a traceback
        if not unavailable(exc):
            raise
        raise StoreUnavailableError(f"cannot read the source {path}: the store cannot be reached or does not answer "
                                    f"({type(exc).__name__}: {exc}){_endpoint_note(path)}") from None
    base = path.rsplit("/", 1)[0] if "://" in path else str(Path(path).parent)
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"{path} is not a STAC ItemCollection, Catalog, Collection or Item "
                                  f"(its JSON is a {type(doc).__name__})")
    try:
        if doc.get("type") == "FeatureCollection":
            return _collection_items(doc), base
        if doc.get("type") in ("Catalog", "Collection"):
            cat = pystac.read_file(path, stac_io=_FsspecStacIO())
            return list(cat.get_items(recursive=True)), ""  # pystac resolves hrefs of a catalog itself
        if doc.get("type") == "Feature":
            if (fault := _shape_fault(doc)) is not None:
                raise pystac.STACError(fault)
            return [pystac.Item.from_dict(doc)], base
    except (pystac.STACError, pystac.STACTypeError, AttributeError, KeyError, TypeError, ValueError
            ) as exc:  # not STAC, or broken
        raise InvalidRequestError(f"{path} is not valid STAC ({type(exc).__name__}: {exc})") from None
    raise InvalidRequestError(f"{path} is not a STAC ItemCollection, Catalog, Collection or Item")


def _endpoint_note(path: str) -> str:
    """Which S3 endpoint an ``s3://`` source was read from: the environment's, never the cube's storage options
    (``--endpoint-url``), as the scenes may sit on another store than the cube."""
    if not path.startswith("s3://"):
        return ""
    endpoint = s3_options_from_env().get("endpoint_url")
    return (f" (an s3:// source is read with the S3 endpoint of the environment, "
            f"{'AWS_ENDPOINT_URL=' + endpoint if endpoint else 'AWS S3 itself: AWS_ENDPOINT_URL is not set'}; the "
            f"cube's storage_options, --endpoint-url, do not apply to it)")


_S2_FILE = re.compile(r"^T(?P<tile>\d{2}[A-Z]{3})_(?P<t>\d{8}T\d{6})_(?P<band>B\d[\dA]|SCL)_(?P<res>\d{2})m\.tif$")
_S2_DIR = re.compile(r"^(?P<plat>S2[ABC])_MSIL2A_(?P<t>\d{8}T\d{6})_N(?P<baseline>\d{4})_R(?P<orbit>\d{3})_"
                     r"T(?P<tile>\d{2}[A-Z]{3})_")
_S1_DIR = re.compile(r"^(?P<plat>S1[ABC])_IW_CARD_BS_(?P<t>\d{8}T\d{6})_R(?P<orbit>\d{3})_(?P<dir>ASC|DSC)_"
                     r"T(?P<tile>\d{2}[A-Z]{3})$")


def _s2_band_files(product: str, files: list[Path], tile: str, when: str, spec: CubeSpec) -> dict[str, str]:
    """The file of each band of an S2 product folder: of its tile and time (the folder's name says them: a file
    of another date dropped in it dated the scene, and lost that date's own product), at the band's native
    resolution where the folder holds several (a SAFE's R10m, R20m, R60m: the last by name was taken, 60 m)."""
    found: dict[str, dict[int, str]] = {}
    for f in files:
        if not (fm := _S2_FILE.match(f.name)):
            continue
        if (fm["tile"], fm["t"]) != (tile, when):
            log.warning("%s: %s names tile %s at %s, not the folder's %s at %s: left out", product, f.name,
                        fm["tile"], fm["t"], tile, when)
            continue
        found.setdefault(fm["band"], {})[int(fm["res"])] = str(f)
    native = {b.name: b.resolution for b in spec.bands}
    return {band: by_res.get(native.get(band, 0), by_res[min(by_res)]) for band, by_res in found.items()}


def _s1_band_files(product: str, files: list[Path]) -> dict[str, str]:
    """The file of each band of an S1 product folder: ``<product>_<band>.tif``. The end of any file's name was taken
    for its band, the last by name winning: another pass's ``..._VV.tif`` dropped in the folder went in as its VV."""
    found = {}
    for f in files:
        name, _, band = f.stem.rpartition("_")
        if name != product:
            log.warning("%s: %s is not a file of this product: left out", product, f.name)
            continue
        found[band] = str(f)
    return found


def _scenes_from_folder(folder: Path, spec: CubeSpec) -> list[SourceScene]:
    scenes = []
    for product in sorted(p for p in folder.rglob("*") if p.is_dir()):
        files = sorted(product.glob("*.tif"))
        if not files:
            continue
        if m := _S2_DIR.match(product.name):  # one without a file of its bands is rejected for them, not left out
            assets = _s2_band_files(product.name, files, m["tile"], m["t"], spec)
            when = m["t"]
            scenes.append(SourceScene(product.name, "sentinel-2-l2a", m["tile"],
                                      f"{when[:4]}-{when[4:6]}-{when[6:11]}:{when[11:13]}:{when[13:15]}Z",
                                      _PLATFORMS[m["plat"]], int(m["orbit"]), "descending", None, assets,
                                      processing_baseline=int(m["baseline"]) / 100))
        elif m := _S1_DIR.match(product.name):
            assets = _s1_band_files(product.name, files)
            t = m["t"]
            scenes.append(SourceScene(product.name, "sentinel-1-card-bs", m["tile"],
                                      f"{t[:4]}-{t[4:6]}-{t[6:11]}:{t[11:13]}:{t[13:15]}Z", _PLATFORMS[m["plat"]],
                                      int(m["orbit"]), "ascending" if m["dir"] == "ASC" else "descending", None,
                                      assets))
    return scenes


def load_scenes(source: str | os.PathLike, spec: CubeSpec, *, collection: str | None = None) -> list[SourceScene]:
    """The scenes of source collection ``collection`` (default: ``spec``'s) found at ``source``, sorted by time
    then id, their assets keyed by ``spec``'s band names.

    ``source`` is a STAC ItemCollection/Catalog/Collection JSON (path or URL), a folder holding
    ``items.json`` or ``catalog.json``, or a folder of product directories of COGs. Another provider's id of the
    same product (Earth Search's ``sentinel-2-c1-l2a``) is given as ``collection``.
    """
    wanted_id = collection or spec.source_collection
    text, folder = os.fspath(source), None
    if "://" not in text:
        path = Path(text).absolute()  # its files are read by the workers, of another working directory on a cluster
        text = str(path)
        if not path.exists():
            raise SourceNotFoundError(f"source {text} does not exist")
        if path.is_dir():  # its STAC document, else its product folders
            found = next((path / n for n in ("items.json", "catalog.json", "collection.json") if (path / n).exists()),
                         None)
            text, folder = (str(found), None) if found else (text, path)
    if folder is not None:
        if wanted_id != spec.source_collection:
            raise InvalidRequestError(f"{folder} is a folder of products, read by their names as "
                                      f"{spec.source_collection}: a source collection ({wanted_id}) is chosen in a "
                                      f"STAC source only")
        scenes = _scenes_from_folder(folder, spec)
        if not any(s.assets for s in scenes):  # an empty STAC search is a quiet day; a folder without any product
            # (of a band file, in folders named like products) is a mistake
            raise InvalidRequestError(
                f"no product found in {folder}: expected items.json, catalog.json or collection.json, or product "
                f"folders of COGs named like S2B_MSIL2A_<time>_N0510_R<orbit>_T<tile>_<time> holding "
                f"T<tile>_<time>_<band>_<res>.tif files (SAFE folders and JPEG 2000 are not read)")
        offered = [s.collection for s in scenes]
        wanted = [s for s in scenes if s.collection == wanted_id]
    else:
        items, base = _items_from_collection_file(text)
        offered = [i.collection_id or "" for i in items]
        if (unnamed := [i.id for i in items if not i.collection_id]) and wanted_id in offered:
            # beside items of the cube's collection, one naming none was left out without a word (exit status 0)
            raise InvalidRequestError(f"{source}: {len(unnamed)} of its {len(items)} items name no collection "
                                      f"({listed_names(unnamed, most=5)}), beside {wanted_id} items: an item says its "
                                      f"collection in its 'collection' field; give them theirs, or leave them out "
                                      f"(nothing was ingested)")
        wanted = [scene_from_item(i, spec, base=base or None) for i in items if (i.collection_id or "") == wanted_id]
    if offered and not wanted:  # a source of S1 and S2 items feeds both cubes; one of neither is a mistake
        others = ", ".join(sorted({c or "no collection" for c in offered}))
        advice = ("an item says its collection in its 'collection' field" if not all(offered) else
                  "is the collection right? (a provider's own id of it is given as source_collection, in the CLI "
                  "--source-collection)")
        raise InvalidRequestError(f"{source} holds no {wanted_id} item for the {spec.name} cube, only "
                                  f"{len(offered)} of {others}: {advice}")
    if wanted and not any(s.assets for s in wanted):  # another provider's layout: say so once, write nothing
        first, more = wanted[0], (f" (nor in the other {len(wanted) - 1} {wanted_id} items)" if len(wanted) > 1 else "")
        raise InvalidRequestError(f"{source}: item {first.scene_id}: "
                                  f"{no_band_reason(list(first.other_assets), spec)}{more}")
    return sorted(wanted, key=lambda s: (s.time, s.scene_id))
