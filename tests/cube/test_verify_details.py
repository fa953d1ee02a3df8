"""`cardcube verify` checks that each details object a ledger record names holds what the record says it does.

A details object (:mod:`cube.scene_details`) is read back checked against its name's digest, so one edited is
damaged. But a record naming a sound object for a scene it holds nothing of, or other pieces of a pass (a record
edited by hand, a restore mixing backups), went unnoticed by verify ("sound") until an ingest or a catalog build asked
for the scene's details and stopped on it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cardcube.errors import CorruptDocumentError
from cardcube.storage import open_store
from cube import layout
from cube.ledger import read_version
from cube.verify import verify


@pytest.fixture
def history(appended_cube, tmp_path) -> Path:
    """A copy of the cube of 9 versions, each of which added scenes (9 details objects)."""
    return Path(shutil.copytree(appended_cube, tmp_path / "history"))


def edit_record(cube: Path, version: int, edit: Callable[[dict], None]) -> None:
    """Change the ledger record of ``version`` by ``edit`` (of its JSON), as a hand would."""
    path = cube / layout.ledger_key("s2", version)
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def first_and_last(cube: Path, version: int = 9) -> tuple[str, str, str]:
    """A scene of the first details object, that object's name and the last one's (``version``'s record)."""
    scenes = json.loads((cube / layout.ledger_key("s2", version)).read_text())["scenes"]
    names = sorted({s["details"] for s in scenes.values()})
    sid = min(sid for sid, s in scenes.items() if s["details"] == names[0])
    return sid, names[0], names[-1]


def test_a_record_naming_a_sound_details_object_for_a_scene_it_does_not_hold_is_reported(history):
    """The latest record names another version's (sound) details object for a scene: verify said "sound", and the
    next catalog build stopped on it. It names the record, the object, the scene and what to do: restore the record,
    or without a backup run an ingest, which records their details as lost (tests/ingest/test_lost_details.py)."""
    sid, held_by, other = first_and_last(history)
    edit_record(history, 9, lambda r: r["scenes"][sid].update(details=other))
    result = verify(history, progress=False)
    assert not result.ok and [k for k, _ in result.problems] == [layout.ledger_key("s2", 9)]
    problem = result.problems[0][1]
    assert problem.startswith(f"damaged: it names {layout.details_key('s2', other)} for the band files and checksums "
                              f"of 1 scene(s) that object does not hold as the record says: {sid} (none held);")
    assert "the record is wrong" in problem and "restore the record from a backup" in problem
    assert "without one, run `cardcube ingest` (with any source, --repair too), which records their details as lost" \
        in problem
    assert "older than the latest" not in problem and not result.superseded
    assert layout.ledger_key("s2", 9) in result.summary()
    edit_record(history, 9, lambda r: r["scenes"][sid].update(details=held_by))
    assert verify(history, progress=False).ok


def test_a_record_carried_over_is_reported_each_time_and_an_older_one_alone_says_expire_drops_it(history):
    """A fault of a record older than the latest is reported as of it, saying that expire drops it; one the later
    records carry over (as an ingest carries a scene's details object over, unread) is reported as of each."""
    sid, _, other = first_and_last(history, 5)
    edit_record(history, 5, lambda r: r["scenes"][sid].update(details=other))
    (problem,) = verify(history, progress=False).problems
    assert problem[0] == layout.ledger_key("s2", 5)
    assert "(a version older than the latest: `cardcube expire` drops it" in problem[1]
    for v in (6, 7, 8, 9):
        edit_record(history, v, lambda r: r["scenes"][sid].update(details=other))
    problems = verify(history, progress=False).problems
    assert [k for k, _ in problems] == [layout.ledger_key("s2", v) for v in range(5, 10)]


def test_a_record_naming_pieces_of_a_pass_its_details_object_does_not_hold_is_reported(history):
    """A record naming a piece of a pass its details object holds nothing of failed at the first look at that piece's
    files, and verify said "sound"."""
    sid, name, _ = first_and_last(history)
    part = {"scene_id": sid + "_2", "item": "", "time": "2024-05-01T10:50:31Z"}
    edit_record(history, 9, lambda r: r["scenes"][sid].update(parts=[part]))
    (problem,) = verify(history, progress=False).problems
    assert problem[0] == layout.ledger_key("s2", 9) and layout.details_key("s2", name) in problem[1]
    assert f"{sid} (0 piece(s) of a pass held, the record names 1)" in problem[1]


def test_a_details_object_copied_under_another_versions_name_is_damaged(history):
    """The digest of a details object's name is checked on read; the rest of its name was not: a sound object copied
    under the name of another version (same digest) was read as that version's. Its bytes say which version wrote it:
    it is damaged, as where it is read."""
    sid, name, _ = first_and_last(history)
    copy = name.replace("scenes-00000001-", "scenes-00000009-")
    shutil.copy(history / layout.details_key("s2", name), history / layout.details_key("s2", copy))
    edit_record(history, 9, lambda r: r["scenes"][sid].update(details=copy))
    (problem,) = verify(history, progress=False).problems
    assert problem == (layout.details_key("s2", copy), problem[1])
    assert "says it is of version 1 of the 's2' cube, not what its key says" in problem[1]
    with pytest.raises(CorruptDocumentError, match="says it is of version 1"):
        dict(read_version(open_store(history), "s2").scenes[sid].sources)


def test_a_record_naming_a_details_object_of_a_later_version_is_reported(history):
    """A record can only name details objects written before it, or with it: one naming a later version's is wrong,
    and said so first."""
    sid, _, _ = first_and_last(history, 5)
    later = first_and_last(history)[2]
    edit_record(history, 5, lambda r: r["scenes"][sid].update(details=later))
    problems = verify(history, progress=False).problems
    assert [k for k, _ in problems] == [layout.ledger_key("s2", 5)]
    assert f"{sid} (the object is of version 9, after this record's, which cannot name it)" in problems[0][1]


def test_on_s3_a_record_naming_a_details_object_for_a_scene_it_does_not_hold_is_reported(appended_cube, s3_bucket):
    """The same on an object store (moto's S3 over HTTP)."""
    url, opts = s3_bucket.upload(appended_cube, "cube"), s3_bucket.storage_options()
    client = s3_bucket.server.client()
    assert verify(url, storage_options=opts, progress=False).ok
    sid, _, other = first_and_last(appended_cube)
    key = f"cube/{layout.ledger_key('s2', 9)}"
    record = json.loads(client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    record["scenes"][sid]["details"] = other
    client.put_object(Bucket=s3_bucket.name, Key=key, Body=json.dumps(record).encode())
    result = verify(url, storage_options=opts, progress=False)
    assert [k for k, _ in result.problems] == [layout.ledger_key("s2", 9)]
    assert f"{layout.details_key('s2', other)} for the band files" in result.problems[0][1]
    assert f"{sid} (none held)" in result.problems[0][1]
