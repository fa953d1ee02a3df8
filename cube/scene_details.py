"""A scene's band files, checksums and what was done to them: written once, read when asked for.

Until 2026-12-06 every ledger record held every scene's whole record (some 3.4 KB a scene, most of it the source
files' hrefs and sha256), so a season of a country made each version's record ~10 MB, written again by every ingest
and read by every query. A record of format ``cardcube-ledger/2`` keeps, per scene, what reading the cube needs
(tile, time, windows, footprint, the pieces of a pass) and names the *details object* holding the rest: its
``checksums``, ``sources``, ``converted`` and ``warped`` (those of its parts too). A details object holds the
scenes whose details a version was the first to record, ``<collection>/_ledger/scenes-<version>-<digest>.json``
(the digest of its bytes: two writers of one version never write the same key with other bytes), created once
before its version's record, like the data, and never changed; later records name it again. ``cardcube expire``
deletes those no kept record names (and those of a run killed before its commit), and merges those the latest record
names into one when they are many (:func:`details_loaded`: a version recording the same scenes writes them anew).

The fields a details object holds are read lazily (:class:`StoredField`): a query never asks for them, an ingest or
a catalog build does, and then one GET reads a whole details object for every scene it holds.

A details object lost without a backup loses its scenes' details (kept nowhere else), not their pixels. An ingest and
a catalog build go on without them (:func:`with_lost_details`, warning), and the ingest's version records them as
lost (``"lost": <the object>`` beside empty fields, in its own details object), so that its record names the lost
object no more: until 2026-12-06 every later ingest and catalog build stopped on it for good. So do they, since
2026-12-06, for a record naming a sound object for scenes it does not hold as the record says (:func:`misassigned`:
a record edited by hand, a restore mixing backups), which no backup of the record may mend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from zarr.abc.store import Store

from cardcube.errors import CorruptDocumentError
from cardcube.storage import listed_names, read_bytes_many, store_url
from cube import layout

log = logging.getLogger(__name__)

FORMAT = "cardcube-scene-details/1"
FIELDS = ("checksums", "sources", "converted", "warped")  # of a scene record and of each of its parts
NO_BACKUP = ("run `cardcube ingest` (with any source, --repair too): it goes on, and records the details "
             "of the scenes it held as lost in a version it commits, their pixels as they are")


class DetailsMissingError(CorruptDocumentError):
    """A details object the ledger names is missing (lost, not damaged): the scenes' details it held are gone."""


class DetailsReader:
    """The details objects ``names`` of one collection (those a version's record names), read once, all at once, when
    a :class:`StoredField` first asks for one (one round trip, not one a version); safe to share between threads."""

    def __init__(self, store: Store, collection: str, names: Iterable[str] = ()) -> None:
        self.store, self.collection, self.names = store, collection, frozenset(names)
        self._read: dict[str, dict[str, Any] | CorruptDocumentError] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple:  # a copy elsewhere (a dask worker process) reads them again, if asked
        return DetailsReader, (self.store, self.collection, self.names)

    def scene(self, name: str, scene_id: str) -> dict[str, Any]:
        """The details of ``scene_id`` in the details object ``name``."""
        scenes = self._load(name)
        if isinstance(scenes, CorruptDocumentError):
            raise scenes
        if scene_id not in scenes:
            raise self.not_held(name, f"details of scene {scene_id}")
        return scenes[scene_id]

    def held(self) -> dict[str, dict[str, Any]]:
        """What each of :attr:`names` that reads sound holds (read now if not yet, all at once)."""
        for name in self.names:
            self._load(name)
        return {n: v for n, v in self._read.items() if not isinstance(v, CorruptDocumentError)}

    def missing(self) -> set[str]:
        """The details objects of :attr:`names` that are missing (read now if not yet, all at once)."""
        return {n for n in self.names if isinstance(self._load(n), DetailsMissingError)}

    def _load(self, name: str) -> dict[str, Any] | CorruptDocumentError:
        """The scenes the details object ``name`` holds, or why it cannot be read (every unread one read at once)."""
        with self._lock:
            if name not in self._read:
                unread = sorted(self.names - set(self._read) | {name})
                keys = [layout.details_key(self.collection, n) for n in unread]
                for n, data in zip(unread, read_bytes_many(self.store, keys), strict=True):
                    try:
                        self._read[n] = _parse_details(self.store, self.collection, n, data)
                    except CorruptDocumentError as exc:  # raised when asked for, not for another's sake
                        self._read[n] = exc
            return self._read[name]

    def not_held(self, name: str, what: str) -> CorruptDocumentError:
        """The error for ``what`` that the ledger says the details object ``name`` holds and it does not."""
        return CorruptDocumentError(f"{layout.details_key(self.collection, name)} in {store_url(self.store)} holds no "
                                    f"{what}, which the ledger says it does: restore the ledger from a backup")


