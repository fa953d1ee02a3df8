"""pystac I/O through the cube's zarr Store, so the catalog is read and written the same way locally and on S3.

pystac objects carry absolute hrefs under :attr:`StoreStacIO.base` (the store's own URL or folder); this
class maps each href back to a key of the store and calls :mod:`cardcube.storage`. Documents are
serialised deterministically, and a write whose bytes equal what is stored is skipped, so regenerating an
unchanged catalog changes nothing (not even a modification time).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pystac
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from cardcube.errors import CorruptDocumentError, CubeNotFoundError
from cardcube.storage import read_bytes, read_bytes_many, store_url, write_bytes, write_many

_MEMORY_BASE = "memory://cube"


def store_base(store: Store) -> str:
    """The absolute href of the store's root, used as the base of every catalog href."""
    inner = store
    while not isinstance(inner, LocalStore | FsspecStore) and isinstance(getattr(inner, "_store", None), Store):
        inner = inner._store
    if isinstance(inner, LocalStore):  # "a/../b" as pystac makes hrefs absolute: "b"
        return os.path.normpath(os.path.abspath(inner.root))
    if isinstance(inner, FsspecStore):
        return store_url(inner).rstrip("/")
    return _MEMORY_BASE


class StoreStacIO(pystac.StacIO):
    """A :class:`pystac.StacIO` that reads and writes the keys of one zarr Store.

    :attr:`base` names the store in messages; hrefs start with it percent-encoded, since pystac parses them
    as URLs: a ``#`` or ``?`` in a folder's name would otherwise end the path, and every relative link
    written would be wrong."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.base = store_base(store)
        self._href_base = quote(self.base, safe=":/")

    def href(self, key: str) -> str:
        """The absolute href of ``key``."""
        return f"{self._href_base}/{key}"

    def key(self, href: str | pystac.Link) -> str:
        """The store key of ``href`` (absolute under :attr:`base`, or already relative to the root)."""
        text = href.get_absolute_href() if isinstance(href, pystac.Link) else href
        if text is None:
            raise CorruptDocumentError(f"catalog link {href} has no href")
        text = text.removeprefix("file://")
        if text.startswith(self._href_base + "/"):
            text = text[len(self._href_base) + 1:]
        elif "://" in text or text.startswith("/"):
            raise self._outside(text)
        key = posixpath.normpath(text)
        if key.startswith("../") or key == "..":
            raise self._outside(text)
        return key

    def _outside(self, href: str) -> CorruptDocumentError:
        return CorruptDocumentError(
            f"catalog href {href} is outside the cube at {self.base} (a catalog with absolute links, copied or "
            f"moved from elsewhere?): `cardcube catalog build --cube {self.base}` writes it anew from the ledger, "
            f"with relative links")

    def read_text(self, source: str | pystac.Link, *args: Any, **kwargs: Any) -> str:
        key = self.key(source)
        data = read_bytes(self.store, key)
        if data is None:
            raise CubeNotFoundError(f"no catalog document {key} in {self.base}")
        return data.decode()

    def write_text(self, dest: str | pystac.Link, txt: str, *args: Any, **kwargs: Any) -> None:
        key = self.key(dest)
        data = txt.encode()
        if read_bytes(self.store, key) != data:
            write_bytes(self.store, key, data)

    def document(self, obj: pystac.STACObject) -> tuple[str, bytes]:
        """The key and bytes :meth:`pystac.STACObject.save_object` writes for ``obj`` (without its self link)."""
        return self.key(obj.get_self_href() or ""), self.json_dumps(obj.to_dict(include_self_link=False)).encode()

    def save_all(self, documents: Mapping[str, bytes]) -> None:
        """Write each of ``documents`` (key -> bytes, :meth:`document`) whose bytes differ from what is stored, as
        :meth:`write_text` does one: what is stored read all at once, then the changed ones written all at once (on
        S3 a round trip each for hundreds of tile items, not one per item; none of them may link to another, as they
        are written in no order)."""
        stored = read_bytes_many(self.store, list(documents))
        write_many(self.store, {key: data for (key, data), old in zip(documents.items(), stored, strict=True)
                                if old != data})

    def json_dumps(self, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        return json.dumps(json_dict, indent=2, ensure_ascii=False) + "\n"
