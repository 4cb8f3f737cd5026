"""City models: CityJSON and CityGML buildings as features with their LOD geometry, tiled like BIM.

Expected coordinates are read from the files here (CityJSON integer vertices times `scale`
plus `translate`; GML posLists), not through the reader: the stored surfaces and the vertices
decoded from the built glb tiles (through the root transform, back to the file's CRS with
pyproj) must be the file's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree

from ingestion.citymodel import ingest_citymodel
from tests.conftest import shared_file
from tiles.threed.build import ensure_built
from tiles.threed.gltf import mesh_positions
from tiles.threed.validate import check_glb_features, check_tileset, validate_glbs, validator_available
from twin.model import InvalidInput, TimeFilter
from twin.store import init_store

CJ = "citymodel/cjio_testdata"


@pytest.fixture
def rd(tmp_path):
    """A twin in the Dutch national grid (RD New), where the Delft and Rotterdam models lie."""
    store = init_store(tmp_path / "rd", "EPSG:28992")
    store.set_meta("geoid_offset", "43.0")
    yield store
    store.close()


def file_vertices(document: dict) -> np.ndarray:
    transform = document["transform"]
    return np.asarray(document["vertices"], dtype=float) * transform["scale"] + transform["translate"]


def lod_vertex_ids(geometry: dict) -> set[int]:
    def walk(item):
        if isinstance(item, int):
            yield item
        else:
            for child in item:
                yield from walk(child)

    return set(walk(geometry["boundaries"]))


def built_vertices(folder: Path, geoid: float) -> np.ndarray:
    """Vertices of the leaf tiles, back in RD New + NAP through ECEF (pyproj only)."""
    document = json.loads((folder / "tileset.json").read_text())
    frame = np.asarray(document["root"]["transform"], dtype=float).reshape(4, 4).T
    points = []

    def visit(tile):
        if not tile.get("children"):
            local, _ = mesh_positions((folder / tile["content"]["uri"]).read_bytes())
            points.append((frame @ np.column_stack([local, np.ones(len(local))]).T).T[:, :3])
        for child in tile.get("children", []):
            visit(child)

    visit(document["root"])
    ecef = np.concatenate(points)
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*ecef.T)
    to_rd = Transformer.from_crs("EPSG:28992", "OGC:CRS84", always_xy=True)
    x, y = to_rd.transform(lon, lat, direction="INVERSE")
    return np.column_stack([x, y, h - geoid])


def test_delft_buildings_keep_their_vertices_attributes_and_lod(rd):
    path = shared_file(f"{CJ}/delft.json")
    document = json.loads(path.read_text())
    report = ingest_citymodel(rd, path)
    buildings = {k: v for k, v in document["CityObjects"].items() if v["type"] == "Building"}
    assert report.inserted == len(buildings) == 160
    vertices = file_vertices(document)
    features = {f.fid: f for f in rd.iter_features(report.layer, time=TimeFilter(None, None))}
    for fid, item in list(buildings.items())[:40]:
        feature = features[fid]
        geometry = item["geometry"][0]
        expected = vertices[sorted(lod_vertex_ids(geometry))]
        stored = shapely.get_coordinates(feature.geometry, include_z=True)
        assert feature.geometry.geom_type == "MultiPolygon" and feature.geometry.has_z
        distance, _ = cKDTree(expected).query(stored)
        assert distance.max() < 1e-6  # the same points: RD New is the horizontal part of EPSG:7415
        assert len(np.unique(np.round(stored, 4), axis=0)) == len(expected)
        assert feature.properties["lod"] == str(geometry["lod"]) and feature.properties["type"] == "Building"
        for key, value in (item.get("attributes") or {}).items():
            assert feature.properties[key] == value
    built = ensure_built(rd, report.layer)
    tileset = check_tileset(built.folder / "tileset.json")
    assert tileset.ok, tileset.errors
    glbs = sorted((built.folder / "tiles").glob("*.glb"))
    assert all(check_glb_features(p.read_bytes()) == [] for p in glbs)
    if validator_available():
        assert all(r["numErrors"] == 0 for r in validate_glbs(glbs))
    decoded = built_vertices(built.folder, 43.0)
    used = vertices[sorted(set().union(*(lod_vertex_ids(b["geometry"][0]) for b in buildings.values())))]
    distance, _ = cKDTree(used).query(decoded)
    assert distance.max() < 0.02  # 16-bit quantised tile positions over a 300 m tile


def test_the_highest_lod_is_chosen_and_a_missing_crs_is_asked_for(rd):
    path = shared_file(f"{CJ}/multi_lod.json")
    before = rd.list_layers()
    with pytest.raises(InvalidInput, match="names no CRS"):
        ingest_citymodel(rd, path)
    assert rd.list_layers() == before
    report = ingest_citymodel(rd, path, source_crs="EPSG:7415")
    lods = {f.properties["lod"] for f in rd.iter_features(report.layer)}
    assert lods == {"2.2"}


def test_zurich_lod2_with_semantics_in_its_own_crs(tmp_path):
    store = init_store(tmp_path / "ch", "EPSG:2056")
    path = shared_file(f"{CJ}/zurich_subset_lod2.json")
    report = ingest_citymodel(store, path)
    document = json.loads(path.read_text())
    parts = [k for k, v in document["CityObjects"].items() if v["type"] == "BuildingPart" and v.get("geometry")]
    feature = store.get_feature(report.layer, parts[0])
    assert feature.properties["parent"] == document["CityObjects"][parts[0]]["parents"][0]
    built = ensure_built(store, report.layer)
    assert built.summary["features"] == report.inserted
    store.close()


CITYGML2 = """<?xml version="1.0" encoding="UTF-8"?>
<core:CityModel xmlns:core="http://www.opengis.net/citygml/2.0" xmlns:bldg="http://www.opengis.net/citygml/building/2.0"
  xmlns:gen="http://www.opengis.net/citygml/generics/2.0" xmlns:gml="http://www.opengis.net/gml">
 <gml:boundedBy><gml:Envelope srsName="urn:ogc:def:crs:EPSG::7415" srsDimension="3">
  <gml:lowerCorner>85000 446000 0</gml:lowerCorner><gml:upperCorner>85010 446010 9</gml:upperCorner>
 </gml:Envelope></gml:boundedBy>
 <core:cityObjectMember><bldg:Building gml:id="house1">
  <bldg:measuredHeight uom="m">9.0</bldg:measuredHeight>
  <gen:stringAttribute name="owner"><gen:value>gemeente</gen:value></gen:stringAttribute>
  <bldg:lod1Solid><gml:Solid><gml:exterior><gml:CompositeSurface><gml:surfaceMember><gml:Polygon>
   <gml:exterior><gml:LinearRing>
   <gml:posList srsDimension="3">85000 446000 0 85010 446000 0 85010 446010 0 85000 446010 0 85000 446000 0
   </gml:posList>
  </gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember></gml:CompositeSurface></gml:exterior>
  </gml:Solid></bldg:lod1Solid>
  ROOF
  <bldg:boundedBy><bldg:WallSurface><bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember><gml:Polygon>
   <gml:exterior><gml:LinearRing>
   <gml:posList>85000 446000 0 85010 446000 0 85010 446000 6 85000 446000 6 85000 446000 0</gml:posList>
  </gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember></gml:MultiSurface></bldg:lod2MultiSurface>
  </bldg:WallSurface></bldg:boundedBy>
 </bldg:Building></core:cityObjectMember>