def _parse_details(store: Store, collection: str, name: str, data: bytes | None) -> dict[str, Any]:
    """The scenes' details the details object ``name`` holds, of its bytes ``data`` (None: it is missing)."""
    key = layout.details_key(collection, name)
    if data is None:
        raise DetailsMissingError(f"{key} in {store_url(store)}, the band files and checksums of scenes the ledger "
                                  f"names, is missing: restore it from a backup; without one, {NO_BACKUP} "
                                  "(cardcube verify lists what else is lost)")
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, not {FORMAT}")
        if hashlib.sha256(data).hexdigest()[:16] != name.removesuffix(".json").rpartition("-")[2]:
            raise ValueError("its bytes are not those its name's digest says")
        if (doc.get("collection"), doc.get("version")) != (collection, _written_by(name)):  # a copy under a new name
            raise ValueError(f"it says it is of version {doc.get('version')!r} of the {doc.get('collection')!r} "
                             "cube, not what its key says")
        return dict(doc["scenes"])
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise CorruptDocumentError(f"{key} in {store_url(store)} is damaged ({exc}): restore it from a "
                                   f"backup; without one, delete it, and then {NO_BACKUP}") from None


class StoredField(Mapping):
    """One field of :data:`FIELDS` of a scene record (``path``: its scene id and field, or its scene id, "parts",
    the part's index and field) kept in the details object ``name``: read at the first look inside. Equal to a
    dict of the same items; pickled as what it points at."""

    __slots__ = ("name", "path", "reader")

    def __init__(self, reader: DetailsReader, name: str, path: tuple[Any, ...]) -> None:
        self.reader, self.name, self.path = reader, name, path

    def __reduce__(self) -> tuple:
        return StoredField, (self.reader, self.name, self.path)

    def _items(self) -> dict[str, Any]:
        found: Any = self.reader.scene(self.name, self.path[0])
        try:
            for step in self.path[1:]:
                found = found[step] if isinstance(step, int) or step in found else {}  # an empty field is not written
        except (IndexError, KeyError, TypeError):  # a record naming more parts than its details hold: damaged
            raise self.reader.not_held(self.name, "/".join(map(str, self.path))) from None
        return found

    def __getitem__(self, key: str) -> Any:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"StoredField({self.name}, {'/'.join(map(str, self.path))})"


def stored_in(record: Any) -> str | None:
    """The details object already holding ``record``'s details (a :class:`cube.ledger.SceneRecord` read from a
    record of format 2, its detail fields and its parts' unchanged), or None: they are to be written."""
    fields = [(getattr(record, f), (record.scene_id, f)) for f in FIELDS]
    fields += [(getattr(p, f), (record.scene_id, "parts", i, f)) for i, p in enumerate(record.parts) for f in FIELDS]
    names = {v.name for v, path in fields if isinstance(v, StoredField) and v.path == path}
    if len(names) == 1 and all(isinstance(v, StoredField) for v, _ in fields):
        return names.pop()
    return None


def details_of(record: Any) -> dict[str, Any]:
    """``record``'s details as a details object holds them (an empty ``converted`` or ``warped`` left out)."""
    def fields(r: Any) -> dict[str, Any]:
        return {f: ({k: dict(v) for k, v in r.warped.items()} if f == "warped" else dict(getattr(r, f)))
                for f in FIELDS if f in ("checksums", "sources") or getattr(r, f)}
    parts = [fields(p) for p in record.parts]
    lost = {"lost": was} if (was := lost_in(record)) else {}  # kept, whichever version writes its details again
    return {**fields(record), **({"parts": parts} if parts else {}), **lost}


def details_document(collection: str, version: int, details: Mapping[str, dict[str, Any]]) -> tuple[str, bytes]:
    """The name and bytes of the details object of ``version`` holding ``details`` (scene id -> :func:`details_of`)."""
    data = json.dumps({"format": FORMAT, "collection": collection, "version": version,
                       "scenes": dict(sorted(details.items()))}, separators=(",", ":")).encode()
    return f"scenes-{version:08d}-{hashlib.sha256(data).hexdigest()[:16]}.json", data


def _stored_fields(version: Any) -> list[StoredField]:
    """The detail fields of ``version``'s scenes (and their pieces) read from details objects: none for a record of
    format 1."""
    return [v for r in version.scenes.values() for v in _fields(r) if isinstance(v, StoredField)]


def details_named(version: Any) -> set[str]:
    """The names of the details objects ``version`` (a :class:`cube.ledger.CubeVersion`) reads its scenes' details
    from: none for one read from a record of format 1."""
    return {v.name for v in _stored_fields(version)}


