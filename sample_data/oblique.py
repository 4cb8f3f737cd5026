"""The demo reality mesh as ContextCapture delivers it: an OSGB PagedLOD tree with metadata.xml.

From each OBJ tile of `reality_mesh.py` (150 m, textured, vertices relative to SRSOrigin) this
writes three levels, as `.osgt` text turned into `.osgb` by OpenSceneGraph's `osgconv`
(textures embedded in the OSGB, as ContextCapture embeds them):

- `Data/Tile_X/Tile_X.osgb`: a PagedLOD with the whole tile simplified to 1/16 and a texture
  at a quarter of the resolution, naming its four quadrants;
- `Tile_X_L17_q.osgb`: a PagedLOD per quadrant, simplified to 1/4, half-resolution texture,
  naming the full-resolution file;
- `Tile_X_L18_q.osgb`: the quadrant at full resolution (a plain Geode, a leaf).

Ranges are in PIXEL_SIZE_ON_SCREEN, chosen so that a node refines when its error (the larger
of the simplification error and its texel size) would show as more than 16 pixels.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from ingestion.mesh import read_parts
from ingestion.osgt import convert, osgconv_path
from tiles.threed.mesh_gltf import TexturedPart
from tiles.threed.mesh_lod import fit_texture, simplify_part

MAX_SSE = 16.0
TOP = (1 / 16, 0.25)  # triangles kept, texture scale of the root level
MIDDLE = (1 / 4, 0.5)  # the same for the quadrants


def _numbers(rows: np.ndarray, fmt: str, indent: str) -> str:
    return "".join(indent + " ".join(fmt % v for v in row) + "\n" for row in rows)


GEOMETRY = """osg::Geometry {{
  UniqueID {uid}
  DataVariance STATIC
  StateSet TRUE {{
    osg::StateSet {{
      UniqueID {uid1}
      TextureModeList 1 {{
        Data 1 {{
          GL_TEXTURE_2D ON
        }}
      }}
      TextureAttributeList 1 {{
        Data 1 {{
          osg::Texture2D {{
            UniqueID {uid2}
            WRAP_S CLAMP_TO_EDGE
            WRAP_T CLAMP_TO_EDGE
            MIN_FILTER LINEAR_MIPMAP_LINEAR
            MAG_FILTER LINEAR
            Image TRUE {{
              ClassName osg::Image
              UniqueID {uid3}
              FileName "{image}"
              WriteHint 2 2
            }}
          }}
          Value OFF
        }}
      }}
    }}
  }}
  PrimitiveSetList 1 {{
    osg::DrawElementsUInt {{
      UniqueID {uid4}
      Mode TRIANGLES
      vector {index_count} {{
{indices}      }}
    }}
  }}
  VertexArray TRUE {{
    osg::Vec3Array {{
      UniqueID {uid5}
      Binding BIND_PER_VERTEX
      vector {vertex_count} {{
{positions}      }}
    }}
  }}
  TexCoordArrayList 1 {{
    osg::Vec2Array {{
      UniqueID {uid6}
      Binding BIND_PER_VERTEX
      vector {vertex_count} {{
{uvs}      }}
    }}
  }}
}}
"""


def geometry_osgt(part: TexturedPart, image: str, uid: int) -> str:
    """An osg::Geometry (textured triangles) in .osgt text; `image` is the texture's file name."""
    pad = " " * 8
    return GEOMETRY.format(
        uid=uid,
        uid1=uid + 1,
        uid2=uid + 2,
        uid3=uid + 3,
        uid4=uid + 4,
        uid5=uid + 5,
        uid6=uid + 6,
        image=image,
        index_count=part.indices.size,
        vertex_count=len(part.positions),
        indices=_numbers(part.indices, "%d", pad),
        positions=_numbers(part.positions, "%.3f", pad),
        uvs=_numbers(part.uvs, "%.6f", pad),
    )


