"""Realistic synthetic Sentinel-1/2 CARD scenes, parcels and ground truth for a region and a season.

``generate(out_dir, SynthConfig.demo())`` writes parcels (GeoPackage and GeoParquet), ground truth,
weather, one COG per band and scene on the real MGRS tile grids, and a STAC ItemCollection; the same
seed always gives the same bytes. ``cardcube synth`` is the command-line shell over it.
"""

from __future__ import annotations

from cardcube.synth.config import SynthConfig
from cardcube.synth.generate import SynthResult, generate

__all__ = ["SynthConfig", "SynthResult", "generate"]
