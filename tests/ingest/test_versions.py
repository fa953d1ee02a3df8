"""``cardcube versions`` on S3: the newest versions and the outstanding rejections, reading only those."""

from __future__ import annotations

import json

from cardcube.cli import main
from cardcube.storage import open_store
from cube.ledger import CubeVersion, Rejection
from ingest.commit import commit
from ingest.plan import plan_ingest
from tests.ingest.test_plan import SPEC, scene


def test_versions_on_s3_reads_the_listing_and_the_newest_records_only(s3_bucket, s3_server, s3_proxy, monkeypatch,
                                                                       capsys):
    url = s3_bucket.url_for("cube")
    store = open_store(url, storage_options=s3_bucket.storage_options())
    truncated, crs = Rejection("S900", "SceneReadError", "truncated"), Rejection("S901", "SceneGridError", "wrong CRS")
    head = CubeVersion.empty(SPEC)
    for scenes, rejected in (([scene(0)], [truncated]), ([scene(1)], []), ([scene(2)], [crs])):
        head = plan_ingest(head, scenes, rejected=rejected).new
        commit(store, head)
    for name, value in s3_server.environment().items():  # the keys; the endpoint is the proxy's, given below
        monkeypatch.setenv(name, value)
    before = s3_proxy.snapshot()
    assert main(["versions", "--cube", url, "--collection", "s2", "--endpoint-url", s3_proxy.endpoint_url,
                 "--last", "2", "--json"]) == 0
    traffic = s3_proxy.snapshot() - before
    out = json.loads(capsys.readouterr().out)
    assert out["committed"] == [1, 2, 3] and [v["version"] for v in out["versions"]] == [2, 3]
    assert [v["added"] for v in out["versions"]] == [["S001"], ["S002"]]
    assert [r["scene_id"] for r in out["rejected"]] == ["S900", "S901"]  # the first one outlived its version
    assert (traffic.list, traffic.get, traffic.head) == (1, 2, 0)  # no HEAD before each whole-object GET
    assert main(["versions", "--cube", url, "--collection", "s1", "--endpoint-url", s3_proxy.endpoint_url]) == 2
    assert "holds no 's1' collection (no committed version); it holds s2" in capsys.readouterr().err


def test_a_collection_the_cube_does_not_hold_is_named_with_those_it_holds(tmp_path, capsys):
    """versions, verify and expire --collection s1 of a cube of s2 alone said "no 's1' cube at ...: no committed
    version", as if no cube were there, and not which collection it holds."""
    cube = tmp_path / "cube"
    commit(open_store(cube), plan_ingest(CubeVersion.empty(SPEC), [scene(0)]).new)
    for command in ("versions", "verify", "expire"):
        assert main([command, "--cube", str(cube), "--collection", "s1"]) == 2
        assert capsys.readouterr().err == (f"cardcube {command}: error: the cube at {cube} holds no 's1' collection "
                                           "(no committed version); it holds s2\n")
    assert sorted(p.name for p in cube.iterdir()) == ["s2"]  # nothing written, no lock left
    assert main(["versions", "--cube", str(tmp_path), "--collection", "s1"]) == 2  # no cube: said as before
    assert capsys.readouterr().err.endswith(f"no 's1' cube at {tmp_path}: no committed version\n")


def test_each_version_line_counts_the_scenes_added_and_rejected(tmp_path, capsys):
    store = open_store(tmp_path / "cube")
    truncated, crs = Rejection("S900", "SceneReadError", "truncated"), Rejection("S901", "SceneGridError", "wrong CRS")
    head = CubeVersion.empty(SPEC)
    for scenes, rejected in (([scene(0)], [truncated]), ([scene(1), scene(2)], [crs])):
        head = plan_ingest(head, scenes, rejected=rejected).new
        commit(store, head)
    assert main(["versions", "--cube", str(tmp_path / "cube"), "--collection", "s2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("added 1 scene(s), 1 rejected and not in the cube")
    assert lines[2].endswith("added 2 scene(s), 2 rejected and not in the cube")  # S900 is still out
    assert main(["versions", "--cube", str(tmp_path / "cube"), "--collection", "s2", "--json"]) == 0
    assert [v["rejected"] for v in json.loads(capsys.readouterr().out)["versions"]] == [["S900"], ["S900", "S901"]]


def test_versions_and_expire_take_the_cube_by_its_catalog_json(tmp_path, capsys):
    """CUBE/catalog.json (what a STAC browser is pointed at, what ``catalog serve`` prints) names the cube for
    timeseries, chip, extract and verify; versions and expire said "no 's2' cube at .../catalog.json"."""
    store = open_store(tmp_path / "cube")
    head = plan_ingest(CubeVersion.empty(SPEC), [scene(0)]).new
    commit(store, head)
    root = str(tmp_path / "cube" / "catalog.json")
    assert main(["versions", "--cube", root, "--collection", "s2"]) == 0
    assert capsys.readouterr().out.startswith(f"s2 cube at {tmp_path / 'cube'}: 1 version(s)")
    assert main(["expire", "--cube", root, "--collection", "s2", "--dry-run"]) == 0
    assert "would expire 0 version(s), kept version 1" in capsys.readouterr().out


def test_a_file_given_for_the_cube_is_said_to_be_one(tmp_path, capsys):
    """A file given as --cube (the items.json beside it) said "no committed version", as of an empty folder."""
    items = tmp_path / "items.json"
    items.write_text("{}")
    for command in (["versions"], ["verify"], ["expire", "--dry-run"]):
        assert main([*command, "--cube", str(items)]) == 2
        assert f"no 's2' cube at {items}: no committed version; it is a file: a cube is a folder" in \
            capsys.readouterr().err
