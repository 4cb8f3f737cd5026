"""Vector tiles: cold generation against PostGIS ST_AsMVT, warm serving with wrk, tile sizes.

Datasets: the demo district, the OSM Helsinki extract of the shared test data (project CRS
EPSG:3067) and a generated 20 km city. Each is in an embedded (GeoPackage) twin and, for the
same tiles, in a PostGIS twin of a throwaway cluster.

(a) Cold generation: every sampled tile is built once on each backend, alternately, through the
    same `TileBuilder`: the embedded store encodes in Python (numpy, shapely, compiled loops),
    PostGIS answers with ST_AsMVT. p50/p95 per zoom band, and their ratio (target <= 2x).
    The city's PostGIS twin holds the features of a 5 km square in its centre (loading 2 million
    features into PostGIS on every run would take most of the time budget); its tiles are
    sampled inside that square, so both backends build them from the same features.
(b) Warm serving: the demo tiles cached, `twin serve --workers 2` with access logs off, `wrk`
    on loopback at 1, 16 and 64 connections (target >= 5,000 tiles/s, zero errors). Baselines
    measured in the same run: bare uvicorn (2 workers answering two bytes: what the machine
    allows) and the twin's own `/health` (routing, middleware and a store ping).
(c) Tile sizes per zoom: max and p95, raw and gzipped, over the tiles built in (a).

The generated city (sources and its embedded twin) is kept in the system temp directory
between runs; the first run generates and loads it, which takes several minutes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.load_bench import _free_port, _get
from bench.report import heading, line, timed
from ingestion.basemap import ingest_basemap
from ingestion.manifest import load_manifest
from tiles.vector import tilesets as ts
from tiles.vector.build import TileBuilder
from tiles.vector.service import TileService
from tiles.vector.tms import mercator_bounds, tiles_in
from tiles.vector.zooms import band_zooms
from twin.model import BBox, Scenario
from twin.store import Store, init_store, open_store

BANDS = {"1:10000": (13, 15), "1:2000": (16, 17), "1:500": (18, 19)}
PER_ZOOM = 8  # tiles sampled per zoom and tileset
CITY_KM, CITY_SEED = 20, 20240601
CITY_WINDOW = 5_000.0  # metres: the centre square the city's PostGIS twin holds
HELSINKI = "vector/osm_helsinki_gpkg/helsinki_osm.gpkg"
CONNECTIONS = (1, 16, 64)
WRK_SECONDS = 10
TARGET_RPS = 5000


# ----- datasets ---------------------------------------------------------------------------------
def _testdata() -> Path:
    return Path(os.environ.get("TWIN_TESTDATA", Path(__file__).resolve().parents[2] / "shared" / "testdata"))


def _copy_layers(source: Store, target: Store, layer_ids: list[str], bbox: BBox | None) -> int:
    """The current versions of some layers (in a box) written into another store."""
    from twin.model import FeatureInput

    count = 0
    for layer_id in layer_ids:
        layer = source.get_layer(layer_id)
        features = source.query(layer_id, bbox=bbox, limit=None).features
        if features:
            target.write_features(layer, [FeatureInput(f.fid, f.geometry, f.properties) for f in features])
            count += len(features)
    return count


def demo(root: Path, postgis_url: str | None) -> tuple[Store, Store | None, dict]:
    from sample_data.district import generate

    seconds, manifest = timed(lambda: generate(root / "demo-sources", parts={"basemap", "networks"}))
    embedded = init_store(root / "demo", manifest["crs"])
    load_manifest(embedded, root / "demo-sources", manifest)
    server = None
    if postgis_url:
        server = init_store(root / "demo-pg", manifest["crs"], url=postgis_url)
        load_manifest(server, root / "demo-sources", manifest)
    line("demo district generated (basemap, networks) and loaded on both backends", f"{seconds:.1f} s to generate")
    return embedded, server, {"bbox": manifest["bbox"], "tilesets": ["basemap", "pipes"]}


def helsinki(root: Path, postgis_url: str | None) -> tuple[Store, Store | None, dict] | None:
    source = _testdata() / HELSINKI
    if not source.exists():
        line("Helsinki OSM", f"skipped: {source} not found (set TWIN_TESTDATA)")
        return None
    stores = [init_store(root / "helsinki", "EPSG:3067")]
    if postgis_url:
        stores.append(init_store(root / "helsinki-pg", "EPSG:3067", url=postgis_url))
    for store in stores:
        for name in ("buildings", "roads"):
            ingest_basemap(store, source, layer_id=f"helsinki_{name}", source_layer=name)
    box = BBox(*stores[0].get_layer("helsinki_roads").bbox)
    layers = ["helsinki_buildings", "helsinki_roads"]
    return stores[0], stores[1] if postgis_url else None, {"bbox": box.as_tuple(), "tilesets": layers}


def _city_twin() -> Path:
    """The generated city's sources and embedded twin, kept between runs."""
    base = Path(tempfile.gettempdir()) / f"cim-twin-bench-city-{CITY_KM}km-{CITY_SEED}"
    data = Path(f"{base}-twin") / "data"
    if not (base / "manifest.json").exists():
        seconds, _ = timed(
            lambda: subprocess.run(
                [sys.executable, "-m", "sample_data", str(base), "--size", str(CITY_KM), "--seed", str(CITY_SEED)]
                + ["--parts", "basemap,networks"],
                check=True,
                capture_output=True,
            )
        )
        line(f"city: generated {CITY_KM} km x {CITY_KM} km (first run only)", f"{seconds:.0f} s")
    if not (data / "twin.gpkg").exists():
        shutil.rmtree(data, ignore_errors=True)
        manifest = json.loads((base / "manifest.json").read_text())
        partial = data.with_name("loading")
        shutil.rmtree(partial, ignore_errors=True)

        def load() -> None:
            with init_store(partial, manifest["crs"]) as store:
                load_manifest(store, base, manifest)

        seconds, _ = timed(load)
        partial.rename(data)
        line("city: loaded into an embedded twin (first run only)", f"{seconds:.0f} s")
    return data


