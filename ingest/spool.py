"""The spool: local copies of remote band files, kept as they were read for the checks, for the writes to read.

The checks read every band file whole and hash it (:mod:`ingest.validate`); the writes then read it again by
windows. For a file behind a URL (``https://``, ``s3://``) that second read would download it again, and might
get other bytes than those checked and hashed (a file replaced at the source in between: without the spool,
the writes compare its server's ETag with the check's, :func:`ingest.validate.file_stamp`, and stop the run).
So a remote file that passed its checks is written, as read, into the spool folder, and the writes read that
copy: each byte is downloaded once, and what goes in is what the ledger's checksum names. A local file is
never copied. The spool takes the disk of the whole run's checked band files, compressed as in the source,
until the run ends.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import posixpath
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from cardcube.errors import InvalidRequestError, SpoolError
from cardcube.parallel import is_distributed
from ingest.commit import pid_alive, pid_namespace

log = logging.getLogger(__name__)

Spool = str | os.PathLike | bool  # ingest(spool=...): a folder, True (a temporary one) or False (none)


def is_remote(href: str) -> bool:
    """Whether ``href`` is read over the network (a URL of a scheme other than ``file``), not from a local path."""
    return urlparse(href).scheme not in ("", "file")


@contextmanager
def spool_folder(spool: Spool, *, scheduler: object, remote: bool) -> Iterator[str | None]:
    """The folder of one run's spooled files (None: spool nothing), removed with what it holds when the run ends,
    whether it succeeds or fails. ``spool``: True for a temporary folder, only with a local ``scheduler`` (the
    workers of a cluster may not share this machine's disk); a folder (a volume the workers share) for one made
    inside it; False for none. Nothing is made when no source file is ``remote``."""
    if not isinstance(spool, bool) and not Path(spool).is_dir():
        raise InvalidRequestError(f"the spool folder {spool} does not exist (or is not a folder)")
    if spool is False or not remote or (spool is True and is_distributed(scheduler)):
        yield None
        return
    where = None if spool is True else Path(spool).resolve()  # absolute: workers may run in another folder
    remove_dead_spools(where)
    space = _space()
    folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{socket.gethostname()}-{os.getpid()}-{f'{space}-' if space else ''}",
                              dir=where)
    try:
        yield folder
    finally:
        _remove(folder)


def _remove(folder: str, attempts: int = 5) -> None:
    """Remove a run's spool folder, never raising over the run's own error: when a run fails, its other threads
    may still be finishing a file there, and rmtree then found the folder not empty (an OSError that hid the
    run's error). Tried again a few times; what is left, the next run removes (:func:`remove_dead_spools`)."""
    for attempt in range(attempts):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.exists(folder):
            return
        time.sleep(0.1 * (attempt + 1))
    log.warning("could not remove the spool folder %s yet: the next ingest on this host (in this pid namespace) "
                "removes it", folder)


_PREFIX = "cardcube-spool-"


def _space() -> str | None:
    """This process's boot and pid namespace (:func:`ingest.commit.pid_namespace`) as part of a folder's name (12 hex
    digits), or None where the system does not tell them."""
    space = pid_namespace()
    return None if space is None else hashlib.sha256(space.encode()).hexdigest()[:12]


def remove_dead_spools(where: str | os.PathLike | None = None) -> list[str]:
    """Remove the spool folders in ``where`` (default: the system's temporary folder) of runs whose process is
    provably gone: a run killed (kill -9, the OOM killer) cleans up nothing, and its spool holds the run's band
    files. A folder is named ``<host>-<pid>-<space>-`` (:func:`_space`), and only one of this host, boot and pid
    namespace is told dead by its pid: another host's (a volume the workers share) and another pid namespace's
    (a container on the host network sharing the volume: its live run's pid is no process here) are left alone.
    So is one named without its pid namespace (by a cardcube before 2026-12-05), whose pid is dead here: it may be
    a live run's elsewhere, so it is named in a warning, to delete by hand. Returns the folders removed."""
    host, space = socket.gethostname(), _space()
    removed = []
    for path in glob.glob(os.path.join(where or tempfile.gettempdir(), f"{glob.escape(_PREFIX + host)}-*-*")):
        pid, *rest = os.path.basename(path)[len(_PREFIX + host) + 1:].split("-")  # mkdtemp's part holds no "-"
        ours, older = len(rest) == 2 and space is not None and rest[0] == space, len(rest) == 1
        if not (pid.isdigit() and (ours or older) and os.path.isdir(path)) or pid_alive(int(pid)):
            continue
        if older:
            log.warning("left the spool folder %s alone: no process here has its pid %s, but it does not say in "
                        "which pid namespace its ingest ran (a cardcube before 2026-12-05), which may run on in "
                        "another (a container); delete it once no such ingest runs", path, pid)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.warning("removed the spool folder %s of an ingest that died (pid %s)", path, pid)
        removed.append(path)
    return removed


def keep(folder: str, href: str, data: bytes, checksum: str) -> str:
    """Write ``data``, read from ``href`` and hashing to ``checksum``, into the spool ``folder``; its path there.
    Named by its checksum (a file checked for two scenes is one copy), written whole under another name first,
    so a reader never sees part of it. :class:`SpoolError` if it cannot be (a full disk is no fault of the scene)."""
    name = checksum.removeprefix("sha256:") + posixpath.splitext(urlparse(href).path)[1]
    path = os.path.join(folder, name)
    partial = None
    try:
        fd, partial = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    except OSError as exc:
        if partial is not None:  # a full disk: the part written goes
            Path(partial).unlink(missing_ok=True)
        raise SpoolError(f"cannot keep a checked file in the spool folder {folder} ({exc}): {_remedy(exc)} "
                         f"(--spool DIR, ingest(..., spool=DIR))") from None
    return path


def _remedy(exc: OSError) -> str:
    """What to do about the spool folder that failed with ``exc``: not always a full disk (a worker that does not see
    the folder was told to find one with room)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "give a folder with room for the run's band files"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return (f"the folder is gone, or not seen on {socket.gethostname()} (a dask worker on another machine, or in "
                f"a container without its volume?): give a folder every worker of the run sees, which nothing else "
                f"deletes while the run lasts")
    return "give a folder the run (each of its workers) can write to, with room for the run's band files"
