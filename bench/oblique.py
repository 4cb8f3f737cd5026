"""Reality meshes to 3D Tiles: wall time, peak memory and output size, against plain conversions.

- OSGB tree -> 3D Tiles: `twin ingest oblique` on the demo's OSGB tree (36 files, 4 tiles of
  three levels) against the named baseline `osgconv` of every file of the same tree to OBJ
  (OpenSceneGraph's own converter: no georeferencing, no LOD tree, no textures in the output).
- Textured mesh -> 3D Tiles: `twin ingest mesh` of one 500k-triangle textured OBJ (a terrain
  grid with a 2048-px photo texture) against the named baseline obj2gltf through trimesh (one
  glb, no levels of detail). Besides the totals it prints what a viewer must load before it can
  draw the whole mesh: the root tiles for the twin, the whole glb for the baseline.

Each run is its own process (peak memory is that process tree's largest resident set).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench import report
from bench.threed_bench import folder_size, measured

GRID = 500  # the textured OBJ is GRID x GRID quads: 500k triangles
TEXTURE = 2048
OBJ2GLTF = "import sys, trimesh; trimesh.load(sys.argv[1], force='mesh').export(sys.argv[2])"


def twin_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from twin.cli import main; main()", *args]


def textured_obj(folder: Path) -> Path:
    """A GRID x GRID textured height field (metres, relative to the origin) with its MTL and JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    g = np.linspace(0.0, 1.0, GRID + 1)
    u, v = np.meshgrid(g, g)
    x, y = u * 500.0 - 250.0, v * 500.0 - 250.0
    z = 10.0 + 4.0 * np.sin(x / 37.0) * np.cos(y / 53.0)
    idx = np.arange(u.size).reshape(GRID + 1, GRID + 1) + 1
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    with open(folder / "terrain.obj", "w", encoding="utf-8") as out:
        out.write("mtllib terrain.mtl\n")
        np.savetxt(out, np.column_stack([x.ravel(), y.ravel(), z.ravel()]), fmt="v %.3f %.3f %.3f")
        np.savetxt(out, np.column_stack([u.ravel(), v.ravel()]), fmt="vt %.5f %.5f")
        out.write("usemtl photo\n")
        np.savetxt(out, np.repeat(faces, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    (folder / "terrain.mtl").write_text("newmtl photo\nKd 1 1 1\nmap_Kd terrain.jpg\n", encoding="utf-8")
    rng = np.random.default_rng(7)
    rows = np.indices((TEXTURE, TEXTURE)).sum(axis=0) % 256
    pixels = np.stack([rows, rows[::-1], rng.integers(0, 255, (TEXTURE, TEXTURE))], axis=2).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "terrain.jpg", quality=85)
    (folder / "metadata.xml").write_text(
        "<ModelMetadata><SRS>EPSG:4549</SRS><SRSOrigin>385800,3547900,0</SRSOrigin></ModelMetadata>", encoding="utf-8"
    )
    return folder / "terrain.obj"


def root_bytes(tileset_folder: Path) -> int:
    """Bytes of the contents a viewer loads first: the shallowest tiles with content."""
    document = json.loads((tileset_folder / "tileset.json").read_text())
    level = [document["root"]]
    while level:
        uris = [t["content"]["uri"] for t in level if "content" in t]
        if uris:
            return sum((tileset_folder / uri).stat().st_size for uri in uris)
        level = [c for t in level for c in t.get("children", [])]
    return 0


def built_folder(data: Path, layer: str) -> Path:
    return next((data / "tiles" / "3d" / layer).glob("*/tileset.json")).parent


def run() -> None:
    report.heading("reality meshes: OSGB tree and textured mesh -> 3D Tiles")
    if shutil.which("osgconv") is None:
        report.line("skipped", "osgconv (Debian openscenegraph) is not installed")
        return
    with tempfile.TemporaryDirectory(prefix="bench-oblique-") as tmp:
        work = Path(tmp)
        measured(sys.executable, "-m", "sample_data", str(work / "src"), "--parts", "mesh")
        tree = work / "src" / "reality_mesh_osgb"
        files = sorted(tree.rglob("*.osgb"))
        source_size = folder_size(tree)

        data = work / "twin"
        measured(*twin_command("init", str(data), "--crs", "EPSG:4549"))
        ours = measured(*twin_command("ingest", "oblique", str(tree), "--data", str(data), "--layer", "osgb"))
        measured(*twin_command("build", "osgb", "--data", str(data)))
        out = built_folder(data, "osgb")
        script = " ".join(f"osgconv {f} {work / 'obj' / (f.stem + '.obj')} >/dev/null 2>&1 &&" for f in files)
        (work / "obj").mkdir()
        base = measured("sh", "-c", f"export OSG_OPTIMIZER=OFF; {script} true")
        report.line(f"OSGB tree: {len(files)} files, {source_size / 1e6:.2f} MB", "")
        report.line("twin ingest oblique (3D Tiles 1.1, LOD tree, textures)", _figures(ours, folder_size(out)))
        report.line("baseline osgconv -> OBJ per file (no LOD, no texture)", _figures(base, folder_size(work / "obj")))
        report.line("wall-time ratio twin / osgconv", f"{ours['seconds'] / base['seconds']:.2f}x")

        obj = textured_obj(work / "mesh")
        size = sum(p.stat().st_size for p in obj.parent.iterdir())
        ours = measured(*twin_command("ingest", "mesh", str(obj), "--data", str(data), "--layer", "terrain"))
        measured(*twin_command("build", "terrain", "--data", str(data)))
        out = built_folder(data, "terrain")
        glb = work / "terrain.glb"
        base = measured(sys.executable, "-c", OBJ2GLTF, str(obj), str(glb))
        report.line(f"textured OBJ: {2 * GRID * GRID} triangles, {TEXTURE} px texture, {size / 1e6:.1f} MB", "")
        report.line("twin ingest mesh (split, simplified, textures cropped)", _figures(ours, folder_size(out)))
        report.line("baseline obj2gltf via trimesh (one glb)", _figures(base, glb.stat().st_size))
        report.line("wall-time ratio twin / trimesh", f"{ours['seconds'] / base['seconds']:.2f}x")
        first, whole = root_bytes(out), glb.stat().st_size
        report.line("bytes before the whole mesh shows: twin root tiles", f"{first / 1e6:.2f} MB")
        report.line("bytes before the whole mesh shows: baseline glb", f"{whole / 1e6:.2f} MB")
        report.line("first-view bytes ratio baseline / twin", f"{whole / max(first, 1):.1f}x")


def _figures(result: dict, size: int) -> str:
    return f"{result['seconds']:.2f} s, peak {result['peak_mb']:.0f} MB, output {size / 1e6:.2f} MB"


if __name__ == "__main__":
    run()
