"""The cube's specifications: the chunk layout as the command line writes it, equality of specs read back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cardcube.errors import InvalidRequestError
from cardcube.spec import S1_BACKSCATTER, S2_L2A, ChunkLayout, CubeSpec


def test_a_chunk_layout_is_written_back_as_chunks_takes_it():
    layout = ChunkLayout.parse("time=8, space=64")
    assert layout.text() == "time=8,space=64,shard_space=1024" and ChunkLayout.parse(layout.text()) == layout


def test_a_chunk_size_below_one_is_named_as_it_was_given():
    """The refusal printed the dataclass: "got ChunkLayout(time=0, space=128, shard_space=1024, base_resolution=10)"."""
    with pytest.raises(InvalidRequestError) as refused:
        ChunkLayout.parse("time=0")
    assert str(refused.value) == "chunk sizes must be positive, got time=0,space=128,shard_space=1024"


def test_a_nan_nodata_spec_equals_its_copy_read_back():
    """NaN != NaN made the dataclass ``==`` of an S1 spec False against the same spec read from the ledger, so every
    S1 version looked like new data to the catalog."""
    copy = CubeSpec.from_dict(S1_BACKSCATTER.to_dict())
    assert copy.bands[0].nodata is not S1_BACKSCATTER.bands[0].nodata  # two NaN objects
    assert copy == S1_BACKSCATTER and hash(copy) == hash(S1_BACKSCATTER)
    assert len({copy.bands[0], S1_BACKSCATTER.bands[0]}) == 1
    assert replace(copy.bands[0], nodata=-9999.0) != S1_BACKSCATTER.bands[0]
    assert replace(copy.bands[0], units="1") != S1_BACKSCATTER.bands[0]
    assert S1_BACKSCATTER != S2_L2A and CubeSpec.from_dict(S2_L2A.to_dict()) == S2_L2A


def test_decoded_values_are_the_packing_applied_in_float32_and_nan_at_nodata():
    """``BandSpec.decoded`` (one float32 array, in place) against the packing written out: stored * scale + offset
    in float32, NaN where the stored value is nodata; Sentinel-1's float32 dB given back as they are."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 10000, (3, 50, 40), dtype="uint16")
    stored[0, :5] = 0
    b04 = S2_L2A.band("B04")
    want = np.where(stored == 0, np.nan, stored.astype("float32") * np.float32(1e-4) + np.float32(-0.1))
    got = b04.decoded(stored)
    assert got.dtype == np.float32 and np.isnan(got[0, :5]).all()
    np.testing.assert_array_equal(got, want.astype("float32"))
    assert stored[0, 0, 0] == 0  # the stored block is left as it was
    db = rng.normal(-12, 3, (2, 8, 8)).astype("float32")
    db[0, 0] = np.nan
    assert S1_BACKSCATTER.band("VV").decoded(db) is db
