"""Geometry work on posted parcels in a child process with a time and memory limit (``cube.geometry_trial``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

from cardcube.errors import RequestTooLargeError
from cube.geometry_trial import TRIED_FROM, check_bufferable

REPO = Path(__file__).resolve().parents[2]
UTM = "EPSG:32631"


def star(spikes: int, x: float = 650_000, y: float = 5_800_000) -> shapely.Polygon:
    """A valid polygon of ``spikes`` narrow spikes 500 m long around a core of 50 m: an outline that folds back
    within any buffer of a few metres."""
    angles = np.linspace(0, 2 * np.pi, 2 * spikes, endpoint=False)
    radii = np.where(np.arange(2 * spikes) % 2 == 0, 500.0, 50.0)
    return shapely.Polygon(np.c_[x + radii * np.cos(angles), y + radii * np.sin(angles)])


def test_fields_are_buffered_within_the_limits():
    fields = [shapely.Point(650_000 + 300 * i, 5_800_000).buffer(100, quad_segs=100) for i in range(200)]
    assert all(f.is_valid for f in fields) and shapely.get_num_coordinates(fields[0]) > 400
    check_bufferable([f"f{i}" for i in range(200)], fields, UTM, -5.0)
    check_bufferable(["s"], [star(2000)], UTM, 0.0)  # no buffer, no work: no child
    check_bufferable(["s"], [star(200)], UTM, -100.0, seconds=0.0)  # too few vertices to cost much: not tried
    assert shapely.get_num_coordinates(star(1000)) > TRIED_FROM
    with pytest.raises(RequestTooLargeError, match="did not end within 0 s"):  # as the same with more, 15 s of work
        check_bufferable(["s"], [star(1000)], UTM, -100.0, seconds=0.0)


def test_a_buffer_over_the_time_limit_is_refused_and_its_child_stopped():
    """A star of 1,000 spikes shrunk by 100 m: 15 s and 2.4 GB in GEOS, stopped at the limit."""
    parcel = star(1000)
    assert parcel.is_valid
    with pytest.raises(RequestTooLargeError, match=r"the buffer of -100 m of the parcel s1 (did not end "
                                                   r"within 0\.5 s|took more memory than it may).*simplify it first"):
        check_bufferable(["s1"], [parcel], UTM, -100.0, seconds=0.5)


def test_a_buffer_over_the_memory_limit_is_refused_naming_the_costly_parcel():
    """The refusal names the parcel the child was at when stopped, not the request's first ids."""
    with pytest.raises(RequestTooLargeError, match=r"of the parcel d \(4 of 5 posted\) (took more memory than it "
                                                   r"may|ended its process).*\(the limits: 60 s, 64 MiB\)"):
        check_bufferable(list("abcde"), [star(50), star(50), star(50), star(1000), star(50)], UTM, -100.0,
                         seconds=60, memory=64 * 2**20)


def test_a_buffer_over_the_time_limit_names_the_parcel_at_work_when_stopped():
    with pytest.raises(RequestTooLargeError, match=r"of the parcel c \(3 of 3 posted\) did not end within 1 s"):
        check_bufferable(list("abc"), [star(20), star(20), star(1000)], UTM, -100.0, seconds=1.0)


