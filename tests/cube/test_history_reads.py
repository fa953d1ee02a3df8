"""`verify`, `expire` and `ingest --repair` go through every kept version's ledger record, and hold each only while
they read it: a record of 10 tiles x 490 dates is some 10 MB in memory, and a history of 50 held at once took 0.7 GB
(session 48's audit; 0.2 GB now, README "Versions")."""

from __future__ import annotations

import gc
import shutil
from datetime import timedelta

import pytest

from cardcube.cli import main
from cardcube.storage import open_store
from cube import ledger
from cube import verify as verify_module
from cube.ledger import CubeVersion, committed_versions
from cube.verify import verify
from ingest import repair as repair_module
from ingest.expire import expire


def live_versions() -> int:
    """How many :class:`CubeVersion` objects this process holds."""
    gc.collect()
    return sum(type(o) is CubeVersion for o in gc.get_objects())


@pytest.fixture
def held(monkeypatch) -> list[int]:
    """At each ledger record read, how many versions the process held just before: the reads' callers hold what
    they kept of the records read before."""
    counts: list[int] = []
    real = ledger.read_version

    def counting(*args, **kwargs):
        counts.append(live_versions())
        return real(*args, **kwargs)

    for module in (ledger, verify_module, repair_module):
        monkeypatch.setattr(module, "read_version", counting)
    return counts


def most_held(counts: list[int], before: int) -> int:
    """The most versions held at a record's read beyond the ``before`` held when the command started."""
    return max(counts) - before


def test_verify_holds_the_kept_records_one_at_a_time(appended_cube, held):
    kept = committed_versions(open_store(appended_cube, read_only=True), "s2")
    before = live_versions()
    result = verify(appended_cube, progress=False)
    assert result.ok and list(result.versions) == kept and len(kept) >= 8
    assert len(held) >= len(kept)
    assert most_held(held, before) <= 2  # the latest read, and the one just read (8 more on the code before)


def test_expire_keeping_every_version_holds_them_one_at_a_time(appended_cube, held):
    kept = committed_versions(open_store(appended_cube, read_only=True), "s2")
    before = live_versions()
    result = expire(appended_cube, older_than=timedelta(days=3650), dry_run=True)
    assert result.expired == () and list(result.kept) == kept
    assert most_held(held, before) <= 2


def test_repair_reads_the_older_records_one_at_a_time(appended_cube, tmp_path, held, capsys):
    cube = shutil.copytree(appended_cube, tmp_path / "cube")
    before = live_versions()
    assert main(["ingest", "--cube", str(cube), "--repair", "--quiet"]) == 0
    assert len(held) >= len(committed_versions(open_store(cube, read_only=True), "s2"))
    assert most_held(held, before) <= 2
