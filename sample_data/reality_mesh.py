"""A textured "oblique photography" mesh of a 300 m square, laid out as ContextCapture exports it.

`reality_mesh/metadata.xml` gives the SRS and the origin that the OBJ vertices are relative to;
`Data/Tile_+00X_+00Y/` hold one OBJ + MTL + JPEG per 150 m tile. Ground is the DEM surface on a
2 m grid, buildings are boxes at their heights, and the texture is the orthophoto painted for
the tile at 25 cm, with a strip of facade texture for the walls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from PIL import Image

from .features import DetailLayers
from .frame import CRS
from .ortho import OrthoPainter, _hash_noise
from .terrain import Terrain

AREA = 300.0
TILE = 150.0
GRID = 2.0
TEX_RES = 0.25
FACADE_ROWS = 64


def mesh_area(center: tuple[float, float]) -> tuple[float, float, float, float]:
    """The 300 m square around the district centre, on a 10 m grid."""
    cx, cy = (round(c / 10.0) * 10.0 for c in center)
    return (cx - AREA / 2, cy - AREA / 2, cx + AREA / 2, cy + AREA / 2)


def _facade(width: int, seed: int) -> np.ndarray:
    """A strip of wall with rows of windows, tinted per column so walls do not look identical."""
    rows = np.arange(FACADE_ROWS)[:, None]
    cols = np.arange(width)[None, :]
    img = np.zeros((FACADE_ROWS, width, 3))
    img[:] = (188, 184, 176)
    window = ((rows % 16) >= 5) & ((rows % 16) < 12) & ((cols % 12) >= 3) & ((cols % 12) < 9)
    img[window] = (70, 86, 104)
    n = _hash_noise(cols + 0 * rows, rows + 0 * cols, seed)
    img += n[:, :, None] * 6.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _fmt(a: np.ndarray, prefix: str, decimals: int) -> str:
    fmt = " ".join([f"%.{decimals}f"] * a.shape[1])
    return "".join(f"{prefix} {fmt % tuple(row)}\n" for row in a)


def write_mesh(
    out_dir: Path,
    details: DetailLayers,
    terrain: Terrain,
    painter: OrthoPainter,
    center: tuple[float, float],
    seed: int,
) -> dict:
    """Write the tiles and metadata.xml; returns the manifest entry's facts."""
    x0, y0, x1, y1 = mesh_area(center)
    origin = (round((x0 + x1) / 2.0), round((y0 + y1) / 2.0), 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = details.buildings
    fp = b.geometry.values
    cen = shapely.get_coordinates(shapely.centroid(fp))
    tiles = []
    npx = int(round(TILE / TEX_RES))
    facade = _facade(npx, seed)
    tex_h = npx + FACADE_ROWS
    for ti in range(int(AREA / TILE)):
        for tj in range(int(AREA / TILE)):
            tx0, ty0 = x0 + ti * TILE, y0 + tj * TILE
            tx1, ty1 = tx0 + TILE, ty0 + TILE
            name = f"Tile_{ti:+04d}_{tj:+04d}"
            tdir = out_dir / "Data" / name
            tdir.mkdir(parents=True, exist_ok=True)
            img = painter.paint(tx0, ty1, TEX_RES, npx, npx).transpose(1, 2, 0)
            Image.fromarray(np.vstack([img, facade])).save(tdir / f"{name}.jpg", quality=88, optimize=False)

            def uv(x: np.ndarray, y: np.ndarray, tx0: float = tx0, ty1: float = ty1) -> np.ndarray:
                col = (x - tx0) / TEX_RES
                row = (ty1 - y) / TEX_RES
                return np.column_stack([col / npx, 1.0 - row / tex_h])

            # terrain grid
            n = int(TILE / GRID) + 1
            gx, gy = np.meshgrid(np.linspace(tx0, tx1, n), np.linspace(ty0, ty1, n))
            gz = terrain.elevation(gx, gy)
            verts = [np.column_stack([gx.ravel(), gy.ravel(), gz.ravel()])]
            uvs = [uv(gx.ravel(), gy.ravel())]
            idx = np.arange(n * n).reshape(n, n)
            a, bq, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
            faces = [np.concatenate([np.column_stack([a, bq, c]), np.column_stack([a, c, d])])]
            count = n * n
            # buildings with their centre in this tile, as boxes
            sel = np.nonzero((cen[:, 0] >= tx0) & (cen[:, 0] < tx1) & (cen[:, 1] >= ty0) & (cen[:, 1] < ty1))[0]
            if len(sel):
                box = shapely.oriented_envelope(fp[sel])
                ring = shapely.get_coordinates(shapely.get_exterior_ring(box)).reshape(len(sel), 5, 2)[:, :4]
                ring = np.clip(ring, [tx0, ty0], [tx1, ty1])
                gzc = terrain.elevation(ring[:, :, 0], ring[:, :, 1])
                base = gzc.min(axis=1) - 0.3
                top = gzc.mean(axis=1) + b["height"].to_numpy()[sel]
                for k in range(len(sel)):
                    r = ring[k]
                    # roof
                    verts.append(np.column_stack([r, np.full(4, top[k])]))
                    uvs.append(uv(r[:, 0], r[:, 1]))
                    faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + count)
                    count += 4
                    # walls: each its own quad, textured with the facade strip
                    for w in range(4):
                        p, q = r[w], r[(w + 1) % 4]
                        verts.append(np.array([[*p, base[k]], [*q, base[k]], [*q, top[k]], [*p, top[k]]]))
                        vb = 0.0
                        vt = FACADE_ROWS / tex_h
                        uvs.append(np.array([[0.0, vb], [1.0, vb], [1.0, vt], [0.0, vt]]))
                        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + count)
                        count += 4
            v = np.vstack(verts) - np.array(origin, dtype=float)
            t = np.vstack(uvs)
            f = np.vstack(faces) + 1
            lines = [
                f"# CIM Twin demo reality mesh, {name}, coordinates relative to SRSOrigin\n",
                f"mtllib {name}.mtl\n",
            ]
            lines.append(_fmt(v, "v", 3))
            lines.append(_fmt(t, "vt", 5))
            lines.append(f"usemtl {name}\n")
            lines.append("".join(f"f {a}/{a} {b_}/{b_} {c}/{c}\n" for a, b_, c in f))
            (tdir / f"{name}.obj").write_text("".join(lines), encoding="utf-8")
            (tdir / f"{name}.mtl").write_text(
                f"newmtl {name}\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\nillum 1\nmap_Kd {name}.jpg\n",
                encoding="utf-8",
            )
            tiles.append(
                {
                    "name": name,
                    "obj": f"Data/{name}/{name}.obj",
                    "bbox": [tx0, ty0, tx1, ty1],
                    "vertices": int(len(v)),
                    "faces": int(len(f)),
                    "buildings": int(len(sel)),
                }
            )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ModelMetadata version="1">\n'
        "\t<!--Spatial Reference System-->\n"
        f"\t<SRS>{CRS}</SRS>\n"
        "\t<!--Origin in Spatial Reference System-->\n"
        f"\t<SRSOrigin>{origin[0]},{origin[1]},{origin[2]}</SRSOrigin>\n"
        "\t<Texture>\n\t\t<ColorSource>Visible</ColorSource>\n\t</Texture>\n"
        "</ModelMetadata>\n"
    )
    (out_dir / "metadata.xml").write_text(xml, encoding="utf-8")
    return {"bbox": [x0, y0, x1, y1], "origin": list(origin), "tiles": tiles, "up_axis": "Z"}
