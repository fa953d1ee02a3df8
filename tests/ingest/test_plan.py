"""The pure planner: hot buffer, compaction, batch independence; no store involved."""

from __future__ import annotations

import pytest

from cardcube.spec import S1_BACKSCATTER, S2_L2A, ChunkLayout
from cube.ledger import CubeVersion, Rejection
from ingest.plan import plan_ingest
from ingest.sources import SourceScene
from ingest.validate import CheckedScene

SPEC = S2_L2A.with_chunks(ChunkLayout(time=4, space=64, shard_space=256))


def scene(i: int, *, tile: str = "31UFU", window: tuple[int, int, int, int] = (100, 300, 200, 200)) -> CheckedScene:
    src = SourceScene(f"S{i:03d}", "sentinel-2-l2a", tile, f"2024-05-{i + 1:02d}T10:50:00Z", "sentinel-2a", 51,
                      "descending", 10.0, {})
    r, c, h, w = window
    return CheckedScene(src, {10: window, 20: (r // 2, c // 2, h // 2, w // 2)}, {"B02": "sha256:x"})


def apply(head: CubeVersion, scenes: list[CheckedScene]) -> tuple[CubeVersion, list]:
    plan = plan_ingest(head, scenes)
    assert plan.new is not None
    return plan.new, list(plan.writes)


def test_full_blocks_go_cold_and_the_rest_hot():
    new, writes = apply(CubeVersion.empty(SPEC), [scene(i) for i in range(10)])
    tile = new.tiles["31UFU"]
    assert [a.scene_id for a in tile.cold] == [f"S{i:03d}" for i in range(8)]
    assert [h.slot for h in tile.hot] == [0, 1] and tile.hot_slots_used == 2
    cold = [w for w in writes if not w.hot]
    assert {w.time_start for w in cold} == {0, 4} and all(len(w.dates) == 4 for w in cold)
    assert all(w.new_fraction == 1.0 for w in writes)


def test_writes_cover_each_touched_shard_once_per_resolution():
    _, writes = apply(CubeVersion.empty(SPEC), [scene(i, window=(200, 200, 100, 100)) for i in range(4)])
    # rows/cols 200..300 at 10 m cross the 256 px shard edge in both axes -> 4 shards; shards cover the
    # same ground at 20 m (128 px), so the 20 m window 100..150 crosses the edge too
    by_res = {res: [(w.rows, w.cols) for w in writes if w.resolution == res] for res in (10, 20)}
    assert sorted(by_res[10]) == [((0, 256), (0, 256)), ((0, 256), (256, 512)), ((256, 512), (0, 256)),
                                  ((256, 512), (256, 512))]
    assert sorted(by_res[20]) == [((0, 128), (0, 128)), ((0, 128), (128, 256)), ((128, 256), (0, 128)),
                                  ((128, 256), (128, 256))]


def test_appends_compact_hot_dates_into_the_next_block():
    v1, _ = apply(CubeVersion.empty(SPEC), [scene(i) for i in range(3)])
    v2_plan = plan_ingest(v1, [scene(i) for i in range(3, 6)])
    tile = v2_plan.new.tiles["31UFU"]
    assert len(tile.cold) == 4 and v2_plan.compacted == 3
    assert [h.slot for h in tile.hot] == [3, 4]  # slot numbers are never reused
    block = [w for w in v2_plan.writes if not w.hot]
    assert block and all(w.new_fraction == pytest.approx(0.25) for w in block)
    assert [d.hot_slot for d in block[0].dates[:3]] == [0, 1, 2]


@pytest.mark.parametrize("split", [[1] * 10, [3, 3, 4], [7, 3], [10]])
def test_batches_give_the_layout_of_one_ingest(split):
    scenes = [scene(i) for i in range(10)]
    head = CubeVersion.empty(SPEC)
    start = 0
    for n in split:
        head, _ = apply(head, scenes[start:start + n])
        start += n
    once, _ = apply(CubeVersion.empty(SPEC), scenes)
    assert head.tiles["31UFU"].cold == once.tiles["31UFU"].cold
    assert [h.acquisition for h in head.tiles["31UFU"].hot] == [h.acquisition for h in once.tiles["31UFU"].hot]
    assert head.version == len(split)


def test_late_scene_lands_in_the_hot_buffer_and_sorts_on_read():
    v1, _ = apply(CubeVersion.empty(SPEC), [scene(i) for i in range(4, 8)])
    v2, _ = apply(v1, [scene(0)])
    tile = v2.tiles["31UFU"]
    assert [a.scene_id for a in tile.acquisitions][:1] == ["S000"]
    assert tile.hot[0].acquisition.scene_id == "S000"


def test_nothing_to_do_gives_no_version():
    plan = plan_ingest(CubeVersion.empty(SPEC), [], skipped=["S001"])
    assert plan.new is None and plan.skipped == ("S001",)


def test_two_tiles_are_planned_independently():
    new, _ = apply(CubeVersion.empty(SPEC), [scene(i, tile="31UFU") for i in range(5)]
                   + [scene(i, tile="31UGU") for i in range(2)])
    assert len(new.tiles["31UFU"].cold) == 4 and len(new.tiles["31UGU"].cold) == 0
    assert new.tiles["31UGU"].hot_slots_used == 2


def test_rejections_are_carried_until_their_scene_goes_in():
    old, again, gone = Rejection("S900", "SceneReadError", "truncated"), Rejection("S901", "A", "first"), \
        Rejection("S001", "SceneGridError", "wrong CRS")
    v1 = plan_ingest(CubeVersion.empty(SPEC), [scene(0)], rejected=[old, again, gone]).new
    v2 = plan_ingest(v1, [scene(1)], rejected=[Rejection("S901", "B", "second")]).new  # S001 went in: fixed
    assert v2.rejected == (old, Rejection("S901", "B", "second"))  # by scene id, each with its latest reason
    assert plan_ingest(v2, [], rejected=[old]).new is None  # nothing new to record: no version


def test_a_scene_in_the_cube_is_not_outstanding_and_each_scene_is_listed_once():
    """Listed twice with other metadata, a scene is rejected once for that and goes in by its first listing;
    one listed twice whose first listing fails its checks is rejected twice in one run."""
    twice = Rejection("S000", "DuplicateSceneError", "listed twice")
    broken = [Rejection("S900", "DuplicateSceneError", "listed twice"),
              Rejection("S900", "SceneReadError", "truncated")]
    new = plan_ingest(CubeVersion.empty(SPEC), [scene(0)], rejected=[twice, *broken]).new
    assert "S000" in new.scenes and new.rejected == (broken[1],)
    assert plan_ingest(new, [], rejected=broken).new is None  # the same again: nothing new, no version


def test_a_rejection_of_a_product_of_an_acquisition_in_the_cube_is_not_outstanding():
    """A product refused (truncated) stayed listed "to fix and offer again" after another product of its acquisition
    (same tile, the same pass seconds apart) went in, in that run or a later one: nothing is left to fix, and a
    committed date never changes, so offered again it could only be refused as a duplicate."""
    truncated = Rejection("S900", "SceneReadError", "truncated", tile="31UFU", time="2024-05-02T10:50:03Z")
    v1 = plan_ingest(CubeVersion.empty(SPEC), [scene(1)], rejected=[truncated]).new
    assert v1.rejected == ()  # the acquisition went in from S001, seconds apart
    alone = plan_ingest(CubeVersion.empty(SPEC), [scene(0)], rejected=[truncated]).new  # another date: outstanding
    assert alone.rejected == (truncated,)
    later = plan_ingest(alone, [scene(1)]).new  # its acquisition goes in from another product, in a later run
    assert later.rejected == ()
    elsewhere = Rejection("S901", "SceneReadError", "truncated", tile="31UGU", time="2024-05-02T10:50:00Z")
    old = Rejection("S902", "SceneReadError", "truncated")  # recorded before rejections named their acquisition
    assert plan_ingest(alone, [scene(1)], rejected=[elsewhere, old]).new.rejected == (elsewhere, old)
    # a duplicate of a date the cube holds, offered again: nothing new to record, no version
    assert plan_ingest(later, [], rejected=[Rejection("S900", "DuplicateSceneError", "already has", tile="31UFU",
                                                      time="2024-05-02T10:50:03Z")]).new is None


def test_a_rejected_slice_of_a_pass_is_outstanding_after_another_slice_went_in():
    """Backscatter slices of one pass seconds apart each hold a part of the tile: one refused is not taken for
    another product of the date another slice of its pass went in as (only one of the very same time is)."""
    spec = S1_BACKSCATTER.with_chunks(SPEC.chunks)
    src = SourceScene("P001", "sentinel-1-card-bs", "31UFU", "2024-05-02T05:50:00Z", "sentinel-1a", 37, "descending",
                      None, {})
    v1 = plan_ingest(CubeVersion.empty(spec), [CheckedScene(src, {10: (0, 0, 100, 100)}, {"VV": "sha256:x"})],
                     rejected=[next_slice := Rejection("P002", "SceneReadError", "truncated", tile="31UFU",
                                                       time="2024-05-02T05:50:20Z"),
                               Rejection("P003", "DuplicateSceneError", "same time", tile="31UFU",
                                         time="2024-05-02T05:50:00Z")]).new
    assert v1.rejected == (next_slice,)


def test_a_rejection_loads_from_a_record_older_than_its_acquisition_and_round_trips():
    old = {"scene_id": "S900", "kind": "SceneReadError", "reason": "truncated"}
    assert Rejection.from_dict(old) == Rejection("S900", "SceneReadError", "truncated")
    assert Rejection.from_dict(old).to_dict() == old  # written as it was: no empty fields added
    named = Rejection("S900", "SceneReadError", "truncated", tile="31UFU", time="2024-05-02T10:50:03Z")
    assert Rejection.from_dict(named.to_dict()) == named


def test_a_version_that_only_records_rejections_reads_the_data_of_the_one_before():
    """Its REST answers are those of the version before (cube.service tags them by data_tag), as older records say
    nothing of it: each reads its own data."""
    v1, _ = apply(CubeVersion.empty(SPEC), [scene(0)])
    v2 = plan_ingest(v1, [], rejected=[Rejection("S900", "SceneReadError", "truncated")]).new
    v3 = plan_ingest(v2, [], rejected=[Rejection("S901", "SceneReadError", "truncated")]).new
    assert v1.data_tag == (1, v1.created) and v2.data_tag == v3.data_tag == v1.data_tag
    assert CubeVersion.from_dict(v3.to_dict()) == v3 and "data_from" not in v1.to_dict()
    v4, _ = apply(v3, [scene(1)])
    mended = plan_ingest(v4, [], mended=["S000"]).new  # a repair in place: other values may be read
    assert v4.data_tag == (4, v4.created) and mended.data_tag == (5, mended.created)
    old = {k: v for k, v in v3.to_dict().items() if k != "data_from"}  # written before the field
    assert CubeVersion.from_dict(old).data_tag == (3, v3.created)