def scene_osgt(part: TexturedPart, image: str, child: list[str], threshold: float) -> str:
    """A file's scene: a PagedLOD naming `child` files from `threshold` pixels, or a plain Geode."""
    low, high = part.positions.min(axis=0), part.positions.max(axis=0)
    centre, radius = (low + high) / 2.0, float(np.linalg.norm(high - low) / 2.0)
    geode = (
        f"    osg::Geode {{\n      UniqueID 2\n      Drawables 1 {{\n{geometry_osgt(part, image, 3)}      }}\n    }}\n"
    )
    head = "#Ascii Scene \n#Version 161 \n#Generator OpenSceneGraph 3.6.5 \n\n"
    if not child:
        return head + "osg::Group {\n  UniqueID 1\n  Children 1 {\n" + geode + "  }\n}\n"
    n = len(child) + 1
    ranges = "".join(f"    {threshold:.4f} 1e+30 \n" for _ in child)
    names = "".join(f'    "{c}" \n' for c in child)
    return (
        head
        + "osg::PagedLOD {\n  UniqueID 1\n  CenterMode USER_DEFINED_CENTER \n"
        + f"  UserCenter {centre[0]:.3f} {centre[1]:.3f} {centre[2]:.3f} {radius:.3f} \n"
        + "  RangeMode PIXEL_SIZE_ON_SCREEN \n"
        + f"  RangeList {n} {{\n    0 {threshold:.4f} \n{ranges}  }}\n"
        + f'  RangeDataList {n} {{\n    "" \n{names}  }}\n'
        + f"  PriorityList {n} {{\n"
        + "    0 1 \n" * n
        + "  }\n"
        + "  Children 1 {\n"
        + geode
        + "  }\n}\n"
    )


def _quadrants(part: TexturedPart) -> list[TexturedPart]:
    centres = part.positions[part.indices].mean(axis=1)
    mid = (part.positions.min(axis=0) + part.positions.max(axis=0)) / 2.0
    out = []
    for q in range(4):
        east, north = centres[:, 0] >= mid[0], centres[:, 1] >= mid[1]
        inside = (east if q % 2 else ~east) & (north if q // 2 else ~north)
        used, local = np.unique(part.indices[inside].reshape(-1), return_inverse=True)
        out.append(TexturedPart(part.positions[used], local.reshape(-1, 3), part.uvs[used], part.texture, part.mime))
    return out


def _level(part: TexturedPart, ratio: float, scale: float) -> tuple[TexturedPart, float]:
    """The part simplified to `ratio` with its texture at `scale`, and its error (metres)."""
    coarse, error = simplify_part(part, ratio) if ratio < 1.0 else (part, 0.0)
    fitted = fit_texture(coarse, scale)
    extent = np.ptp(fitted.positions[:, :2], axis=0).max()
    width = Image.open(BytesIO(fitted.texture)).size[0]
    return fitted, max(error, float(extent) / max(width, 1))


def _threshold(part: TexturedPart, error: float) -> float:
    """Pixel size on screen at which the node's `error` reaches 16 pixels (see ingestion.oblique.node_error)."""
    low, high = part.positions.min(axis=0), part.positions.max(axis=0)
    return MAX_SSE * float(np.linalg.norm(high - low)) / max(error, 1e-3)


def write_osgb_tree(obj_root: Path, out_dir: Path, tiles: list[dict]) -> dict:
    """The OSGB tree of the OBJ tiles in `obj_root` (listed in the manifest's `tiles`) in `out_dir`."""
    osgconv_path()  # fail now, with the install hint, when OpenSceneGraph is missing
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(obj_root / "metadata.xml", out_dir / "metadata.xml")
    jobs: list[Path] = []
    for tile in tiles:
        name = tile["name"]
        folder = out_dir / "Data" / name
        folder.mkdir(parents=True, exist_ok=True)
        (part,) = read_parts(obj_root / tile["obj"])
        quads = [q for q in _quadrants(part) if q.triangle_count]
        files = []
        for q, quad in enumerate(quads):
            leaf, _ = _level(quad, 1.0, 1.0)
            mid, mid_error = _level(quad, *MIDDLE)
            leaf_name, mid_name = f"{name}_L18_{q}", f"{name}_L17_{q}"
            _write(folder, leaf_name, scene_osgt(leaf, f"{leaf_name}.jpg", [], 0.0), leaf.texture, jobs)
            text = scene_osgt(mid, f"{mid_name}.jpg", [f"{leaf_name}.osgb"], _threshold(mid, mid_error))
            _write(folder, mid_name, text, mid.texture, jobs)
            files.append(f"{mid_name}.osgb")
        top, top_error = _level(part, *TOP)
        _write(folder, name, scene_osgt(top, f"{name}.jpg", files, _threshold(top, top_error)), top.texture, jobs)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda p: convert(p, target=p.with_suffix(".osgb"), inline_images=False), jobs))
    for text in jobs:  # the delivery is OSGB with embedded textures only, as ContextCapture's
        text.unlink()
        text.with_suffix(".jpg").unlink()
    return {"path": out_dir.name, "files": len(jobs), "format": "osgb"}


def _write(folder: Path, stem: str, text: str, texture: bytes | None, jobs: list[Path]) -> None:
    (folder / f"{stem}.jpg").write_bytes(texture or b"")
    path = folder / f"{stem}.osgt"
    path.write_text(text, encoding="utf-8")
    jobs.append(path)
