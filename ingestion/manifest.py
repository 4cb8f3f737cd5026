"""A delivery described by a manifest (the demo district's, or a city's batch of sources).

The manifest lists vector layers (with their editions over time), rasters and sensor readings;
each source goes through its own reader, and each layer's write is atomic in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingestion.basemap import ingest_basemap
from ingestion.observations import read_observations_csv
from ingestion.raster import ingest_raster
from twin.model import InvalidInput, WriteReport, parse_instant
from twin.store import Store

NETWORK_KEYS = ("network", "role", "nodes_layer")


def _editions(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A layer's editions, oldest first; a layer without history is one edition."""
    editions = entry.get("editions") or [entry]
    return sorted(editions, key=lambda e: e["valid_from"])


def steps(manifest: dict[str, Any]) -> int:
    layers = sum(len(_editions(e)) for e in manifest.get("layers", []))
    extras = sum(1 for key in ("observations", "ifc") if manifest.get(key))
    extras += 1 if manifest.get("reality_mesh", {}).get("osgb") else 0
    return layers + len(manifest.get("rasters", [])) + extras


def load_manifest(
    store: Store,
    root: Path,
    manifest: dict[str, Any],
    on_step: Callable[[str, int], None] | None = None,
) -> list[WriteReport]:
    """Ingest everything the manifest lists, paths relative to `root`."""
    if "layers" not in manifest:
        raise InvalidInput("manifest has no 'layers' list")
    total = steps(manifest)
    reports: list[WriteReport] = []

    def done(name: str) -> None:
        if on_step is not None:
            on_step(name, total)

    for entry in manifest["layers"]:
        metadata = {key: entry[key] for key in (*NETWORK_KEYS, "extrude") if key in entry}
        for edition in _editions(entry):
            reports.append(
                ingest_basemap(
                    store,
                    Path(root) / edition["path"],
                    layer_id=entry["id"],
                    source_layer=edition["layer"],
                    scale_band=entry.get("scale_band"),
                    scenario=entry.get("scenario", "current"),
                    valid_from=parse_instant(edition["valid_from"]),
                    kind=entry.get("kind", "vector"),
                    title=entry.get("title"),
                    id_field=entry.get("id_field"),
                    metadata=metadata,
                )
            )
            done(entry["id"])
    default_from = min((e["valid_from"] for e in manifest["layers"]), default=None)
    for raster in manifest.get("rasters", []):
        start = raster.get("valid_from") or default_from
        reports.append(
            ingest_raster(
                store,
                Path(root) / raster["path"],
                raster["id"],
                kind=raster.get("kind", "raster"),
                title=raster.get("title"),
                role=raster.get("role"),
                valid_from=parse_instant(start) if start else None,
            )
        )
        done(raster["id"])
    ifc = manifest.get("ifc")
    if ifc:
        from ingestion.ifc import ingest_ifc  # ifcopenshell is heavy: only when a manifest has a model

        reports.append(
            ingest_ifc(
                store,
                Path(root) / ifc["path"],
                layer_id=ifc["id"],
                scenario=ifc.get("scenario", "current"),
                valid_from=parse_instant(ifc["valid_from"]) if ifc.get("valid_from") else None,
                title=ifc.get("title"),
            )
        )
        done(ifc["id"])
    osgb = manifest.get("reality_mesh", {}).get("osgb")
    if osgb:
        from ingestion.oblique import ingest_oblique  # needs OpenSceneGraph's osgconv

        mesh = manifest["reality_mesh"]
        start = mesh.get("valid_from") or default_from  # the survey date, not the day it was loaded
        report, _ = ingest_oblique(
            store,
            Path(root) / osgb["path"],
            layer_id=mesh["id"],
            title=mesh.get("title"),
            valid_from=parse_instant(start) if start else None,
        )
        reports.append(report)
        done(mesh["id"])
    observations = manifest.get("observations")
    if observations:
        store.add_observations(read_observations_csv(Path(root) / observations["path"]))
        done("observations")
    return reports
