"""`POST /ingest`: upload a source file and ingest it as a job, with the CLI's readers.

The upload is streamed to the job's work folder (size-limited), archives are checked for path
traversal, links and zip bombs before they are accepted and again while they are unpacked, and
the job runs the same ingestion function as `twin ingest`, atomically: a failed, cancelled or
killed ingest leaves the twin as it was (and `twin.integrity.recover` removes any asset it had
stored). Kinds are registered in `INGEST_KINDS`; a new reader adds itself with `ingest_kind`:

    @ingest_kind("pipes", suffixes={".gpkg", ".shp"}, description="GIS pipe layers (CJJ 61)")
    def _pipes(store, path, options, progress): return ingest_pipes(store, path, ...).as_dict()
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from twin.api.jobs import JOB_ACCEPTED, RunnerDep, accepted
from twin.api.problems import problem_responses
from twin.api.security import app_settings, require_role
from twin.api.uploads import receive_form, safe_stem
from twin.archives import ARCHIVE_SUFFIXES, ArchiveLimits, check_zip, extract_zip, find_datasets
from twin.auth import ApiKey, Role
from twin.config import Settings
from twin.integrity import ingest_lock, recover
from twin.jobs import Cancelled, Job, JobState, Progress, job_kind, new_job_id, work_folder
from twin.model import SCALE_BANDS, InvalidInput, Scenario, TwinError, check_layer_id, parse_instant
from twin.store import Store

router = APIRouter(tags=["Ingest"])
JOB_KIND = "ingest"
MB = 1 << 20

FeatureProgress = Callable[[int, int | None], None]  # (done, total or None)
IngestRunner = Callable[[Store, Path, "IngestOptions", FeatureProgress], dict]


@dataclass(frozen=True)
class IngestOptions:
    """The form's options, checked; the same meaning as `twin ingest`'s options."""

    layer: str | None = None
    source_layer: str | None = None
    crs: str | None = None
    scenario: str = Scenario.current.value
    scale: str | None = None
    valid_from: str | None = None
    title: str | None = None
    append: bool = False
    at: str | None = None
    source: str | None = None  # which dataset of an archive, by its path inside it

    @property
    def valid_from_time(self) -> datetime | None:
        return parse_instant(self.valid_from) if self.valid_from else None


@dataclass(frozen=True)
class IngestKind:
    """A reader the API can run: what files it takes and the function that runs it."""

    name: str
    run: IngestRunner
    suffixes: frozenset[str]
    folder: bool = False  # takes the unpacked folder itself (an OSGB tree), not one file in it
    description: str = ""


INGEST_KINDS: dict[str, IngestKind] = {}


def ingest_kind(
    name: str, *, suffixes: set[str] | frozenset[str], folder: bool = False, description: str = ""
) -> Callable[[IngestRunner], IngestRunner]:
    """Register a reader for `POST /ingest` (a decorator)."""

    def register(run: IngestRunner) -> IngestRunner:
        INGEST_KINDS[name] = IngestKind(name, run, frozenset(s.lower() for s in suffixes), folder, description)
        return run

    return register


# ----- the readers, as `twin ingest` runs them ---------------------------------------------------
@ingest_kind("basemap", suffixes={".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml"},
             description="Vector basemap layer (GeoPackage, zipped shapefile, GeoJSON, FlatGeobuf, GML)")  # fmt: skip
def _basemap(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    import pyogrio

    from ingestion.basemap import ingest_basemap

    try:
        total = pyogrio.read_info(path, layer=options.source_layer).get("features")
    except Exception:  # the reader reports unreadable files itself, with its own message
        total = None
    done = [0]

    def counted(n: int) -> None:
        done[0] += n
        progress(done[0], total if total and total > 0 else None)

    report = ingest_basemap(
        store,
        path,
        layer_id=options.layer,
        source_layer=options.source_layer,
        source_crs=options.crs,
        scale_band=options.scale,
        scenario=options.scenario,
        valid_from=options.valid_from_time,
        title=options.title,
        replace=not options.append,
        progress=counted,
    )
    return report.as_dict()


@ingest_kind("raster", suffixes={".tif", ".tiff"}, description="GeoTIFF orthophoto or DEM, stored as a COG")
def _raster(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.basemap import layer_id_for
    from ingestion.raster import ingest_raster

    report = ingest_raster(
        store,
        path,
        layer_id_for(path, None, options.layer),
        title=options.title,
        source_crs=options.crs,
        scenario=options.scenario,
        valid_from=options.valid_from_time,
    )
    return report.as_dict()


@ingest_kind("ifc", suffixes={".ifc"}, description="IFC building model (.ifc or .ifczip)")
def _ifc(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.ifc import ingest_ifc
    from ingestion.ifc_georef import parse_position

    report = ingest_ifc(
        store,
        path,
        layer_id=options.layer,
        source_crs=options.crs,
        at=parse_position(options.at),
        scenario=options.scenario,
        valid_from=options.valid_from_time,
        title=options.title,
        progress=lambda done, total: progress(done, total),
    )
    return report.as_dict()


@ingest_kind("observations", suffixes={".csv"}, description="Sensor readings (CSV: sensor_id,time,quantity,value,unit)")
def _observations(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.observations import read_observations_csv

    return {"observations": store.add_observations(read_observations_csv(path))}


def _mesh_options(options: IngestOptions) -> dict[str, Any]:
    """The shared reality-data options; the mesh readers name the source CRS `crs`."""
    shared = _reality_options(options)
    shared["crs"] = shared.pop("source_crs")
    return shared


@ingest_kind("oblique", suffixes={".osgb"}, folder=True, description="OSGB tile tree with metadata.xml (.zip)")
def _oblique(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.oblique import ingest_oblique

    report, summary = ingest_oblique(store, path, **_mesh_options(options))
    return {**report.as_dict(), "mesh": summary}


@ingest_kind("mesh", suffixes={".obj", ".glb", ".gltf", ".ply"}, description="Textured mesh (OBJ+MTL, glTF, PLY)")
def _mesh(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.mesh import ingest_mesh

    report, summary = ingest_mesh(store, path, **_mesh_options(options))
    return {**report.as_dict(), "mesh": summary}


def _reality_options(options: IngestOptions) -> dict[str, Any]:
    """The options the point cloud, city model and tileset readers share."""
    return {
        "layer_id": options.layer,
        "source_crs": options.crs,
        "scenario": options.scenario,
        "valid_from": options.valid_from_time,
        "title": options.title,
    }


@ingest_kind("pointcloud", suffixes={".las", ".laz"}, description="Point cloud (LAS 1.2-1.4, LAZ, COPC)")
def _pointcloud(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.pointcloud import ingest_pointcloud

    return ingest_pointcloud(store, path, **_reality_options(options)).as_dict()


@ingest_kind("citymodel", suffixes={".json", ".gml", ".xml"}, description="CityJSON or CityGML 2.0/3.0 buildings")
def _citymodel(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.citymodel import ingest_citymodel

    return ingest_citymodel(store, path, **_reality_options(options)).as_dict()


@ingest_kind("tileset", suffixes={".json"}, folder=True, description="Existing 3D Tiles (a .zip of the folder)")
def _tileset(store: Store, path: Path, options: IngestOptions, progress: FeatureProgress) -> dict:
    from ingestion.ifc_georef import parse_position
    from ingestion.tileset import ingest_tileset

    return ingest_tileset(store, path, at=parse_position(options.at), **_reality_options(options)).as_dict()


# ----- checking a request ------------------------------------------------------------------------
def archive_limits(settings: Settings) -> ArchiveLimits:
    return ArchiveLimits(
        max_bytes=int(settings.max_extract_mb * MB),
        max_ratio=settings.max_compression_ratio,
        max_members=settings.max_archive_members,
    )


TEXT_OPTIONS = ("layer", "source_layer", "crs", "scale", "valid_from", "title", "at", "source")


def parse_options(fields: dict[str, str]) -> tuple[IngestKind, IngestOptions]:
    """The kind and options from the form's text fields; InvalidInput naming the bad one."""
    known = {"kind", "scenario", "append", *TEXT_OPTIONS}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InvalidInput(f"unknown form field {unknown[0]!r}; accepted: file, {', '.join(sorted(known))}")
    name = fields.get("kind", "").strip()
    if name not in INGEST_KINDS:
        raise InvalidInput(f"unknown ingest kind {name!r}; expected one of {', '.join(sorted(INGEST_KINDS))}")
    values: dict[str, Any] = {key: (fields.get(key) or "").strip() or None for key in TEXT_OPTIONS}
    if values["layer"]:
        check_layer_id(values["layer"])
    if values["scale"] and values["scale"] not in SCALE_BANDS:
        raise InvalidInput(f"invalid scale {values['scale']!r}; expected one of {', '.join(SCALE_BANDS)}")
    if values["crs"]:
        from twin.crs import parse_crs

        parse_crs(values["crs"])
    if values["at"]:
        from ingestion.ifc_georef import parse_position

        parse_position(values["at"])
    if values["title"] and len(values["title"]) > 200:
        raise InvalidInput("title is longer than 200 characters")
    scenario = (fields.get("scenario") or Scenario.current.value).strip()
    if scenario not in {s.value for s in Scenario}:
        raise InvalidInput(f"invalid scenario {scenario!r}; expected current or planned")
    append_text = (fields.get("append") or "false").strip().lower()
    if append_text not in ("true", "false", "1", "0"):
        raise InvalidInput(f"invalid append {append_text!r}; expected true or false")
    options = IngestOptions(**values, scenario=scenario, append=append_text in ("true", "1"))
    if options.valid_from:
        options.valid_from_time  # noqa: B018 - parsed now so a bad time is a 400, not a failed job
    return INGEST_KINDS[name], options


