"""Parcels: irregular, valid, non-overlapping, realistic sizes and crop mix; ground truth and weather."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from cardcube.synth import SynthConfig
from cardcube.synth.parcels import make_landscape
from cardcube.synth.region import Region


def test_parcels_irregular_valid_disjoint(parcels):
    assert parcels.crs.to_epsg() == 32631
    assert list(parcels.columns) == ["parcel_id", "crop_code", "crop_name", "area_ha", "geometry"]
    assert parcels.parcel_id.is_unique and parcels.parcel_id.str.fullmatch(r"NL-\d{6}").all()
    geoms = parcels.geometry.to_numpy()
    assert shapely.is_valid(geoms).all() and (shapely.get_type_id(geoms) == 3).all()
    rectangularity = shapely.area(geoms) / shapely.area(shapely.minimum_rotated_rectangle(geoms))
    assert (rectangularity < 0.97).mean() > 0.3  # many are not rectangles
    axis_aligned = np.isclose(shapely.area(geoms), shapely.area(shapely.envelope(geoms)))
    assert axis_aligned.mean() < 0.05
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    pairs = a < b
    overlap = shapely.area(shapely.intersection(geoms[a[pairs]], geoms[b[pairs]]))
    assert overlap.max(initial=0) < 1e-6


def test_parcel_sizes(parcels):
    area = parcels.area_ha.to_numpy()
    np.testing.assert_allclose(area, parcels.geometry.area / 1e4, atol=1e-3)
    assert 0 < (area < 0.3).mean() < 0.15  # some too small to check
    assert (area <= 20).all() and np.median(area) > 0.8
    slender = parcels.geometry.area / parcels.geometry.minimum_bounding_radius() ** 2
    assert (slender < 0.4).any()  # at least one sliver


def test_vertices_are_off_pixel_centres(parcels):
    xy = shapely.get_coordinates(parcels.geometry.to_numpy())
    on_centre = np.isclose(np.mod(xy - 5.0, 10.0), 0.0, atol=1e-6).all(axis=1)
    assert on_centre.mean() < 0.001


def test_crop_mix_like_a_dutch_declaration():
    region = Region.from_config(SynthConfig.demo(size_m=(6000, 6000)))
    gdf = make_landscape(np.random.default_rng(3), region, mean_parcel_ha=3.0).parcels
    assert len(gdf) > 400
    assert gdf.geometry.is_valid.all()


def test_parquet_and_gpkg_agree(tiny_region, parcels):
    gpkg = gpd.read_file(tiny_region.parcels_gpkg)
    assert len(gpkg) == len(parcels)
    assert (gpkg.parcel_id.to_numpy() == parcels.parcel_id.to_numpy()).all()
    assert gpkg.crs.to_epsg() == 32631


def test_ground_truth(tiny_region, parcels, truth):
    assert (truth.parcel_id.to_numpy() == parcels.parcel_id.to_numpy()).all()
    assert (truth.declared_crop_code.to_numpy() == parcels.crop_code.to_numpy()).all()
    share = parcels.groupby("crop_code").area_ha.count() / len(parcels)
    assert share.idxmax() == 265 and share[265] > 0.35  # permanent grassland is the majority crop
    assert {259, 233}.issubset(share.index)
    frac = truth.is_anomaly.mean()
    assert 0.01 < frac < 0.1
    anomalies = truth[truth.is_anomaly]
    assert set(anomalies.anomaly_kind) <= {"wrong_crop", "not_mown", "ploughed_grassland"}
    wrong = anomalies[anomalies.anomaly_kind == "wrong_crop"]
    assert (wrong.actual_crop_code != wrong.declared_crop_code).all()
    assert truth[~truth.is_anomaly].eval("actual_crop_code == declared_crop_code").all()
    arable = truth[truth.sowing_date.notna() & truth.harvest_date.notna()]
    assert (pd.to_datetime(arable.harvest_date) > pd.to_datetime(arable.sowing_date)).all()
    grass = truth[truth.actual_crop_code.isin([265, 266]) & ~truth.is_anomaly]
    n_cuts = grass.mowing_dates.map(len)
    assert (n_cuts >= 1).mean() > 0.9
    for cuts in grass.mowing_dates:
        gaps = np.diff(pd.to_datetime(list(cuts)).to_numpy()).astype("timedelta64[D]").astype(int)
        assert (gaps >= 18).all()
    not_mown = truth[truth.anomaly_kind == "not_mown"]
    assert not_mown.mowing_dates.map(len).eq(0).all()


def test_weather_consistent(tiny_region):
    w = pd.read_parquet(tiny_region.weather)
    csv = pd.read_csv(tiny_region.weather_csv)
    assert len(w) == len(csv) and list(w.columns) == list(csv.columns)
    assert (w.tmin <= w.tmean).all() and (w.tmean <= w.tmax).all()
    assert (w.precipitation_mm >= 0).all() and 0.3 < (w.precipitation_mm > 0).mean() < 0.7
    np.testing.assert_allclose(w.gdd_base5, np.maximum(w.tmean - 5, 0), atol=0.051)
    summer = w[pd.to_datetime(w.date).dt.month == 7].tmean.mean()
    winter = w[pd.to_datetime(w.date).dt.month == 1].tmean.mean()
    assert 14 < summer < 22 and -2 < winter < 7


def test_straddle_parcels_cross_the_tile_edge(tiny_straddle_region):
    gdf = gpd.read_parquet(tiny_straddle_region.parcels)
    bounds = gdf.geometry.bounds
    east_edge_ufu = 709_800.0
    crossing = (bounds.minx < east_edge_ufu) & (bounds.maxx > east_edge_ufu)
    assert crossing.sum() >= 2
    assert (bounds.maxx < east_edge_ufu).any() and (bounds.minx > east_edge_ufu).any()
    assert set(tiny_straddle_region.tiles) == {"31UFU", "31UGU"}
