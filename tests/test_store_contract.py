"""The store contract, run against the GeoPackage and the PostGIS backend alike."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from shapely.geometry import LineString, Point, box

from twin.model import (
    BBox,
    FeatureInput,
    InvalidInput,
    Layer,
    NotFound,
    Observation,
    TimeFilter,
)
from twin.store import WriteMode, open_store

T2015 = datetime(2015, 1, 1, tzinfo=UTC)
T2021 = datetime(2021, 6, 1, tzinfo=UTC)
X0, Y0 = 386_000.0, 3_546_000.0


def buildings(n: int, floors_bump: set[int] = frozenset(), skip: set[int] = frozenset()) -> list[FeatureInput]:
    """A row of 10 m buildings every 20 m along the x axis from the district's corner."""
    return [
        FeatureInput(
            f"b{i}",
            box(X0 + 20 * i, Y0, X0 + 20 * i + 10, Y0 + 10),
            {"floors": 3 + (1 if i in floors_bump else 0), "use": "school" if i % 7 == 0 else "residential"},
        )
        for i in range(n)
        if i not in skip
    ]


def layer(**extra) -> Layer:
    return Layer(id="buildings_500", kind="vector", scale_band="1:500", title="Buildings 1:500", **extra)


def snapshot(store, layer_id: str) -> list[tuple]:
    """Every version of every feature, to compare before and after a failed write."""
    rows = store.query(layer_id, time=TimeFilter(None, datetime(9999, 1, 1, tzinfo=UTC)), limit=None).features
    return sorted((f.fid, f.version, f.valid_from, f.valid_to, f.geometry.wkt, f.properties) for f in rows)


def test_project_crs_is_kept(store):
    assert store.crs == "EPSG:4549"
    assert store.list_layers() == []


def test_layer_description_and_summary(store):
    report = store.write_features(layer(source_crs="EPSG:4326"), buildings(5), valid_from=T2015)
    assert (report.inserted, report.updated, report.unchanged) == (5, 0, 0)
    got = store.get_layer("buildings_500")
    assert got.kind == "vector" and got.scale_band == "1:500" and got.scenario == "current"
    assert got.source_crs == "EPSG:4326" and got.title == "Buildings 1:500"
    assert got.feature_count == 5
    assert got.bbox == pytest.approx((X0, Y0, X0 + 90, Y0 + 10), abs=0.01)
    assert got.time_extent == (T2015, None)
    assert [lay.id for lay in store.list_layers()] == ["buildings_500"]


def test_edit_closes_old_version_and_never_overwrites(store):
    store.write_features(layer(), buildings(10), valid_from=T2015)
    report = store.write_features(
        layer(), buildings(10, floors_bump={2}, skip={5}), valid_from=T2021, mode=WriteMode.replace
    )
    assert (report.updated, report.unchanged, report.closed) == (1, 8, 1)
    versions = store.history("buildings_500", "b2")
    assert [(v.version, v.valid_from, v.valid_to, v.properties["floors"]) for v in versions] == [
        (1, T2015, T2021, 3),
        (2, T2021, None, 4),
    ]
    demolished = store.history("buildings_500", "b5")
    assert [(v.valid_from, v.valid_to) for v in demolished] == [(T2015, T2021)]


def test_query_by_instant_returns_the_version_valid_then(store):
    store.write_features(layer(), buildings(10), valid_from=T2015)
    store.write_features(layer(), buildings(10, floors_bump={2}, skip={5}), valid_from=T2021, mode="replace")
    past = store.query("buildings_500", time=TimeFilter.parse("2020-01-01T00:00:00Z"), limit=None).features
    now = store.query("buildings_500", limit=None).features
    assert sorted(f.fid for f in past) == sorted(f"b{i}" for i in range(10))
    assert "b5" not in {f.fid for f in now} and len(now) == 9
    assert {f.fid: f.properties["floors"] for f in past}["b2"] == 3
    assert {f.fid: f.properties["floors"] for f in now}["b2"] == 4
    before_anything = store.query("buildings_500", time=TimeFilter.parse("2010-01-01"), limit=None).features
    assert before_anything == []


def test_feature_versions_name_the_versions_a_query_returns(store):
    store.write_features(layer(), buildings(6), valid_from=T2015)
    store.write_features(layer(), buildings(6, floors_bump={2}, skip={4}), valid_from=T2021, mode="replace")
    for when in (None, TimeFilter.parse("2018-01-01T00:00:00Z"), TimeFilter.parse("2020-01-01T00:00:00Z/..")):
        expected = sorted((f.fid, f.version) for f in store.query("buildings_500", time=when, limit=None).features)
        assert sorted(store.feature_versions("buildings_500", when)) == expected
    assert ("b2", 2) in store.feature_versions("buildings_500") and ("b4", 1) not in store.feature_versions(
        "buildings_500"
    )
    with pytest.raises(NotFound):
        store.feature_versions("no_such_layer")


