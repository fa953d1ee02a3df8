"""One exception hierarchy for cardcube.

Every error is a :class:`CardcubeError` and also the builtin a caller would naturally catch
(``ValueError`` for bad input, ``FileNotFoundError`` for missing things, ...), as zarr-python does.
Messages name the thing (scene, parcel id, URL) and the reason. The library never speaks HTTP: the
REST service maps these classes to status codes in one table at its edge.
"""

from __future__ import annotations

from collections.abc import Iterator


class CardcubeError(Exception):
    """Base class of every cardcube error."""


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or while handling (its ``__cause__``, else ``__context__``), and so on."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


# --- source scenes -------------------------------------------------------------------------------
class SceneError(CardcubeError, ValueError):
    """A source scene cannot be ingested; ``scene_id`` names it and ``reason`` says why."""

    def __init__(self, scene_id: str, reason: str) -> None:
        self.scene_id = scene_id
        self.reason = reason
        super().__init__(f"scene {scene_id}: {reason}")


class SceneReadError(SceneError):
    """A band file is missing, truncated or corrupt (found by reading every block)."""


class SceneGridError(SceneError):
    """A scene is in another CRS, at another resolution, or not aligned with the cube tile's grid."""


class SceneContentError(SceneError):
    """A scene lacks a band, holds only nodata, or its metadata contradicts the cube."""


class NoDataOnTileError(SceneContentError):
    """A scene resampled onto its tile holds no valid pixel there: its footprint overlaps the tile with nodata
    only (a GRD's collar over a tile's corner)."""


class DuplicateSceneError(SceneError):
    """The same acquisition (tile and time) is already in the cube under another scene id. A scene id the cube
    holds is skipped without reading its files again: a corrected delivery needs a new scene id."""


# --- the cube and its storage ---------------------------------------------------------------------
class CubeNotFoundError(CardcubeError, FileNotFoundError):
    """No cube (or no such collection / tile in it) at the given location."""


class SourceNotFoundError(CardcubeError, FileNotFoundError):
    """No scenes' source (ingest's SOURCE: a STAC document or a folder) at the given location; not the cube, whose
    name it had (``cardcube ingest --json`` said ``"error": "CubeNotFound"`` of a mistyped items.json)."""


class CubeLostError(CardcubeError):
    """A collection a long-running reader (the REST service) has served has no committed version any more: its
    ledger is gone from the store (a deleted folder or prefix, an unmounted volume), a fault of the store."""


class VersionNotFoundError(CardcubeError, LookupError):
    """The requested cube version does not exist (never committed, or expired)."""


class CommitConflictError(CardcubeError, RuntimeError):
    """Another writer committed or holds the cube; nothing of this run became visible."""


class CubeLockedError(CommitConflictError):
    """Another ingest holds the cube's write lock."""


class LockLostError(CommitConflictError):
    """This writer's lock was broken (it was frozen or cut off for too long) and it stopped writing."""


class TasksStillRunningError(CardcubeError, RuntimeError):
    """A run stopped (``why``: Ctrl-C, SIGTERM, an error, a lost scheduler) while some of its tasks ran on, and they
    had not ended ``grace`` seconds later; ``running`` is how many (-1: the cluster could not be asked)."""

    def __init__(self, running: int, grace: float, where: str, why: str) -> None:
        self.running, self.grace, self.where, self.why = running, grace, where, why
        if running < 0:
            state = f"its tasks on {where} may still run"
        else:
            state = f"{running} of its tasks still ran on {where}, and had not ended {grace:g} s later"
        super().__init__(f"the run stopped ({why}); {state}")

    @staticmethod
    def in_chain(exc: BaseException) -> bool:
        """Whether ``exc``, or an error it was raised from or while handling (a second Ctrl-C unwinding the run), says
        a run left tasks running."""
        return any(isinstance(e, TasksStillRunningError) for e in exception_chain(exc))


class ClusterError(CardcubeError, RuntimeError):
    """The dask cluster failed a run: the scheduler was lost, or a task killed the workers that ran it."""


class CorruptDocumentError(CardcubeError, ValueError):
    """A JSON document of the cube (ledger record, catalog, manifest) is not valid JSON."""


class StoreError(CardcubeError, OSError):
    """The store failed (after retries) or cannot be reached."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached or does not answer in time (refused or dropped connections, timeouts, 503 Slow
    Down after every retry): an outage that may pass, where asking again later can succeed."""


class ServiceBusyError(CardcubeError):
    """The service reads the cube for as many requests as it may at once, and a request waited its time for a turn:
    asking again later can succeed."""


class ClientGoneError(CardcubeError):
    """The client of a request closed its connection while the request waited for its turn: nothing was read."""


class SpoolError(CardcubeError, OSError):
    """The spool folder cannot take a checked file (full, gone, not writable): no scene's fault, the run stops."""


# --- requests on the read side --------------------------------------------------------------------
class ParcelError(CardcubeError, ValueError):
    """A parcel cannot be processed; ``parcel_id`` names it and ``reason`` says why. ``status``: where the
    parcels of one request all failed, each one's status (:class:`cube.timeseries.ParcelStatus`), for a caller
    that keeps a status table (an extraction) rather than one error."""

    def __init__(self, parcel_id: object, reason: str, *, status: tuple = ()) -> None:
        self.parcel_id = parcel_id
        self.reason = reason
        self.status = status
        super().__init__(f"parcel {parcel_id}: {reason}")


class ParcelFileError(CardcubeError, OSError):
    """A parcel file is missing, unreadable, or lacks its parcel id column."""


class ParcelNotFoundError(CardcubeError, LookupError):
    """An unknown parcel id, or no registered parcel contains the given point."""


class ParcelOutsideCubeError(ParcelError):
    """The parcel does not intersect any cube tile (or no data of the requested time range)."""


class AreaOutsideCubeError(CardcubeError, ValueError):
    """A bounding box, geometry or point of a request holds no data of the cube."""


class ParcelTooSmallError(ParcelError):
    """No pixel of the parcel remains after the inward buffer and the pixel membership rule."""


class ParcelsWithoutStatisticsWarning(UserWarning):
    """Some parcels of a request were not measured (too small, outside the data); the others were."""


class NoAcquisitionWarning(UserWarning):
    """No acquisition of the cube (or of the Dataset given) falls within the time range asked: the statistics
    frame is empty. The message names the dates there are."""


class RequestTooLargeError(CardcubeError, ValueError):
    """A request would read more than the configured limit (pixels, dates or bytes)."""


class InvalidRequestError(CardcubeError, ValueError):
    """A request is malformed: unknown band, statistic, collection, or an empty time range."""


class ServeError(CardcubeError, OSError):
    """The HTTP server cannot listen on the address asked for."""


class DateNotFoundError(CardcubeError, LookupError):
    """No acquisition of the collection on the requested day, or within the requested time range (the message
    then names the cube's dates). The command line exits with 1 for it: a run that found nothing to measure."""


class AmbiguousDateError(CardcubeError, ValueError):
    """A day asked for as one acquisition holds several (two Sentinel-1 passes, at dawn and at dusk): the message
    lists their times and orbits, any of which names one acquisition."""


class CorruptShardError(CardcubeError):
    """A shard whose index fails its checksum or points outside the shard."""


class MissingShardError(CorruptShardError):
    """A shard its time block's manifest lists (the ingest stored data there) is missing from the store: lost."""


class SchemaUnavailableError(CardcubeError, LookupError):
    """A STAC schema is needed that has no offline copy."""
