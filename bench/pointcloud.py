"""LAS to 3D Tiles: points per second, wall time, peak memory and output size, against `py3dtiles convert`.

The input is a generated LAS 1.2 survey of a gently rolling district near Nanjing (EPSG:4549,
colours and classes, `POINTS` points), written once under bench/results. Both tools run on that
file in the same run, each as its own process tree (peak memory is the largest resident set):
the twin as `twin ingest pointcloud` + `twin build`, py3dtiles 12.1.1 as `py3dtiles convert
--spec-version 1.1` (glb content, as ours) with its default jobs, in the virtual environment
bench/threed_bench.py keeps for it (laspy added on first use); when that cannot be set up the
baseline is skipped with a note. Also reported: the twin's output tiles checked for structure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import laspy
import numpy as np
from pyproj import CRS

from bench import report
from bench.threed_bench import RESULTS, baseline_python, folder_size, measured
from tiles.threed.validate import check_tileset

POINTS = int(os.environ.get("BENCH_POINTCLOUD_POINTS", "2000000"))
SOURCE = RESULTS / f"district_{POINTS}.las"
BASELINE_EXTRA = ("laspy==2.7.0",)


def make_cloud(path: Path, count: int) -> None:
    """A deterministic survey: terrain waves, roofs, trees; RGB and ASPRS classes."""
    rng = np.random.default_rng(7)
    side = 800.0
    x = 386_000.0 + rng.random(count) * side
    y = 3_547_000.0 + rng.random(count) * side
    z = 8.0 + 2.0 * np.sin(x / 60.0) * np.cos(y / 45.0)
    classes = np.full(count, 2, dtype=np.uint8)
    roofs = (np.mod(x, 80.0) < 30.0) & (np.mod(y, 90.0) < 40.0)
    z[roofs] += 12.0 + np.mod(x[roofs], 30.0) * 0.2
    classes[roofs] = 6
    trees = ~roofs & (rng.random(count) < 0.15)
    z[trees] += rng.random(trees.sum()) * 9.0
    classes[trees] = 5
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([386_000.0, 3_547_000.0, 0.0])
    header.add_crs(CRS.from_epsg(4549))
    las = laspy.LasData(header)
    las.x, las.y, las.z = x, y, z
    las.classification = classes
    las.intensity = rng.integers(0, 4096, count).astype(np.uint16)
    palette = np.array([[0, 0, 0], [0, 0, 0], [150, 130, 100], [0, 0, 0], [0, 0, 0], [60, 140, 60], [180, 80, 60]])
    las.red, las.green, las.blue = (palette[classes, k].astype(np.uint16) * 256 for k in range(3))
    path.parent.mkdir(parents=True, exist_ok=True)
    las.write(path)


def _twin(*args: str) -> list[str]:
    return [sys.executable, "-c", "from twin.cli import main; main()", *args]


def run_twin(source: Path, work: Path) -> dict:
    data = work / "twin"
    subprocess.run(_twin("init", str(data), "--crs", "EPSG:4549"), check=True, capture_output=True)
    ingest = measured(*_twin("ingest", "pointcloud", str(source), "--layer", "survey", "--data", str(data)))
    build = measured(*_twin("build", "survey", "--data", str(data)))
    folder = next((data / "tiles" / "3d" / "survey").iterdir())
    checked = check_tileset(folder / "tileset.json", keep_contents=False)
    return {
        "seconds": ingest["seconds"] + build["seconds"],
        "ingest_s": ingest["seconds"],
        "build_s": build["seconds"],
        "peak_mb": max(ingest["peak_mb"], build["peak_mb"]),
        "bytes": folder_size(folder / "tiles"),
        "tiles": checked.tiles,
        "errors": len(checked.errors),
    }


def baseline_ready() -> Path | None:
    python = baseline_python()
    if python is None:
        return None
    check = subprocess.run([str(python), "-c", "import laspy"], capture_output=True)
    if check.returncode != 0:
        try:
            install = [str(python), "-m", "pip", "install", "-q", *BASELINE_EXTRA]
            subprocess.run(install, check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            report.line("py3dtiles baseline", f"unavailable (laspy: {exc})")
            return None
    return python


def run_py3dtiles(python: Path, source: Path, work: Path) -> dict:
    out = work / "py3dtiles"
    command = [str(python.parent / "py3dtiles"), "convert", str(source), "--out", str(out), "--overwrite"]
    command += ["--srs_in", "4549", "--srs_out", "4978", "--pyproj-always-xy", "--spec-version", "1.1"]
    result = measured(*command)
    contents = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".glb", ".pnts")]
    return {**result, "bytes": sum(p.stat().st_size for p in contents), "tiles": len(contents)}


def run() -> None:
    report.heading(f"Point cloud: LAS -> 3D Tiles ({POINTS:,} points)")
    if not SOURCE.is_file():
        make_cloud(SOURCE, POINTS)
    report.line("input", f"{SOURCE.name}: {SOURCE.stat().st_size / 1e6:.1f} MB LAS 1.2, EPSG:4549, RGB + classes")
    with tempfile.TemporaryDirectory(prefix="bench-points-") as tmp:
        work = Path(tmp)
        ours = run_twin(SOURCE, work)
        report.line(
            "twin (ingest + build)",
            f"{ours['seconds']:.2f} s ({ours['ingest_s']:.2f} + {ours['build_s']:.2f}), "
            f"{POINTS / ours['seconds']:,.0f} points/s, peak {ours['peak_mb']:.0f} MB, "
            f"tiles {ours['bytes'] / 1e6:.2f} MB in {ours['tiles']} tiles "
            f"({ours['bytes'] / POINTS:.1f} B/point), structure errors {ours['errors']}",
        )
        python = baseline_ready()
        if python is None:
            return
        try:
            theirs = run_py3dtiles(python, SOURCE, work)
        except RuntimeError as exc:
            report.line("py3dtiles convert", f"failed ({exc})")
            return
        report.line(
            "py3dtiles convert 12.1.1",
            f"{theirs['seconds']:.2f} s, {POINTS / theirs['seconds']:,.0f} points/s, peak {theirs['peak_mb']:.0f} MB, "
            f"tiles {theirs['bytes'] / 1e6:.2f} MB in {theirs['tiles']} tiles ({theirs['bytes'] / POINTS:.1f} B/point)",
        )
        report.line(
            "ratio twin / py3dtiles",
            f"speed {theirs['seconds'] / ours['seconds']:.2f}x, size {ours['bytes'] / theirs['bytes']:.2f}, "
            f"peak memory {ours['peak_mb'] / theirs['peak_mb']:.2f}",
        )


if __name__ == "__main__":
    run()
