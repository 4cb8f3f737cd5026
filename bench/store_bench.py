"""Store: ingest rate and 1:500-sheet bbox query latency on both backends, 100,000 features.

Baselines, measured in the same run on the same file: `geopandas.read_file` + `to_file`
(GeoPackage) for ingest, and `pyogrio.read_dataframe(bbox=...)` on that GeoPackage (GDAL with
its R-tree) for bbox queries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
from shapely import box

from bench.report import heading, latencies_ms, line, percentiles, timed
from ingestion.basemap import ingest_basemap
from tests.postgis_cluster import create_postgis_template
from twin.model import BBox
from twin.store import init_store

FEATURES = 100_000
SHEET = 250.0  # a 1:500 map sheet is 50 cm x 50 cm of paper: 250 m x 250 m
QUERIES = 200
X0, Y0 = 386_000.0, 3_546_000.0


def buildings(n: int, seed: int = 7) -> gpd.GeoDataFrame:
    """n building footprints on a jittered grid, 20 m apart on average (a dense city)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    x = X0 + (i % side) * 20.0 + rng.uniform(0, 6, n)
    y = Y0 + (i // side) * 20.0 + rng.uniform(0, 6, n)
    w, h = rng.uniform(6, 14, n), rng.uniform(6, 14, n)
    return gpd.GeoDataFrame(
        {
            "bid": [f"b{k}" for k in i],
            "floors": rng.integers(1, 30, n),
            "use": rng.choice(["residential", "office"], n),
        },
        geometry=box(x, y, x + w, y + h),
        crs="EPSG:4549",
    )


def sheets(frame: gpd.GeoDataFrame, count: int, seed: int = 11) -> list[BBox]:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = frame.total_bounds
    xs = rng.uniform(minx, maxx - SHEET, count)
    ys = rng.uniform(miny, maxy - SHEET, count)
    return [BBox(x, y, x + SHEET, y + SHEET) for x, y in zip(xs, ys, strict=True)]


def run() -> None:
    heading(f"store: {FEATURES:,} building footprints, 1:500 sheet queries ({SHEET:.0f} m x {SHEET:.0f} m)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = buildings(FEATURES)
        source = root / "source.gpkg"
        frame.to_file(source, driver="GPKG")
        baseline_s, _ = timed(lambda: gpd.read_file(source).to_file(root / "copy.gpkg", driver="GPKG"))
        baseline_rate = FEATURES / baseline_s
        line("baseline geopandas read_file + to_file", f"{baseline_rate:,.0f} features/s")
        boxes = sheets(frame, QUERIES)
        gdal = latencies_ms(lambda b: pyogrio.read_dataframe(source, bbox=b.as_tuple()), boxes)
        line("baseline pyogrio bbox read (GDAL R-tree)", percentiles(gdal))
        backends = [("embedded GeoPackage", None)]
        cluster = _postgis()
        if cluster is not None:
            template = create_postgis_template(cluster)
            backends.append(("PostGIS", cluster.create_database("bench", template=template)))
        try:
            for name, url in backends:
                store = init_store(root / f"data-{len(url or '')}", "EPSG:4549", url=url)
                seconds, report = timed(
                    lambda s=store: ingest_basemap(s, source, layer_id="buildings", scale_band="1:500")
                )
                rate = FEATURES / seconds
                line(f"{name}: ingest", f"{rate:,.0f} features/s ({rate / baseline_rate:.2f}x baseline)")
                query = latencies_ms(lambda b, s=store: s.query("buildings", bbox=b, limit=None), boxes)
                counts = [len(store.query("buildings", bbox=b, limit=None).features) for b in boxes[:20]]
                line(f"{name}: bbox query ({np.mean(counts):.0f} features/sheet)", percentiles(query))
                ratio = np.percentile(gdal, 95) / np.percentile(query, 95)
                line(f"{name}: p95 speed vs GDAL bbox read", f"{ratio:.2f}x")
                store.close()
        finally:
            if cluster is not None:
                cluster.destroy()


def _postgis():
    """A throwaway PostGIS cluster, or None (said aloud) when PostgreSQL is not installed."""
    try:
        from tests.postgis_cluster import ClusterUnavailable, start_cluster
    except ImportError:
        line("PostGIS", "skipped: tests.postgis_cluster not importable")
        return None
    try:
        return start_cluster(durable=True)
    except ClusterUnavailable as exc:
        line("PostGIS", f"skipped: {exc}")
        return None
