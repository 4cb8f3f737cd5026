"""A PostGIS server that goes away and comes back: clear errors meanwhile, recovery after."""

from __future__ import annotations

import pytest
from shapely.geometry import Point

from twin.model import FeatureInput, Layer
from twin.store import init_store
from twin.store.base import StoreUnavailable


def test_store_reconnects_after_a_server_restart(postgis_cluster, tmp_path):
    url = postgis_cluster.create_database("outage", template="twin_template")
    store = init_store(tmp_path / "data", "EPSG:4549", url=url)
    try:
        store.write_features(Layer(id="poi"), [FeatureInput("a", Point(386_000, 3_546_000), {})])
        postgis_cluster.stop()
        try:
            with pytest.raises(StoreUnavailable):
                store.ping()
            with pytest.raises(StoreUnavailable):
                store.write_features(Layer(id="poi"), [FeatureInput("b", Point(386_010, 3_546_000), {})])
        finally:
            postgis_cluster.start()
        store.ping()
        assert [f.fid for f in store.query("poi", limit=None).features] == ["a"]
        store.write_features(Layer(id="poi"), [FeatureInput("b", Point(386_010, 3_546_000), {})])
        assert sorted(f.fid for f in store.query("poi", limit=None).features) == ["a", "b"]
    finally:
        store.close()
        postgis_cluster.drop_database("outage")
