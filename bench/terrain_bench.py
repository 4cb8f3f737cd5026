"""Terrain: quantized-mesh tiles per second, cold, per zoom band over the demo district's DEM.

Every tile the layer.json declares available over the district is built from nothing (a fresh
`TerrainSource` per band, so only neighbours within the band are shared, as a client panning
over the band would get them), with normals, and gzip-compressed as served. Baselines on the
same tiles in the same run:

- `regular 65x65 grid`: the same DEM sampling and encoder, every sample a vertex (no RTIN
  simplification, no neighbour stitching): what a plain heightmap-to-mesh server sends;
- `rasterio warp only`: `rasterio.warp.reproject` of the DEM into the tile's 65 x 65 lon/lat
  grid (bilinear) and nothing else: the floor of any tile server that reads the DEM per tile.
"""

from __future__ import annotations

import gzip
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject

from bench.report import heading, line
from ingestion.raster import ingest_raster
from tiles.terrain import TerrainSource, TileId
from tiles.terrain.encode import QUANTIZED_MAX, TerrainMesh, encode_tile
from tiles.terrain.grid import CELLS, GRID_SIZE, tile_bounds
from tiles.terrain.normals import lattice_normals
from twin.model import LayerKind
from twin.store import init_store

BANDS = ((10, 12), (13, 14), (15, 16), (17, 17))


def demo_twin(root: Path):
    """A twin holding only the demo district's DEM (and its geoid offset)."""
    from sample_data.district import generate

    manifest = generate(root / "sources", parts={"dem"})
    raster = next(r for r in manifest["rasters"] if r["id"] == "dem")
    store = init_store(root / "twin", manifest["crs"])
    store.set_meta("geoid_offset", str(manifest["geoid_offset"]))
    ingest_raster(store, root / "sources" / raster["path"], "dem", kind=LayerKind.terrain, role="dem")
    return store


def band_tiles(source: TerrainSource, low: int, high: int) -> list[TileId]:
    tiles = []
    for z in range(low, min(high, source.max_zoom) + 1):
        for r in source.available[z]:
            tiles += [
                TileId(z, x, y) for x in range(r["startX"], r["endX"] + 1) for y in range(r["startY"], r["endY"] + 1)
            ]
    return tiles


def regular_grid_tile(source: TerrainSource, tile: TileId) -> bytes:
    """Baseline: the tile's full 65 x 65 sample grid as the mesh, same sampling and encoder."""
    col, row = (a.ravel() for a in np.meshgrid(np.arange(GRID_SIZE), np.arange(GRID_SIZE)))
    corner = (row[:-GRID_SIZE] * GRID_SIZE + col[:-GRID_SIZE])[col[:-GRID_SIZE] < CELLS]
    triangles = np.concatenate(
        [
            np.column_stack([corner, corner + 1, corner + GRID_SIZE + 1]),
            np.column_stack([corner, corner + GRID_SIZE + 1, corner + GRID_SIZE]),
        ]
    )
    lon, lat, heights = source.sample(tile)
    inner = heights[1:-1, 1:-1]
    mesh = TerrainMesh(
        u=(col * QUANTIZED_MAX + CELLS // 2) // CELLS,
        v=(row * QUANTIZED_MAX + CELLS // 2) // CELLS,
        lon=lon[1:-1][col],
        lat=lat[1:-1][row],
        height=inner[row, col],
        triangles=triangles,
        normals=lattice_normals(lon, lat, heights)[row, col],
    )
    return gzip.compress(encode_tile(mesh, normals=True), 6, mtime=0)


def warp_only(src: rasterio.io.DatasetReader, tile: TileId) -> np.ndarray:
    """Floor: the DEM (kept open) warped into the tile's 65 x 65 lon/lat sample grid, nothing more."""
    west, south, east, north = tile_bounds(tile).as_tuple()
    step = (east - west) / CELLS
    out = np.full((GRID_SIZE, GRID_SIZE), np.nan, dtype=np.float32)
    reproject(
        rasterio.band(src, 1),
        out,
        dst_transform=from_origin(west - step / 2, north + step / 2, step, step),
        dst_crs="EPSG:4490",
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    return out


def rate(count: int, seconds: float, cpu: float) -> str:
    return f"{count / seconds:8.1f} tiles/s ({seconds * 1000 / count:6.1f} ms/tile, cpu {cpu * 1000 / count:5.1f} ms)"


def timed_map(func, items: list) -> tuple[float, float, list]:
    """Wall and CPU seconds of `func` over `items`: CPU time shows the cost when other work shares the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    results = [func(item) for item in items]
    return time.perf_counter() - wall, time.process_time() - cpu, results


def run() -> None:
    heading("terrain: quantized-mesh tiles of the demo district's 2 m DEM, cold, per zoom band")
    with tempfile.TemporaryDirectory() as tmp:
        store = demo_twin(Path(tmp))
        warm_up = TerrainSource.from_store(store)
        warm_up.tile(TileId(0, 0, 0), normals=True)  # compile the numba kernels outside the timings
        dem_path = warm_up.dem.path
        line("DEM", f"{dem_path.rsplit('/', 1)[-1][:12]}..., 1000 x 1000 cells, max zoom {warm_up.max_zoom}")
        totals = {"ours": [0, 0.0, 0.0], "grid": [0, 0.0, 0.0], "warp": [0, 0.0, 0.0]}
        for low, high in BANDS:
            tiles = band_tiles(warm_up, low, high)
            if not tiles:
                continue
            source = TerrainSource.from_store(store)
            ours, ours_cpu, built = timed_map(partial(source.tile, normals=True), tiles)
            vertices = np.mean([len(source.mesh(t).u) for t in tiles])

            grid_source = TerrainSource.from_store(store)
            regular, regular_cpu, grid = timed_map(partial(regular_grid_tile, grid_source), tiles)

            with rasterio.open(dem_path) as src:
                warp, warp_cpu, _ = timed_map(partial(warp_only, src), tiles)

            for key, seconds, cpu in (
                ("ours", ours, ours_cpu),
                ("grid", regular, regular_cpu),
                ("warp", warp, warp_cpu),
            ):
                totals[key][0] += len(tiles)
                totals[key][1] += seconds
                totals[key][2] += cpu
            gz = np.mean([len(b.gzipped) for b in built])
            grid_gz = np.mean([len(b) for b in grid])
            heading(f"zoom {low}-{high}: {len(tiles)} tiles")
            line("RTIN + stitched edges + normals, gzip (ours)", rate(len(tiles), ours, ours_cpu))
            line("regular 65x65 grid, same sampling + encoder (baseline)", rate(len(tiles), regular, regular_cpu))
            line("rasterio warp only, 65x65 bilinear (floor)", rate(len(tiles), warp, warp_cpu))
            line("ours / regular grid speed", f"{regular / ours:.2f}x")
            line("ours / warp-only speed", f"{warp / ours:.2f}x")
            line("vertices per tile (ours; regular grid 4225)", f"{vertices:.0f}")
            line("tile size gzip, ours vs regular grid", f"{gz / 1024:.1f} KiB vs {grid_gz / 1024:.1f} KiB")
            line("tile size ratio (regular grid / ours)", f"{grid_gz / gz:.1f}x smaller")

        heading("all bands")
        for key, label in (("ours", "ours"), ("grid", "regular 65x65 grid"), ("warp", "rasterio warp only")):
            line(label, rate(*totals[key]))

        store.close()
