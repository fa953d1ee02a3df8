"""The ledger keeps each scene's band files and checksums once (format 2: details objects the records name), reads
them only when asked for, and reads the records of format 1 that cardcubes before 2026-12-06 wrote as they were.

``ledger_v1/`` is a ledger of two versions written by the cardcube of c44882c (format 1) from hand-made records with
everything a scene record can hold: a pass's slice (``parts``), conversions from linear power, resampling, a split
item and a footprint, and a rejection."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from cardcube.errors import CorruptDocumentError
from cardcube.storage import open_store
from cardcube.testing.s3proxy import start_s3_proxy
from cube import layout
from cube.ledger import Acquisition, HotSlot, SceneRecord, TileState, read_version
from cube.scene_details import StoredField
from ingest.commit import commit

OLD = Path(__file__).parent / "ledger_v1"


@pytest.fixture
def old_cube(tmp_path: Path) -> Path:
    """A private copy of the format 1 ledger (a cube holding its ledger alone)."""
    return Path(shutil.copytree(OLD, tmp_path / "cube"))


def details_objects(cube: Path, collection: str = "s1") -> dict[str, dict]:
    """Every details object of ``collection``'s ledger, by name: what each holds."""
    return {p.name: json.loads(p.read_text()) for p in sorted((cube / collection / "_ledger").glob("scenes-*.json"))}


def test_a_ledger_of_format_1_reads_as_it_was_written(old_cube):
    """The records an earlier cardcube wrote are read whole, every field as it wrote it (written out again as format 1
    they are its bytes), and they are read as they always were."""
    store = open_store(old_cube)
    for number in (1, 2):
        written = (old_cube / layout.ledger_key("s1", number)).read_text()
        version = read_version(store, "s1", number)
        assert json.dumps(version.to_dict(), indent=1) == written
    record = read_version(store, "s1").scenes["S1A_IW_CARD_BS_20240501T054952_R037_DSC_T31UFU"]
    assert record.parts[0].checksums == {"VV": "sha256:" + "3" * 64, "VH": "sha256:" + "4" * 64}
    assert record.converted == {"VV": "linear power (sigma0 in m²/m²)"}


def test_the_first_version_after_a_format_1_ledger_stores_every_scene_once_and_the_next_only_its_own(old_cube):
    """The first record of format 2 names one details object holding every scene's details (none was kept apart
    before); the next one's holds the scene it adds alone. Every version reads as it did, ``as_of`` the old ones
    too, and the records keep no band file nor checksum."""
    store = open_store(old_cube)
    before = {n: read_version(store, "s1", n).to_dict() for n in (1, 2)}
    head = read_version(store, "s1")
    v3 = head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=head.rejected)
    commit(store, v3)
    first = details_objects(old_cube)
    assert [sorted(d["scenes"]) for d in first.values()] == [sorted(head.scenes)]
    head = read_version(store, "s1")
    assert head.scenes == v3.scenes and head.tiles == v3.tiles and head.to_dict() == v3.to_dict()
    acq = Acquisition("2024-05-07T05:49:52Z", "S1A_IW_CARD_BS_20240507T054952_R037_DSC_T31UFU", "sentinel-1a", 37,
                      "descending")
    new = SceneRecord(acq.scene_id, "31UFU", acq.time, 4, {"VV": "sha256:" + "7" * 64}, {10: (5504, 8000, 200, 200)},
                      "sentinel-1-card-bs", {"VV": "s3://eodata/d/VV.tif"})
    state = head.tiles["31UFU"]
    v4 = head.next(tiles={"31UFU": TileState("31UFU", hot=(*state.hot, HotSlot(2, acq)), hot_slots_used=3)},
                   scenes={**head.scenes, acq.scene_id: new}, added=(acq.scene_id,), rejected=())
    commit(store, v4)
    second = {k: v for k, v in details_objects(old_cube).items() if k not in first}
    assert [sorted(d["scenes"]) for d in second.values()] == [[acq.scene_id]]
    assert read_version(store, "s1").to_dict() == v4.to_dict()
    assert {n: read_version(store, "s1", n).to_dict() for n in (1, 2)} == before
    for number in (3, 4):
        record = (old_cube / layout.ledger_key("s1", number)).read_text()
        assert json.loads(record)["format"] == "cardcube-ledger/2" and "sha256:" not in record and "s3://" not in record


