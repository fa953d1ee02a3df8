"""Sentinel-1 CARD backscatter rendering: gamma0 VV/VH in dB of one pass.

A simplified water-cloud model: the canopy (biomass from the phenology tables) adds volume scattering
and attenuates the soil term, whose level rises with soil wetness (rain) and roughness (tillage,
potato ridges). Mowing removes biomass, so VH drops. Water is dark, farm buildings bright (double
bounce). Speckle is multiplicative, gamma distributed in linear power with ENL ``ENL``.
"""

from __future__ import annotations

import numpy as np

from cardcube.synth.acquisitions import Acquisition
from cardcube.synth.phenology import BUILT, ROAD, WATER
from cardcube.synth.world import S1_STREAM, World, rng_for

ENL = 4.5
MANTISSA_BITS = 11  # float32 bits kept: 0.01 dB precision, far below speckle, compresses well


# The generator's own conversions, in its arrays' dtype (float32 images) and with a floor instead of -inf:
# cardcube.decibels converts in float64, and through it every synthetic scene, and the tests' numbers, would change.
def db(x: np.ndarray) -> np.ndarray:
    """Linear power to dB, floored at -100 dB."""
    return 10 * np.log10(np.maximum(x, 1e-10))


def linear(x_db: np.ndarray) -> np.ndarray:
    """dB to linear power."""
    return 10 ** (np.asarray(x_db) / 10)


def backscatter_tables(world: World, acq: Acquisition, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free gamma0 (linear) per label for pass ``acq``: ``(vv, vh)``, each ``(labels,)``."""
    c = world.canopy
    t = c.day(acq.date)
    b = c.biomass[t].astype(np.float64)
    wet = float(c.soil_wetness[t])
    rough = c.roughness[t].astype(np.float64)
    soil_vv = linear(-15.0 + 6.0 * wet + rough)
    soil_vh = linear(-24.5 + 4.0 * wet + 0.8 * rough)
    tau2 = np.exp(-2.2 * b)
    vv = 0.125 * b**0.8 * (1 - tau2) + tau2 * soil_vv
    vh = 0.045 * b * (1 - tau2) + tau2 * soil_vh
    wind = rng.uniform(0, 6)  # wind roughens open water
    vv[WATER], vh[WATER] = linear(-22.0 + wind), linear(-28.5 + 0.5 * wind)
    vv[ROAD], vh[ROAD] = linear(-16.0), linear(-24.0)
    vv[BUILT], vh[BUILT] = linear(-4.0), linear(-11.0)
    if acq.orbit_state == "ascending":  # steeper local incidence over the region
        vv, vh = vv * linear(0.6), vh * linear(0.4)
    return vv.astype(np.float32), vh.astype(np.float32)


def render(world: World, acq: Acquisition) -> dict[str, np.ndarray]:
    """Simulate pass ``acq`` over the region: ``{"VV": dB, "VH": dB}`` float32 arrays at 10 m."""
    rng = rng_for(world.config.seed, S1_STREAM, acq.index)
    vv_t, vh_t = backscatter_tables(world, acq, rng)
    labels = world.labels
    texture = linear(0.5 * world.vigour_field).astype(np.float32)  # crop density seen by the radar
    out = {}
    for name, table in (("VV", vv_t), ("VH", vh_t)):
        speckle = rng.gamma(ENL, 1 / ENL, size=labels.shape).astype(np.float32)
        out[name] = quantize(db(table[labels] * texture * speckle).astype(np.float32))
    return out


def quantize(x: np.ndarray, *, bits: int = MANTISSA_BITS) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (the rest zero), so they compress well."""
    drop = 23 - bits
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return rounded.view(np.float32)