def test_a_child_slow_to_start_is_not_taken_for_a_costly_buffer(tmp_path):
    """The child imports the server's main module anew (Python 3.11's fork server does not preload it): the
    ``cardcube`` script's cardcube.cli, 0.3 s on an idle machine, more on a busy one. Its start is no part of the
    buffer's time: a main module slow to import (here, by a sleep in the child alone) refused a field's buffer."""
    main = tmp_path / "slow_main.py"
    main.write_text(
        "import time\n"
        "if __name__ == '__mp_main__':  # in the trial's child\n"
        "    time.sleep(3)\n"
        "if __name__ == '__main__':\n"
        "    import shapely\n"
        "    from cube.geometry_trial import check_bufferable\n"
        "    field = shapely.Point(650_000, 5_800_000).buffer(100, quad_segs=200)  # tried: 801 vertices\n"
        "    check_bufferable(['f'], [field], 'EPSG:32631', -5.0, seconds=1.0)\n"
        "    print('accepted')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(main)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "accepted", done.stderr[-2000:]


def test_the_modules_of_the_servers_main_script_are_imported_once_not_in_each_child(tmp_path):
    """Each child ran the server's main script again and imported what it imports (the ``cardcube`` command's
    cardcube.cli: 0.5 s a POST under `cardcube serve`, against 0.1 s without a buffer); those modules are now
    imported once, in the fork server. Here the script's module counts its imports in a file."""
    (tmp_path / "heavy.py").write_text("import os\nwith open(os.environ['IMPORTS'], 'a') as f:\n    f.write('x')\n"
                                      "def main():\n    pass\n")
    main = tmp_path / "serve_main.py"
    main.write_text(
        "from heavy import main  # as the cardcube command's script: from cardcube.cli import main\n"
        "if __name__ == '__main__':\n"
        "    import shapely\n"
        "    from cube.geometry_trial import check_bufferable\n"
        "    field = shapely.Point(650_000, 5_800_000).buffer(100, quad_segs=200)\n"
        "    for _ in range(3):\n"
        "        check_bufferable(['f'], [field], 'EPSG:32631', -5.0)\n"
        "    print('accepted')\n")
    imports = tmp_path / "imports.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "IMPORTS": str(imports)}
    done = subprocess.run([sys.executable, str(main)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "accepted", done.stderr[-2000:]
    assert imports.read_text() == "xx"  # the server's, the fork server's; none in the three children


def test_polygons_made_in_the_child_are_those_made_here():
    """A parcel that needs an overlay (a repair, a collection's union) made in the child: the same polygon and the
    same reasons as :func:`cube.parcels.polygonal` here, and a refusal past the limits."""
    from cardcube.errors import ParcelError
    from cube.geometry_trial import polygonal_in_child
    from cube.parcels import polygonal

    ring = np.c_[np.cos(np.linspace(0, 2 * np.pi, 600, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 600,
                                                                                          endpoint=False))]
    ring[[5, 6]] = ring[[6, 5]]
    bow_tie = shapely.Polygon(ring)  # a circle of 600 vertices crossing itself once: over TRIED_FROM
    assert not bow_tie.is_valid
    line = shapely.Polygon([(0, 0), (1, 0), (2, 0)])
    pair = shapely.GeometryCollection([shapely.box(0, 0, 1, 1), shapely.box(0.5, 0.5, 2, 2)])
    ids, geoms = ["bow", "line", "pair"], [bow_tie, line, pair]
    made = polygonal_in_child(ids, geoms, True)
    assert made[0][1] and made[0][0].equals(polygonal("bow", bow_tie, repair=True)[0])
    assert isinstance(made[1], ParcelError) and made[1].parcel_id == "line" and "no area left" in made[1].reason
    assert made[2][0].equals(polygonal("pair", pair, repair=True)[0])
    assert "invalid geometry" in polygonal_in_child(["bow"], [bow_tie], False)[0].reason
    rng = np.random.default_rng(0)
    scribble = shapely.Polygon(rng.uniform(0, 300, (3000, 2)))  # 50 s of repair: no race with a limit of 0 s
    with pytest.raises(RequestTooLargeError, match="did not end within 0 s"):  # made in the child, stopped at once
        polygonal_in_child(["s"], [scribble], True, seconds=0)
    few = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # under TRIED_FROM: made here, whatever the limit
    assert polygonal_in_child(["few"], [few], True, seconds=0)[0][0].equals(polygonal("few", few, repair=True)[0])
    with pytest.raises(RequestTooLargeError, match=r"making a valid polygon of the parcel s \(2 of 2 posted\) .*"
                                                   r"\(the limits: 60 s, 64 MiB\): a repair's work grows"):
        polygonal_in_child(["bow", "s"], [bow_tie, scribble], True, seconds=60, memory=64 * 2**20)