def _misassigned_in(version: Any, readers: set[DetailsReader]) -> dict[str, dict[str, str]]:
    """:func:`misassigned` of ``version`` against the sound objects ``readers`` read (all at once)."""
    return misassigned(version, {n: held for reader in readers for n, held in reader.held().items()})


def read_details(store: Store, collection: str, names: set[str]
                 ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """What each of the details objects ``names`` that can be read holds (name -> scene id -> details), and (key,
    what is wrong) of each that is missing or damaged: all read at once."""
    held, problems, names = {}, [], sorted(names)
    for name, data in zip(names, read_bytes_many(store, [layout.details_key(collection, n) for n in names]),
                          strict=True):
        try:
            held[name] = _parse_details(store, collection, name, data)
        except CorruptDocumentError as exc:
            key = layout.details_key(collection, name)
            problems.append((key, "missing: the band files and checksums of the scenes it held are lost (their "
                                  f"pixels are not): restore it from a backup; without one, {NO_BACKUP}"
                             if isinstance(exc, DetailsMissingError) else f"damaged: {exc}"))
    return held, problems


def misassigned(version: Any, held: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The scenes ``version``'s record (a :class:`cube.ledger.CubeVersion`) assigns to a details object of ``held``
    (name -> what it holds, :func:`read_details`) that it does not hold as the record says, by object (scene id ->
    what is wrong): none held, other pieces of a pass, fields not as :func:`details_of` writes them, or an object
    written after the record. The object is sound (its bytes are those its name says): the record is wrong, and
    an ingest or a catalog build asking for those scenes' details stops on it."""
    found: dict[str, dict[str, str]] = {}
    for record in version.scenes.values():
        if (name := _named(record)) in held and (wrong := _disagreement(record, name, held[name], version.version)):
            found.setdefault(name, {})[record.scene_id] = wrong
    return found


def _disagreement(record: Any, name: str, held: Mapping[str, Any], version: int) -> str | None:
    """What is wrong with the details the object ``name`` (holding ``held``) holds of ``record``, which the record of
    ``version`` says it holds, or None."""
    if (written := _written_by(name)) > version:
        return f"the object is of version {written}, after this record's, which cannot name it"
    details = held.get(record.scene_id)
    if details is None:
        return "none held"
    parts = details.get("parts", []) if isinstance(details, dict) else None
    if not isinstance(parts, list):
        return "held as no scene's details"
    if len(parts) != len(record.parts):
        return f"{len(parts)} piece(s) of a pass held, the record names {len(record.parts)}"
    if not all(isinstance(x, dict) and all(_field_sound(f, x.get(f, {})) for f in FIELDS) for x in (details, *parts)):
        return "its band files, checksums, conversions or warping not held as cardcube writes them"
    return None


def _field_sound(field: str, value: Any) -> bool:
    """Whether ``value`` is held as :func:`details_of` writes the field ``field``: band -> text (``warped``: band ->
    how it was resampled)."""
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, dict if field == "warped" else str)
                                           for k, v in value.items())


def _written_by(name: str) -> int:
    """The version that wrote the details object ``name`` (``scenes-<version>-<digest>.json``)."""
    return int(name.split("-")[1])


