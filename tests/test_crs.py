"""twin.crs: CRS parsing, plausibility checks, GCJ-02 / BD-09 conversions."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest

from twin.crs import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    check_declared_crs,
    degrees_declared_as_metres,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    internal_crs,
    is_pseudo_crs,
    outside_area_of_use,
    parse_crs,
    require_projected,
    transform_xy,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from twin.errors import CRSError

# Published reference values (wandergis/coordtransform README, Tiananmen area).
REF_WGS_TO_GCJ = ((116.404, 39.915), (116.41024449916938, 39.91640428150164))
REF_GCJ_TO_BD = ((116.404, 39.915), (116.41036949371029, 39.92133699351021))
# An independent implementation's test vector (Shanghai area), WGS84 -> GCJ-02 -> BD-09.
REF_CHAIN = ((121.0917077, 30.6107779), (121.09626935575027, 30.608604331756705),
             (121.10271732371203, 30.61484572185035))

M_PER_DEG = 111_320.0


def _metres(lon_a, lat_a, lon_b, lat_b):
    geod = pyproj.Geod(ellps="WGS84")
    _, _, dist = geod.inv(lon_a, lat_a, lon_b, lat_b)
    return np.asarray(dist)


def test_wgs84_to_gcj02_matches_published_reference():
    (lon, lat), (glon, glat) = REF_WGS_TO_GCJ
    out = wgs84_to_gcj02(lon, lat)
    assert out[0] == pytest.approx(glon, abs=1e-9)
    assert out[1] == pytest.approx(glat, abs=1e-9)


def test_gcj02_to_bd09_matches_published_reference():
    (lon, lat), (blon, blat) = REF_GCJ_TO_BD
    out = gcj02_to_bd09(lon, lat)
    assert out[0] == pytest.approx(blon, abs=1e-9)
    assert out[1] == pytest.approx(blat, abs=1e-9)


def test_chain_matches_independent_reference_within_decimetre():
    (lon, lat), gcj, bd = REF_CHAIN
    g = wgs84_to_gcj02(lon, lat)
    b = wgs84_to_bd09(lon, lat)
    assert _metres(g[0], g[1], *gcj) < 0.1
    assert _metres(b[0], b[1], *bd) < 0.1


def test_offsets_have_the_known_size_in_yingtan():
    # GCJ-02 moves points a few hundred metres; BD-09 adds roughly another kilometre.
    lon, lat = 117.069, 28.260
    g = wgs84_to_gcj02(lon, lat)
    b = wgs84_to_bd09(lon, lat)
    d_gcj = float(_metres(lon, lat, *g))
    d_bd = float(_metres(lon, lat, *b))
    assert 100 < d_gcj < 800
    assert 500 < d_bd < 2000


@pytest.mark.parametrize(
    "forward, inverse",
    [(wgs84_to_gcj02, gcj02_to_wgs84), (gcj02_to_bd09, bd09_to_gcj02), (wgs84_to_bd09, bd09_to_wgs84)],
)
def test_round_trips_are_sub_millimetre_across_china(forward, inverse):
    rng = np.random.default_rng(7)
    lon = rng.uniform(73.7, 134.7, 20_000)
    lat = rng.uniform(18.2, 53.5, 20_000)
    back_lon, back_lat = inverse(*forward(lon, lat))
    assert np.max(np.abs(back_lon - lon)) < 1e-7
    assert np.max(np.abs(back_lat - lat)) < 1e-7
    assert float(np.max(_metres(lon, lat, back_lon, back_lat))) < 0.001


def test_inverse_is_exact_not_the_one_step_approximation():
    # The common one-step inverse is off by metres; ours solves forward(w) = g.
    g = np.array([116.404]), np.array([39.915])
    w = gcj02_to_wgs84(*g)
    again = wgs84_to_gcj02(*w)
    assert np.abs(again[0] - g[0]).max() < 1e-9
    assert np.abs(again[1] - g[1]).max() < 1e-9


def test_outside_china_is_unchanged_and_shapes_are_kept():
    lon = np.array([[2.35, -74.0], [151.2, 116.4]])
    lat = np.array([[48.85, 40.7], [-33.9, 39.9]])
    glon, glat = wgs84_to_gcj02(lon, lat)
    assert glon.shape == (2, 2)
    assert glon[0, 0] == 2.35 and glat[0, 1] == 40.7 and glon[1, 0] == 151.2
    assert glon[1, 1] != 116.4


def test_transform_xy_with_pseudo_crs_goes_through_wgs84():
    lon, lat = np.array([117.05, 117.07]), np.array([28.23, 28.25])
    gx, gy = wgs84_to_gcj02(lon, lat)
    x1, y1 = transform_xy(gx, gy, from_crs="GCJ-02", to_crs="EPSG:4548")
    x2, y2 = transform_xy(lon, lat, from_crs="EPSG:4326", to_crs="EPSG:4548")
    assert np.allclose(x1, x2, atol=1e-3) and np.allclose(y1, y2, atol=1e-3)
    # CGCS2000 GK zone 39 (CM 117E) has a 500 km false easting: Yingtan sits near it.
    assert 490_000 < x2[0] < 520_000 and 3_100_000 < y2[0] < 3_150_000
    # back from projected to BD-09 and to WGS84
    bx, by = transform_xy(x2, y2, from_crs="EPSG:4548", to_crs="bd09")
    wx, wy = transform_xy(bx, by, from_crs="BD09", to_crs="EPSG:4326")
    assert float(np.max(_metres(lon, lat, wx, wy))) < 0.01


def test_transform_xy_between_projected_crs_is_metric():
    x, y = np.array([500_000.0]), np.array([3_125_000.0])
    ux, uy = transform_xy(x, y, from_crs="EPSG:4548", to_crs="EPSG:32650")
    bx, by = transform_xy(ux, uy, from_crs="EPSG:32650", to_crs=4548)
    assert abs(bx[0] - x[0]) < 1e-6 and abs(by[0] - y[0]) < 1e-6


def test_parse_crs_accepts_common_forms_and_names_bad_values():
    assert parse_crs("EPSG:4548").to_epsg() == 4548
    assert parse_crs(32650).to_epsg() == 32650
    assert parse_crs("32650").to_epsg() == 32650
    assert parse_crs(pyproj.CRS(4326)).to_epsg() == 4326
    with pytest.raises(CRSError, match="EPSG:999999"):
        parse_crs("EPSG:999999")
    with pytest.raises(CRSError, match="web-map datum"):
        parse_crs("GCJ02")
    with pytest.raises(CRSError, match="no CRS"):
        parse_crs(None)
    assert is_pseudo_crs("gcj-02") and is_pseudo_crs("BD09") and not is_pseudo_crs("EPSG:4326")


def test_require_projected_refuses_degrees_and_feet():
    assert require_projected("EPSG:4548").to_epsg() == 4548
    with pytest.raises(CRSError, match="not projected"):
        require_projected("EPSG:4326")
    with pytest.raises(CRSError, match="not metres"):
        require_projected("EPSG:2263")  # New York Long Island, US survey feet


def test_degrees_declared_as_metres():
    lon = np.array([117.03, 117.04, 117.05])
    lat = np.array([28.23, 28.24, 28.24])
    assert degrees_declared_as_metres(lon, lat, "EPSG:4548")
    assert not degrees_declared_as_metres(lon, lat, "EPSG:4326")
    # WNTR's Net1: small local units, but pipe lengths ~300x the drawn length, not 100,000x
    x = np.array([20.0, 30.0, 50.0, 70.0])
    y = np.array([70.0, 70.0, 40.0, 40.0])
    assert not degrees_declared_as_metres(x, y, "EPSG:32650", length_ratio=320.0)
    assert degrees_declared_as_metres(x / 1000 + 117, y / 1000 + 28, "EPSG:32650", length_ratio=9e4)
    # real metres
    assert not degrees_declared_as_metres(np.array([503_000.0, 503_100.0]), np.array([3.12e6, 3.12e6]), "EPSG:4548")


def test_outside_area_of_use():
    x, y = transform_xy(np.array([117.0, 100.0]), np.array([28.2, 28.2]), from_crs=4326, to_crs=4548)
    out = outside_area_of_use(x, y, "EPSG:4548")
    assert out.tolist() == [False, True]


def test_internal_crs_prefers_the_target_then_a_projected_source():
    assert internal_crs(None).equals(pyproj.CRS("EPSG:4548"))  # the default
    assert internal_crs(pyproj.CRS("EPSG:4326")).equals(pyproj.CRS("EPSG:4548"))  # degrees: default
    assert internal_crs(pyproj.CRS("EPSG:32650")).equals(pyproj.CRS("EPSG:32650"))
    assert internal_crs(pyproj.CRS("EPSG:32650"), "EPSG:4548").equals(pyproj.CRS("EPSG:4548"))
    with pytest.raises(CRSError, match="not projected"):
        internal_crs(None, "EPSG:4326")


def test_check_declared_crs_refuses_coordinates_that_do_not_fit(tmp_path):
    lonlat = np.array([[117.01, 28.21], [117.02, 28.22], [117.03, 28.25]])
    metres = np.array([[503_000.0, 3_124_000.0], [503_500.0, 3_124_800.0]])
    check_declared_crs(lonlat, "EPSG:4326", path=tmp_path / "x.inp")
    check_declared_crs(metres, "EPSG:4548", path=tmp_path / "x.inp")
    check_declared_crs(lonlat, "GCJ02", path=tmp_path / "x.inp")
    with pytest.raises(CRSError, match="look like lon/lat degrees.*EPSG:4548 is in metres"):
        check_declared_crs(lonlat, "EPSG:4548", path=tmp_path / "x.inp")
    with pytest.raises(CRSError, match="not lon/lat degrees.*EPSG:4326 is geographic"):
        check_declared_crs(metres, "EPSG:4326", path=tmp_path / "x.inp")