def test_query_by_interval_returns_every_version_valid_in_it(store):
    store.write_features(layer(), buildings(4), valid_from=T2015)
    store.write_features(layer(), buildings(4, floors_bump={1}), valid_from=T2021)
    spanning = store.query("buildings_500", time=TimeFilter.parse("2020-01-01T00:00:00Z/.."), limit=None).features
    assert sorted((f.fid, f.version) for f in spanning) == [("b0", 1), ("b1", 1), ("b1", 2), ("b2", 1), ("b3", 1)]
    early = store.query("buildings_500", time=TimeFilter.parse("../2016-01-01T00:00:00Z"), limit=None).features
    assert sorted((f.fid, f.version) for f in early) == [("b0", 1), ("b1", 1), ("b2", 1), ("b3", 1)]


def test_bbox_query_is_exact_not_envelope(store):
    diagonal = LineString([(X0, Y0), (X0 + 100, Y0 + 100)])
    lay = Layer(id="pipes", kind="pipe_network")
    store.write_features(lay, [FeatureInput("p1", diagonal, {}), FeatureInput("p2", Point(X0 + 5, Y0 + 95), {})])
    corner = BBox(X0 + 80, Y0, X0 + 100, Y0 + 20)  # inside the line's envelope, away from the line
    assert store.query("pipes", bbox=corner).features == []
    on_line = BBox(X0 + 45, Y0 + 45, X0 + 55, Y0 + 55)
    assert [f.fid for f in store.query("pipes", bbox=on_line).features] == ["p1"]


def test_bbox_paging_and_count(store):
    store.write_features(layer(), buildings(50), valid_from=T2015)
    area = BBox(X0, Y0, X0 + 20 * 30, Y0 + 10)  # b0..b30 touch it
    first = store.query("buildings_500", bbox=area, limit=10, offset=0, count=True)
    second = store.query("buildings_500", bbox=area, limit=10, offset=10, count=True)
    assert first.number_matched == second.number_matched == 31
    assert not {f.fid for f in first.features} & {f.fid for f in second.features}
    everything = store.query("buildings_500", bbox=area, limit=None).features
    assert [f.fid for f in everything] == [f"b{i}" for i in range(31)]
    no_bbox = store.query("buildings_500", limit=5, offset=45, count=True)
    assert no_bbox.number_matched == 50 and [f.fid for f in no_bbox.features] == [f"b{i}" for i in range(45, 50)]


def test_property_filters_compare_typed_values(store):
    store.write_features(layer(), buildings(15, floors_bump={1, 2}), valid_from=T2015)
    four = store.query("buildings_500", filters={"floors": "4"}, limit=None).features
    assert sorted(f.fid for f in four) == ["b1", "b2"]
    schools = store.query("buildings_500", filters={"use": "school", "floors": "3"}, limit=None).features
    assert sorted(f.fid for f in schools) == ["b0", "b14", "b7"]
    with pytest.raises(InvalidInput):
        store.query("buildings_500", filters={"bad'name": "1"})


def test_geometries_round_trip_in_3d(store):
    pipe = LineString([(X0, Y0, 8.5), (X0 + 50, Y0, 8.1)])
    store.write_features(Layer(id="pipes", kind="pipe_network"), [FeatureInput("p1", pipe, {"diameter": 300})])
    got = store.get_feature("pipes", "p1")
    assert got.geometry.has_z and got.geometry.equals_exact(pipe, 1e-9)
    assert list(got.geometry.coords)[1][2] == pytest.approx(8.1)


def test_failed_write_leaves_store_unchanged(store):
    store.write_features(layer(), buildings(5), valid_from=T2015)
    before = snapshot(store, "buildings_500")
    version_before = store.get_layer("buildings_500").version
    bad = buildings(5, floors_bump={0}) + [FeatureInput("b1", Point(X0, Y0), {})]  # b1 twice
    with pytest.raises(InvalidInput):
        store.write_features(layer(), bad, valid_from=T2021)
    nan_props = buildings(5, floors_bump={0}) + [FeatureInput("x", Point(X0, Y0), {"v": float("nan")})]
    with pytest.raises(InvalidInput):
        store.write_features(layer(), nan_props, valid_from=T2021)
    assert snapshot(store, "buildings_500") == before
    assert store.get_layer("buildings_500").version == version_before


