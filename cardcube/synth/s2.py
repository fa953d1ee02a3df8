"""Sentinel-2 L2A rendering: surface reflectance, clouds and the scene classification of one pass.

Reflectance is a linear mixture of leaf, dry-matter and background (soil, water, asphalt, roofs)
spectra by the canopy fractions of each pixel's label, with within-field variation; then cloud
shadows darken it, clouds blend it towards a bright flat spectrum and cirrus adds a thin veil. All
bands are simulated at 10 m; the 20 m bands and the SCL are 2 x 2 block means of them (the SCL is
classified from the 20 m means), so both resolutions agree. Values are packed as L2A DNs:
``DN = reflectance * 10000 + 1000`` (BOA_ADD_OFFSET = -1000), 0 = nodata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cardcube.spec import S2_L2A
from cardcube.synth.acquisitions import Acquisition
from cardcube.synth.clouds import CloudLayers, cloud_layers, draw_cloud_cover
from cardcube.synth.phenology import BUILT, N_BACKGROUND, ROAD, VERGE, WATER
from cardcube.synth.region import BASE_RES
from cardcube.synth.world import S2_STREAM, World, rng_for

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

# Simulation band order (all reflective bands of the L2A product we write).
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
LEAF = np.array([0.030, 0.070, 0.032, 0.110, 0.300, 0.400, 0.450, 0.470, 0.220, 0.100], np.float32)
DRY = np.array([0.075, 0.105, 0.135, 0.170, 0.215, 0.245, 0.270, 0.285, 0.370, 0.270], np.float32)
SOIL = np.array([0.070, 0.095, 0.120, 0.140, 0.160, 0.175, 0.190, 0.200, 0.290, 0.240], np.float32)
WATER_SPEC = np.array([0.045, 0.055, 0.035, 0.025, 0.016, 0.013, 0.010, 0.009, 0.005, 0.003], np.float32)
ASPHALT = np.array([0.090, 0.105, 0.115, 0.125, 0.135, 0.140, 0.150, 0.155, 0.180, 0.160], np.float32)
ROOF = np.array([0.120, 0.130, 0.150, 0.170, 0.180, 0.190, 0.200, 0.200, 0.240, 0.210], np.float32)
CLOUD = np.array([0.520, 0.510, 0.500, 0.500, 0.500, 0.495, 0.490, 0.485, 0.400, 0.290], np.float32)
HAZE = np.array([1.0, 0.65, 0.4, 0.3, 0.22, 0.18, 0.14, 0.13, 0.03, 0.01], np.float32)  # residual aerosol
# view-angle (BRDF) brightness of each relative orbit: R008 looks from the other side of the swath
ORBIT_BRIGHTNESS = {51: 1.0, 8: 1.03}
CIRRUS = np.array([0.300, 0.280, 0.270, 0.260, 0.250, 0.250, 0.240, 0.240, 0.200, 0.150], np.float32)
SCALE, ADD_OFFSET = 10_000, 1_000


@dataclass(frozen=True, slots=True, eq=False)
class S2Render:
    """One pass over the whole region: DNs per band (10 m or 20 m arrays) and the 20 m SCL."""

    bands: dict[str, np.ndarray]
    scl: np.ndarray
    clouds: CloudLayers


def background_spectra(world: World) -> np.ndarray:
    """Background spectrum per label ``(labels, bands)``: soil of each parcel, water, asphalt, roofs."""
    n = world.canopy.green.shape[1]
    rng = rng_for(world.config.seed, S2_STREAM, 10**6)
    brightness = np.clip(rng.lognormal(0.0, 0.15, n), 0.7, 1.4).astype(np.float32)
    spec = SOIL[None, :] * brightness[:, None]
    spec[ROAD], spec[WATER], spec[BUILT] = ASPHALT, WATER_SPEC, ROOF
    spec[VERGE] = SOIL * 0.9
    return spec


def swath_mask(world: World, acq: Acquisition) -> np.ndarray:
    """True where the pass saw the ground, at 20 m: a slanted swath edge cuts partial passes."""
    h, w = world.region.shape(2 * BASE_RES)
    if not acq.partial_swath:
        return np.ones((h, w), bool)
    rows, cols = np.mgrid[0:h, 0:w]
    edge = w * (0.30 - 0.12 * rows / h)  # the eastern edge of R008's swath leans to the north-west
    return cols >= edge


def render(world: World, acq: Acquisition, spectra: np.ndarray) -> S2Render:
    """Simulate pass ``acq`` over the region of ``world``."""
    f32 = np.float32
    rng = rng_for(world.config.seed, S2_STREAM, acq.index)
    cover = draw_cloud_cover(rng, world.config.cloudiness)
    layers = cloud_layers(rng, world.labels.shape, cover=cover, cirrus=world.config.cloudiness > 0)
    t = world.canopy.day(acq.date)
    labels = world.labels
    is_parcel = labels >= N_BACKGROUND
    green = world.canopy.green[t][labels]
    green = np.clip(np.where(is_parcel, green * (1 + f32(0.06) * world.vigour_field), green), 0, 1)
    dry = np.minimum(world.canopy.dry[t][labels], 1 - green)
    bare = 1 - green - dry
    wet = f32(world.canopy.soil_wetness[t])
    # observed = (surface * shade) * (1 - cloud) + cloud * CLOUD + cirrus * CIRRUS, where the surface mixes
    # leaf, dry matter and background spectra; factor the per-pixel weights once, then combine per band
    weight = (1 + f32(0.012) * rng.standard_normal(labels.shape, dtype=f32))  # sensor and canopy grain
    weight *= (1 - f32(0.75) * layers.shadow) * (1 - layers.cloud) * f32(ORBIT_BRIGHTNESS.get(acq.relative_orbit, 1))
    haze = f32(rng.normal(0.0, 0.004))  # what the atmospheric correction left of the aerosol
    w_leaf, w_dry = green * weight, dry * weight
    soil_scale = (1 + f32(0.08) * world.soil_field) * (1 - f32(0.25) * wet)
    brightness = (spectra[:, 2] / SOIL[2]).astype(f32)  # soil brightness per label (other labels: see below)
    w_soil = bare * weight * soil_scale * brightness[labels]
    special = np.flatnonzero(np.isin(labels, (ROAD, WATER, BUILT)))  # non-soil backgrounds, few pixels
    w_special = (bare * weight).ravel()[special]
    w_soil.ravel()[special] = 0
    special_labels = labels.ravel()[special]

    valid20 = swath_mask(world, acq)
    valid10 = np.repeat(np.repeat(valid20, 2, axis=0), 2, axis=1)
    refl: dict[str, np.ndarray] = {}
    dns: dict[str, np.ndarray] = {}
    for b, name in enumerate(BANDS):
        r = w_leaf * LEAF[b] + w_dry * DRY[b] + w_soil * SOIL[b] + layers.cloud * CLOUD[b] + layers.cirrus * CIRRUS[b]
        r += haze * HAZE[b]
        r.ravel()[special] += w_special * spectra[special_labels, b]
        if S2_L2A.band(name).resolution == 20:
            r = block_mean(r)
            r += f32(0.0015) * rng.standard_normal(r.shape, dtype=f32)
            dns[name] = to_dn(r, valid20)
        else:
            r += f32(0.003) * rng.standard_normal(r.shape, dtype=f32)
            dns[name] = to_dn(r, valid10)
        if name in ("B03", "B04", "B08", "B11"):
            refl[name] = r
    scl = classify(refl, layers, valid20, rng)
    return S2Render(dns, scl, layers)


def to_dn(reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pack reflectance as L2A DNs (uint16), 0 where not ``valid``."""
    dn = np.clip(reflectance * np.float32(SCALE) + np.float32(ADD_OFFSET + 0.5), 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def block_mean(a: np.ndarray) -> np.ndarray:
    """Mean of 2 x 2 pixel blocks: 10 m to 20 m."""
    if a.shape[0] % 2 or a.shape[1] % 2:
        raise ValueError(f"array of shape {a.shape} does not split into 2 x 2 blocks")
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * np.float32(0.25)


def classify(refl: dict[str, np.ndarray], layers: CloudLayers, valid: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Scene classification (SCL codes) at 20 m, from 20 m reflectance and the cloud layers."""
    green, red = block_mean(refl["B03"]), block_mean(refl["B04"])
    nir, swir = refl["B08"], refl["B11"]
    nir = block_mean(nir) if nir.shape != red.shape else nir
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    cloud, shadow, cirrus = (block_mean(x) for x in (layers.cloud, layers.shadow, layers.cirrus))
    scl = np.where(ndvi > 0.40, 4, 5).astype(np.uint8)
    scl[(nir < 0.05) & (ndvi < 0.05) & (swir < 0.03)] = 6
    scl[((green + red + nir) / 3 < 0.035) & (scl != 6)] = 2
    scl[(shadow > 0.3) & (cloud < 0.2)] = 3
    scl[cirrus > 0.07] = 10
    edge = (cloud > 0.08) & (cloud <= 0.25)
    scl[edge & (rng.random(edge.shape) < 0.35)] = 7
    scl[rng.random(scl.shape) < 0.0015] = 7
    scl[cloud > 0.25] = 8
    scl[cloud > 0.6] = 9
    scl[~valid] = 0
    return scl


def swath_footprint(world: World, acq: Acquisition) -> BaseGeometry:
    """The ground seen by pass ``acq`` as a polygon in the region CRS (the whole region if full)."""
    from shapely.geometry import Polygon, box

    minx, miny, maxx, maxy = world.region.bbox
    whole = box(minx, miny, maxx, maxy)
    if not acq.partial_swath:
        return whole
    w20 = world.region.shape(2 * BASE_RES)[1]
    # column edge of swath_mask at the top (row 0) and bottom (row h) of the region, in metres
    x_top = minx + 2 * BASE_RES * w20 * 0.30
    x_bottom = minx + 2 * BASE_RES * w20 * 0.18
    far = maxx + 1.0
    return Polygon([(x_top, maxy), (far, maxy), (far, miny), (x_bottom, miny)]).intersection(whole)
