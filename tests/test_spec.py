"""The cube's specifications: the chunk layout as the command line writes it, equality of specs read back."""

from __future__ import annotations

from dataclasses import replace

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

