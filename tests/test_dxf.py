"""`twin ingest dxf`: a 1:500 topographic sheet drawn with ezdxf, its layer codes mapped to feature
classes, checked against what was drawn, shown in the basemap tiles, and a broken file refused."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import ezdxf
import mapbox_vector_tile
import pyproj
import pytest
import shapely

from tiles.vector.service import TileService
from twin.model import TimeFilter
from twin.store import open_store

X0, Y0 = 386_200.0, 3_547_300.0  # near Nanjing, CGCS2000 / 3-degree GK CM 120E (EPSG:4549)
WORLD = 20037508.342789244
TO_MERCATOR = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:3857", always_xy=True)


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args], capture_output=True, text=True, timeout=300
    )


def house(dx: float, dy: float, w: float = 16.0, h: float = 10.0) -> list[tuple[float, float]]:
    return [(X0 + dx, Y0 + dy), (X0 + dx + w, Y0 + dy), (X0 + dx + w, Y0 + dy + h), (X0 + dx, Y0 + dy + h)]


def draw_sheet(path: Path, houses: int = 3, offset: tuple[float, float] = (0.0, 0.0)) -> dict[str, str]:
    """A small sheet in the CASS layer convention; returns the handles of the houses by index."""
    ox, oy = offset
    doc = ezdxf.new("R2010")
    doc.appids.add("SOUTH")
    msp = doc.modelspace()
    handles = {}
    for i in range(houses):
        outline = [(x - X0 + ox, y - Y0 + oy) for x, y in house(30 * i, 0)]
        polyline = msp.add_lwpolyline([(X0 + x, Y0 + y) for x, y in outline], close=True, dxfattribs={"layer": "JMD"})
        polyline.set_xdata("SOUTH", [(1000, "141101")])
        handles[str(i)] = polyline.dxf.handle
        msp.add_text(f"砼{i + 3}", dxfattribs={"layer": "ZJ", "insert": (X0 + 30 * i + 8 + ox, Y0 + 5 + oy)})
    msp.add_lwpolyline([(X0 - 10 + ox, Y0 - 8 + oy), (X0 + 120 + ox, Y0 - 8 + oy)], dxfattribs={"layer": "DLSS"})
    msp.add_arc((X0 + 60 + ox, Y0 + 40 + oy), radius=15, start_angle=0, end_angle=180, dxfattribs={"layer": "DLSS"})
    water = [
        (X0 + 10 + ox, Y0 + 60 + oy),
        (X0 + 70 + ox, Y0 + 60 + oy),
        (X0 + 70 + ox, Y0 + 80 + oy),
        (X0 + 10 + ox, Y0 + 80 + oy),
    ]
    msp.add_lwpolyline(water, close=True, dxfattribs={"layer": "SXSS"})
    msp.add_point((X0 + 5 + ox, Y0 + 30 + oy, 12.35), dxfattribs={"layer": "GCD"})
    contour = msp.add_lwpolyline([(X0 + ox, Y0 + 90 + oy), (X0 + 100 + ox, Y0 + 95 + oy)], dxfattribs={"layer": "DGX"})
    contour.dxf.elevation = 12.0
    msp.add_lwpolyline([(X0 - 20, Y0 - 20), (X0 + 200, Y0 - 20), (X0 + 200, Y0 + 120)], dxfattribs={"layer": "TK"})
    msp.add_line((X0, Y0 + 100), (X0 + 5, Y0 + 100), dxfattribs={"layer": "XYZ"})
    doc.saveas(path)
    return handles


@pytest.fixture
def twin(tmp_path) -> Path:
    data = tmp_path / "data"
    result = twin_cli("init", str(data), "--crs", "EPSG:4549")
    assert result.returncode == 0, result.stderr
    return data


def test_a_sheet_lands_in_its_feature_classes(twin, tmp_path):
    sheet = tmp_path / "H50G001001.dxf"
    handles = draw_sheet(sheet)
    result = twin_cli("ingest", "dxf", str(sheet), "--scale", "1:500", "--data", str(twin))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    written = {report["layer"]: report["inserted"] for report in summary["layers"]}
    assert written == {
        "buildings_500": 3, "roads_500": 2, "water_500": 1,
        "elevation_points_500": 1, "contours_500": 1, "annotations_500": 3,
    }  # fmt: skip
    assert summary["skipped_layers"] == {"XYZ": 1}  # TK (the sheet frame) is ignored silently
    with open_store(twin) as store:
        layer = store.get_layer("buildings_500")
        assert (layer.scale_band, layer.geometry_type) == ("1:500", "Polygon")
        first = store.get_feature("buildings_500", f"H50G001001/{handles['0']}")
        assert first.geometry.equals_exact(
            shapely.Polygon(house(0, 0)), 1e-6
        ) or first.geometry.normalize().equals_exact(shapely.Polygon(house(0, 0)).normalize(), 1e-6)
        assert first.properties["code"] == "141101" and first.properties["dxf_layer"] == "JMD"
        water = store.query("water_500", limit=None).features[0]
        assert water.geometry.area == pytest.approx(60 * 20)
        arc = next(f for f in store.query("roads_500", limit=None).features if f.properties["entity"] == "ARC")
        assert arc.geometry.length == pytest.approx(3.14159265 * 15, rel=1e-3)  # flattened to 1 cm
        spot = store.query("elevation_points_500", limit=None).features[0]
        assert spot.properties["elevation"] == 12.35
        assert store.query("contours_500", limit=None).features[0].properties["elevation"] == 12.0
        texts = {f.properties["text"] for f in store.query("annotations_500", limit=None).features}
        assert texts == {"砼3", "砼4", "砼5"}
        # the basemap composite shows the sheet's buildings as the class `buildings` at z18
        service = TileService(store, check_interval=0)
        mx, my = TO_MERCATOR.transform(X0 + 30, Y0 + 5)
        size = 2 * WORLD / 2**18
        x, y = int((mx + WORLD) // size), int((WORLD - my) // size)
        tile = mapbox_vector_tile.decode(gzip.decompress(service.tile("basemap", 18, x, y).data))
        assert {"buildings", "roads", "water", "annotations"} <= set(tile)
        assert f"H50G001001/{handles['1']}" in {f["properties"]["fid"] for f in tile["buildings"]["features"]}
        service.close()


def test_a_new_edition_closes_what_it_dropped_and_leaves_other_sheets(twin, tmp_path):
    first = tmp_path / "A1.dxf"
    handles = draw_sheet(first, houses=3)
    other = tmp_path / "A2.dxf"
    draw_sheet(other, houses=2, offset=(300.0, 0.0))
    for path, when in ((first, "2020-01-01"), (other, "2020-01-01")):
        result = twin_cli("ingest", "dxf", str(path), "--valid-from", when, "--data", str(twin))
        assert result.returncode == 0, result.stderr
    draw_sheet(first, houses=2)  # the third house was demolished (same handles for the others)
    result = twin_cli("ingest", "dxf", str(first), "--valid-from", "2023-01-01", "--data", str(twin))
    assert result.returncode == 0, result.stderr
    with open_store(twin) as store:
        now = {f.fid for f in store.query("buildings_500", limit=None).features}
        then = {f.fid for f in store.query("buildings_500", time=TimeFilter.parse("2021-01-01"), limit=None).features}
    gone = f"A1/{handles['2']}"
    assert gone in then and gone not in now
    assert {fid for fid in now if fid.startswith("A2/")} == {fid for fid in then if fid.startswith("A2/")}
    assert len(now) == 4 and len(then) == 5


def test_source_crs_and_a_custom_mapping(twin, tmp_path):
    """A sheet drawn in the zone-numbered CGCS2000 CRS (easting prefixed 40) with its own codes."""
    zone = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:4528", always_xy=True)
    doc = ezdxf.new()
    outline = [zone.transform(x, y) for x, y in house(0, 0)]
    doc.modelspace().add_lwpolyline(outline, close=True, dxfattribs={"layer": "BLDG"})
    path = tmp_path / "zone40.dxf"
    doc.saveas(path)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"classes": {"buildings": {"geometry": "polygon"}}, "layers": {"BLD*": "buildings"}}))
    result = twin_cli(
        "ingest", "dxf", str(path), "--crs", "EPSG:4528", "--mapping", str(mapping), "--scale", "1:2000",
        "--data", str(twin),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open_store(twin) as store:
        [feature] = store.query("buildings_2000", limit=None).features
        assert store.get_layer("buildings_2000").source_crs == "EPSG:4528"
    assert feature.geometry.hausdorff_distance(shapely.Polygon(house(0, 0))) < 1e-3


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"0\nSECTION\n2\nENTITIES\n0\nLWPOLYLINE\n8\nJMD\n90\nnot-a-number\n", "not a readable DXF"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a readable DXF"),
    ],
)
def test_a_broken_dxf_exits_2_and_changes_nothing(twin, tmp_path, content, words):
    path = tmp_path / "broken.dxf"
    path.write_bytes(content)
    result = twin_cli("ingest", "dxf", str(path), "--data", str(twin))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    with open_store(twin) as store:
        assert store.list_layers() == []


def test_a_sheet_with_nothing_mapped_or_a_bad_mapping_exits_2(twin, tmp_path):
    doc = ezdxf.new()
    doc.modelspace().add_line((X0, Y0), (X0 + 10, Y0), dxfattribs={"layer": "UNKNOWN"})
    path = tmp_path / "nothing.dxf"
    doc.saveas(path)
    result = twin_cli("ingest", "dxf", str(path), "--data", str(twin))
    assert result.returncode == 2 and "UNKNOWN" in result.stderr
    mapping = tmp_path / "bad.json"
    mapping.write_text('{"layers": {"UNKNOWN": "Bad Class"}}')
    result = twin_cli("ingest", "dxf", str(path), "--mapping", str(mapping), "--data", str(twin))
    assert result.returncode == 2 and "Bad Class" in result.stderr
    far = tmp_path / "far.dxf"
    doc = ezdxf.new()
    doc.modelspace().add_lwpolyline([(10, 10), (20, 10), (20, 20)], close=True, dxfattribs={"layer": "JMD"})
    doc.saveas(far)
    result = twin_cli("ingest", "dxf", str(far), "--data", str(twin))  # local drawing units, not EPSG:4549
    assert result.returncode == 2 and "outside the project CRS" in result.stderr
    with open_store(twin) as store:
        assert store.list_layers() == []