def test_a_version_read_reads_no_details_until_asked(old_cube):
    """A query reads the record alone: the details object is read at the first look at a scene's files or checksums
    (its windows, time, footprint and pieces are in the record)."""
    store = open_store(old_cube)
    head = read_version(store, "s1")
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=()))
    (name,) = details_objects(old_cube)
    held = old_cube / layout.details_key("s1", name)
    kept = held.read_bytes()
    held.unlink()
    version = read_version(store, "s1")
    record = version.scenes["S1A_IW_CARD_BS_20240504T172345_R088_ASC_T31UFU"]
    assert record.windows == {10: (5504, 8000, 200, 200)} and record.footprint["type"] == "Polygon"
    assert record.item == "S1A_IW_GRDH_1SDV_20240504T172345" and isinstance(record.checksums, StoredField)
    with pytest.raises(CorruptDocumentError, match=f"{name}.*is missing: restore it from a backup"):
        dict(record.checksums)
    carried = version.next(tiles=dict(version.tiles), scenes=dict(version.scenes), added=(), rejected=())
    commit(store, carried)  # its record names the details object again, unread
    assert (old_cube / layout.ledger_key("s1", 4)).exists() and details_objects(old_cube) == {}
    held.write_bytes(kept.replace(b"5555", b"5556"))
    with pytest.raises(CorruptDocumentError, match=r"is damaged .*digest"):
        dict(read_version(store, "s1").scenes[record.scene_id].sources)
    held.write_bytes(kept)
    assert read_version(store, "s1").scenes == head.scenes


def test_a_record_naming_a_part_its_details_object_lacks_is_damaged(old_cube):
    """A record of format 2 naming a piece of a pass its details object holds nothing of (a damaged record) was
    Python's bare KeyError at the first look at the piece's files: a traceback naming nothing. It is a damaged ledger,
    named."""
    store = open_store(old_cube)
    head = read_version(store, "s1")
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=()))
    path = old_cube / layout.ledger_key("s1", 3)
    record = json.loads(path.read_text())
    sid = "S1A_IW_CARD_BS_20240504T172345_R088_ASC_T31UFU"
    assert "parts" not in record["scenes"][sid]
    record["scenes"][sid]["parts"] = [{"scene_id": sid, "item": "", "time": record["scenes"][sid]["time"]}]
    path.write_text(json.dumps(record))
    part = read_version(store, "s1").scenes[sid].parts[0]
    with pytest.raises(CorruptDocumentError, match=rf"scenes-.*holds no {sid}/parts/0/checksums, which the ledger "
                                                   "says it does: restore the ledger from a backup"):
        dict(part.checksums)


def test_a_stored_version_pickles_as_what_it_points_at(old_cube):
    """A version sent to a dask worker process reads its details there, from the same store."""
    store = open_store(old_cube)
    head = read_version(store, "s1")
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=()))
    version = read_version(store, "s1")
    again = pickle.loads(pickle.dumps(version))
    assert again.scenes == head.scenes and again.to_dict() == version.to_dict()