def city(root: Path, postgis_url: str | None) -> tuple[Store, Store | None, dict]:
    embedded = open_store(_city_twin())
    minx, miny, maxx, maxy = embedded.get_layer("buildings_2000").bbox
    cx, cy, half = (minx + maxx) / 2, (miny + maxy) / 2, CITY_WINDOW / 2
    window = BBox(cx - half, cy - half, cx + half, cy + half)
    counts = {layer.id: layer.feature_count for layer in embedded.list_layers()}
    line("city: features in the embedded twin", f"{sum(counts.values()):,}")
    server = None
    wanted = ts.basemap(embedded.list_layers(), Scenario.current, band_zooms(embedded)).layer_ids
    wanted += ts.pipes(embedded.list_layers(), Scenario.current).layer_ids
    if postgis_url:
        server = init_store(root / "city-pg", embedded.crs, url=postgis_url)
        seconds, copied = timed(lambda: _copy_layers(embedded, server, list(wanted), window))
        line(
            f"city: PostGIS twin of the centre {CITY_WINDOW / 1000:.0f} km square",
            f"{copied:,} features, {seconds:.0f} s",
        )
    # sampled tiles lie a tile's width inside the window, so both backends see all their features
    inner = BBox(cx - half / 2, cy - half / 2, cx + half / 2, cy + half / 2)
    return embedded, server, {"bbox": inner.as_tuple(), "tilesets": ["basemap", "pipes"], "zooms": (14, 19)}