def check_upload(path: Path, kind: IngestKind, limits: ArchiveLimits, source: str | None = None) -> None:
    """Refuse what the job could not read, before it is queued: wrong type, unsafe archive, an
    archive with no dataset of the kind or several and no `source` naming one."""
    suffix = path.suffix.lower()
    if suffix in ARCHIVE_SUFFIXES:
        members = check_zip(path, limits)
        if not kind.folder:
            names = [m.filename.strip("/") for m in members if Path(m.filename).suffix.lower() in kind.suffixes]
            names = [n for n in names if "__MACOSX" not in n and not Path(n).name.startswith("._")]
            _pick(names, kind, source)
    elif kind.folder or suffix not in kind.suffixes:
        accepted_types = ", ".join(sorted(kind.suffixes | ({".zip"} if not kind.folder else set())))
        raise InvalidInput(f"a {kind.name} upload must be a {accepted_types} file (or a .zip of one)")


def _pick(names: list[str], kind: IngestKind, source: str | None) -> str:
    """The dataset to read among an archive's `names` (paths inside it)."""
    if source:
        wanted = source.strip("/").lower()
        for name in names:
            if name.lower() == wanted:
                return name
        raise InvalidInput(f"the archive has no {kind.name} dataset {source!r}")
    if not names:
        raise InvalidInput(f"the archive holds no {kind.name} file ({', '.join(sorted(kind.suffixes))})")
    if len(names) > 1:
        listed = ", ".join(sorted(names)[:10])
        raise InvalidInput(f"the archive holds several datasets ({listed}); name one in the form field 'source'")
    return names[0]


