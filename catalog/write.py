"""Publishing the catalog of a committed cube version (step 6 of :mod:`ingest.commit`).

:func:`write_catalog` is the ``on_catalog`` hook of :func:`ingest.job.ingest`: called after the ledger
record of a version exists, it writes the tile items, then the source collection, then the cube
collection, and the root catalog last, so a reader following links from the root never meets a document
that is not written yet, and no document names data that is not committed. It is idempotent and
deterministic (derived from the ledger only; unchanged documents are not rewritten: an item describes its
tile alone, so a version writes the items of the tiles it changed, then the collections, not every item of
the cube), so recovery can simply call it again: :func:`catalog_is_current` tells whether it has to.
Collections of the other cube collections already linked from the root are kept, so ``s2`` and ``s1`` cubes
share one root; as their ingests hold separate locks, a writer checks the root after writing it and links
what another writer published meanwhile (:func:`_published_children`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pystac
from pystac.utils import make_relative_href
from zarr.abc.store import Store

from cardcube.errors import CorruptDocumentError, CubeNotFoundError, VersionNotFoundError
from cardcube.spec import CUBE_SPECS
from cardcube.storage import StoreLike, open_store, read_json
from catalog import keys
from catalog.build import (
    ITEM_DIGEST_FIELD,
    VERSION_FIELD,
    build_cube_collection,
    build_root,
    build_tile_item,
    item_digest,
    parse_time,
)
from catalog.io import StoreStacIO
from catalog.sources import Processing, build_source_collection, file_host, source_info
from cube.ledger import CubeVersion, committed_versions, no_collection_error, read_version
from cube.scene_details import warn_lost, with_lost_details

log = logging.getLogger(__name__)

ROOT_ATTEMPTS = 5  # root rewrites before giving up on writers that keep replacing it (a rebuild repairs it)


@dataclass(frozen=True, slots=True)
class CatalogTree:
    """The documents one cube version publishes, linked and with their self hrefs set."""

    root: pystac.Catalog
    collection: pystac.Collection
    source: pystac.Collection
    items: Mapping[str, bytes]  # each tile item's key and bytes, serialised once (its link's digest names them)

    def save(self, io: StoreStacIO) -> None:
        """Write leaves first and the root last, so every link a reader can follow already resolves: the items (all
        at once), then the source collection, the cube collection and the root."""
        io.save_all(self.items)
        for obj in (self.source, self.collection, self.root):
            obj.save_object(include_self_link=False, stac_io=io)


def build_catalog(version: CubeVersion, *, io: StoreStacIO,
                  others: list[pystac.Link] | tuple[pystac.Link, ...] = ()) -> CatalogTree:
    """The in-memory tree for ``version`` with every self href set under ``io``'s base (no I/O).

    ``others`` are the child links of the existing root to keep (other cube collections).
    """
    items = [build_tile_item(version, tile) for tile in sorted(version.tiles)]
    collection = build_cube_collection(version, items)
    span = version.time_range
    source = build_source_collection(
        source_info(version.spec.source_collection),
        start=parse_time(span[0]) if span else None, end=parse_time(span[1]) if span else None,
        bbox=collection.extent.spatial.bboxes[0],
        read_from=sorted({s.collection for s in version.scenes.values() if s.collection}),
        hosts=sorted({file_host(href) for s in version.scenes.values() for href in s.sources.values()}),
        processing=Processing.of(version.scenes.values()),
    )
    root = build_root()
    root.add_child(collection)
    root.add_child(source)
    root.set_self_href(io.href(keys.ROOT_KEY))
    collection.set_self_href(io.href(keys.collection_key(version.collection)))
    source.set_self_href(io.href(keys.source_collection_key(source.id)))
    for item in items:
        item.set_self_href(io.href(keys.item_key(version.collection, item.properties["cardcube:tile"])))
    documents = {item.id: io.document(item) for item in items}  # what each item's bytes are (see ITEM_DIGEST_FIELD)
    for link in collection.get_links(pystac.RelType.ITEM):
        link.extra_fields[ITEM_DIGEST_FIELD] = item_digest(documents[link.target.id][1])
    # non-hierarchical links are not relativised by pystac: give the relative href ourselves
    collection.add_link(pystac.Link(
        pystac.RelType.DERIVED_FROM, make_relative_href(source.self_href, collection.self_href),
        media_type=keys.JSON_MEDIA_TYPE, title=f"source scenes: {source.title}"))
    mine = {collection.self_href, source.self_href}
    for link in others:
        if link.get_absolute_href() not in mine:
            root.add_link(pystac.Link(pystac.RelType.CHILD, link.get_absolute_href(), media_type=link.media_type,
                                      title=link.title))
    children = sorted(root.get_child_links(), key=lambda link: link.get_absolute_href() or "")
    root.links = [link for link in root.links if link.rel != pystac.RelType.CHILD] + children
    return CatalogTree(root, collection, source, dict(documents.values()))


# what reading a damaged catalog document raises, through pystac or plain JSON access
DAMAGED = (CorruptDocumentError, pystac.STACError, pystac.STACTypeError, AttributeError, KeyError, TypeError,
           ValueError)


def _existing_children(io: StoreStacIO) -> list[pystac.Link]:
    """The child links of the published root; none if it is absent or no STAC catalog (it is rewritten with
    this collection's links, and a rebuild adds the others)."""
    try:
        doc = read_json(io.store, keys.ROOT_KEY)
        if doc is None:
            return []
        old = pystac.Catalog.from_dict(doc, href=io.href(keys.ROOT_KEY), migrate=False)
    except DAMAGED as exc:
        log.warning("%s in %s is no STAC catalog (%s): rewritten", keys.ROOT_KEY, io.base, exc)
        return []
    return list(old.get_child_links())


def published_version(store: StoreLike, collection: str) -> int | None:
    """The ledger version the published catalog of ``collection`` reflects, or None if there is none."""
    published = _published(open_store(store), collection)
    return None if published is None else published[0]


def _published(store: Store, collection: str) -> tuple[int, str | None] | None:
    """The version the published catalog of ``collection`` reflects, and when that version was committed (its
    collection's "updated"; None in a catalog without it), or None if there is none."""
    try:
        doc = read_json(store, keys.collection_key(collection))
    except CorruptDocumentError:  # as good as absent: the next write_catalog replaces it
        return None
    number = doc.get(VERSION_FIELD) if isinstance(doc, dict) else None
    if type(number) is not int:  # one edited into no number: as absent, rewritten
        return None
    updated = doc.get("updated")
    return number, updated if isinstance(updated, str) else None


def write_catalog(store: StoreLike, version: CubeVersion, *, force: bool = False) -> None:
    """Publish the catalog of committed ``version`` under the cube root (the ingest ``on_catalog`` hook).

    The catalog describes data, so a version that changed no tile (an ingest whose every scene was
    rejected or already present) leaves it byte for byte as it is, still naming the version that
    brought the data. A catalog that already reflects a newer version is never rolled back. ``force``
    rewrites every document whatever is published (a rebuild: an item or the source collection may be
    missing or damaged while the root and the collection look current); equal documents are still not
    rewritten.
    """
    store = open_store(store)
    if force:  # a rebuild: of any version but one older than the catalog's
        published = _published(store, version.collection)
        if published is not None and published[0] > version.version and _ledgers(store, published, version):
            return  # never rolled back
    elif catalog_is_current(store, version):
        return
    version, lost, why = with_lost_details(version)  # a details object lost without a backup stops no catalog build
    warn_lost(lost, "the catalog is written without their source files (an ingest records them as lost)", why)
    io = StoreStacIO(store)
    # a rebuild links the collections published now, so one deleted since loses its link (pystac failed on it)
    build_catalog(version, io=io, others=_published_children(io) if force else _existing_children(io)).save(io)
    for _ in range(ROOT_ATTEMPTS):  # another cube collection's writer may have replaced the root meanwhile
        linked = {link.get_absolute_href() for link in _existing_children(io)}
        published = _published_children(io)
        if {link.get_absolute_href() for link in published} <= linked:
            return
        build_catalog(version, io=io, others=published).root.save_object(include_self_link=False, stac_io=io)
    log.warning("the root catalog of %s kept changing under this writer: run cardcube catalog build", io.base)


def _published_children(io: StoreStacIO) -> list[pystac.Link]:
    """Child links to every cube collection published under the root and its source collection: what the
    root must link, whichever writer wrote it last.

    The S1 and S2 cubes are ingested under separate locks and both rewrite the root, so a writer can replace
    a root written meanwhile with one that lacks the other's collection. Each collection is written before
    the root, so a writer that checks the root *after* writing it sees every collection published before,
    and the last writer puts the root right."""
    links = []
    for name in CUBE_SPECS:
        key = keys.collection_key(name)
        try:
            doc = read_json(io.store, key)
            if doc is None:
                continue
            derived = pystac.Collection.from_dict(doc, href=io.href(key), migrate=False).get_single_link(
                pystac.RelType.DERIVED_FROM)
            source_key = None if derived is None else io.key(derived)
            source = None if source_key is None else read_json(io.store, source_key)
        except DAMAGED as exc:  # a rebuild repairs it; a writer of the other collection goes on
            log.warning("%s in %s is no STAC collection (%s): left out of the root until it is rebuilt", key,
                        io.base, exc)
            continue
        links.append(pystac.Link(pystac.RelType.CHILD, io.href(key), media_type=keys.JSON_MEDIA_TYPE,
                                 title=doc.get("title")))
        if source is not None:
            links.append(pystac.Link(pystac.RelType.CHILD, io.href(source_key), media_type=keys.JSON_MEDIA_TYPE,
                                     title=source.get("title")))
    return links


def _ledgers(store: Store, published: tuple[int, str | None], version: CubeVersion) -> CubeVersion | None:
    """The ledger's version the ``published`` catalog (its version, and when that was committed) was written for,
    ``version`` itself or another (one ledger GET); None if the ledger holds no such version, or one committed at
    another time: the catalog left of a cube wiped and built again at the same place, which numbers its versions
    anew (a catalog of the same number, or of a number the new ledger has reached, is no catalog of it)."""
    number, updated = published
    if number == version.version:
        found = version
    else:
        try:
            found = read_version(store, version.collection, number)
        except (VersionNotFoundError, CubeNotFoundError):
            return None
    return None if updated and found.created and updated != found.created else found


def _has_root_link(store: Store, collection: str) -> bool:
    io = StoreStacIO(store)
    wanted = io.href(keys.collection_key(collection))
    return any(link.get_absolute_href() == wanted for link in _existing_children(io))


def catalog_is_current(store: StoreLike, version: CubeVersion) -> bool:
    """True if the published catalog needs nothing for ``version``: recovery calls :func:`write_catalog` if False.

    That is when the root links to the collection and its catalog was written for ``version``, for an
    earlier version holding the same data (see :func:`write_catalog`), or for a newer version the ledger holds.
    """
    store = open_store(store)
    published = _published(store, version.collection)
    written_for = None if published is None else _ledgers(store, published, version)
    if written_for is None:
        return False
    if written_for.version < version.version and _data(written_for) != _data(version):  # the data changed since
        return False
    return _has_root_link(store, version.collection)


def _data(version: CubeVersion) -> tuple:
    """What of ``version`` its catalog is made of, comparable with another's (scenes whose details are lost: empty)."""
    version = with_lost_details(version)[0]
    return version.spec, version.tiles, version.scenes


def rebuild_catalog(store: StoreLike, *, collections: tuple[str, ...] | None = None) -> dict[str, int]:
    """Regenerate every document of the catalog from the latest ledger version of every cube collection found
    (or of ``collections``), whatever is there now; returns collection -> version. One of ``collections`` the cube
    lacks is refused before anything is written (:func:`~cube.ledger.no_collection_error`)."""
    store = open_store(store)
    for name in collections or ():  # until 2026-12-07 left out without a word, or "no cube collection" said
        if not committed_versions(store, name):
            raise no_collection_error(store, name)
    done = {}
    for name in collections or tuple(CUBE_SPECS):
        if not committed_versions(store, name):
            continue
        for _ in range(ROOT_ATTEMPTS):  # an ingest committing meanwhile: its version is rebuilt too, never an older
            version = read_version(store, name)
            write_catalog(store, version, force=True)
            if committed_versions(store, name)[-1] == version.version:
                break
        done[name] = version.version
    return done
