"""Realistic synthetic Sentinel-1/2 CARD scenes, parcels and ground truth for a region and a season.

``generate(out_dir, SynthConfig.demo())`` writes parcels (GeoPackage and GeoParquet), ground truth,
weather, one COG per band and scene on the real MGRS tile grids, and a STAC ItemCollection; the same
seed always gives the same bytes. ``cardcube synth`` is the command-line shell over it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from cardcube.synth.config import SynthConfig

if TYPE_CHECKING:
    from cardcube.synth.generate import SynthResult, generate

__all__ = ["SynthConfig", "SynthResult", "generate"]

# ``generate`` and ``SynthResult`` are imported on first use. Every ``cardcube`` command builds its parser with the
# options of ``cardcube synth`` (cardcube.synth.cli, in this package), and importing the generator with the package
# (pandas, geopandas, scipy) took half a second of the start of each ``cardcube ingest``, ``serve`` or ``expire``.
_LAZY = frozenset({"SynthResult", "generate"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("cardcube.synth.generate"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``cardcube.synth.generate`` is the function, as when the package imported it eagerly: importing the
    submodule of that name would otherwise bind the module there in its place."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "generate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
