"""The `twin` command: init, ingest, layers, serve, demo.

Bad input ends with exit code 2 and one line on stderr saying why; long work shows progress.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twin import cli_ops
from twin.integrity import guarded_ingest
from twin.model import InvalidInput, LayerKind, Scenario, TwinError, parse_instant
from twin.store import Store, default_data_dir, init_store, open_store

app = typer.Typer(
    help="CIM Twin: a spatiotemporal digital-twin server for cities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory holding twin.gpkg and the assets [default: $TWIN_DATA or ./twin-data]"),
]
INGEST_KINDS = ("basemap", "raster", "observations", "ifc")
INGEST_KINDS += ("pipes", "epanet", "swmm")
INGEST_KINDS += ("dxf",)
LATER_KINDS = ("oblique", "mesh", "pointcloud", "citygml")
INGEST_KINDS += ("oblique", "mesh")
INGEST_KINDS += ("pointcloud", "tileset", "citymodel", "citygml")
LATER_KINDS = tuple(k for k in LATER_KINDS if k not in INGEST_KINDS)


def data_dir(value: Path | None) -> Path:
    return value if value is not None else default_data_dir()


def progress_bar() -> Progress:
    """A bar on a terminal only, so that scripts and logs get just the result line."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def optional_time(text: str | None) -> datetime | None:
    return parse_instant(text) if text else None


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Data directory to create")],
    crs: Annotated[str, typer.Option(help="Projected, metric project CRS, e.g. EPSG:4549")] = "EPSG:4549",
    geoid_offset: Annotated[float, typer.Option(help="Geoid undulation N in metres (ellipsoidal = 1985 + N)")] = 0.0,
    geoid_grid: Annotated[str | None, typer.Option(help="PROJ geoid grid file; overrides the offset")] = None,
) -> None:
    """Create a new, empty twin in DIRECTORY with its project CRS."""
    from twin.crs import check_project_crs

    code = check_project_crs(crs)
    with init_store(directory, code) as store:
        store.set_meta("geoid_offset", str(geoid_offset))
        if geoid_grid:
            store.set_meta("geoid_grid", geoid_grid)
    console.print(f"created twin in {directory} (project CRS {code})")


