"""Clouds, their shadows and thin cirrus as smooth random fields (pure numpy/scipy).

A cloud layer is a smooth Gaussian random field (two octaves, drawn on a 40 m lattice and upsampled)
thresholded to the date's cloud cover, with soft edges; its shadow is the same field shifted away from
the sun (sun in the south-south-east at 10:50 UTC, so shadows fall to the north-north-west by cloud
height x tan(sun zenith)); cirrus is a separate, streaky, thin field. Fields are drawn over the region
plus a margin, so clouds outside the region still cast shadows into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

COARSE = 4  # pixels (10 m) per lattice cell of the random fields
MAX_SHADOW_PX = 140  # 1.4 km: the largest cloud-to-shadow displacement simulated


@dataclass(frozen=True, slots=True, eq=False)
class CloudLayers:
    """Per-pixel opacity of clouds (0..1), shadow strength (0..1) and cirrus opacity (0..~0.3)."""

    cloud: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], *, sigma: float | tuple[float, float],
                 octaves: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """A zero-mean, unit-variance smooth random field of ``shape`` (10 m pixels).

    ``sigma`` is the correlation length in lattice cells (``COARSE`` pixels); each extra octave halves
    it again (scaled by its weight), which gives clouds and soils their ragged detail.
    """
    ch, cw = shape[0] // COARSE + 2, shape[1] // COARSE + 2
    total = np.zeros((ch, cw), np.float32)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (2,))
    for k, weight in enumerate(octaves):
        noise = rng.standard_normal((ch, cw), dtype=np.float32)
        layer = ndimage.gaussian_filter(noise, sig / 2**k, mode="wrap")
        total += weight * layer / max(float(layer.std()), 1e-6)
    total = (total - total.mean()) / max(float(total.std()), 1e-6)
    up = ndimage.zoom(total, COARSE, order=1, prefilter=False, grid_mode=False)
    return up[: shape[0], : shape[1]]


def draw_cloud_cover(rng: np.random.Generator, cloudiness: float) -> float:
    """Cloud fraction of one date: clear days, overcast days and broken cloud in between (none at all for a
    ``cloudiness`` of 0)."""
    u = rng.random()
    if cloudiness == 0:
        return 0.0
    if u < 0.28 * (1 - cloudiness) / 0.65:
        return float(rng.uniform(0.0, 0.02))
    if u > 1 - 0.16 * cloudiness / 0.35:
        return float(rng.uniform(0.8, 1.0))
    mean = min(max(cloudiness, 0.02), 0.95)
    return float(rng.beta(1.3, 1.3 * (1 - mean) / mean))


def cloud_layers(rng: np.random.Generator, shape: tuple[int, int], *, cover: float, cirrus: bool = True
                 ) -> CloudLayers:
    """Cloud, shadow and cirrus layers of one date over a region of ``shape`` 10 m pixels (cirrus on a quarter
    of the dates, unless ``cirrus`` is False: a cloud-free season)."""
    pad = MAX_SHADOW_PX
    padded = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    h, w = shape
    field = smooth_field(rng, padded, sigma=12.0, octaves=(1.0, 0.45, 0.2))
    if cover <= 0.001:
        cloud_full = np.zeros(padded, np.float32)
    else:
        threshold = np.quantile(field[::8, ::8], 1 - cover)
        cloud_full = np.clip((field - threshold) / 0.7, 0, 1) ** 0.6
    cloud = cloud_full[pad:pad + h, pad:pad + w]
    length = rng.uniform(0.35, 1.0) * MAX_SHADOW_PX  # cloud height x tan(sun zenith), in pixels
    azimuth = np.deg2rad(rng.uniform(150, 175))  # sun azimuth, clockwise from north
    dr, dc = round(-length * np.cos(azimuth)), round(length * np.sin(azimuth))  # shadow -> its cloud
    shadow = cloud_full[pad + dr:pad + dr + h, pad + dc:pad + dc + w] * np.float32(0.9)
    shadow = np.where(cloud > 0.3, 0, shadow).astype(np.float32)
    if rng.random() < 0.25 and cirrus:
        streaks = smooth_field(rng, shape, sigma=(3.0, 18.0), octaves=(1.0, 0.3))
        cirrus = (np.clip((streaks - rng.uniform(0.2, 1.6)) / 1.5, 0, 1) * 0.25).astype(np.float32)
    else:
        cirrus = np.zeros(shape, np.float32)
    return CloudLayers(cloud.astype(np.float32), shadow, cirrus)
