"""Coordinates against values known independently of PROJ (geodesy tables, closed forms)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString, Point

from twin import crs
from twin.model import BBox, InvalidInput

# Meridian arc length of the GRS80 ellipsoid (CGCS2000's differs by < 0.1 mm) from the equator.
MERIDIAN_ARC_45 = 4_984_944.378
MERIDIAN_ARC_30 = 3_320_113.398


def test_gauss_kruger_central_meridian_is_false_easting_and_meridian_arc():
    x, y = crs.transform_points(crs.CRS84, "EPSG:4549", [120.0, 120.0], [45.0, 30.0])
    assert x == pytest.approx([500_000.0, 500_000.0], abs=1e-6)
    assert y == pytest.approx([MERIDIAN_ARC_45, MERIDIAN_ARC_30], abs=0.01)


def test_zone_number_systems_prefix_the_easting():
    assert crs.gauss_kruger_code(118.78) == "EPSG:4549"
    assert crs.gauss_kruger_code(118.78, by_zone_number=True) == "EPSG:4528"
    x, _ = crs.transform_points(crs.CRS84, "EPSG:4528", [120.0], [32.0])
    assert x[0] == pytest.approx(40_500_000.0, abs=1e-6)
    with pytest.raises(InvalidInput):
        crs.gauss_kruger_code(10.0)


def test_axis_order_is_easting_first_for_northing_first_epsg_definitions():
    x, y = crs.transform_points(crs.CGCS2000_GEOGRAPHIC, "EPSG:4549", [118.78], [32.04])
    assert 380_000 < x[0] < 390_000 and 3_540_000 < y[0] < 3_560_000  # west of CM 120E: x < 500 km
    lon, lat = crs.transform_points("EPSG:4549", crs.CRS84, x, y)
    assert (lon[0], lat[0]) == pytest.approx((118.78, 32.04), abs=1e-9)


def test_web_mercator_closed_form():
    x, y = crs.transform_points(crs.CRS84, crs.WEB_MERCATOR, [180.0, 118.78], [0.0, 32.04])
    radius = 6_378_137.0
    assert x[0] == pytest.approx(np.pi * radius, abs=1e-3)
    assert y[1] == pytest.approx(radius * np.log(np.tan(np.pi / 4 + np.radians(32.04) / 2)), abs=1e-3)


def test_ecef_of_equator_and_pole():
    datum = crs.VerticalDatum(offset=0.0)
    x, y, z = crs.transform_points("EPSG:4979", crs.ECEF, [0.0, 0.0], [0.0, 90.0], [0.0, 0.0])
    assert (x[0], y[0], z[0]) == pytest.approx((6_378_137.0, 0.0, 0.0), abs=1e-6)
    assert z[1] == pytest.approx(6_356_752.314, abs=1e-3)
    ex, ey, ez = crs.to_ecef("EPSG:4549", [500_000.0], [0.0], [10.0], datum)
    assert (ex[0], ey[0], ez[0]) == pytest.approx(
        (6_378_147.0 * np.cos(np.radians(120)), 6_378_147.0 * np.sin(np.radians(120)), 0.0), abs=1e-3
    )


def test_vertical_datum_constant_offset_and_missing_grid(tmp_path):
    datum = crs.VerticalDatum(offset=3.2)
    assert datum.to_ellipsoidal([118.8], [32.0], [10.0])[0] == pytest.approx(13.2)
    assert datum.to_orthometric([118.8], [32.0], [13.2])[0] == pytest.approx(10.0)
    absent = crs.VerticalDatum(offset=3.2, geoid_grid=str(tmp_path / "missing.tif"))
    assert absent.to_ellipsoidal([118.8], [32.0], [10.0])[0] == pytest.approx(13.2)


def test_vertical_datum_uses_a_geoid_grid_when_present(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    grid = tmp_path / "geoid.tif"
    undulation = np.full((20, 20), 2.5, dtype="float32")
    with rasterio.open(
        grid,
        "w",
        driver="GTiff",
        width=20,
        height=20,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(110.0, 40.0, 1.0, 1.0),
    ) as dst:
        dst.write(undulation, 1)
    datum = crs.VerticalDatum(offset=99.0, geoid_grid=str(grid))
    assert datum.to_ellipsoidal([118.8], [32.0], [10.0])[0] == pytest.approx(12.5, abs=1e-4)


def test_geometries_reproject_vectorised_keeping_z_and_nones():
    geoms = [Point(118.78, 32.04), LineString([(118.78, 32.04, 5.0), (118.79, 32.05, 6.0)]), None]
    out = crs.transform_geometries(geoms, crs.CRS84, "EPSG:4549")
    assert out[2] is None and not out[0].has_z and out[1].has_z
    assert [c[2] for c in out[1].coords] == [5.0, 6.0]
    back = crs.transform_geometries(out, "EPSG:4549", crs.CRS84)
    assert back[1].coords[1][:2] == pytest.approx((118.79, 32.05), abs=1e-9)


def test_bbox_transform_covers_the_curved_edges():
    box = crs.transform_bbox(BBox(118.7, 32.0, 118.9, 32.1), crs.CRS84, "EPSG:4549")
    corners = crs.transform_points(crs.CRS84, "EPSG:4549", [118.7, 118.9, 118.7, 118.9], [32.0, 32.0, 32.1, 32.1])
    assert box.minx <= min(corners[0]) and box.maxx >= max(corners[0])
    assert box.miny <= min(corners[1]) and box.maxy >= max(corners[1])


def test_unknown_and_unsuitable_crs_are_refused():
    with pytest.raises(InvalidInput):
        crs.parse_crs("EPSG:999999")
    with pytest.raises(InvalidInput):
        crs.check_project_crs("EPSG:4490")
    assert crs.check_project_crs("EPSG:4549") == "EPSG:4549"
    assert crs.crs_uri("EPSG:4549") == "http://www.opengis.net/def/crs/EPSG/0/4549"
    assert crs.crs_uri("CRS84") == crs.CRS84_URI


def test_enu_frame_is_orthonormal_with_up_along_the_ellipsoid_normal():
    matrix = crs.enu_to_ecef_matrix(118.78, 32.04, 0.0)
    rotation = matrix[:3, :3]
    assert rotation.T @ rotation == pytest.approx(np.eye(3), abs=1e-12)
    x, y, z = crs.transform_points("EPSG:4979", crs.ECEF, [118.78], [32.04], [100.0])
    assert matrix @ [0, 0, 100.0, 1] == pytest.approx([x[0], y[0], z[0], 1.0], abs=1e-3)


def test_world_bbox_is_cut_to_the_projection_strip():
    box = crs.transform_bbox(BBox(-180, -90, 180, 90), crs.CRS84, "EPSG:4549")
    x, y = crs.transform_points(crs.CRS84, "EPSG:4549", [118.78], [32.04])
    assert box.minx < x[0] < box.maxx and box.miny < y[0] < box.maxy


def test_wgs84_and_cgcs2000_lon_lat_are_the_same_here():
    a = crs.transform_points(crs.CRS84, "EPSG:4549", [118.78], [32.04])
    b = crs.transform_points(crs.CGCS2000_GEOGRAPHIC, "EPSG:4549", [118.78], [32.04])
    assert np.allclose(a, b, atol=1e-6)
