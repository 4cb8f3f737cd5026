"""OpenSceneGraph's `.osgt` text form, read into geometry and PagedLOD nodes.

OSGB, the binary form that ContextCapture, Smart3D and DJI Terra deliver, is turned into
`.osgt` by OpenSceneGraph's own `osgconv` (Debian `openscenegraph`), with images written
inline and the scene optimizer off so the file says exactly what the OSGB held. This module
parses that text: a tokenizer for its `Key values {block}` layout (numeric `vector` blocks are
read in one numpy pass), objects shared by `UniqueID`, then the scene: `osg::Geometry` vertex,
texture-coordinate and colour arrays with their primitive sets, the material colour and the
2D texture (an image file next to the tile, or pixels inline), and `osg::PagedLOD` centres,
radii, range lists and child file names.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from twin.model import InvalidInput

OSGCONV = "osgconv"
TOKEN = re.compile(r'[ \t\r]*("[^"\\]*(?:\\.[^"\\]*)*"|[{}]|\n|[^\s{}"]+)')
GL_RGB, GL_RGBA, GL_BGR, GL_BGRA, GL_LUMINANCE, GL_LUMINANCE_ALPHA = 6407, 6408, 32992, 32993, 6409, 6410
GL_DXT1_RGB, GL_DXT1_RGBA = 33776, 33777
GL_UNSIGNED_BYTE = 5121
CHANNELS = {GL_RGB: 3, GL_RGBA: 4, GL_BGR: 3, GL_BGRA: 4, GL_LUMINANCE: 1, GL_LUMINANCE_ALPHA: 2}
NODE_CHILDREN = "Children"


@dataclass
class Entry:
    """One `Key values... [{block}]` line; `block` is a list of entries or a numeric array."""

    key: str
    values: list[str]
    block: list[Entry] | np.ndarray | None = None

    def find(self, key: str) -> Entry | None:
        if isinstance(self.block, list):
            for entry in self.block:
                if entry.key == key:
                    return entry
        return None

    def objects(self) -> list[Entry]:
        """Objects (`osg::Class {...}`) directly inside this entry's block."""
        return [e for e in self.block if "::" in e.key] if isinstance(self.block, list) else []


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.text, self.name, self.pos = text, name, 0
        self.by_id: dict[str, Entry] = {}

    def error(self, why: str) -> InvalidInput:
        line = self.text.count("\n", 0, self.pos) + 1
        return InvalidInput(f"{self.name}: not a readable OSG scene ({why} at line {line})")

    def token(self) -> str | None:
        match = TOKEN.match(self.text, self.pos)
        if match is None:
            if self.text[self.pos :].strip():
                raise self.error("unexpected character")
            return None
        self.pos = match.end()
        return match.group(1)

    def entries(self, closing: bool) -> list[Entry]:
        out: list[Entry] = []
        while True:
            key = self.token()
            if key is None:
                if closing:
                    raise self.error("unclosed block")
                return out
            if key == "\n":
                continue
            if key.startswith("#") and not out and not closing:
                self.pos = self.text.find("\n", self.pos) + 1 or len(self.text)
                continue
            if key == "}":
                if not closing:
                    raise self.error("unbalanced '}'")
                return out
            if key == "{":
                raise self.error("block without a key")
            out.append(self.entry(key))

    def entry(self, key: str) -> Entry:
        values: list[str] = []
        while True:
            start = self.pos
            token = self.token()
            if token is None or token == "\n":
                return Entry(key, values)
            if token == "}":
                self.pos = start
                return Entry(key, values)
            if token == "{":
                if key == "vector":
                    end = self.text.find("}", self.pos)
                    if end < 0:
                        raise self.error("unclosed array")
                    try:
                        numbers = np.array(self.text[self.pos : end].split(), dtype=np.float64)
                    except ValueError as exc:
                        raise self.error("non-numeric array value") from exc
                    self.pos = end + 1
                    return Entry(key, values, numbers)
                entry = Entry(key, values, self.entries(closing=True))
                if "::" in key:
                    uid = entry.find("UniqueID")
                    if uid is not None and uid.values:
                        known = self.by_id.get(uid.values[0])
                        if known is not None and len(entry.block) == 1:  # a reference to an earlier object
                            return known
                        self.by_id.setdefault(uid.values[0], entry)
                return entry
            values.append(token)