def test_a_record_whose_details_changed_stores_them_anew(old_cube):
    """A record carried over keeps the details object it names; one whose details were replaced (not merely its
    version, as a repair moves it) has them written again, in its new version's details object."""
    store = open_store(old_cube)
    head = read_version(store, "s1")
    commit(store, head.next(tiles=dict(head.tiles), scenes=dict(head.scenes), added=(), rejected=()))
    head = read_version(store, "s1")
    sid, other = sorted(head.scenes)
    scenes = {sid: replace(head.scenes[sid], version=4),
              other: replace(head.scenes[other], sources={"VV": "/moved/VV.tif", "VH": "/moved/VH.tif"})}
    before = set(details_objects(old_cube))
    commit(store, head.next(tiles=dict(head.tiles), scenes=scenes, added=(), rejected=(), repaired=(sid,)))
    (added,) = set(details_objects(old_cube)) - before
    assert sorted(details_objects(old_cube)[added]["scenes"]) == [other]
    assert read_version(store, "s1").scenes == scenes


def test_a_newer_ledger_format_asks_for_an_upgrade(old_cube):
    """A record of a format this cardcube does not know (a newer cardcube's) is refused, not misread, and the error
    says to upgrade (a cardcube before 2026-12-06 refuses format 2 alike: 'has ledger format
    'cardcube-ledger/2', not cardcube-ledger/1')."""
    path = old_cube / layout.ledger_key("s1", 2)
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": "cardcube-ledger/3"}))
    with pytest.raises(CorruptDocumentError, match=r"'cardcube-ledger/3'.*newer cardcube, upgrade this one"):
        read_version(open_store(old_cube), "s1")


def test_on_s3_a_query_reads_the_record_alone_and_the_details_come_in_one_round_trip(s3_bucket):
    """On moto's S3 over HTTP: a format 1 ledger carried on by three commits, each adding a scene, so that the head
    names three details objects. Opening the head reads its record (a LIST and a GET, no details); the first look at
    a scene's files reads the three details objects at once, and every other look none."""
    for p in sorted((OLD / "s1" / "_ledger").iterdir()):
        s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key=f"cube/s1/_ledger/{p.name}",
                                             Body=p.read_bytes())
    url = s3_bucket.url_for("cube")
    store = open_store(url, storage_options=s3_bucket.storage_options())
    for n in range(3):
        head = read_version(store, "s1")
        acq = Acquisition(f"2024-05-1{n}T05:49:52Z", f"S1A_IW_CARD_BS_2024051{n}T054952_R037_DSC_T31UFU",
                          "sentinel-1a", 37, "descending")
        record = SceneRecord(acq.scene_id, "31UFU", acq.time, head.version + 1, {"VV": f"sha256:{n}"},
                             {10: (5504, 8000, 200, 200)}, "sentinel-1-card-bs", {"VV": f"s3://eodata/{n}/VV.tif"})
        state = head.tiles["31UFU"]
        tile = TileState("31UFU", hot=(*state.hot, HotSlot(state.hot_slots_used, acq)),
                         hot_slots_used=state.hot_slots_used + 1)
        commit(store, head.next(tiles={"31UFU": tile}, scenes={**head.scenes, acq.scene_id: record},
                                added=(acq.scene_id,), rejected=()))
    with start_s3_proxy(s3_bucket.server.endpoint_url, latency_s=0.05) as s3_proxy:  # requests sent at once overlap
        proxied = open_store(url, storage_options=s3_proxy.storage_options())
        before = s3_proxy.snapshot()
        head = read_version(proxied, "s1")
        opened = s3_proxy.snapshot() - before
        first = s3_proxy.snapshot()
        sources = {sid: dict(r.sources) for sid, r in head.scenes.items()}
        read = s3_proxy.snapshot() - first
    assert opened.requests == {"LIST": 1, "GET": 1}  # the ledger listed, the record read
    assert len({r.checksums.name for r in head.scenes.values()}) == 3
    assert sources[acq.scene_id] == {"VV": "s3://eodata/2/VV.tif"}
    assert read.count("GET") == 3 and read.peak_in_flight == 3
    assert all(head.scenes[sid] == r for sid, r in read_version(store, "s1", 2).scenes.items())  # format 1's, as read