def test_failed_first_write_leaves_no_layer(store):
    bad = [FeatureInput("a", Point(X0, Y0), {}), FeatureInput("a", Point(X0, Y0), {})]
    with pytest.raises(InvalidInput):
        store.write_features(Layer(id="fresh"), bad)
    assert store.list_layers() == []
    with pytest.raises(NotFound):
        store.get_layer("fresh")


def test_edit_backwards_in_time_is_refused(store):
    store.write_features(layer(), buildings(3), valid_from=T2021)
    with pytest.raises(InvalidInput):
        store.write_features(layer(), buildings(3, floors_bump={0}), valid_from=T2015)


def test_close_features(store):
    store.write_features(layer(), buildings(3), valid_from=T2015)
    assert store.close_features("buildings_500", ["b1"], at=T2021) == 1
    assert sorted(f.fid for f in store.query("buildings_500", limit=None).features) == ["b0", "b2"]
    with pytest.raises(NotFound):
        store.close_features("buildings_500", ["b1"], at=T2021)


def test_unknown_layer_and_feature(store):
    with pytest.raises(NotFound):
        store.get_layer("nope")
    with pytest.raises(NotFound):
        store.query("nope")
    store.write_features(layer(), buildings(1))
    with pytest.raises(NotFound):
        store.get_feature("buildings_500", "missing")


def test_layer_ids_are_checked(store):
    for bad in ("Buildings", "1abc", "a-b", "x; DROP TABLE y", "gpkg_contents", ""):
        with pytest.raises(InvalidInput):
            Layer(id=bad)


def test_delete_layer(store):
    store.write_features(layer(), buildings(2))
    store.delete_layer("buildings_500")
    assert store.list_layers() == []


def test_observations(store):
    t0 = datetime(2024, 7, 15, tzinfo=UTC)
    readings = [Observation("wl1", t0.replace(hour=h), "water_level", 0.02 * h, "m") for h in range(24)] + [
        Observation("p1", t0, "pressure", 310.0, "kPa")
    ]
    assert store.add_observations(readings) == 25
    morning = store.query_observations("wl1", time=TimeFilter.parse("2024-07-15T06:00:00Z/2024-07-15T08:00:00Z"))
    assert [o.value for o in morning] == pytest.approx([0.12, 0.14, 0.16])
    assert morning[0].time == t0.replace(hour=6) and morning[0].unit == "m"
    assert len(store.query_observations("wl1")) == 24
    assert store.query_observations("p1", quantity="pressure")[0].value == 310.0


def test_meta_and_reopen(store, backend, tmp_path, request):
    store.set_meta("geoid_offset", "-4.2")
    store.write_features(layer(), buildings(3), valid_from=T2015)
    url = request.getfixturevalue("postgis_database") if backend == "postgis" else None
    reopened = open_store(store.data_dir, url=url)
    try:
        assert reopened.get_meta("geoid_offset") == "-4.2"
        assert reopened.crs == "EPSG:4549"
        assert reopened.get_layer("buildings_500").feature_count == 3
    finally:
        reopened.close()


def test_assets_are_content_addressed(store, tmp_path):
    source = tmp_path / "mesh.glb"
    source.write_bytes(b"glTF-demo-bytes")
    key = store.assets.put_file(source, ".glb")
    assert key == store.assets.put_bytes(b"glTF-demo-bytes", ".glb")
    assert store.assets.open_path(key).read_bytes() == b"glTF-demo-bytes"
    with pytest.raises(InvalidInput):
        store.assets.path("../../etc/passwd")


def test_layer_names_that_look_like_index_names_coexist(store):
    store.write_features(Layer(id="a"), [FeatureInput("1", Point(X0, Y0), {})])
    store.write_features(Layer(id="a_open"), [FeatureInput("1", Point(X0, Y0), {})])
    store.write_features(Layer(id="a_feature_version"), [FeatureInput("1", Point(X0, Y0), {})])
    assert [lay.id for lay in store.list_layers()] == ["a", "a_feature_version", "a_open"]


def test_boolean_filters_do_not_match_numbers(store):
    rows = [
        FeatureInput("flag", Point(X0, Y0), {"operable": True}),
        FeatureInput("one", Point(X0, Y0), {"operable": 1}),
        FeatureInput("text", Point(X0, Y0), {"operable": "true"}),
    ]
    store.write_features(Layer(id="valves"), rows)
    assert [f.fid for f in store.query("valves", filters={"operable": "true"}).features] == ["flag"]
    assert [f.fid for f in store.query("valves", filters={"operable": "1"}).features] == ["one"]


def test_two_layers_may_share_a_title(store):
    for layer_id in ("roads_500", "roads_2000"):
        store.write_features(Layer(id=layer_id, title="Roads"), [FeatureInput("1", Point(X0, Y0), {})])
    assert [lay.title for lay in store.list_layers()] == ["Roads", "Roads"]
