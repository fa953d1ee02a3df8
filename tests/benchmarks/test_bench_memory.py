"""The peak memory the benchmarks report is the measured process's own, not that of the process that started it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import flag_memory

HERE = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and the kernel's counts are Linux's")
def test_flag_memory_s_peak_is_the_child_s_own_not_its_parent_s() -> None:
    """``wait4``'s ru_maxrss of a child holds the RSS of the process that started it (the child was its copy until
    exec): from a driver of 600 MB, ``python -c pass`` was said to peak at 611 MB."""
    held = bytearray(400 * 2**20)
    held[:: 4096] = b"\1" * len(held[:: 4096])  # every page resident: this process is over 400 MB
    peak, _, said = flag_memory.peak_rss(["-c", "import sys; print('0 parcels flagged', sys.argv[1:])", "x"], HERE)
    assert len(held) and peak < 100  # an interpreter's own: some 10 MB
    assert said == "0 parcels flagged ['x']"  # the child's arguments and output as before
    with pytest.raises(ValueError, match="python -c CODE"):
        flag_memory.peak_rss(["-m", "cardcube.cli"], HERE)