def parse(text: str, name: str = "scene") -> list[Entry]:
    """The top-level objects of an `.osgt` text."""
    objects = _Parser(text, name).entries(closing=False)
    if not objects or not all("::" in o.key for o in objects):
        raise InvalidInput(f"{name}: not an OSG text scene (no osg:: object at the top)")
    return objects


@dataclass
class Texture:
    """An image as encoded bytes (JPEG or PNG) and its MIME type."""

    data: bytes
    mime: str


@dataclass
class Geometry:
    """Triangles of one `osg::Geometry` in the tile's coordinates, with texture or colour."""

    positions: np.ndarray
    indices: np.ndarray
    uvs: np.ndarray | None = None
    texture: Texture | None = None
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)


@dataclass
class Node:
    """A PagedLOD (or a file's loose geometry): its own geometry and the files that refine it.

    `threshold` is the pixel size on screen from which the children replace the geometry
    (`None` when the node is a leaf); `radius` its bounding-sphere radius.
    """

    geometries: list[Geometry]
    files: list[str] = field(default_factory=list)
    threshold: float | None = None
    radius: float = 0.0
    center: tuple[float, float, float] | None = None
    range_mode: str = "PIXEL_SIZE_ON_SCREEN"


def _number(entry: Entry | None, default: float = 0.0, index: int = 0) -> float:
    if entry is None or len(entry.values) <= index:
        return default
    return float(entry.values[index])


def _array(holder: Entry | None, width: int, name: str) -> np.ndarray | None:
    """The numeric `vector` of the first array object inside `holder` as rows of `width`."""
    if holder is None:
        return None
    objects = holder.objects()
    if not objects:
        return None
    vector = objects[0].find("vector")
    if vector is None or not isinstance(vector.block, np.ndarray):
        return None
    values = vector.block
    if values.size % width:
        raise InvalidInput(f"{name}: array {objects[0].key} has {values.size} values, not rows of {width}")
    return values.reshape(-1, width)


