"""The cube's specifications: the chunk layout as the command line writes it."""

from __future__ import annotations

import pytest

from cardcube.errors import InvalidRequestError
from cardcube.spec import ChunkLayout


def test_a_chunk_layout_is_written_back_as_chunks_takes_it():
    layout = ChunkLayout.parse("time=8, space=64")
    assert layout.text() == "time=8,space=64,shard_space=1024" and ChunkLayout.parse(layout.text()) == layout


def test_a_chunk_size_below_one_is_named_as_it_was_given():
    """The refusal printed the dataclass: "got ChunkLayout(time=0, space=128, shard_space=1024, base_resolution=10)"."""
    with pytest.raises(InvalidRequestError) as refused:
        ChunkLayout.parse("time=0")
    assert str(refused.value) == "chunk sizes must be positive, got time=0,space=128,shard_space=1024"
