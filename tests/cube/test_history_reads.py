"""`verify`, `expire` and `ingest --repair` go through every kept version's ledger record, and hold each only while
they read it: a record of 10 tiles x 490 dates is some 10 MB in memory, and a history of 50 held at once took 0.7 GB
(session 48's audit; 0.2 GB now, README "Versions")."""

from __future__ import annotations

import shutil
import weakref
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


@pytest.fixture
def held(monkeypatch) -> list[int]:
    """At each ledger record read, how many of the records read before it the process still holds: the reads'
    callers hold what they kept of the records read before. (Weak references to the records read, not a scan of
    every object the process holds: in a worker of the whole suite that scan took half a minute a test.)"""
    counts: list[int] = []
    read: list[weakref.ref[CubeVersion]] = []
    real = ledger.read_version

    def counting(*args, **kwargs):
        counts.append(sum(ref() is not None for ref in read))
        version = real(*args, **kwargs)
        read.append(weakref.ref(version))
        return version

    for module in (ledger, verify_module, repair_module):
        monkeypatch.setattr(module, "read_version", counting)
    return counts


def test_the_count_sees_the_records_a_caller_keeps(appended_cube, held):
    store = open_store(appended_cube, read_only=True)
    kept = [ledger.read_version(store, "s2", v) for v in committed_versions(store, "s2")]
    assert held == list(range(len(kept)))
    del kept
    ledger.read_version(store, "s2")
    assert held[-1] == 0


def test_verify_holds_the_kept_records_one_at_a_time(appended_cube, held):
    kept = committed_versions(open_store(appended_cube, read_only=True), "s2")
    result = verify(appended_cube, progress=False)
    assert result.ok and list(result.versions) == kept and len(kept) >= 8
    assert len(held) >= len(kept)
    assert max(held) <= 2  # the latest read, and the one just read (8 more on the code before)


def test_expire_keeping_every_version_holds_them_one_at_a_time(appended_cube, held):
    kept = committed_versions(open_store(appended_cube, read_only=True), "s2")
    result = expire(appended_cube, older_than=timedelta(days=3650), dry_run=True)
    assert result.expired == () and list(result.kept) == kept
    assert max(held) <= 2


def test_repair_reads_the_older_records_one_at_a_time(appended_cube, tmp_path, held, capsys):
    cube = shutil.copytree(appended_cube, tmp_path / "cube")
    assert main(["ingest", "--cube", str(cube), "--repair", "--quiet"]) == 0
    assert len(held) >= len(committed_versions(open_store(cube, read_only=True), "s2"))
    assert max(held) <= 2