def _triangles(primitive: Entry, count: int, name: str) -> np.ndarray:
    """A primitive set as triangles (indices into the vertex array)."""
    mode = primitive.find("Mode")
    mode_name = mode.values[0] if mode is not None and mode.values else "TRIANGLES"
    if primitive.key == "osg::DrawArrays":
        first, n = int(_number(primitive.find("First"))), int(_number(primitive.find("Count")))
        index = np.arange(first, first + n, dtype=np.int64)
    else:
        vector = primitive.find("vector")
        index = np.asarray(vector.block if vector is not None else [], dtype=np.int64)
    if mode_name == "TRIANGLES":
        tris = index[: len(index) // 3 * 3].reshape(-1, 3)
    elif mode_name == "TRIANGLE_STRIP" and len(index) >= 3:
        k = np.arange(len(index) - 2)
        tris = np.column_stack([index[k], index[k + 1 + (k % 2)], index[k + 2 - (k % 2)]])
    elif mode_name == "TRIANGLE_FAN" and len(index) >= 3:
        k = np.arange(1, len(index) - 1)
        tris = np.column_stack([np.full(len(k), index[0]), index[k], index[k + 1]])
    elif mode_name == "QUADS":
        quads = index[: len(index) // 4 * 4].reshape(-1, 4)
        tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    else:
        return np.zeros((0, 3), dtype=np.int64)  # points and lines draw nothing in a mesh
    if len(tris) and (tris.min() < 0 or tris.max() >= count):
        raise InvalidInput(f"{name}: a primitive set indexes past the {count} vertices")
    return tris


def _decode_dxt1(data: bytes, width: int, height: int) -> np.ndarray:
    """S3TC DXT1 blocks (the usual OSGB texture compression) to RGB pixels."""
    bw, bh = (width + 3) // 4, (height + 3) // 4
    blocks = np.frombuffer(data[: bw * bh * 8], dtype="<u2").reshape(-1, 4)
    c0, c1 = blocks[:, 0].astype(np.int32), blocks[:, 1].astype(np.int32)
    bits = blocks[:, 2].astype(np.uint32) | (blocks[:, 3].astype(np.uint32) << 16)

    def rgb(c: np.ndarray) -> np.ndarray:
        return np.stack([(c >> 11 & 31) * 255 // 31, (c >> 5 & 63) * 255 // 63, (c & 31) * 255 // 31], axis=1)

    a, b = rgb(c0), rgb(c1)
    four = c0 > c1
    palette = np.stack(
        [a, b, np.where(four[:, None], (2 * a + b) // 3, (a + b) // 2), np.where(four[:, None], (a + 2 * b) // 3, 0)],
        axis=1,
    )
    codes = (bits[:, None] >> (2 * np.arange(16, dtype=np.uint32))) & 3
    pixels = np.take_along_axis(palette, codes[:, :, None].astype(np.int64), axis=1)  # (blocks, 16, 3)
    image = pixels.reshape(bh, bw, 4, 4, 3).transpose(0, 2, 1, 3, 4).reshape(bh * 4, bw * 4, 3)
    return image[:height, :width].astype(np.uint8)


def _inline_image(image: Entry, name: str) -> np.ndarray:
    size = image.find("Size")
    data = image.find("Data")
    if size is None or data is None or not isinstance(data.block, list) or not data.block:
        raise InvalidInput(f"{name}: a texture has neither an image file nor inline pixels")
    width, height = int(size.values[0]), int(size.values[1])
    raw = base64.b64decode("".join(data.block[0].key.strip('"').split()))
    pixel_format = int(_number(image.find("PixelFormat")))
    if pixel_format in (GL_DXT1_RGB, GL_DXT1_RGBA):
        pixels = _decode_dxt1(raw, width, height)
    else:
        channels = CHANNELS.get(pixel_format)
        if channels is None or int(_number(image.find("DataType"), GL_UNSIGNED_BYTE)) != GL_UNSIGNED_BYTE:
            raise InvalidInput(f"{name}: unsupported inline texture format {pixel_format}")
        packing = int(_number(image.find("Packing"), 1)) or 1
        row = width * channels
        stride = -(-row // packing) * packing
        if len(raw) < stride * height:
            raise InvalidInput(f"{name}: inline texture is shorter than its {width}x{height} size")
        pixels = np.frombuffer(raw[: stride * height], dtype=np.uint8).reshape(height, stride)[:, :row]
        pixels = pixels.reshape(height, width, channels)
        if pixel_format in (GL_BGR, GL_BGRA):
            pixels = pixels[:, :, [2, 1, 0, 3][:channels]]
    if int(_number(image.find("Origin"))) == 0:  # BOTTOM_LEFT: row 0 is the bottom of the picture
        pixels = pixels[::-1]
    return pixels


def _encode(pixels: np.ndarray, quality: int) -> Texture:
    buffer = io.BytesIO()
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4) and (pixels[:, :, -1] < 255).any():
        Image.fromarray(np.ascontiguousarray(pixels)).convert("RGBA").save(buffer, "PNG")
        return Texture(buffer.getvalue(), "image/png")
    Image.fromarray(np.ascontiguousarray(pixels[:, :, :3] if pixels.ndim == 3 else pixels)).convert("RGB").save(
        buffer, "JPEG", quality=quality
    )
    return Texture(buffer.getvalue(), "image/jpeg")


def safe_relative(name: str, base: Path, what: str) -> Path:
    """`name` resolved inside `base`; InvalidInput for absolute paths or '..' (no escaping the folder)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if not name or pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
        raise InvalidInput(f"{what}: file name {name!r} points outside the tile folder")
    return base / Path(*pure.parts)


def _texture(stateset: Entry | None, base: Path, name: str, quality: int, cache: dict[int, Texture]) -> Texture | None:
    if stateset is None:
        return None
    attributes = stateset.find("TextureAttributeList")
    if attributes is None:
        return None
    for unit in attributes.block or []:
        for texture in unit.objects() if isinstance(unit.block, list) else []:
            image = texture.find("Image")
            if image is None or not isinstance(image.block, list):
                continue
            if id(image) in cache:
                return cache[id(image)]
            file_name = image.find("FileName")
            has_data = image.find("Data") is not None
            if has_data:
                result = _encode(_inline_image(image, name), quality)
            elif file_name is not None and file_name.values:
                path = safe_relative(file_name.values[0].strip('"'), base, name)
                if not path.is_file():
                    raise InvalidInput(f"{name}: texture {path.name} is missing")
                data = path.read_bytes()
                mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
                if data[:3] != b"\xff\xd8\xff" and mime != "image/png":
                    result = _encode(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), quality)
                else:
                    result = Texture(data, mime)
            else:
                raise InvalidInput(f"{name}: a texture has neither an image file nor inline pixels")
            cache[id(image)] = result
            return result
    return None


def _color(stateset: Entry | None) -> tuple[float, float, float, float]:
    if stateset is None:
        return (1.0, 1.0, 1.0, 1.0)
    attributes = stateset.find("AttributeList")
    for obj in attributes.objects() if attributes is not None else []:
        if obj.key == "osg::Material":
            diffuse = obj.find("Diffuse")
            if diffuse is not None and len(diffuse.values) >= 6:
                r, g, b, a = (float(v) for v in diffuse.values[2:6])
                return (r, g, b, a)
    return (1.0, 1.0, 1.0, 1.0)


def _geometry(obj: Entry, base: Path, name: str, quality: int, cache: dict[int, Texture]) -> Geometry | None:
    positions = _array(obj.find("VertexArray"), 3, name)
    if positions is None or not len(positions):
        return None
    primitives = obj.find("PrimitiveSetList")
    parts = [_triangles(p, len(positions), name) for p in (primitives.objects() if primitives else [])]
    indices = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    if not len(indices):
        return None
    uvs = None
    coords = obj.find("TexCoordArrayList")
    if coords is not None and coords.objects():
        uvs = _array(Entry("", [], [coords.objects()[0]]), 2, name)
        if uvs is not None and len(uvs) != len(positions):
            raise InvalidInput(f"{name}: {len(uvs)} texture coordinates for {len(positions)} vertices")
    stateset_holder = obj.find("StateSet")
    stateset = stateset_holder.objects()[0] if stateset_holder is not None and stateset_holder.objects() else None
    texture = _texture(stateset, base, name, quality, cache) if uvs is not None else None
    return Geometry(positions, indices, uvs if texture is not None else None, texture, _color(stateset))


def _collect(obj: Entry, base: Path, name: str, quality: int, cache: dict, loose: list[Geometry], out: list[Node]):
    """Walk a node: PagedLODs become nodes; geometry outside any goes to `loose`."""
    if obj.key == "osg::Geometry":
        geometry = _geometry(obj, base, name, quality, cache)
        if geometry is not None:
            loose.append(geometry)
        return
    if obj.key == "osg::PagedLOD":
        out.append(_paged_lod(obj, base, name, quality, cache))
        return
    for holder_key in (NODE_CHILDREN, "Drawables"):
        holder = obj.find(holder_key)
        for child in holder.objects() if holder is not None else []:
            _collect(child, base, name, quality, cache, loose, out)


def _paged_lod(obj: Entry, base: Path, name: str, quality: int, cache: dict) -> Node:
    ranges_entry = obj.find("RangeList")
    ranges = [(float(e.key), float(e.values[0])) for e in (ranges_entry.block if ranges_entry else []) if e.values]
    files_entry = obj.find("RangeDataList")
    files = [e.key.strip('"') for e in (files_entry.block if files_entry else [])]
    mode = obj.find("RangeMode")
    center = obj.find("UserCenter")
    geometries: list[Geometry] = []
    nested: list[Node] = []
    children = obj.find(NODE_CHILDREN)
    for child in children.objects() if children is not None else []:
        _collect(child, base, name, quality, cache, geometries, nested)
    for inner in nested:  # a PagedLOD inside the inline child: its geometry belongs to this level
        geometries.extend(inner.geometries)
    refine = [(r, f) for r, f in zip(ranges, files + [""] * len(ranges), strict=False) if f]
    for f in files:
        if f:
            safe_relative(f, base, name)
    range_mode = mode.values[0] if mode is not None and mode.values else "DISTANCE_FROM_EYE_POINT"
    # children are drawn from a pixel size up, or from an eye distance down
    if range_mode == "PIXEL_SIZE_ON_SCREEN":
        threshold = min((lo for (lo, _), _ in refine), default=None)
    else:
        threshold = max((hi for (_, hi), _ in refine), default=None)
    radius = _number(center, 0.0, 3)
    if radius <= 0.0 and geometries:  # no user-defined centre: the geometry's bounding sphere
        points = np.concatenate([g.positions for g in geometries])
        radius = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)) / 2.0)
    return Node(
        geometries=geometries,
        files=[f for _, f in refine],
        threshold=threshold,
        radius=radius,
        center=tuple(float(v) for v in center.values[:3]) if center is not None and len(center.values) >= 3 else None,
        range_mode=range_mode,
    )


def scene_nodes(objects: list[Entry], base: Path, name: str, quality: int = 85) -> list[Node]:
    """A file's PagedLOD nodes; geometry outside any PagedLOD becomes one leaf node."""
    loose: list[Geometry] = []
    nodes: list[Node] = []
    cache: dict[int, Texture] = {}
    for obj in objects:
        _collect(obj, base, name, quality, cache, loose, nodes)
    if loose:
        nodes.append(Node(geometries=loose))
    return nodes


def osgconv_path() -> str:
    """The `osgconv` executable; a clear error when OpenSceneGraph is not installed."""
    found = shutil.which(OSGCONV)
    if found is None:
        raise InvalidInput(
            "osgconv (OpenSceneGraph) is not installed; run `apt-get install openscenegraph` to read OSGB"
        )
    return found


def convert(*sources: Path, target: Path, inline_images: bool = True) -> None:
    """`osgconv` with the optimizer off: OSGB to `.osgt` (images inline) or `.osgt` to OSGB.

    Several sources become one scene whose top `osg::Group` holds one child per file read.
    """
    env = {**os.environ, "OSG_OPTIMIZER": "OFF", "OSG_NOTIFY_LEVEL": "WARN"}
    hint = "IncludeData" if inline_images else "IncludeFile"
    result = subprocess.run(
        [osgconv_path(), "-O", f"WriteImageHint={hint}", *map(str, sources), str(target)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(Path(sources[0]).parent),
        check=False,
    )
    if result.returncode != 0 or not Path(target).is_file():
        reason = (result.stderr or result.stdout).strip().splitlines()
        names = ", ".join(Path(s).name for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise InvalidInput(f"{names}: OpenSceneGraph cannot read it ({reason[-1] if reason else 'no output'})")


BATCH = 24  # OSGB files per osgconv run: one process start for many small files


def _converted(paths: list[Path], work: Path) -> list[list[Entry]] | None:
    """Each file's top-level objects from one osgconv run; None when a file did not load."""
    target = Path(work) / f"batch-{os.getpid()}-{id(paths)}.osgt"
    try:
        convert(*paths, target=target)
        objects = parse(target.read_text(encoding="utf-8", errors="replace"), paths[0].name)
    except InvalidInput:
        if len(paths) == 1:
            raise
        return None
    finally:
        target.unlink(missing_ok=True)
    if len(paths) == 1:
        return [objects]
    children = objects[0].find(NODE_CHILDREN) if len(objects) == 1 and objects[0].key == "osg::Group" else None
    found = children.objects() if children is not None else []
    return [[child] for child in found] if len(found) == len(paths) else None


def read_scenes(paths: list[Path], work: Path, quality: int = 85) -> list[list[Node]]:
    """The nodes of each `.osgb` (converted in batches in `work`) or `.osgt` file, in order."""
    objects: dict[Path, list[Entry]] = {}
    binary = [p for p in paths if p.suffix.lower() != ".osgt"]
    for start in range(0, len(binary), BATCH):
        batch = binary[start : start + BATCH]
        found = _converted(batch, work)
        if found is None:  # a file did not load: one at a time, so the error names it
            found = [_converted([p], work)[0] for p in batch]
        objects.update(zip(batch, found, strict=True))
    for path in paths:
        if path not in objects:
            objects[path] = parse(path.read_text(encoding="utf-8", errors="replace"), path.name)
    return [scene_nodes(objects[p], p.parent, p.name, quality) for p in paths]


def read_scene(path: Path, work: Path, quality: int = 85) -> list[Node]:
    """The nodes of one `.osgb` or `.osgt` file."""
    return read_scenes([Path(path)], work, quality)[0]