# ----- (a) cold generation and (c) sizes ---------------------------------------------------------------
def sample(store: Store, bbox: tuple, z: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    tiles = list(tiles_in(mercator_bounds(BBox(*bbox), store.crs), z))
    picked = rng.choice(len(tiles), size=min(PER_ZOOM, len(tiles)), replace=False)
    return [(z, tiles[i].x, tiles[i].y) for i in sorted(picked)]


def band_of(z: int) -> str:
    return next(band for band, (low, high) in BANDS.items() if low <= z <= high)


def cold(name: str, embedded: Store, server: Store | None, spec: dict) -> None:
    rng = np.random.default_rng(7)
    builders = {"embedded": TileBuilder(embedded)}
    stores = {"embedded": embedded}
    if server is not None:
        builders["postgis"], stores["postgis"] = TileBuilder(server), server
    resolved = {}
    for label, store in stores.items():
        layers = {layer.id: layer for layer in store.list_layers()}
        for tileset in spec["tilesets"]:
            resolved[label, tileset] = (
                ts.resolve(tileset, list(layers.values()), Scenario.current, band_zooms(store)),
                layers,
            )
    low_zoom, high_zoom = spec.get("zooms", (13, 19))
    tiles = [t for z in range(low_zoom, high_zoom + 1) for t in sample(embedded, spec["bbox"], z, rng)]
    times: dict[tuple[str, str], list[float]] = {}
    sizes: dict[int, list[tuple[int, int]]] = {}
    for label, builder in builders.items():  # warm up: imports, compiled loops, connections
        tileset, layers = resolved[label, spec["tilesets"][0]]
        builder.build(tileset, layers, *tiles[0], None)
    for n, (z, x, y) in enumerate(tiles):
        for tileset_name in spec["tilesets"]:
            order = list(builders) if n % 2 == 0 else list(builders)[::-1]  # alternate who goes first
            for label in order:
                tileset, layers = resolved[label, tileset_name]
                start = time.perf_counter()
                data = builders[label].build(tileset, layers, z, x, y, None)
                seconds = time.perf_counter() - start
                times.setdefault((label, band_of(z)), []).append(seconds * 1000)
                if label == "embedded" and data:
                    sizes.setdefault(z, []).append((len(data), len(gzip.compress(data, 6))))
    heading(f"vector tiles, cold generation: {name} ({len(tiles)} tiles x {len(spec['tilesets'])} tilesets)")
    for band, (low, high) in BANDS.items():
        own = np.array(times.get(("embedded", band), []))
        if not len(own):
            continue
        text = f"p50 {np.percentile(own, 50):.1f} ms, p95 {np.percentile(own, 95):.1f} ms"
        baseline = np.array(times.get(("postgis", band), []))
        if len(baseline):
            p50, p95 = np.percentile(baseline, 50), np.percentile(baseline, 95)
            text += (
                f" | PostGIS ST_AsMVT p50 {p50:.1f} ms, p95 {p95:.1f} ms"
                f" | ratio p50 {np.percentile(own, 50) / p50:.2f}x, p95 {np.percentile(own, 95) / p95:.2f}x"
            )
        line(f"{band} band (z{low}-{high}), embedded", text)
    if server is None:
        line("PostGIS baseline", "skipped: no PostgreSQL/PostGIS on this machine")
    heading(f"vector tile sizes: {name} (tiles of (a), uncompressed and gzip)")
    for z in sorted(sizes):
        raw = np.array([s[0] for s in sizes[z]]) / 1024
        packed = np.array([s[1] for s in sizes[z]]) / 1024
        line(
            f"z{z} ({len(raw)} tiles)",
            f"max {raw.max():.1f} KB (gzip {packed.max():.1f}), p95 {np.percentile(raw, 95):.1f} KB "
            f"(gzip {np.percentile(packed, 95):.1f})",
        )


# ----- (b) warm serving ------------------------------------------------------------------------
WRK_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], {["Accept-Encoding"] = "gzip"})
end
"""


async def bare_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The baseline server: uvicorn answering every request with two bytes, nothing else."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def _wrk(base: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    import re

    command = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    text = subprocess.run([*command, base], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", text).groups()
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p99": float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit],
        "errors": (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
    }


def warm(data: Path, bbox: tuple, work: Path) -> None:
    heading("vector tiles, warm (cached) serving: wrk on loopback, twin serve --workers 2, demo district")
    if shutil.which("wrk") is None:
        line("skipped", "wrk is not installed (apt-get install wrk)")
        return
    paths = []
    with open_store(data) as store:
        service = TileService(store)
        seconds, _ = timed(lambda: _fill(service, store, bbox, paths))
        service.close()
    line(f"cache filled: {len(paths)} tiles of basemap and pipes, z13-z18", f"{seconds:.1f} s")
    (work / "paths.txt").write_text("\n".join(paths))
    script = work / "tiles.lua"
    script.write_text(WRK_SCRIPT % (work / "paths.txt"))
    (work / "health.txt").write_text("/health")
    health = work / "health.lua"
    health.write_text(WRK_SCRIPT % (work / "health.txt"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    bare = _serve(
        [sys.executable, "-m", "uvicorn", "bench.tiles_bench:bare_app", "--port", str(port), "--workers", "2"]
        + ["--log-level", "warning", "--no-access-log"],
        dict(os.environ),
    )
    try:
        _wait(base, path="/")
        ceilings = {connections: _wrk(base, health, connections, 5) for connections in CONNECTIONS}
    finally:
        _stop(bare)
    line(
        "baseline: bare uvicorn, 2 workers (a 2-byte answer)",
        ", ".join(f"{c} conn. {ceilings[c]['rps']:,.0f} req/s" for c in CONNECTIONS),
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TWIN_LOG_LEVEL": "WARNING", "TWIN_DATA": str(data)}
    server = _serve(
        [sys.executable, "-c", "from twin.cli import main; main()", "serve", "--data", str(data), "--port", str(port)]
        + ["--workers", "2"],
        env,
    )
    try:
        _wait(base)
        _wrk(base, script, 16, 3)  # each worker opens the cache and fills its memory
        baseline = _wrk(base, health, 64, 5)
        line(
            "baseline: twin /health, 64 connections (routing, middleware, a store ping)",
            f"{baseline['rps']:,.0f} req/s",
        )
        for connections in CONNECTIONS:
            figures = _wrk(base, script, connections, WRK_SECONDS)
            verdict = "meets" if figures["rps"] >= TARGET_RPS and not figures["errors"] else "below"
            line(
                f"{connections} connection{'s' if connections > 1 else ''}, {WRK_SECONDS} s",
                f"{figures['rps']:,.0f} tiles/s ({figures['rps'] / ceilings[connections]['rps']:.2f}x bare uvicorn, "
                f"{figures['rps'] / baseline['rps']:.2f}x /health), p99 {figures['p99']:.1f} ms, "
                f"errors {figures['errors']} ({verdict} the {TARGET_RPS:,} tiles/s target)",
            )
    finally:
        _stop(server)


def _fill(service: TileService, store: Store, bbox: tuple, paths: list[str]) -> None:
    for tileset in ("basemap", "pipes"):
        for z in range(13, 19):
            for tile in tiles_in(mercator_bounds(BBox(*bbox), store.crs), z):
                if not service.tile(tileset, z, tile.x, tile.y).empty:
                    paths.append(f"/tiles/{tileset}/{z}/{tile.x}/{tile.y}.mvt")


def _wait(base: str, seconds: float = 180, path: str = "/health") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if _get(f"{base}{path}")[0] == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("twin serve did not start")


# ----- run ------------------------------------------------------------------------------------------
def _postgis() -> tuple[object | None, Callable[[str], str | None]]:
    try:
        from tests.postgis_cluster import ClusterUnavailable, create_postgis_template, start_cluster
    except ImportError:
        return None, lambda _: None
    try:
        cluster = start_cluster()
        template = create_postgis_template(cluster)
    except ClusterUnavailable as exc:
        line("PostGIS", f"skipped: {exc}")
        return None, lambda _: None
    return cluster, lambda name: cluster.create_database(name, template=template)


def run() -> None:
    started = time.perf_counter()
    cluster, database = _postgis()
    work = Path(tempfile.mkdtemp(prefix="twin-tiles-"))
    opened: list[Store] = []
    try:
        heading("vector tiles: datasets")
        for name, make in (("demo district", demo), ("OSM Helsinki", helsinki), (f"city {CITY_KM} km", city)):
            made = make(work, database(name.split()[0].lower()))
            if made is None:
                continue
            embedded, server, spec = made
            opened += [s for s in (embedded, server) if s is not None]
            cold(name, embedded, server, spec)
            if name == "demo district":
                demo_spec = spec
        warm(work / "demo", demo_spec["bbox"], work)
    finally:
        for store in opened:
            store.close()
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    line("tiles benchmark total", f"{time.perf_counter() - started:.0f} s")