</core:CityModel>
"""
ROOF = """<bldg:boundedBy><bldg:RoofSurface><bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember><gml:Polygon>
   <gml:exterior><gml:LinearRing>
   <gml:posList>85000 446000 6 85010 446000 6 85010 446010 9 85000 446010 9 85000 446000 6</gml:posList>
   </gml:LinearRing></gml:exterior><gml:interior><gml:LinearRing>
   <gml:posList>85004 446004 7.2 85006 446004 7.2 85006 446006 7.8 85004 446006 7.8 85004 446004 7.2</gml:posList>
   </gml:LinearRing></gml:interior></gml:Polygon></gml:surfaceMember></gml:MultiSurface></bldg:lod2MultiSurface>
   </bldg:RoofSurface></bldg:boundedBy>"""


def test_citygml_2_lod2_surfaces_with_semantics_and_a_hole(rd, tmp_path):
    path = tmp_path / "house.gml"
    path.write_text(CITYGML2.replace("ROOF", ROOF))
    report = ingest_citymodel(rd, path)
    feature = rd.get_feature(report.layer, "house1")
    assert feature.properties["lod"] == "2" and feature.properties["measuredHeight"] == 9.0
    assert feature.properties["owner"] == "gemeente"
    roof, wall = feature.geometry.geoms
    assert len(roof.interiors) == 1 and roof.area == pytest.approx(100 - 4)
    assert shapely.get_coordinates(wall, include_z=True)[:, 2].max() == pytest.approx(6.0)
    built = ensure_built(rd, report.layer)
    local, _ = mesh_positions(next((built.folder / "tiles").glob("*.glb")).read_bytes())
    assert len(local) >= 8  # a holed roof and a wall, triangulated


def test_citygml_3_lod1_solid(rd, tmp_path):
    text = CITYGML2.replace("ROOF", "").replace("citygml/2.0", "citygml/3.0").replace("building/2.0", "building/3.0")
    text = (
        text.split("<bldg:boundedBy><bldg:WallSurface>")[0]
        + "</bldg:Building></core:cityObjectMember></core:CityModel>"
    )
    path = tmp_path / "house3.gml"
    path.write_text(text)
    report = ingest_citymodel(rd, path)
    feature = rd.get_feature(report.layer, "house1")
    assert feature.properties["lod"] == "1" and feature.geometry.area == pytest.approx(100.0)


def test_bad_city_models_change_nothing(rd, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "CityJSON", "version": "2.0", "CityObj')
    not_city = tmp_path / "other.json"
    not_city.write_text('{"type": "FeatureCollection", "features": []}')
    gml = tmp_path / "broken.gml"
    gml.write_text("<core:CityModel xmlns:core='x'><unclosed>")
    before = (rd.list_layers(), rd.assets.keys())
    for path, crs, words in (
        (broken, None, "not a readable CityJSON"),
        (not_city, None, "not a CityJSON file"),
        (gml, None, "not a readable CityGML"),
        (shared_file(f"{CJ}/delft.json"), "EPSG:4549", "outside the area"),
        (shared_file(f"{CJ}/delft.json"), "EPSG:99999", "unknown CRS"),
    ):
        with pytest.raises(InvalidInput, match=words):
            ingest_citymodel(rd, path, source_crs=crs)
    assert (rd.list_layers(), rd.assets.keys()) == before


def test_cli_ingests_a_city_model_and_refuses_one_without_crs(tmp_path):
    data = tmp_path / "cli"
    init_store(data, "EPSG:28992").close()
    command = [sys.executable, "-c", "from twin.cli import main; main()", "ingest", "citymodel"]
    refused = subprocess.run(
        [*command, str(shared_file(f"{CJ}/rotterdam_subset.json")), "--data", str(data)], capture_output=True, text=True
    )
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0 and "CRS" in refused.stderr
    done = subprocess.run(
        [*command, str(shared_file(f"{CJ}/rotterdam_subset.json")), "--crs", "EPSG:7415", "--data", str(data)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inserted"] == 16


def test_ingest_api_runs_the_city_model_reader(rd):
    import time

    from fastapi.testclient import TestClient

    from twin.api.app import create_app
    from twin.auth import KeyStore

    def wait(client: TestClient, url: str) -> dict:
        for _ in range(2400):
            job = client.get(url).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError("job did not finish")

    token = KeyStore(rd.data_dir).create("loader", "editor")[1]
    content = shared_file(f"{CJ}/rotterdam_subset.json").read_bytes()
    with TestClient(create_app(rd), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        wrong = client.post("/ingest", files={"file": ("city.txt", b"x")}, data={"kind": "citymodel"})
        assert wrong.status_code == 400
        bad_crs = client.post("/ingest", files={"file": ("r.json", content)}, data={"kind": "citymodel", "crs": "X:1"})
        assert bad_crs.status_code == 400 and "CRS" in bad_crs.json()["detail"]
        refused = client.post("/ingest", files={"file": ("rotterdam.json", content)}, data={"kind": "citymodel"})
        job = wait(client, refused.headers["Location"])
        assert job["state"] == "failed" and "names no CRS" in job["message"]
        assert rd.list_layers() == []
        done = client.post(
            "/ingest", files={"file": ("rotterdam.json", content)}, data={"kind": "citymodel", "crs": "EPSG:7415"}
        )
        job = wait(client, done.headers["Location"])
        assert job["state"] == "succeeded" and job["result"]["inserted"] == 16, job
        assert client.get("/3dtiles/rotterdam/tileset.json").status_code == 200
        client.app.state.jobs.close()


def test_a_polygon_given_twice_by_gml_id_is_drawn_once(rd, tmp_path):
    roof = ROOF.replace("<gml:Polygon>", '<gml:Polygon gml:id="roof1">', 1)
    solid = roof.replace("bldg:boundedBy", "bldg:lod2Solid").replace("bldg:RoofSurface", "gml:Solid")
    path = tmp_path / "twice.gml"
    path.write_text(CITYGML2.replace("ROOF", roof + solid))
    feature = rd.get_feature(ingest_citymodel(rd, path).layer, "house1")
    assert len(feature.geometry.geoms) == 2  # the roof once, the wall
