"""Temporary folders of a command (``TMPDIR``) that a run killed outright does not leave behind for good.

A run removes its folder when it ends, failed or stopped (Ctrl-C, SIGTERM); one killed outright (kill -9, the OOM
killer) removes nothing, and ``cardcube flag``'s batches of a register (about 2 MB per 1,000 parcels) or the copy of
a remote parcel file stayed in ``TMPDIR`` for good, each killed run's beside the last. So a run holds its folder
with an ``flock`` on a file inside, which the kernel lets go of when the process ends however it ends, and the next
run of the same kind removes the folders of its kind that no live process holds. The lock, not a pid, tells: it is
right in a container sharing ``TMPDIR`` with other pid namespaces, and after a pid has been reused. A folder is named
only once it is held (made under another name, then renamed), so the next run never takes a folder being made for
an abandoned one. ``ingest``'s spool, which a cluster's workers may share across hosts, has its own
(:mod:`ingest.spool`).
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["remove_abandoned_folders", "scratch_folder"]

log = logging.getLogger(__name__)

HELD = ".held"  # the file a run holds its folder by


def _prefix(kind: str) -> str:
    return f"cardcube-{kind}-held-"


@contextmanager
def scratch_folder(kind: str) -> Iterator[Path]:
    """A new folder in ``TMPDIR`` for one run of ``kind`` (``flag``, ``parcels``), removed with what it holds when the
    block ends; the folders of ``kind`` that runs killed outright left there are removed first
    (:func:`remove_abandoned_folders`)."""
    remove_abandoned_folders(kind)
    folder = making = tempfile.mkdtemp(prefix=f"cardcube-{kind}-")
    held = open(os.path.join(making, HELD), "wb")  # noqa: SIM115  (closed after the folder is removed)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        name = os.path.basename(making).removeprefix(f"cardcube-{kind}-")
        os.rename(making, folder := os.path.join(os.path.dirname(making), _prefix(kind) + name))
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # while still held: never taken for one a killed run left
        held.close()


def remove_abandoned_folders(kind: str) -> list[str]:
    """Remove the folders of :func:`scratch_folder` of ``kind`` in ``TMPDIR`` that no live process holds (their run
    was killed outright); a folder another user's run left, which this one may not remove, is left alone. Returns
    the folders removed."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(tempfile.gettempdir()), glob.escape(_prefix(kind)) + "*")):
        try:
            with open(os.path.join(path, HELD), "rb") as held:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live run's: BlockingIOError
                shutil.rmtree(path)
        except OSError:  # held, another user's, or removed meanwhile by another run
            continue
        log.warning("removed %s, the temporary folder of a cardcube %s killed before it could", path, kind)
        removed.append(path)
    return removed