def choose_dataset(folder: Path, kind: IngestKind, source: str | None) -> Path:
    """What to read from an unpacked archive: the folder, the file named by `source`, or its one
    dataset (a shapefile's .shp, an .ifc, ...)."""
    if kind.folder:
        return folder
    found = {p.relative_to(folder).as_posix(): p for p in find_datasets(folder, kind.suffixes)}
    return found[_pick(list(found), kind, source)]


# ----- the job -----------------------------------------------------------------------------------
def _cleanup(job: Job, store: Store) -> None:
    """Delete the upload; after a failure also anything the ingest had stored (orphan assets)."""
    shutil.rmtree(work_folder(store.data_dir, job.id), ignore_errors=True)
    if job.state != JobState.succeeded:
        recover(store)


@job_kind(JOB_KIND, cleanup=_cleanup)
def run_ingest(params: dict, progress: Progress, cancelled: Cancelled, store: Store) -> dict:
    """Unpack (if an archive), then run the kind's reader inside the ingest lock."""
    kind = INGEST_KINDS.get(params["kind"])
    if kind is None:
        raise InvalidInput(f"ingest kind {params['kind']!r} is not known to this server")
    options = IngestOptions(**params["options"])
    folder = work_folder(store.data_dir, params["job"])
    upload = folder / Path(params["upload"]).name
    limits = ArchiveLimits(**params["limits"])
    with ingest_lock(store.data_dir):
        progress(0.02, "checking the upload")
        dataset = upload
        if upload.suffix.lower() in ARCHIVE_SUFFIXES:
            progress(0.05, "unpacking the archive")
            dataset = choose_dataset(extract_zip(upload, folder / "unpacked", limits), kind, options.source)
        progress(0.1, f"reading {dataset.name}")

        def features(done: int, total: int | None) -> None:
            fraction = 0.1 + 0.85 * min(done / total, 1.0) if total else 0.1
            progress(fraction, f"{done} of {total} written" if total else f"{done} written")

        try:
            report = kind.run(store, dataset, options, features)
        except TwinError as exc:  # the reader names the file by its path here; the user knows it by name
            raise type(exc)(str(exc).replace(str(dataset), params["filename"]).replace(str(folder), "")) from exc
        progress(0.99, "committed")
    return report


