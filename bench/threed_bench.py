"""IFC to 3D Tiles: wall time, peak memory, output size and landing place, against `py3dtiles convert`.

Both tools run on the same files in the same run, each as its own process (peak memory is that
process tree's largest resident set): the twin as `twin ingest ifc` + `twin build`, py3dtiles
12.1.1 as `py3dtiles convert --spec-version 1.1`. py3dtiles pins numpy < 2.4, which the twin
cannot share, so it gets its own virtual environment under bench/results (created on first run
with pip; the baseline is skipped with a note when that is impossible). Landing: the distance
from each tileset's root volume centre to where the file's map conversion puts the model origin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np

from bench import report
from tiles.threed.validate import outside
from twin.crs import CRS84, ECEF, GEODETIC_3D, transform_points

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BASELINE_VENV = RESULTS / "py3dtiles-venv"
BASELINE_PACKAGES = ("py3dtiles==12.1.1", "ifcopenshell==0.9.0.post1")
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'seconds': time.perf_counter() - start, 'code': done.returncode, 'err': done.stderr[-400:],\n"
    "    'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)


def measured(*command: str) -> dict:
    """Run a command in a fresh launcher process: its wall time and peak resident memory."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["code"] != 0:
        raise RuntimeError(f"{command[0]} failed: {result['err']}")
    return result


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def baseline_python() -> Path | None:
    """py3dtiles' own environment, made once; None when it cannot be installed here."""
    python = BASELINE_VENV / "bin" / "python"
    if (BASELINE_VENV / "bin" / "py3dtiles").exists():
        return python
    try:
        venv.create(BASELINE_VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *BASELINE_PACKAGES],
            check=True,
            timeout=900,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        report.line("py3dtiles baseline", f"unavailable ({exc})")
        return None
    return python


def landing_error(tileset: Path, lon: float, lat: float, height: float) -> float:
    """Metres between the model's map-conversion origin and the tileset's root volume (0 inside it)."""
    document = json.loads(tileset.read_text())
    root = document["root"]
    frame = np.asarray(root["transform"], dtype=float).reshape(4, 4).T if "transform" in root else np.eye(4)
    x, y, z = transform_points(GEODETIC_3D, ECEF, [lon], [lat], [height])
    return float(outside(root["boundingVolume"], frame, np.column_stack([x, y, z]))[0])


def twin_run(ifc: Path, crs: str, work: Path) -> tuple[dict, Path, int]:
    data = work / "twin"
    twin = str(REPO / ".venv" / "bin" / "twin") if (REPO / ".venv" / "bin" / "twin").exists() else "twin"
    subprocess.run([twin, "init", str(data), "--crs", crs], check=True, capture_output=True)
    ingest = measured(twin, "ingest", "ifc", str(ifc), "--layer", "bim", "--data", str(data))
    build = measured(twin, "build", "bim", "--data", str(data))
    folder = next((data / "tiles" / "3d" / "bim").iterdir())
    mesh_bytes = sum(p.stat().st_size for p in (data / "assets").rglob("*.npz")) if (data / "assets").exists() else 0
    totals = {"seconds": ingest["seconds"] + build["seconds"], "peak_mb": max(ingest["peak_mb"], build["peak_mb"])}
    return totals, folder, mesh_bytes


def py3dtiles_run(python: Path, ifc: Path, work: Path) -> tuple[dict, Path]:
    out = work / "py3dtiles"
    result = measured(
        str(python.parent / "py3dtiles"), "convert", str(ifc), "--out", str(out), "--overwrite", "--spec-version", "1.1"
    )
    return result, out


def inputs(work: Path) -> list[tuple[str, Path, str, tuple[float, float, float]]]:
    """(name, file, project CRS, origin lon/lat/height) for the Duplex and the demo building."""
    from sample_data.district import generate
    from tests.conftest import TESTDATA

    cases = []
    duplex = TESTDATA / "ifc/georeference-ifc_duplex/Duplex_A_20110907_georeferenced.ifc"
    if duplex.exists():
        lon, lat = transform_points("EPSG:2169", CRS84, [76670.0], [77179.0])  # its EPset_MapConversion origin
        cases.append(("Duplex (IFC2X3, EPSG:9897)", duplex, "EPSG:2169", (float(lon[0]), float(lat[0]), 293.7)))
    manifest = generate(work / "demo", parts={"ifc"})
    origin = manifest["parcels"]["ifc"]["expected_map_conversion_origin"]
    lon, lat = transform_points(manifest["crs"], CRS84, [origin[0]], [origin[1]])
    demo = work / "demo" / manifest["ifc"]["path"]
    cases.append(("demo building (IFC4, EPSG:4549)", demo, manifest["crs"], (float(lon[0]), float(lat[0]), origin[2])))
    return cases


def run() -> None:
    report.heading("IFC -> 3D Tiles: the twin against py3dtiles convert (same files, same run)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    python = baseline_python()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, ifc, crs, origin in inputs(work):
            case = work / ifc.stem
            case.mkdir()
            ours, folder, mesh_bytes = twin_run(ifc, crs, case)
            ours_size = folder_size(folder)
            ours_off = landing_error(folder / "tileset.json", *origin)
            report.line(f"{name}: twin wall time", f"{ours['seconds']:.1f} s (ingest + build)")
            report.line(f"{name}: twin peak memory", f"{ours['peak_mb']:.0f} MB")
            sizes = f"{ours_size / 1e3:.0f} kB (+ {mesh_bytes / 1e3:.0f} kB mesh asset)"
            report.line(f"{name}: twin tileset size", sizes)
            report.line(f"{name}: twin: map conversion origin to root volume", f"{ours_off:.1f} m")
            if python is None:
                continue
            try:
                theirs, out = py3dtiles_run(python, ifc, case)
            except RuntimeError as exc:
                report.line(f"{name}: py3dtiles", f"failed: {str(exc).splitlines()[-1][:120]}")
                continue
            theirs_size = folder_size(out)
            theirs_off = landing_error(out / "tileset.json", *origin)
            report.line(f"{name}: py3dtiles wall time", f"{theirs['seconds']:.1f} s")
            report.line(f"{name}: py3dtiles peak memory", f"{theirs['peak_mb']:.0f} MB")
            report.line(f"{name}: py3dtiles tileset size", f"{theirs_size / 1e3:.0f} kB")
            report.line(f"{name}: py3dtiles: map conversion origin to root volume", f"{theirs_off:,.0f} m")
            report.line(
                f"{name}: twin / py3dtiles",
                f"time x{ours['seconds'] / theirs['seconds']:.2f}, memory x{ours['peak_mb'] / theirs['peak_mb']:.2f}, "
                f"size x{ours_size / max(theirs_size, 1):.2f}",
            )
            shutil.rmtree(case, ignore_errors=True)
