"""Offline validation of the published catalog against the STAC JSON schemas, never touching the network.

Core schemas come with pystac; extension schemas are read from a folder laid out as
``<extension>/<version>/schema.json`` (the document whose ``$id`` is
``https://stac-extensions.github.io/<extension>/<version>/schema.json``), by default the copies shipped with
this package (:data:`SCHEMAS`: the published schemas of the extensions the catalog uses, Apache-2.0). A
schema that is in neither place is an error (:class:`SchemaUnavailableError`), not a download. The PROJJSON
schema that the projection and datacube schemas reference comes from pyproj's PROJ data (v0.7, a superset of
the older versions they cite).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
from pystac.validation import JsonSchemaSTACValidator, validate_dict

from cardcube.errors import SchemaUnavailableError
from cardcube.storage import StoreLike, open_store, read_json
from catalog import keys
from catalog.io import StoreStacIO

SCHEMAS = Path(__file__).parent / "schemas"
_PROJJSON_URI = re.compile(r"^https://proj\.org/schemas/v0\.\d+/projjson\.schema\.json$")


def _projjson_schema() -> dict[str, Any] | None:
    import pyproj

    path = Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json"
    return json.loads(path.read_text()) if path.exists() else None


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator with every schema from pystac's copies or a local folder."""

    def __init__(self, extension_dir: str | Path | None = SCHEMAS) -> None:
        super().__init__()
        self.extension_dir = Path(extension_dir) if extension_dir else None
        if self.extension_dir is not None:
            for path in sorted(self.extension_dir.glob("*/*/schema.json")):
                doc = json.loads(path.read_text())
                self.schema_cache.setdefault(doc.get("$id", "").rstrip("#"), doc)  # eo, raster: "...json#"

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        schema_uri = schema_uri.rstrip("#")
        if schema_uri not in self.schema_cache and _PROJJSON_URI.match(schema_uri):
            doc = _projjson_schema()
            if doc is not None:
                self.schema_cache[schema_uri] = {**doc, "$id": schema_uri}
        if schema_uri not in self.schema_cache:
            raise SchemaUnavailableError(f"no offline copy of the STAC schema {schema_uri}"
                                         + (f" in {self.extension_dir}" if self.extension_dir else ""))
        return self.schema_cache[schema_uri]


def validate_document(doc: dict[str, Any], *, validator: OfflineValidator, href: str | None = None,
                      extensions: bool = True) -> list[str]:
    """Validate one STAC document (core, and its extensions unless ``extensions`` is False).

    Returns the schema URIs checked; raises :class:`pystac.STACValidationError` on the first failure.
    """
    if extensions:
        return validate_dict(doc, href=href, validator=validator)
    obj_type = pystac.serialization.identify_stac_object_type(doc)
    uri = validator.validate_core(doc, obj_type, doc["stac_version"], href=href)
    return [uri] if uri else []


def walk_documents(store: StoreLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``(key, document)`` reachable from the root catalog by child and item links."""
    store = open_store(store)
    io = StoreStacIO(store)
    todo, seen = [keys.ROOT_KEY], set()
    while todo:
        key = todo.pop(0)
        if key in seen:
            continue
        seen.add(key)
        doc = read_json(store, key)
        if doc is None:
            raise pystac.STACError(f"{key} is linked from the catalog at {io.base} but does not exist")
        yield key, doc
        for link in doc.get("links", []):
            if link.get("rel") in ("child", "item"):
                todo.append(io.key(pystac.utils.make_absolute_href(link["href"], io.href(key))))


def validate_catalog(store: StoreLike, *, extension_dir: str | Path | None = SCHEMAS,
                     extensions: bool = True) -> dict[str, list[str]]:
    """Validate every document of the catalog offline; returns key -> schema URIs checked."""
    validator = OfflineValidator(extension_dir)
    return {key: validate_document(doc, validator=validator, href=key, extensions=extensions)
            for key, doc in walk_documents(store)}