@app.command()
def ingest(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(INGEST_KINDS + LATER_KINDS)}")],
    path: Annotated[Path, typer.Argument(help="File (or folder) to ingest")],
    layer: Annotated[str | None, typer.Option("--layer", help="Target layer id")] = None,
    source_layer: Annotated[str | None, typer.Option(help="Layer name inside a multi-layer file")] = None,
    crs: Annotated[str | None, typer.Option("--crs", help="Source CRS when the file has none (or a wrong one)")] = None,
    scenario: Annotated[Scenario, typer.Option(help="current or planned")] = Scenario.current,
    scale: Annotated[str | None, typer.Option(help="Scale band: 1:500, 1:2000 or 1:10000")] = None,
    valid_from: Annotated[str | None, typer.Option(help="When this edition became valid (RFC 3339)")] = None,
    title: Annotated[str | None, typer.Option(help="Layer title")] = None,
    append: Annotated[bool, typer.Option(help="Only add/update the features given (default: new edition)")] = False,
    at: Annotated[str | None, typer.Option("--at", help="IFC without georeferencing: lon,lat,height")] = None,
    mapping: Annotated[
        Path | None, typer.Option(help="pipes: field-mapping JSON for another schema; dxf: layer-code mapping")
    ] = None,
    valves: Annotated[Path | None, typer.Option(help="epanet: valve layer CSV (link,node pairs, as WNTR's)")] = None,
    origin: Annotated[str | None, typer.Option(help="epanet/swmm: schematic X,Y[,SCALE]; oblique/mesh: X,Y,Z")] = None,
    pipe_class: Annotated[str | None, typer.Option("--class", help="pipes/swmm: CJJ 61 class (JS, YS, ...)")] = None,
    tolerance: Annotated[float, typer.Option(help="pipes/epanet/swmm: snapping tolerance, metres")] = 0.05,
    max_length: Annotated[float, typer.Option(help="pipes/epanet/swmm: longest plausible pipe, metres")] = 500.0,
    texture: Annotated[str, typer.Option("--texture", help="oblique/mesh: texture format, jpeg or webp")] = "jpeg",
    data: DataOption = None,
) -> None:
    """Ingest a source file into the twin (atomic: on any error nothing changes)."""
    if kind in LATER_KINDS:
        raise InvalidInput(
            f"ingest kind {kind!r} is not supported by this version; supported: {', '.join(INGEST_KINDS)}"
        )
    if kind not in INGEST_KINDS:
        raise InvalidInput(f"unknown ingest kind {kind!r}; expected one of {', '.join(INGEST_KINDS)}")
    start = optional_time(valid_from)
    with open_store(data_dir(data)) as store, guarded_ingest(store):
        if kind == "basemap":
            from ingestion.basemap import ingest_basemap

            with progress_bar() as bar:
                task = bar.add_task(f"ingest {path.name}", total=None)
                report = ingest_basemap(
                    store,
                    path,
                    layer_id=layer,
                    source_layer=source_layer,
                    source_crs=crs,
                    scale_band=scale,
                    scenario=scenario,
                    valid_from=start,
                    title=title,
                    replace=not append,
                    progress=lambda n: bar.advance(task, n),
                )
        elif kind == "ifc":
            from ingestion.ifc import ingest_ifc
            from ingestion.ifc_georef import parse_position

            with progress_bar() as bar:
                task = bar.add_task(f"ingest {path.name}", total=None)
                report = ingest_ifc(
                    store,
                    path,
                    layer_id=layer,
                    source_crs=crs,
                    at=parse_position(at),
                    scenario=scenario,
                    valid_from=start,
                    title=title,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        elif kind in ("pipes", "epanet", "swmm"):
            from ingestion.network_ingest import ingest_network

            report = ingest_network(
                store,
                kind,
                path,
                network=layer,
                source_crs=crs,
                source_layers=source_layer.split(",") if source_layer else None,
                mapping=mapping,
                valves=valves,
                origin=origin,
                pipe_class=pipe_class,
                tolerance=tolerance,
                max_length=max_length,
                scenario=scenario,
                valid_from=start,
                replace=not append,
            )
        elif kind in ("oblique", "mesh"):
            from ingestion.mesh import ingest_mesh
            from ingestion.oblique import ingest_oblique

            reader = ingest_oblique if kind == "oblique" else ingest_mesh
            with progress_bar() as bar:
                task = bar.add_task(f"ingest {path.name}", total=None)
                report, summary = reader(
                    store,
                    path,
                    layer_id=layer,
                    crs=crs,
                    origin=origin,
                    scenario=scenario,
                    valid_from=start,
                    title=title,
                    texture_format=texture,
                    progress=lambda n: bar.advance(task, n),
                )
            typer.echo(_json({**report.as_dict(), "mesh": summary}))
            return
        elif kind in ("pointcloud", "tileset", "citymodel", "citygml"):
            from ingestion.citymodel import ingest_citymodel
            from ingestion.ifc_georef import parse_position
            from ingestion.pointcloud import ingest_pointcloud
            from ingestion.tileset import ingest_tileset

            reader = {"pointcloud": ingest_pointcloud, "tileset": ingest_tileset}.get(kind, ingest_citymodel)
            placed = {"at": parse_position(at)} if kind == "tileset" else {}
            report = reader(
                store, path, layer_id=layer, source_crs=crs, scenario=scenario, valid_from=start, title=title, **placed
            )
        elif kind == "dxf":
            from ingestion.dxf import ingest_dxf

            summary = ingest_dxf(
                store,
                path,
                scale_band=scale or "1:500",
                source_crs=crs,
                mapping_path=mapping,
                scenario=scenario,
                valid_from=start,
                sheet=layer,
            )
            typer.echo(_json(summary))
            return
        elif kind == "raster":
            from ingestion.basemap import layer_id_for
            from ingestion.raster import ingest_raster

            report = ingest_raster(
                store,
                path,
                layer_id_for(path, None, layer),
                title=title,
                source_crs=crs,
                scenario=scenario,
                valid_from=start,
            )
        else:
            from ingestion.observations import read_observations_csv

            count = store.add_observations(read_observations_csv(path))
            typer.echo(f'{{"observations": {count}}}')
            return
    typer.echo(_json(report.as_dict()))


@app.command()
def layers(data: DataOption = None) -> None:
    """List the twin's layers."""
    with open_store(data_dir(data)) as store:
        table = Table("id", "kind", "scale", "scenario", "features", "version", "time extent", box=None)
        for lay in store.list_layers():
            extent = (
                ""
                if lay.time_extent is None
                else f"{lay.time_extent[0]:%Y-%m-%d} .. "
                + ("" if lay.time_extent[1] is None else f"{lay.time_extent[1]:%Y-%m-%d}")
            )
            table.add_row(
                lay.id, lay.kind, lay.scale_band or "", lay.scenario, str(lay.feature_count), str(lay.version), extent
            )
        Console(width=None if console.is_terminal else 200).print(table)


@app.command()
def build(
    layer_ids: Annotated[list[str] | None, typer.Argument(help="Layers to build [default: every 3D layer]")] = None,
    data: DataOption = None,
) -> None:
    """(Re)build the 3D Tiles of layers for the current time (the server builds on first request otherwise)."""
    with open_store(data_dir(data)) as store:
        for layer_id, built in build_3d(store, layer_ids):
            typer.echo(_json({"layer": layer_id, "build": built.key, "folder": str(built.folder), **built.summary}))


def build_3d(store: Store, layer_ids: list[str] | None = None) -> Iterator[tuple[str, Any]]:
    """Build the 3D Tiles of `layer_ids` (default: every 3D layer, current and planned) now, so
    that no viewer waits for a build on its first visit."""
    from tiles.threed.build import ensure_built, is_3d

    for layer_id in layer_ids or [layer.id for layer in store.list_layers() if is_3d(layer)]:
        yield layer_id, ensure_built(store, layer_id)


@app.command("basemap-zooms")
def basemap_zooms(
    ranges: Annotated[
        str | None, typer.Argument(help="e.g. '1:10000=0-15,1:2000=16-17,1:500=18-22'; empty string: defaults")
    ] = None,
    data: DataOption = None,
) -> None:
    """Show or set the zoom range of each basemap scale band (`TWIN_BASEMAP_ZOOMS` overrides it)."""
    from tiles.vector.zooms import META_KEY, band_zooms, parse_band_zooms

    with open_store(data_dir(data)) as store:
        if ranges is not None:
            if ranges.strip():
                parse_band_zooms(ranges, "basemap zooms")
            store.set_meta(META_KEY, ranges.strip())
        shown = {band: f"{low}-{high}" for band, (low, high) in band_zooms(store).items()}
    typer.echo(_json(shown))


@app.command()
def export(
    kind: Annotated[str, typer.Argument(help="pmtiles or mbtiles")],
    tileset: Annotated[str, typer.Argument(help="A layer id, basemap or pipes")],
    out: Annotated[Path, typer.Argument(help="File to write")],
    minzoom: Annotated[int | None, typer.Option(help="Lowest zoom [default: the tileset's]")] = None,
    maxzoom: Annotated[int | None, typer.Option(help="Highest zoom [default: the tileset's, at most 18]")] = None,
    scenario: Annotated[Scenario, typer.Option(help="current or planned (composites)")] = Scenario.current,
    when: Annotated[
        str | None, typer.Option("--datetime", help="Versions valid then (RFC 3339) [default: now]")
    ] = None,
    data: DataOption = None,
) -> None:
    """Write a vector tileset as PMTiles or MBTiles for offline clients (tiles come from the tile cache)."""
    from tiles.vector.export import FORMATS, export_tiles
    from tiles.vector.service import TileService
    from twin.model import TimeFilter

    if kind not in FORMATS:
        raise InvalidInput(f"unknown export format {kind!r}; expected one of {', '.join(FORMATS)}")
    time = TimeFilter.parse(when)
    with open_store(data_dir(data)) as store, progress_bar() as bar:
        service = TileService(store, check_interval=0)
        task = bar.add_task(f"export {tileset}", total=None)
        try:
            summary = export_tiles(
                service,
                tileset,
                out,
                kind,
                minzoom=minzoom,
                maxzoom=maxzoom,
                scenario=scenario,
                time=time,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        finally:
            service.close()
    typer.echo(_json(summary))


@app.command()
def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
) -> None:
    """Serve the twin over HTTP (OGC API, tiles, viewer)."""
    import uvicorn

    directory = data_dir(data)
    open_store(directory).close()  # fail now, with a clear message, rather than in a worker
    os.environ["TWIN_DATA"] = str(directory)
    uvicorn.run("twin.api.app:app_from_env", factory=True, host=host, port=port, workers=workers)


@app.command()
def demo(
    data: DataOption = None,
    port: Annotated[int, typer.Option(help="Port to serve on")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve when built")] = True,
    size: Annotated[float, typer.Option(help="District size in km")] = 2.0,
    seed: Annotated[int, typer.Option(help="Generator seed")] = 20240601,
) -> None:
    """Generate the demo district near Nanjing, load it into a new twin, and serve it."""
    from ingestion.manifest import load_manifest
    from sample_data.district import generate

    directory = data_dir(data)
    if (directory / "twin.gpkg").exists():
        raise InvalidInput(f"{directory} already holds a twin; remove it or choose another --data")
    sources = directory / "sources"
    console.print(f"generating the demo district ({size} km) in {sources} ...")
    manifest = generate(sources, size_km=size, seed=seed)
    with init_store(directory, manifest["crs"]) as store, progress_bar() as bar:
        store.set_meta("geoid_offset", str(manifest.get("geoid_offset", 0.0)))
        load_manifest(store, sources, manifest, on_step=lambda name, total: _advance(bar, name, total))
        console.print("building the 3D Tiles ...")
        for _ in build_3d(store):
            pass
    console.print(f"demo twin ready in {directory}")
    if serve_after:
        serve(data=directory, host=host, port=port)


def _advance(bar: Progress, name: str, total: int) -> None:
    if not bar.tasks:
        bar.add_task("load demo layers", total=total)
    bar.update(bar.tasks[0].id, advance=1, description=f"load {name}")


def _json(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


analyze = typer.Typer(help="Analyses of the twin; each prints JSON on stdout.", no_args_is_help=True)
app.add_typer(analyze, name="analyze")

AnalysisTime = Annotated[str | None, typer.Option("--datetime", help="RFC 3339 instant to analyse [default: now]")]
SvgOption = Annotated[Path | None, typer.Option("--svg", help="Also write the SVG drawing to this file")]
LayersOption = Annotated[list[str] | None, typer.Option("--layer", help="Pipe layer (repeat) [default: every one]")]
InputCrs = Annotated[str | None, typer.Option("--crs", help="CRS of coordinates given: CRS84 or the project CRS")]


def emit_analysis(result: dict, svg: str | None = None, svg_path: Path | None = None) -> None:
    """An analysis answer as JSON on stdout, and its drawing to a file when asked."""
    if svg_path is not None and svg is not None:
        svg_path.write_text(svg, encoding="utf-8")
    typer.echo(_json(result))


def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise InvalidInput(f"invalid {what} {text!r}: expected {count} comma-separated numbers")
    return values


@analyze.command("section")
def analyze_section(
    positions: Annotated[list[str], typer.Argument(help="Line positions X,Y (lon,lat unless --crs), two or more")],
    crs: InputCrs = None,
    layer: LayersOption = None,
    at: AnalysisTime = None,
    svg: SvgOption = None,
    exaggeration: Annotated[float, typer.Option(help="Vertical exaggeration of the drawing")] = 1.0,
    data: DataOption = None,
) -> None:
    """Cross-section: pipes crossed by a line, with depths, elevations and clear distances."""
    from twin.analysis.geometry_requests import instant, line_input, run_cross_section
    from twin.analysis.section import cross_section_svg

    line = {"type": "LineString", "coordinates": [_numbers(p, 2, "position") for p in positions]}
    with open_store(data_dir(data)) as store:
        result = run_cross_section(store, line_input(store, line, crs), layers=layer, time=instant(at))
        emit_analysis(result.as_dict(), cross_section_svg(result, exaggeration=exaggeration) if svg else None, svg)


@analyze.command("profile")
def analyze_profile(
    pipes: Annotated[list[str] | None, typer.Argument(help="Pipe ids of a contiguous run, in order")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Pipe layer of the run")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Start node (with --to and --layer)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End node")] = None,
    at: AnalysisTime = None,
    svg: SvgOption = None,
    exaggeration: Annotated[float, typer.Option(help="Vertical exaggeration of the drawing")] = 10.0,
    data: DataOption = None,
) -> None:
    """Longitudinal profile of a pipe run: ground, inverts, crowns and crossing pipes."""
    from twin.analysis.geometry_requests import instant, run_profile
    from twin.analysis.section import profile_svg

    with open_store(data_dir(data)) as store:
        result = run_profile(store, pipes=pipes, layer=layer, start_node=start, end_node=end, time=instant(at))
        emit_analysis(result.as_dict(), profile_svg(result, exaggeration=exaggeration) if svg else None, svg)


@analyze.command("clearance")
def analyze_clearance(
    bbox: Annotated[str | None, typer.Option(help="minx,miny,maxx,maxy (lon/lat unless --crs)")] = None,
    crs: InputCrs = None,
    layer: LayersOption = None,
    structures: Annotated[list[str] | None, typer.Option("--structures", help="Building or BIM layer")] = None,
    parallel_angle: Annotated[float, typer.Option(help="Plan angle within which pipes run alongside")] = 30.0,
    at: AnalysisTime = None,
    svg: SvgOption = None,
    data: DataOption = None,
) -> None:
    """Pipe pairs and pipe-structure pairs closer than GB 50289-2016 allows."""
    from twin.analysis.clearance import clearance_svg
    from twin.analysis.geometry_requests import area_input, instant, run_clearance

    box = _numbers(bbox, 4, "bbox") if bbox else None
    with open_store(data_dir(data)) as store:
        report = run_clearance(
            store,
            area=area_input(store, box, None, crs),
            layers=layer,
            structures=structures or (),
            time=instant(at),
            parallel_angle=parallel_angle,
        )
        emit_analysis(report.as_dict(), clearance_svg(report) if svg else None, svg)


NetworkOption = Annotated[str, typer.Option("--network", help="Network name (water, gas, ...) or its pipes layer")]


def _emit_network_answer(store, answer: dict) -> None:
    """A pipe-network answer as JSON, geometries as GeoJSON in CRS84 (as the API gives them)."""
    from twin.api.analysis import answer_text
    from twin.api.params import crs_choice
    from twin.crs import CRS84

    typer.echo(answer_text(answer, store.crs, crs_choice(CRS84)))


@analyze.command("burst")
def analyze_burst(
    pipe: Annotated[str | None, typer.Argument(help="Burst pipe id (or give --point)")] = None,
    point: Annotated[str | None, typer.Option("--point", help="lon,lat of the burst, snapped to a pipe")] = None,
    network: NetworkOption = "water",
    failed: Annotated[list[str] | None, typer.Option("--failed", help="Valve that will not close (repeat)")] = None,
    tolerance: Annotated[float, typer.Option(help="Snapping distance for --point, metres")] = 50.0,
    simulate: Annotated[bool, typer.Option(help="Add the pressure impact (WNTR, water networks)")] = False,
    at: AnalysisTime = None,
    data: DataOption = None,
) -> None:
    """Pipe burst: valves to close in crew order, shut-in and lost-supply pipes, customers, outage area."""
    from twin.analysis import service

    with open_store(data_dir(data)) as store:
        answer = service.burst(
            service.AnalysisContext(store),
            network,
            pipe_id=pipe,
            point=_numbers(point, 2, "point") if point else None,
            tolerance=tolerance,
            failed_valves=failed or [],
            when=at,
            simulate=simulate,
        )
        _emit_network_answer(store, answer)


@analyze.command("isolation")
def analyze_isolation(
    valves: Annotated[list[str], typer.Argument(help="Valves to close")],
    network: NetworkOption = "water",
    at: AnalysisTime = None,
    data: DataOption = None,
) -> None:
    """Valve isolation: what loses supply when these valves are closed."""
    from twin.analysis import service

    with open_store(data_dir(data)) as store:
        _emit_network_answer(store, service.isolate(service.AnalysisContext(store), network, valves, at))


@analyze.command("segments")
def analyze_segments(
    network: NetworkOption = "water",
    members: Annotated[bool, typer.Option(help="List every segment's node and pipe ids")] = False,
    geometry: Annotated[bool, typer.Option(help="Add every segment's pipes as GeoJSON")] = False,
    at: AnalysisTime = None,
    data: DataOption = None,
) -> None:
    """Valve-bounded segments and valve criticality."""
    from twin.analysis import service

    with open_store(data_dir(data)) as store:
        context = service.AnalysisContext(store)
        _emit_network_answer(store, service.segments(context, network, members=members, geometry=geometry, when=at))


@analyze.command("stats")
def analyze_stats(
    layer: LayersOption = None,
    bbox: Annotated[str | None, typer.Option(help="minx,miny,maxx,maxy (lon/lat unless --crs)")] = None,
    polygon: Annotated[str | None, typer.Option(help="Region as WKT or GeoJSON (lon/lat unless --crs)")] = None,
    crs: InputCrs = None,
    group_by: Annotated[str | None, typer.Option(help="class,material,diameter,age,owner or any property")] = None,
    at: AnalysisTime = None,
    data: DataOption = None,
) -> None:
    """Pipe length and count by class, material, diameter band, age band and owner."""
    from twin.analysis import service
    from twin.analysis.stats import GROUPS
    from twin.crs import CRS84
    from twin.model import BBox

    with open_store(data_dir(data)) as store:
        box = BBox(*_numbers(bbox, 4, "bbox")) if bbox else None
        region = service.region_of(store, box, service.parse_polygon(polygon), crs or CRS84)
        groups = [g.strip() for g in (group_by or "").split(",") if g.strip()] or list(GROUPS)
        context = service.AnalysisContext(store)
        typer.echo(_json(service.stats(context, layer or [], region=region, group_by=groups, when=at)))


@analyze.command("flood")
def analyze_flood(
    city: Annotated[str, typer.Option(help="City whose GB 50014 storm formula to use")] = "nanjing",
    formula: Annotated[str | None, typer.Option(help="Own formula parameters A1,C,b,n (overrides --city)")] = None,
    return_period: Annotated[float, typer.Option("--return-period", "-P", help="Return period, years")] = 3.0,
    duration: Annotated[float, typer.Option(help="Storm duration, minutes")] = 120.0,
    step: Annotated[float, typer.Option(help="Hyetograph time step, minutes")] = 5.0,
    peak_ratio: Annotated[float, typer.Option(help="Chicago storm peak position r (0..1)")] = 0.4,
    rain: Annotated[Path | None, typer.Option(help="Measured rainfall CSV (time_s,value) instead of a storm")] = None,
    rain_unit: Annotated[str, typer.Option(help="Unit of --rain values: mm/h or mm per interval")] = "mm/h",
    gauge: Annotated[str | None, typer.Option(help="Replay what this rain gauge sensor logged")] = None,
    start: Annotated[str | None, typer.Option(help="With --gauge: from this time (ISO 8601)")] = None,
    end: Annotated[str | None, typer.Option(help="With --gauge: up to this time (ISO 8601)")] = None,
    resolution: Annotated[float | None, typer.Option(help="Model cell size in m (a multiple of the DEM's)")] = None,
    after: Annotated[float, typer.Option(help="Minutes simulated after the rain stops")] = 30.0,
    drainage: Annotated[str, typer.Option(help="network (inlets and pipes of the twin), design or none")] = "network",
    design_capacity: Annotated[float | None, typer.Option(help="Design drainage capacity, mm/h")] = None,
    dem: Annotated[str, typer.Option(help="DEM layer")] = "dem",
    roads: Annotated[str | None, typer.Option(help="Road centreline layer [default: the best-covering one]")] = None,
    fill_nodata: Annotated[bool, typer.Option(help="Fill DEM nodata holes instead of refusing them")] = False,
    static: Annotated[bool, typer.Option(help="Quick static ponding (fill-spill) of the storm's depth only")] = False,
    write: Annotated[bool, typer.Option(help="Store the max-depth raster and road sections as layers")] = True,
    result_id: Annotated[str, typer.Option(help="Prefix of the result layers")] = "flood",
    swmm: Annotated[Path | None, typer.Option(help="SWMM .inp of the sewers, run coupled as the drainage")] = None,
    swmm_crs: Annotated[str | None, typer.Option(help="CRS of the SWMM coordinates [default: the DEM's]")] = None,
    swmm_interval: Annotated[float, typer.Option(help="Coupling interval with SWMM, seconds")] = 60.0,
    data: DataOption = None,
) -> None:
    """Rainfall flooding: design storm, 2D surface model, drainage; flooded road sections as JSON."""
    from twin.analysis.flood import FloodParams, StormFormula, design_storm, measured
    from twin.analysis.flood.twin_adapter import ponding_on_twin, run_on_twin

    if (start or end) and gauge is None:
        raise InvalidInput("--start and --end go with --gauge")
    if gauge is not None and rain is not None:
        raise InvalidInput("give either --rain or --gauge, not both")
    if gauge is not None:
        storm = None  # read from the twin below
    elif rain is not None:
        import numpy as np

        try:
            table = np.loadtxt(rain, delimiter=",", ndmin=2, comments="#", skiprows=1)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{rain}: not a time_s,value CSV ({exc})") from exc
        storm = measured(table[:, 0], table[:, 1], unit=rain_unit)
    else:
        own = StormFormula(*_numbers(formula, 4, "formula")) if formula else city
        storm = design_storm(own, return_period, duration, step, peak_ratio)
    with open_store(data_dir(data)) as store:
        if storm is None:
            from twin.analysis.flood.gauges import gauge_rain

            when = [optional_time(text) for text in (start, end)]
            storm = gauge_rain(store, gauge, *when).hyetograph
        if static:
            answer = ponding_on_twin(
                store,
                storm.depth_mm,
                dem_layer=dem,
                roads_layer=roads,
                resolution_m=resolution,
                fill_nodata=fill_nodata,
            )
        else:
            params = FloodParams(
                storm=storm,
                resolution_m=resolution,
                after_storm_s=after * 60.0,
                drainage=drainage,
                design_capacity_mm_h=design_capacity,
                fill_nodata=fill_nodata,
                swmm_model=swmm,
                swmm_crs=swmm_crs,
                swmm_interval_s=swmm_interval,
            )
            with progress_bar() as bar:
                task = bar.add_task("flood model", total=100)
                answer = run_on_twin(
                    store,
                    params,
                    dem_layer=dem,
                    roads_layer=roads,
                    result_id=result_id,
                    write=write,
                    progress=lambda fraction, message: bar.update(task, completed=100 * fraction, description=message),
                )
    typer.echo(_json(answer))


cli_ops.register(app)  # keys, restrict, backup, restore


def main() -> None:
    """Entry point: user errors become one line and exit code 2."""
    try:
        app()
    except TwinError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["LayerKind", "app", "main"]
