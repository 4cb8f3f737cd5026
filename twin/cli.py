"""The `twin` command: init, ingest, layers, serve, demo.

Bad input ends with exit code 2 and one line on stderr saying why; long work shows progress.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twin.model import InvalidInput, LayerKind, Scenario, TwinError, parse_instant
from twin.store import default_data_dir, init_store, open_store

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
INGEST_KINDS = ("basemap", "raster", "observations")
LATER_KINDS = ("ifc", "oblique", "mesh", "pointcloud", "pipes", "epanet", "swmm", "citygml")


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
    with open_store(data_dir(data)) as store:
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


def main() -> None:
    """Entry point: user errors become one line and exit code 2."""
    try:
        app()
    except TwinError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["LayerKind", "app", "main"]
