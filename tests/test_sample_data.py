"""Tests of the demo district generator (sample_data).

The district is generated once per module at the default size (it takes a few seconds) and
every test reads the files back, so each test fails if the generator breaks what it checks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer

from sample_data import generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("district")
    manifest = generate(out)
    return out, manifest


def _layer(district: tuple[Path, dict], layer_id: str) -> gpd.GeoDataFrame:
    out, manifest = district
    entry = next(e for e in manifest["layers"] if e["id"] == layer_id)
    return gpd.read_file(out / entry["path"], layer=entry["layer"])


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- manifest and place ---------------------------------------------------------------------


def test_manifest_lists_every_layer_with_its_file(district):
    out, manifest = district
    assert manifest == json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    ids = [e["id"] for e in manifest["layers"]]
    assert len(ids) == len(set(ids))
    for band in ("500", "2000", "10000"):
        for name in ("buildings", "roads", "water", "green", "landuse"):
            assert f"{name}_{band}" in ids
    for needed in (
        "buildings_planned",
        "water_nodes",
        "water_pipes",
        "drainage_nodes",
        "drainage_pipes",
        "gas_nodes",
        "gas_pipes",
        "sensors",
    ):
        assert needed in ids
    for e in manifest["layers"]:
        assert e["id"].islower() and e["id"].replace("_", "").isalnum()
        assert e["kind"] in ("vector", "pipe_network", "sensor")
        assert e["scale_band"] in ("1:500", "1:2000", "1:10000", None)
        assert e["scenario"] in ("current", "planned")
        datetime.fromisoformat(e["valid_from"].replace("Z", "+00:00"))
        info = pyogrio.read_info(out / e["path"], layer=e["layer"])
        assert info["crs"] == "EPSG:4549"
        assert info["features"] == e["feature_count"] > 0
        ids_in_file = pyogrio.read_dataframe(
            out / e["path"], layer=e["layer"], columns=[e["id_field"]], read_geometry=False
        )
        assert ids_in_file[e["id_field"]].is_unique
    assert {r["id"] for r in manifest["rasters"]} == {"dem", "ortho"}
    for r in manifest["rasters"]:
        assert (out / r["path"]).is_file()
    assert (out / manifest["ifc"]["path"]).is_file()
    assert (out / manifest["reality_mesh"]["metadata"]).is_file()
    assert (out / manifest["observations"]["path"]).is_file()


def test_district_is_anchored_at_nanjing_in_cgcs2000_gk(district):
    _, manifest = district
    x, y = Transformer.from_crs("EPSG:4490", "EPSG:4549", always_xy=True).transform(118.78, 32.04)
    x0, y0, x1, y1 = manifest["bbox"]
    assert (x0, y0) == (round(x / 100) * 100, round(y / 100) * 100)
    assert x0 % 100 == 0 and y0 % 100 == 0
    assert (x1 - x0, y1 - y0) == (2000.0, 2000.0)
    assert 380000 < x0 < 390000 and 3540000 < y0 < 3550000  # easting first, in zone CM 120E without prefix
    lon0, lat0, lon1, lat1 = manifest["bbox_lonlat"]
    assert lon0 < 118.78 + 0.002 and lat0 < 32.04 + 0.002 and lon1 > 118.79 and lat1 > 32.05


def test_same_seed_gives_identical_files_and_other_seed_does_not(district, tmp_path):
    out, _ = district
    again = tmp_path / "again"
    generate(again)
    first, second = _hashes(out), _hashes(again)
    assert first.keys() == second.keys()
    differing = [k for k in first if first[k] != second[k]]
    assert differing == []
    # a part comes out the same when generated alone
    alone = tmp_path / "alone"
    generate(alone, parts={"networks"})
    assert _hashes(alone)["water_network.gpkg"] == first["water_network.gpkg"]
    other = tmp_path / "other"
    generate(other, seed=7, parts={"networks"})
    assert _hashes(other)["water_network.gpkg"] != first["water_network.gpkg"]


def test_cli_rejects_unknown_parts(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "sample_data", str(tmp_path / "x"), "--parts", "basemap,bogus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "bogus" in run.stderr
    assert not (tmp_path / "x" / "manifest.json").exists()


# --- rasters ----------------------------------------------------------------------------


def test_dem_has_gentle_relief_a_river_valley_and_no_holes(district):
    out, manifest = district
    with rasterio.open(out / "dem.tif") as ds:
        assert ds.crs.to_epsg() == 4549
        assert ds.res == (2.0, 2.0)
        assert ds.dtypes[0] == "float32"
        assert ds.nodata == -9999
        z = ds.read(1)
        assert (z != ds.nodata).all()
        assert z.min() >= 5.9 and z.max() <= 30.1 and z.max() - z.min() > 10
        assert ds.bounds.left == manifest["bbox"][0] and ds.bounds.top == manifest["bbox"][3]
        river = _layer(district, "water_2000").geometry.union_all()
        # the channel bed is well below the banks 50 m away on either side
        xs = np.linspace(manifest["bbox"][0] + 100, manifest["bbox"][2] - 100, 9)
        pts = [
            (x, river.intersection(shapely.LineString([(x, manifest["bbox"][1]), (x, manifest["bbox"][3])])).centroid.y)
            for x in xs
        ]
        bed = np.array([v[0] for v in ds.sample(pts)])
        north = np.array([v[0] for v in ds.sample([(x, y + 50) for x, y in pts])])
        south = np.array([v[0] for v in ds.sample([(x, y - 50) for x, y in pts])])
        assert (north - bed > 2.0).all() and (south - bed > 2.0).all()


def test_ortho_is_tiled_deflated_rgb(district):
    out, _ = district
    with rasterio.open(out / "ortho.tif") as ds:
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
        assert ds.res == (1.0, 1.0) and ds.crs.to_epsg() == 4549
        assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate"
        img = ds.read(out_shape=(3, 200, 200))
    # water is dark and bluish-green, roofs and pavements are lighter: not a blank image
    assert img.std() > 15
    assert len(np.unique(img.reshape(3, -1).T, axis=0)) > 1000


def test_low_road_sections_are_hollows_in_the_dem(district):
    out, manifest = district
    sections = manifest["low_road_sections"]
    assert len(sections) >= 3
    core = shapely.box(*manifest["core_bbox"])
    assert any(core.contains(shapely.from_wkt(s["geometry"])) for s in sections)
    with rasterio.open(out / "dem.tif") as ds:
        for s in sections:
            line = shapely.from_wkt(s["geometry"])
            assert 60.0 <= line.length <= 150.0
            assert 0.4 <= s["depth"] <= 0.8
            (x0, y0), (x1, y1) = line.coords
            e = np.array([x1 - x0, y1 - y0]) / line.length
            n = np.array([-e[1], e[0]])
            mid = np.array(line.interpolate(0.5, normalized=True).coords[0])
            ends = [(x0 - e[0] * 4, y0 - e[1] * 4), (x1 + e[0] * 4, y1 + e[1] * 4)]
            side = [tuple(mid + n * (s["half_width"] + 8)), tuple(mid - n * (s["half_width"] + 8))]
            zc = next(ds.sample([tuple(mid)]))[0]
            ze = np.array([v[0] for v in ds.sample(ends)])
            zs = np.array([v[0] for v in ds.sample(side)])
            assert ze.mean() - zc > s["depth"] - 0.12, s["id"]
            assert (ze - zc > 0.2).all(), s["id"]  # a closed hollow along the road ...
            assert (zs - zc > 0.2).all(), s["id"]  # ... and across it
            assert abs(zc - s["lowest_ground_elev"]) < 0.1


def test_low_sections_lie_on_the_named_roads(district):
    _, manifest = district
    centrelines = _layer(district, "road_centrelines_500").set_index("road_id")
    pipes = _layer(district, "water_pipes")
    checked = 0
    for s in manifest["low_road_sections"]:
        line = shapely.from_wkt(s["geometry"])
        if s["road_id"] in centrelines.index:
            assert centrelines.geometry[s["road_id"]].distance(line) < 0.01
            assert centrelines.at[s["road_id"], "name"] == s["road_name"]
            checked += 1
        # the water main of the same road runs 3.5 m off its centreline
        along = pipes[pipes["road_id"] == s["road_id"]].geometry.union_all()
        assert along.distance(line.centroid) < 6.0
    assert checked >= 1


def test_buildings_have_door_plate_addresses_on_their_nearest_street(district):
    buildings = _layer(district, "buildings_500")
    streets = _layer(district, "roads_2000")  # the district's centrelines: no sheet edge
    streets = streets[streets["name"] != ""]
    assert buildings["address"].is_unique
    parsed = buildings["address"].str.extract(r"^(?P<street>.+) No\. (?P<number>\d+)$")
    assert parsed.notna().all().all()
    parsed["number"] = parsed["number"].astype(int)
    for street, footprint in zip(parsed["street"], buildings.geometry, strict=True):
        assert streets.iloc[int(streets.distance(footprint.centroid).to_numpy().argmin())]["name"] == street
    # on each side of a street (one parity) the numbers follow the buildings along the street
    checked = 0
    for (street, _), group in parsed.groupby(["street", parsed["number"] % 2]):
        if len(group) < 3:
            continue
        points = shapely.get_coordinates(streets[streets["name"] == street].geometry)
        axis = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)[2][0]  # the street's direction
        along = shapely.get_coordinates(buildings.geometry[group.index].centroid) @ axis
        rho = np.corrcoef(np.argsort(np.argsort(along)), np.argsort(np.argsort(group["number"])))[0, 1]
        assert abs(rho) > 0.9, street
        checked += 1
    assert checked >= 5


# --- basemap bands and history -------------------------------------------------------------


def test_bands_are_generalised(district):
    _, manifest = district
    b500, b2000, b10000 = (_layer(district, f"buildings_{s}") for s in ("500", "2000", "10000"))
    core = shapely.box(*manifest["core_bbox"])
    assert core.contains(shapely.centroid(b500.geometry.values)).all()
    assert len(b10000) < len(b2000)
    assert set(b500["use"]) >= {"residential", "commercial"}
    for col in ("bid", "name", "use", "floors", "height", "year"):
        assert col in b500.columns and col in b2000.columns and col in b10000.columns
    # 1:2000 footprints are never more detailed than the surveyed ones, small sheds are dropped
    verts500 = dict(zip(b500["bid"], shapely.get_num_coordinates(b500.geometry.values), strict=True))
    verts2000 = dict(zip(b2000["bid"], shapely.get_num_coordinates(b2000.geometry.values), strict=True))
    common = set(verts500) & set(verts2000)
    assert common and all(verts2000[b] <= verts500[b] for b in common)
    assert (b500["use"] == "ancillary").any() and not (b2000["use"] == "ancillary").any()
    # roads: surfaces at 1:500, merged centrelines at 1:2000, main roads only at 1:10000
    r500, r2000, r10000 = (_layer(district, f"roads_{s}") for s in ("500", "2000", "10000"))
    assert set(r500.geometry.geom_type) <= {"Polygon", "MultiPolygon"}
    assert set(r2000.geometry.geom_type) <= {"LineString", "MultiLineString"}
    assert (r2000["width"] > 0).all() and "class" in r2000.columns
    seg = _layer(district, "road_centrelines_500")
    assert len(r2000) < len(seg)
    assert set(r10000["class"]) <= {"primary", "secondary", "expressway"}
    ring = shapely.box(*manifest["ring_bbox"])
    lu = _layer(district, "landuse_10000")
    assert shapely.box(*lu.total_bounds).area > 0.8 * ring.area
    assert {"farmland", "residential"} <= set(lu["landuse"])
    water = _layer(district, "water_500")
    assert water.geometry.union_all().area > 1000


def test_history_editions_differ_exactly_as_the_manifest_says(district):
    out, manifest = district
    h = manifest["history"]
    entry = next(e for e in manifest["layers"] if e["id"] == "buildings_500")
    assert [ed["valid_from"] for ed in entry["editions"]] == ["2015-01-01T00:00:00Z", "2021-06-01T00:00:00Z"]
    old = gpd.read_file(out / entry["editions"][0]["path"], layer=entry["editions"][0]["layer"]).set_index("bid")
    cur = gpd.read_file(out / entry["editions"][1]["path"], layer=entry["editions"][1]["layer"]).set_index("bid")
    assert sorted(set(old.index) - set(cur.index)) == h["demolished"]
    assert sorted(set(cur.index) - set(old.index)) == h["new"]
    common = sorted(set(old.index) & set(cur.index))
    changed = [
        b for b in common if (old.at[b, "floors"], old.at[b, "height"]) != (cur.at[b, "floors"], cur.at[b, "height"])
    ]
    assert changed == h["changed"]
    for name in ("demolished", "new", "changed"):
        share = len(h[name]) / len(cur)
        assert 0.02 <= share <= 0.10, (name, share)
    assert (cur.loc[h["new"], "year"] >= 2015).all()
    # unchanged buildings are the same features
    same = [b for b in common if b not in set(h["changed"])]
    assert all(old.geometry[b].equals(cur.geometry[b]) for b in same)


def test_planned_buildings_stand_on_the_cleared_parcel(district):
    out, manifest = district
    planned = _layer(district, "buildings_planned")
    entry = next(e for e in manifest["layers"] if e["id"] == "buildings_planned")
    assert entry["scenario"] == "planned" and entry["valid_from"] == "2024-03-01T00:00:00Z"
    parcel = shapely.from_wkt(manifest["parcels"]["planned"]["geometry"])
    assert len(planned) >= 3
    assert parcel.buffer(0.01).contains(planned.geometry.union_all())
    cur = _layer(district, "buildings_500")
    assert not cur.geometry.intersects(parcel.buffer(-1.0)).any()  # cleared today
    assert (
        set(planned["bid"]).isdisjoint(cur["bid"])
        and sorted(planned["bid"]) == manifest["parcels"]["planned"]["planned_bids"]
    )


# --- networks -------------------------------------------------------------------------------


def _graph(nodes: gpd.GeoDataFrame, pipes: gpd.GeoDataFrame) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(nodes["node_id"])
    g.add_edges_from(zip(pipes["start_id"], pipes["end_id"], strict=True))
    return g


def test_water_network_is_large_connected_and_complete(district):
    _, manifest = district
    nodes, pipes = _layer(district, "water_nodes"), _layer(district, "water_pipes")
    assert len(pipes) >= 2000
    assert set(pipes["start_id"]) | set(pipes["end_id"]) <= set(nodes["node_id"])
    g = _graph(nodes, pipes)
    assert nx.is_connected(g)
    assert (pipes["class"] == "JS").all()
    assert set(nodes["type"]) == {"junction", "valve", "hydrant", "plant", "tank", "service", "meter"}
    src = {s["node_id"]: s["type"] for s in manifest["networks"]["water"]["sources"]}
    assert sorted(src.values()) == ["plant", "tank"]
    assert set(nodes.loc[nodes["type"].isin(["plant", "tank"]), "node_id"]) == set(src)
    by_kind = pipes.groupby("kind")["diameter"]
    assert by_kind.min()["main"] >= 300 and by_kind.max()["main"] <= 600
    assert by_kind.min()["distribution"] >= 100 and by_kind.max()["distribution"] <= 200
    assert by_kind.min()["service"] >= 25 and by_kind.max()["service"] <= 50
    assert pipes[["start_depth", "end_depth"]].stack().between(0.8, 2.0).all()
    assert set(pipes["material"]) <= {"DI", "PE", "steel", "cast iron"} and pipes["material"].nunique() >= 3
    assert pipes["year"].between(1970, 2024).all() and pipes["owner"].str.len().gt(0).all()
    assert nodes["code"].str.match(r"^JS\d{6}$").all()
    # node ground elevations come from the DEM
    with rasterio.open(district[0] / "dem.tif") as ds:
        sample = nodes.sample(200, random_state=1)
        dem = np.array([v[0] for v in ds.sample(list(zip(sample.geometry.x, sample.geometry.y, strict=True)))])
    assert np.abs(dem - sample["ground_elev"].to_numpy()).max() < 0.35
    # the pipe geometry joins its end nodes
    xy = dict(zip(nodes["node_id"], zip(nodes.geometry.x, nodes.geometry.y, strict=True), strict=True))
    c = shapely.get_coordinates(pipes.geometry.values).reshape(-1, 2, 2)
    start = np.array([xy[n] for n in pipes["start_id"]])
    assert np.abs(c[:, 0] - start).max() < 0.002


def test_every_building_has_a_service_and_critical_customers_are_flagged(district):
    nodes, pipes = _layer(district, "water_nodes"), _layer(district, "water_pipes")
    buildings = _layer(district, "buildings_2000")
    service = nodes[nodes["type"] == "service"]
    assert service["building_id"].is_unique
    assert set(service["building_id"]) == set(buildings["bid"])
    sp = pipes[pipes["kind"] == "service"]
    assert set(sp["end_id"]) == set(service["node_id"])
    critical = set(buildings.loc[buildings["use"].isin(["hospital", "school"]), "bid"])
    assert critical
    assert set(sp.loc[sp["critical"], "building_id"]) == critical
    assert not pipes.loc[pipes["kind"] != "service", "critical"].any()


def test_valves_split_pipes_and_carry_their_flags(district):
    for net in ("water", "gas"):
        nodes, pipes = _layer(district, f"{net}_nodes"), _layer(district, f"{net}_pipes")
        valves = nodes[nodes["type"] == "valve"]
        assert len(valves) > 50
        assert valves["status"].isin(["open", "closed"]).all()
        for flag in ("operable", "accessible"):
            assert valves[flag].notna().all()
            assert valves[flag].isin([True, False]).all()
        assert 0.01 <= (~valves["operable"].astype(bool)).mean() <= 0.12
        assert 0.005 <= (~valves["accessible"].astype(bool)).mean() <= 0.08
        others = nodes[nodes["type"] != "valve"]
        assert others["status"].isna().all() and others["operable"].isna().all()
        deg = Counter(pipes["start_id"]) + Counter(pipes["end_id"])
        assert all(deg[v] == 2 for v in valves["node_id"])
        # both pieces on either side of a valve are the same pipe
        dia = defaultdict(set)
        for a, b, d in zip(pipes["start_id"], pipes["end_id"], pipes["diameter"], strict=True):
            dia[a].add(d)
            dia[b].add(d)
        assert all(len(dia[v]) == 1 for v in valves["node_id"])
    # valves sit near most junctions on the water mains, as a utility places them
    nodes, pipes = _layer(district, "water_nodes"), _layer(district, "water_pipes")
    mains = pipes[pipes["kind"] == "main"]
    deg = Counter(mains["start_id"]) + Counter(mains["end_id"])
    crossings = [n for n, d in deg.items() if d >= 3]
    kind = dict(zip(nodes["node_id"], nodes["type"], strict=True))
    nbrs = defaultdict(list)
    for a, b in zip(mains["start_id"], mains["end_id"], strict=True):
        nbrs[a].append(b)
        nbrs[b].append(a)
    guarded = [n for n in crossings if sum(kind[m] == "valve" for m in nbrs[n]) >= 2]
    assert len(guarded) / len(crossings) > 0.7


def test_gas_network_is_connected_with_regulators_between_pressures(district):
    _, manifest = district
    nodes, pipes = _layer(district, "gas_nodes"), _layer(district, "gas_pipes")
    assert nx.is_connected(_graph(nodes, pipes))
    assert (pipes["class"] == "RQ").all() and set(pipes["pressure"]) == {"medium", "low"}
    station = manifest["networks"]["gas"]["sources"][0]["node_id"]
    assert nodes.set_index("node_id").at[station, "type"] == "station"
    # a medium and a low pressure pipe meet only at a regulator
    kind = dict(zip(nodes["node_id"], nodes["type"], strict=True))
    seen = defaultdict(set)
    for a, b, p in zip(pipes["start_id"], pipes["end_id"], pipes["pressure"], strict=True):
        if kind[b] != "service":
            seen[a].add(p)
            seen[b].add(p)
    mixed = [n for n, ps in seen.items() if len(ps) == 2]
    assert mixed and all(kind[n] == "regulator" for n in mixed)
    # gas lies on the other side of the road from water
    water = _layer(district, "water_pipes")
    wm = water[water["kind"] == "main"].geometry.union_all()
    gm = pipes[pipes["kind"] == "main"].geometry.union_all()
    assert wm.intersection(gm).length < 0.01 * gm.length


def test_drainage_flows_downhill_to_outfalls_with_cover(district):
    _, manifest = district
    nodes, pipes = _layer(district, "drainage_nodes"), _layer(district, "drainage_pipes")
    assert set(nodes["class"]) == {"YS", "WS"} and set(pipes["class"]) == {"YS", "WS"}
    n = nodes.set_index("node_id")
    assert (pipes["start_invert"] > pipes["end_invert"]).all()
    assert np.allclose(n.loc[pipes["start_id"], "invert_elev"].to_numpy(), pipes["start_invert"])
    assert np.allclose(n.loc[pipes["end_id"], "invert_elev"].to_numpy(), pipes["end_invert"])
    rise = np.where(pipes["shape"] == "box", pipes["height"].fillna(0), pipes["diameter"].fillna(0)) / 1000.0
    assert (rise > 0).all()
    box = pipes[pipes["shape"] == "box"]
    assert len(box) and box["width"].notna().all() and box["diameter"].isna().all()
    for end, inv in (("start_id", "start_invert"), ("end_id", "end_invert")):
        cover = n.loc[pipes[end], "ground_elev"].to_numpy() - pipes[inv].to_numpy() - rise
        assert cover.min() >= 0.7 - 1e-6
    # each node drains along exactly one pipe until it reaches an outfall; classes never mix
    out_deg = Counter(pipes["start_id"])
    assert max(out_deg.values()) == 1
    outfalls = set(n.index[n["type"] == "outfall"])
    assert all(node not in out_deg for node in outfalls)
    assert all(node in out_deg for node in n.index if node not in outfalls)
    down = dict(zip(pipes["start_id"], pipes["end_id"], strict=True))
    cls = n["class"].to_dict()
    assert all(cls[a] == cls[b] for a, b in down.items())
    g = nx.DiGraph(list(down.items()))
    assert nx.is_directed_acyclic_graph(g)
    for comp in nx.weakly_connected_components(g):
        assert len(comp & outfalls) == 1
    # storm outfalls are on the river bank, sewers end at the treatment plant
    river = _layer(district, "water_2000").geometry.union_all()
    ys_out = n[(n["type"] == "outfall") & (n["class"] == "YS")]
    assert len(ys_out) >= 2 and (ys_out.geometry.distance(river) < 2.5).all()
    assert set(n.loc[(n["type"] == "outfall") & (n["class"] == "WS"), "receiving"]) == {"WWTP"}
    # storm inlets at every low road section
    inlets = manifest["networks"]["drainage"]["low_section_inlets"]
    for s in manifest["low_road_sections"]:
        area = shapely.from_wkt(s["area"])
        got = inlets[s["id"]]
        assert got and all(n.at[i, "type"] == "inlet" and area.contains(n.geometry[i]) for i in got)


# --- IFC, mesh, sensors -------------------------------------------------------------------


def test_ifc_reopens_georeferenced_on_its_parcel_and_tessellates(district):
    import ifcopenshell
    import ifcopenshell.geom

    out, manifest = district
    model = ifcopenshell.open(str(out / manifest["ifc"]["path"]))
    assert model.schema == "IFC4"
    conv = model.by_type("IfcMapConversion")
    assert len(conv) == 1
    mc = conv[0]
    assert mc.TargetCRS.Name == "EPSG:4549"
    parcel = shapely.from_wkt(manifest["parcels"]["ifc"]["geometry"])
    assert parcel.contains(shapely.Point(mc.Eastings, mc.Northings))
    expected = manifest["parcels"]["ifc"]["expected_map_conversion_origin"]
    assert [mc.Eastings, mc.Northings, mc.OrthogonalHeight] == pytest.approx(expected)
    assert len(model.by_type("IfcBuildingStorey")) == 3
    assert model.by_type("IfcWindow") and model.by_type("IfcDoor") and model.by_type("IfcRoof")
    assert any(p.Name == "Pset_BuildingCommon" for p in model.by_type("IfcPropertySet"))
    # tessellate everything and place it on the map: it must land on the parcel
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    it = ifcopenshell.geom.iterator(settings, model)
    assert it.initialize()
    shapes = {}
    pts = []
    while True:
        shape = it.get()
        verts = np.array(shape.geometry.verts).reshape(-1, 3)
        shapes[shape.guid] = len(verts)
        pts.append(verts)
        if not it.next():
            break
    elements = [e for t in ("IfcWall", "IfcSlab", "IfcWindow", "IfcDoor", "IfcRoof") for e in model.by_type(t)]
    assert {e.GlobalId for e in elements} <= set(shapes) and all(shapes[e.GlobalId] > 0 for e in elements)
    v = np.vstack(pts)
    a, b = mc.XAxisAbscissa, mc.XAxisOrdinate
    e_ = mc.Eastings + v[:, 0] * a - v[:, 1] * b
    n_ = mc.Northings + v[:, 0] * b + v[:, 1] * a
    assert parcel.buffer(1.0).contains(shapely.MultiPoint(np.column_stack([e_, n_])))
    lat = model.by_type("IfcSite")[0].RefLatitude
    assert lat[0] == 32


def test_reality_mesh_has_metadata_and_textured_tiles(district):
    import trimesh

    out, manifest = district
    rm = manifest["reality_mesh"]
    root = ET.parse(out / rm["metadata"]).getroot()
    assert root.tag == "ModelMetadata"
    assert root.findtext("SRS") == "EPSG:4549"
    origin = [float(v) for v in root.findtext("SRSOrigin").split(",")]
    assert origin == rm["origin"] and len(origin) == 3
    x0, y0, x1, y1 = rm["bbox"]
    assert (x1 - x0, y1 - y0) == (300.0, 300.0)
    assert len(rm["tiles"]) == 4 and sum(t["buildings"] for t in rm["tiles"]) > 5
    for t in rm["tiles"]:
        obj = out / rm["path"] / t["obj"]
        mesh = trimesh.load(obj, force="mesh", process=False)
        assert len(mesh.faces) == t["faces"]
        v = mesh.vertices + np.array(origin)
        tx0, ty0, tx1, ty1 = t["bbox"]
        assert v[:, 0].min() >= tx0 - 0.01 and v[:, 0].max() <= tx1 + 0.01
        assert v[:, 1].min() >= ty0 - 0.01 and v[:, 1].max() <= ty1 + 0.01
        assert v[:, 2].min() > 5.0 and v[:, 2].max() < 200.0
        assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(mesh.vertices)
        mtl = obj.with_suffix(".mtl").read_text()
        tex = obj.parent / mtl.split("map_Kd")[1].split()[0]
        from PIL import Image

        with Image.open(tex) as im:
            assert im.size[0] >= 512 and im.mode == "RGB"


def test_sensors_and_a_day_of_observations_with_alerts(district):
    out, manifest = district
    sensors = _layer(district, "sensors").set_index("sensor_id")
    assert set(sensors["type"]) == {"road_water_level", "pipe_pressure", "rain_gauge", "flow"}
    rows = list(csv.DictReader((out / "observations.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["sensor_id", "time", "quantity", "value", "unit"]
    series = defaultdict(list)
    for r in rows:
        series[r["sensor_id"]].append((r["time"], float(r["value"]), r["unit"]))
    assert set(series) == set(sensors.index)
    day = datetime(2024, 7, 15)
    expected = [(day + timedelta(minutes=5 * k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(288)]
    for sid, obs in series.items():
        assert [t for t, _, _ in obs] == expected
        assert {u for _, _, u in obs} == {sensors.at[sid, "unit"]}
    rain_start, rain_end = manifest["events"]["rain"]["start"], manifest["events"]["rain"]["end"]
    sections = {s["id"]: s for s in manifest["low_road_sections"]}
    wl = sensors[sensors["type"] == "road_water_level"]
    assert set(wl["low_section_id"]) == set(sections)
    for sid, row in wl.iterrows():
        sec = sections[row["low_section_id"]]
        assert row["network_ref"] == sec["road_id"] and row["threshold"] == 0.15
        assert shapely.from_wkt(sec["area"]).contains(row.geometry)
        values = {t: v for t, v, _ in series[sid]}
        before = [v for t, v in values.items() if t < rain_start]
        during = [v for t, v in values.items() if rain_start <= t <= rain_end]
        assert max(before) == 0.0 and max(during) > 0.15
    water_nodes = set(_layer(district, "water_nodes")["node_id"])
    pp = sensors[sensors["type"] == "pipe_pressure"]
    assert set(pp["network_ref"]) <= water_nodes
    drop = manifest["events"]["pressure_drop"]
    for sid in pp.index:
        values = [(t, v) for t, v, _ in series[sid]]
        low = [t for t, v in values if v < pp.at[sid, "threshold"]]
        if sid == drop["sensor_id"]:
            assert low and min(low) >= drop["start"] and max(low) <= drop["restored"]
        else:
            assert not low
    assert sensors.at[drop["sensor_id"], "network_ref"] == drop["node_id"]


def test_a_smaller_district_is_complete_too(tmp_path):
    manifest = generate(tmp_path, size_km=1.0, seed=11, parts={"basemap", "networks", "sensors"})
    assert manifest["size_m"] == 1000.0 and manifest["bbox"][2] - manifest["bbox"][0] == 1000.0
    assert not (tmp_path / "dem.tif").exists() and manifest["rasters"] == []
    for net in ("water", "gas"):
        nodes = gpd.read_file(tmp_path / f"{net}_network.gpkg", layer=f"{net}_nodes")
        pipes = gpd.read_file(tmp_path / f"{net}_network.gpkg", layer=f"{net}_pipes")
        assert nx.is_connected(_graph(nodes, pipes))
    assert manifest["low_road_sections"] and manifest["history"]["new"]
    assert (tmp_path / "observations.csv").stat().st_size > 0
