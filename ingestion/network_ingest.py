"""One entry point for the three pipe sources: `twin ingest pipes|epanet|swmm`.

Reads the source into `PipeTables`, checks every network before writing any, keeps an EPANET
file as an asset for simulations, and writes each network with its topology report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ingestion.pipe_tables import NetworkIngest, PipeTables, check_tables
from ingestion.pipes import ingest_networks, read_pipe_tables
from ingestion.topology import DEFAULT_MAX_LENGTH, DEFAULT_TOLERANCE, TopologyOptions
from twin.model import InvalidInput, Scenario
from twin.store import Store

NETWORK_KINDS = ("pipes", "epanet", "swmm")


@dataclass
class NetworkIngestReport:
    """What an ingest of pipes wrote: per network its layers and its topology report."""

    networks: list[NetworkIngest]

    def as_dict(self) -> dict[str, Any]:
        return {"networks": [n.as_dict() for n in self.networks]}


def parse_origin(text: str | None) -> tuple[tuple[float, float] | None, float]:
    """'X,Y' or 'X,Y,SCALE' (project CRS metres; metres per drawing unit) for schematic drawings."""
    if not text:
        return None, 1.0
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or (len(values) == 3 and values[2] <= 0):
        raise InvalidInput(f"invalid --origin {text!r}: expected X,Y or X,Y,SCALE with a positive scale")
    return (values[0], values[1]), values[2] if len(values) == 3 else 1.0


def ingest_network(
    store: Store,
    kind: str,
    path: Path,
    *,
    network: str | None = None,
    source_crs: str | None = None,
    source_layers: list[str] | None = None,
    mapping: Path | None = None,
    valves: Path | None = None,
    origin: str | None = None,
    pipe_class: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_length: float = DEFAULT_MAX_LENGTH,
    scenario: Scenario | str = Scenario.current,
    valid_from: datetime | None = None,
    replace: bool = True,
) -> NetworkIngestReport:
    """Ingest a GIS pipe delivery, an EPANET file or a SWMM file (see the readers)."""
    if kind not in NETWORK_KINDS:
        raise InvalidInput(f"unknown network source {kind!r}; expected one of {', '.join(NETWORK_KINDS)}")
    if tolerance < 0 or max_length <= 0:
        raise InvalidInput("--tolerance must not be negative and --max-length must be positive")
    if valves is not None and kind != "epanet":
        raise InvalidInput("--valves adds a valve layer to EPANET files only (GIS valves are points of the survey)")
    options = TopologyOptions(tolerance=tolerance, max_length=max_length)
    place, scale = parse_origin(origin)
    tables: list[PipeTables]
    if kind == "pipes":
        if place is not None:
            raise InvalidInput("--origin places schematic EPANET or SWMM drawings; surveyed tables carry coordinates")
        tables = read_pipe_tables(
            path,
            store.crs,
            mapping_path=mapping,
            source_crs=source_crs,
            source_layers=source_layers,
            pipe_class=pipe_class,
            network=network,
            tolerance=tolerance,
        )
    elif kind == "epanet":
        from ingestion.epanet import keep_file, read_epanet

        epanet = read_epanet(
            path,
            store.crs,
            network=network or "water",
            source_crs=source_crs,
            origin=place,
            scale=scale,
            valves=valves,
        )
        check_tables(epanet)  # before the file is kept, so that a refused file leaves nothing behind
        keep_file(store, epanet, path)
        tables = [epanet]
    else:
        from ingestion.swmm import read_swmm

        tables = [
            read_swmm(
                path,
                store.crs,
                network=network or "drainage",
                pipe_class=pipe_class or "PS",
                source_crs=source_crs,
                origin=place,
                scale=scale,
            )
        ]
    written = ingest_networks(store, tables, options=options, scenario=scenario, valid_from=valid_from, replace=replace)
    return NetworkIngestReport(written)
