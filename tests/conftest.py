"""Shared fixtures: tiny synthetic regions generated once per test session.

``tiny_region`` is a 2 x 2 km region inside 31UFU over May-July 2024; ``tiny_straddle_region`` the same
size across the 31UFU/31UGU edge (x = 709800), so each pass gives one scene per tile. Both return the
:class:`cardcube.synth.SynthResult` (paths to parcels, ground truth, weather, items.json). ``tiny_cube`` and
``tiny_straddle_cube`` are them ingested with the tests' small chunks, for the tests to read; ``appended_cube`` is
``tiny_region``'s S2 scenes ingested in batches, a cube with a history. ``two_pass_region`` is three weeks of
Sentinel-1 alone with two passes (dawn descending, dusk ascending) on some days; ``two_pass_cube`` it ingested.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

# cube.kernels' numba cache (cache=True), kept out of the package's folder: the workers of the suite (and the processes
# they start, which inherit the variable) share one, as an extraction's worker processes do, so the kernels are
# compiled once for the suite rather than once a worker; their first calls of new argument types hold its lock
# (cube.kernels.CacheLocked), so their saves do not overwrite one another's. Set before numba is imported.
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = str(Path(__file__).resolve().parents[1] / ".numba-cache")

from cardcube.synth import SynthConfig, SynthResult, generate

pytest_plugins = ["cardcube.testing.fixtures"]  # s3_server, s3_bucket, s3_proxy


@pytest.fixture(scope="session")
def tiny_region(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate(tmp_path_factory.mktemp("tiny-region"), SynthConfig.tiny())


@pytest.fixture(scope="session")
def tiny_straddle_region(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate(tmp_path_factory.mktemp("tiny-straddle"), SynthConfig.tiny(straddle=True))


TEST_CHUNKS = "time=4,space=64,shard_space=256"  # small, so the tiny regions span time blocks and shards


@pytest.fixture(scope="session")
def tiny_ingest(tiny_region: SynthResult, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_region`` ingested (S2, then S1) into a local folder cube: its root path and the ``IngestResult`` of
    each collection (``tests/ingest/test_ingest_local.py`` checks them)."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest

    root = tmp_path_factory.mktemp("tiny-cube")
    results = {collection: ingest(tiny_region.items, root, collection=collection,
                                  chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
               for collection in ("s2", "s1")}
    return root, results


@pytest.fixture(scope="session")
def tiny_straddle_cube(tiny_straddle_region: SynthResult, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_straddle_region``'s S2 scenes ingested into a local folder cube (tiles 31UFU and 31UGU); returns its
    root path. Read it; copy it to change it (``tests/catalog/test_synth.py`` adds the S1 scenes to a copy)."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest

    root = tmp_path_factory.mktemp("tiny-straddle-cube")
    result = ingest(tiny_straddle_region.items, root, collection="s2", chunks=ChunkLayout.parse(TEST_CHUNKS),
                    progress=False)
    assert result.ok and result.version == 1, result.summary()
    return root


@pytest.fixture(scope="session")
def tiny_cube(tiny_ingest):
    """``tiny_region`` ingested (S2 and S1) into a local folder cube; returns its root path. Tests read it (an
    extraction adds its parcel layers beside it); a test that changes the cube works on a copy."""
    return tiny_ingest[0]


@pytest.fixture(scope="session")
def appended_cube(tiny_region: SynthResult, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_region``'s S2 scenes loaded 5 dates first, then appended date by date (the hot buffer fills and is
    compacted twice), then the rest at once: 9 versions. Read it; copy it to change it."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.ingest.scene_edits import items_of, write_items

    features = items_of(tiny_region.items, "sentinel-2-l2a")
    batches = [features[:5], *([f] for f in features[5:12]), features[12:]]
    root = tmp_path_factory.mktemp("appended") / "cube"
    for i, batch in enumerate(batches):
        ingest(write_items(tiny_region.items, batch, f"append-{i}.json"), root, chunks=ChunkLayout.parse(TEST_CHUNKS),
               progress=False)
    return root


@pytest.fixture(scope="session")
def two_pass_region(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """Three weeks of Sentinel-1 alone, each orbit every 3 days (the synthetic descending pass at dawn from the
    first day, the ascending one at dusk from the fourth): from May 4 on, two acquisitions a day, as two real
    tracks' cycles meet on some days."""
    return generate(tmp_path_factory.mktemp("two-pass"),
                    SynthConfig.tiny(s2=False, s1_revisit_days=3, end=dt.date(2024, 5, 20)))


@pytest.fixture(scope="session")
def two_pass_cube(two_pass_region: SynthResult, tmp_path_factory: pytest.TempPathFactory):
    """``two_pass_region`` ingested into a folder cube of its S1 collection; returns its root path."""
    from cardcube.spec import ChunkLayout
    from ingest.job import ingest

    root = tmp_path_factory.mktemp("two-pass-cube")
    ingest(two_pass_region.items, root, collection="s1", chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
    return root