# ----- the endpoints ---------------------------------------------------------------------------------
def _form_schema() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "required": ["kind", "file"],
        "properties": {
            "kind": {**text, "description": "Reader: see GET /ingest/kinds (basemap, raster, ifc, observations, ...)"},
            "file": {"type": "string", "format": "binary", "description": "The source file, or a .zip of it"},
            "layer": {**text, "description": "Target layer id (default: from the file name)"},
            "source_layer": {**text, "description": "Layer inside a multi-layer file"},
            "crs": {**text, "description": "Source CRS when the file has none (or a wrong one), e.g. EPSG:4326"},
            "scenario": {"type": "string", "enum": [s.value for s in Scenario]},
            "scale": {"type": "string", "enum": list(SCALE_BANDS)},
            "valid_from": {**text, "format": "date-time", "description": "When this edition became valid"},
            "title": {**text, "maxLength": 200},
            "append": {"type": "boolean", "description": "Only add/update the features given (default: new edition)"},
            "at": {**text, "description": "IFC without georeferencing: lon,lat,height"},
            "source": {**text, "description": "Which dataset of an archive (its path inside the archive)"},
        },
    }


INGEST_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _form_schema()}}}}


@router.post(
    "/ingest",
    name="ingest",
    summary="Upload a file and ingest it into the twin as a job (needs an editor key)",
    status_code=202,
    openapi_extra=INGEST_BODY,
    responses={**JOB_ACCEPTED, **problem_responses(400, 401, 403, 413, 415)},
)
async def ingest(
    request: Request,
    runner: RunnerDep,
    key: Annotated[ApiKey, Depends(require_role(Role.editor))],
    settings: Annotated[Settings, Depends(app_settings)],
) -> Response:
    store: Store = request.app.state.store
    job_id = new_job_id()
    folder = work_folder(store.data_dir, job_id)
    try:
        upload = await receive_form(request, folder / "upload", int(settings.max_upload_mb * MB))
        kind, options = parse_options(upload.fields)
        if upload.path is None or upload.size == 0:
            raise InvalidInput("the form has no file (or an empty one) in the field 'file'")
        named = upload.path.with_name(safe_stem(upload.filename) + upload.path.suffix)
        upload.path.rename(named)
        limits = archive_limits(settings)
        check_upload(named, kind, limits, options.source)
        params = {
            "kind": kind.name,
            "options": asdict(options),
            "upload": named.name,
            "filename": upload.filename[:200],
            "size": upload.size,
            "limits": asdict(limits),
            "job": job_id,
        }
        job = runner.submit(JOB_KIND, params, owner=key.id, job_id=job_id)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return accepted(request, job)


@router.get("/ingest/kinds", name="ingest_kinds", summary="What POST /ingest accepts: kinds and file types")
def ingest_kinds(settings: Annotated[Settings, Depends(app_settings)]) -> JSONResponse:
    kinds = [
        {
            "kind": k.name,
            "suffixes": sorted(k.suffixes),
            "archives": sorted(ARCHIVE_SUFFIXES),
            "description": k.description,
        }
        for k in sorted(INGEST_KINDS.values(), key=lambda k: k.name)
    ]
    limits = {"max_upload_mb": settings.max_upload_mb, "max_extract_mb": settings.max_extract_mb}
    return JSONResponse({"kinds": kinds, "limits": limits})


__all__ = ["INGEST_KINDS", "IngestKind", "IngestOptions", "ingest_kind", "receive_form", "router", "run_ingest"]