class LostDetails(Mapping):
    """A field of :data:`FIELDS` of a scene whose details object ``name`` is lost: empty. A version committed with
    it records the scene's details as lost (:func:`details_of`), so the new record names that object no more."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple:
        return LostDetails, (self.name,)

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"LostDetails({self.name})"


def with_lost_details(version: Any) -> tuple[Any, dict[str, str], dict[str, str]]:
    """``version`` (a :class:`cube.ledger.CubeVersion`) with the details of the scenes whose details object is
    missing, or holds them not as the record says (:func:`misassigned`: a record edited by hand, a restore mixing
    backups), taken as lost (:class:`LostDetails`); those scenes (scene id -> the object); and why, by object
    (:func:`warn_lost`): what an ingest and a catalog build go on with, where until 2026-12-06 one such object
    stopped them all for good. A scene the object holds with other pieces of a pass than the record names is taken
    as lost too, though readable: reading uses the record's pieces, which those details do not describe. Reads every
    details object ``version`` names (one round trip); a damaged one still raises, when asked for."""
    readers = {v.reader for v in _stored_fields(version)}
    missing = set().union(*(r.missing() for r in readers))
    wrong = _misassigned_in(version, readers)
    lost = {sid: name for sid, r in version.scenes.items()
            if (name := _named(r)) in missing or sid in wrong.get(name, ())}
    if not lost:
        return version, {}, {}
    why = {name: _misassigned_why(version.version, scenes) for name, scenes in wrong.items()}
    scenes = dict(version.scenes)
    for sid, name in lost.items():
        r = scenes[sid]
        parts = tuple(replace(p, **{f: LostDetails(name) for f in FIELDS}) for p in r.parts)
        scenes[sid] = replace(r, parts=parts, **{f: LostDetails(name) for f in FIELDS})
    return replace(version, scenes=scenes), lost, why


def _misassigned_why(version: int, scenes: Mapping[str, str]) -> str:
    """Why the details the object holds of ``scenes`` (scene id -> what is wrong, :func:`misassigned`), which the
    record of ``version`` names it for, are taken as lost: for :func:`warn_lost`."""
    pieces = (" (details held for other pieces of a pass than the record names are readable, but disagree with the "
              "record, whose pieces are what reading uses: taken as lost too, the conservative choice)"
              if any("piece(s) of a pass" in w for w in scenes.values()) else "")
    return (f"holds not what the ledger record of version {version} says ("
            f"{listed_names([f'{sid}: {w}' for sid, w in sorted(scenes.items())], most=3)}){pieces}: the object is "
            "sound, the record is wrong")


def details_loaded(version: Any) -> dict[str, Any]:
    """The scenes of ``version`` (a :class:`cube.ledger.CubeVersion`) with their details read into them (those of a
    scene recorded as lost kept as lost, :class:`LostDetails`): a version recording them writes them all again, in
    its own details object (:meth:`cube.ledger.CubeVersion.documents`), which is how ``cardcube expire`` merges the
    details objects a version names into one. Reads them all at once; raises :class:`CorruptDocumentError` if one of
    them is missing or damaged, or holds not what the record says (:func:`misassigned`: written anew as the record
    says, the fault would pass for sound)."""
    def read(x: Any) -> dict[str, Any]:
        return {f: {k: dict(v) for k, v in x.warped.items()} if f == "warped" else dict(getattr(x, f)) for f in FIELDS}

    if wrong := _misassigned_in(version, {v.reader for v in _stored_fields(version)}):
        name, why = min(wrong.items())
        raise CorruptDocumentError(f"the ledger record of version {version.version} names "
                                   f"{layout.details_key(version.collection, name)} for the details of scenes it "
                                   f"does not hold as the record says ({listed_names(sorted(why), most=3)}): "
                                   "run `cardcube verify`, which says what to do")
    scenes = {}
    for sid, r in version.scenes.items():
        if was := lost_in(r):
            lost = {f: LostDetails(was) for f in FIELDS}
            scenes[sid] = replace(r, parts=tuple(replace(p, **lost) for p in r.parts), **lost)
        else:
            scenes[sid] = replace(r, parts=tuple(replace(p, **read(p)) for p in r.parts), **read(r))
    return scenes


def lost_details(version: Any) -> dict[str, str]:
    """The scenes of ``version`` whose details are lost (scene id -> the details object that held them): recorded as
    lost by an earlier ingest, or taken as lost by :func:`with_lost_details`. Reads the details objects it names."""
    return {sid: was for sid, r in version.scenes.items() if (was := lost_in(r))}


def lost_in(record: Any) -> str | None:
    """The details object whose loss lost ``record``'s details (a scene record), if they are lost: told by any of
    its fields (one changed since, a plain dict, tells nothing)."""
    for v in _fields(record):
        if isinstance(v, LostDetails):
            return v.name
        if isinstance(v, StoredField):
            return v.reader.scene(v.name, record.scene_id).get("lost")
    return None


def warn_lost(lost: Mapping[str, str], what: str, why: Mapping[str, str] | None = None) -> None:
    """Log, once per details object, the scenes whose details it held and are lost (:func:`with_lost_details`):
    ``why`` says what is wrong with an object (by name; the others are missing), ``what`` what goes on."""
    why = why or {}
    for name in sorted(set(lost.values())):
        scenes = sorted(sid for sid, n in lost.items() if n == name)
        shown = ", ".join(scenes[:5]) + (f" and {len(scenes) - 5} more" if len(scenes) > 5 else "")
        fix = ("restore the record from a backup if you have one (`cardcube verify` names it): its version "
               "then reads them again" if name in why else
               "restore it from a backup if you have one: the versions naming it then read it again")
        log.warning("the details object %s of the ledger %s: the band files and checksums of %d scene(s) (%s) are "
                    "lost, their pixels are not; %s. %s", name, why.get(name, "is missing"), len(scenes), shown,
                    what, fix[0].upper() + fix[1:])


def _fields(record: Any) -> list[Any]:
    """The detail fields of ``record`` and of its parts."""
    return [getattr(x, f) for x in (record, *record.parts) for f in FIELDS]


def _named(record: Any) -> str | None:
    """The details object ``record`` reads its details from, if one (a record of format 2)."""
    return next((v.name for v in _fields(record) if isinstance(v, StoredField)), None)
