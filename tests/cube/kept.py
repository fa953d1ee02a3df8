"""A folder a module's fixture makes once (a cube and an extraction of it, which names its cube by path) and each
test gets back as it was made, at the same place: a copy is milliseconds, an ingest and an extraction seconds."""

from __future__ import annotations

import shutil
from pathlib import Path


def keep(work: Path) -> None:
    """Keep a copy of ``work`` as it is now, beside it, for :func:`restored`."""
    shutil.copytree(work, _kept(work), symlinks=True)


def restored(work: Path) -> Path:
    """``work`` put back as :func:`keep` kept it, for one test to change."""
    shutil.rmtree(work)
    shutil.copytree(_kept(work), work, symlinks=True)
    return work


def _kept(work: Path) -> Path:
    return work.with_name(f"{work.name}.kept")
