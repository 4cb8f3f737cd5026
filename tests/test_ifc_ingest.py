"""IFC ingestion: georeferencing by every method, landing checked against pyproj, bad files refused.

Expected positions are computed here, independently of `ingestion.ifc_georef`: the map
conversion numbers are read with ifcopenshell, the element geometry is tessellated with
`ifcopenshell.geom.create_shape`, the Helmert transformation is applied with numpy and pyproj
takes map coordinates to ECEF. What the twin produced is read back from the built 3D Tiles
(leaf glbs, the tileset's root transform) and compared to better than 0.5 m.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import ifcopenshell
import ifcopenshell.api.aggregate
import ifcopenshell.api.context
import ifcopenshell.api.geometry
import ifcopenshell.api.project
import ifcopenshell.api.pset
import ifcopenshell.api.root
import ifcopenshell.api.spatial
import ifcopenshell.api.unit
import ifcopenshell.geom
import ifcopenshell.util.element
import ifcopenshell.util.unit
import numpy as np
import pytest
from pyproj import Transformer

from ingestion.ifc import ingest_ifc
from tests.conftest import shared_file
from tiles.threed.build import ensure_built
from tiles.threed.gltf import decompress_glb, mesh_positions, read_glb
from tiles.threed.metadata import decode_table
from tiles.threed.validate import check_tileset
from twin.model import InvalidInput
from twin.store import Store, init_store, open_store

TOLERANCE = 0.5  # metres
DUPLEX = "ifc/georeference-ifc_duplex/Duplex_A_20110907_georeferenced.ifc"
BSI = "ifc/ifc4x3_bsi_sample_models"
LUXEMBOURG_GEOID = 47.5  # a plausible undulation, so the test sees the vertical datum applied


# ----- independent expectations -------------------------------------------------------------------
def world_vertices(model: ifcopenshell.file, global_id: str) -> np.ndarray:
    """An element's tessellated vertices in world metres, straight from ifcopenshell."""
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    shape = ifcopenshell.geom.create_shape(settings, model.by_guid(global_id))
    return np.asarray(shape.geometry.verts, dtype=float).reshape(-1, 3)


def helmert(points: np.ndarray, e: float, n: float, h: float, a: float, b: float, scale: float) -> np.ndarray:
    norm = np.hypot(a, b)
    a, b = a / norm, b / norm
    x, y, z = points[:, 0] * scale, points[:, 1] * scale, points[:, 2] * scale
    return np.column_stack([e + a * x - b * y, n + b * x + a * y, h + z])


def map_to_ecef(crs: str, enh: np.ndarray, geoid: float = 0.0) -> np.ndarray:
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(enh[:, 0], enh[:, 1])
    return geodetic_to_ecef(lon, lat, enh[:, 2] + geoid)


def geodetic_to_ecef(lon, lat, h) -> np.ndarray:
    x, y, z = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True).transform(lon, lat, h)
    return np.column_stack([x, y, z])


def enu_to_ecef(points: np.ndarray, lon: float, lat: float, h: float) -> np.ndarray:
    """East-north-up offsets to ECEF, with the frame written out here (not taken from twin.crs)."""
    lam, phi = np.radians(lon), np.radians(lat)
    east = np.array([-np.sin(lam), np.cos(lam), 0.0])
    north = np.array([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    up = np.array([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    return geodetic_to_ecef([lon], [lat], [h])[0] + points @ np.vstack([east, north, up])


# ----- what the twin produced -----------------------------------------------------------------------
def landed_elements(store: Store, layer_id: str) -> dict[str, np.ndarray]:
    """ECEF vertices per GlobalId from the built tileset's full-detail (leaf) tiles."""
    built = ensure_built(store, layer_id)
    document = json.loads((built.folder / "tileset.json").read_text())
    frame = np.asarray(document["root"]["transform"], dtype=float).reshape(4, 4).T
    out: dict[str, list[np.ndarray]] = {}

    def visit(tile: dict) -> None:
        if tile.get("children"):
            for child in tile["children"]:
                visit(child)
            return
        data = (built.folder / tile["content"]["uri"]).read_bytes()
        points, ids = mesh_positions(data)
        gltf, binary = read_glb(decompress_glb(data))

        def view(i: int) -> bytes:
            v = gltf["bufferViews"][i]
            return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

        rows = decode_table(gltf, view)
        ecef = points @ frame[:3, :3].T + frame[:3, 3]
        for index, row in enumerate(rows):
            out.setdefault(row["GlobalId"], []).append(ecef[ids == index])

    visit(document["root"])
    return {gid: np.concatenate(parts) for gid, parts in out.items()}


def assert_same_place(got: np.ndarray, expected: np.ndarray) -> None:
    """Bounding boxes in ECEF agree to TOLERANCE at both corners."""
    assert len(got) and len(expected)
    gap = max(
        np.abs(got.min(axis=0) - expected.min(axis=0)).max(), np.abs(got.max(axis=0) - expected.max(axis=0)).max()
    )
    assert gap < TOLERANCE, f"element landed {gap:.3f} m from where its map conversion puts it"


def twin(tmp_path: Path, crs: str, geoid: float = 0.0) -> Store:
    store = init_store(tmp_path / "twin", crs)
    store.set_meta("geoid_offset", str(geoid))
    return store


# ----- georeferencing by each method ----------------------------------------------------------------
@pytest.fixture(scope="module")
def duplex(tmp_path_factory):
    path = shared_file(DUPLEX)
    store = twin(tmp_path_factory.mktemp("duplex"), "EPSG:2169", LUXEMBOURG_GEOID)  # horizontal part of EPSG:9897
    report = ingest_ifc(store, path)
    yield store, report, ifcopenshell.open(str(path))
    store.close()


def test_duplex_ifc2x3_lands_where_its_epset_map_conversion_says(duplex):
    store, report, model = duplex
    site = model.by_type("IfcSite")[0]
    conversion = ifcopenshell.util.element.get_psets(site)["ePSet_MapConversion"]
    projected = ifcopenshell.util.element.get_psets(site)["ePSet_ProjectedCRS"]
    assert projected["Name"] == "EPSG:9897"
    unit = ifcopenshell.util.unit.calculate_unit_scale(model)
    landed = landed_elements(store, report.layer)
    walls = sorted(w.GlobalId for w in model.by_type("IfcWallStandardCase"))[:4]
    for global_id in [*walls, model.by_type("IfcStairFlight")[0].GlobalId]:
        enh = helmert(
            world_vertices(model, global_id),
            conversion["Eastings"],
            conversion["Northings"],
            conversion["OrthogonalHeight"],
            conversion["XAxisAbscissa"],
            conversion["XAxisOrdinate"],
            conversion["Scale"] / unit,
        )
        assert_same_place(landed[global_id], map_to_ecef("EPSG:9897", enh, LUXEMBOURG_GEOID))
        # the stored footprint is in the project CRS (the map CRS here): it covers the same ground
        feature = store.get_feature(report.layer, global_id)
        minx, miny, maxx, maxy = feature.geometry.bounds
        assert abs(minx - enh[:, 0].min()) < TOLERANCE and abs(maxy - enh[:, 1].max()) < TOLERANCE
        assert abs(feature.properties["z_min"] - enh[:, 2].min()) < TOLERANCE


def test_duplex_keeps_every_element_with_its_properties(duplex):
    store, report, model = duplex
    expected = {e.GlobalId for e in model.by_type("IfcElement") if not e.is_a("IfcFeatureElementSubtraction")}
    features = {f.fid: f for f in store.iter_features(report.layer)}
    assert set(features) == expected
    layer = store.get_layer(report.layer)
    assert layer.kind == "bim"
    assert layer.metadata["bim"]["georeference"]["method"] == "EPset_MapConversion"
    door = next(e for e in model.by_type("IfcDoor"))
    record = features[door.GlobalId].properties
    assert record["class"] == "IfcDoor" and record["name"] == door.Name
    assert record["storey"] in {s.Name for s in model.by_type("IfcBuildingStorey")}
    assert record["psets"].keys() == ifcopenshell.util.element.get_psets(door).keys()
    assert all(f.geometry is not None for f in features.values() if f.properties.get("mesh"))


@pytest.mark.parametrize(
    ("name", "crs"), [("geographic-referencing-gk.ifc", "EPSG:31467"), ("geographic-referencing-utm.ifc", "EPSG:25832")]
)
def test_ifc4x3_map_conversion_models_land_where_they_say(tmp_path, name, crs):
    path = shared_file(f"{BSI}/{name}")
    model = ifcopenshell.open(str(path))
    conversion = model.by_type("IfcMapConversion")[0]
    assert conversion.TargetCRS.Name == crs
    # Scale is 1000 for a millimetre model: not a grid scale. Map metres per model metre is 1.
    assert conversion.Scale == 1000 and ifcopenshell.util.unit.calculate_unit_scale(model) == 0.001
    store = twin(tmp_path, crs)
    report = ingest_ifc(store, path)
    proxy = model.by_type("IfcBuildingElementProxy")[0].GlobalId
    vertices = world_vertices(model, proxy)
    enh = helmert(
        vertices,
        conversion.Eastings,
        conversion.Northings,
        conversion.OrthogonalHeight,
        conversion.XAxisAbscissa,
        conversion.XAxisOrdinate,
        1.0,
    )
    assert_same_place(landed_elements(store, report.layer)[proxy], map_to_ecef(crs, enh))
    notes = store.get_layer(report.layer).metadata["bim"]["georeference"]["notes"]
    assert any("Scale 1000" in note for note in notes)


def test_ifc4x3_rigid_operation_to_a_geographic_crs_lands_on_lake_bled(tmp_path):
    path = shared_file(f"{BSI}/geographic-referencing-rigid-operation.ifc")
    model = ifcopenshell.open(str(path))
    operation = model.by_type("IfcRigidOperation")[0]
    lon, lat, h = operation.FirstCoordinate.wrappedValue, operation.SecondCoordinate.wrappedValue, operation.Height
    store = twin(tmp_path, "EPSG:3857")
    report = ingest_ifc(store, path)
    cube = next(e for e in model.by_type("IfcBuiltElement") if e.Name == "Cube").GlobalId
    expected = enu_to_ecef(world_vertices(model, cube), lon, lat, h)
    assert_same_place(landed_elements(store, report.layer)[cube], expected)
    footprint = next(e for e in model.by_type("IfcBuiltElement") if e.Name == "Footprint").GlobalId
    assert store.get_feature(report.layer, footprint).properties["class"] == "IfcBuiltElement"  # kept, no body


# ----- IfcSite reference point, --at, elements outside the spatial tree -------------------------------
def small_model(path: Path, *, site_reference: bool) -> dict[str, str]:
    """An IFC4 file: one wall in a storey, one proxy in no container; returns their GlobalIds."""
    model = ifcopenshell.api.project.create_file(version="IFC4")
    project = ifcopenshell.api.root.create_entity(model, ifc_class="IfcProject", name="test")
    ifcopenshell.api.unit.assign_unit(model)
    ctx = ifcopenshell.api.context.add_context(model, context_type="Model")
    body = ifcopenshell.api.context.add_context(
        model, context_type="Model", context_identifier="Body", target_view="MODEL_VIEW", parent=ctx
    )
    site = ifcopenshell.api.root.create_entity(model, ifc_class="IfcSite", name="site")
    if site_reference:
        site.RefLatitude, site.RefLongitude = (32, 3, 0, 0), (118, 47, 24, 0)
        site.RefElevation = 12000.0  # project length unit: millimetres (assign_unit's default)
    building = ifcopenshell.api.root.create_entity(model, ifc_class="IfcBuilding", name="b")
    storey = ifcopenshell.api.root.create_entity(model, ifc_class="IfcBuildingStorey", name="Level 1")
    ifcopenshell.api.aggregate.assign_object(model, relating_object=project, products=[site])
    ifcopenshell.api.aggregate.assign_object(model, relating_object=site, products=[building])
    ifcopenshell.api.aggregate.assign_object(model, relating_object=building, products=[storey])
    for product in (site, building, storey):
        ifcopenshell.api.geometry.edit_object_placement(model, product=product, matrix=np.eye(4))
    ids = {}
    for name, ifc_class, x, contained in (
        ("wall", "IfcWall", 0.0, True),
        ("loose", "IfcBuildingElementProxy", 10.0, False),
    ):
        element = ifcopenshell.api.root.create_entity(model, ifc_class=ifc_class, name=name)
        rep = ifcopenshell.api.geometry.add_wall_representation(
            model, context=body, length=5.0, height=3.0, thickness=0.2
        )
        ifcopenshell.api.geometry.assign_representation(model, product=element, representation=rep)
        matrix = np.eye(4)
        matrix[0, 3] = x
        ifcopenshell.api.geometry.edit_object_placement(model, product=element, matrix=matrix)
        if contained:
            ifcopenshell.api.spatial.assign_container(model, relating_structure=storey, products=[element])
        pset = ifcopenshell.api.pset.add_pset(model, product=element, name="Pset_Test")
        ifcopenshell.api.pset.edit_pset(model, pset=pset, properties={"FireRating": "REI60", "Count": 3})
        ids[name] = element.GlobalId
    model.write(str(path))
    return ids


def test_site_reference_places_the_model_and_elements_outside_the_tree_are_kept(tmp_path):
    ids = small_model(tmp_path / "site.ifc", site_reference=True)
    store = twin(tmp_path, "EPSG:4549", geoid=3.0)
    report = ingest_ifc(store, tmp_path / "site.ifc", layer_id="small")
    features = {f.fid: f for f in store.iter_features("small")}
    assert set(features) == set(ids.values())
    assert features[ids["wall"]].properties["storey"] == "Level 1"
    assert features[ids["loose"]].properties["storey"] is None
    assert features[ids["loose"]].properties["psets"]["Pset_Test"] == {"FireRating": "REI60", "Count": 3}
    lon, lat = 118 + 47 / 60 + 24 / 3600, 32 + 3 / 60
    landed = landed_elements(store, report.layer)
    model = ifcopenshell.open(str(tmp_path / "site.ifc"))
    for name in ("wall", "loose"):
        expected = enu_to_ecef(world_vertices(model, ids[name]), lon, lat, 12.0 + 3.0)
        assert_same_place(landed[ids[name]], expected)
    assert store.get_layer("small").metadata["bim"]["georeference"]["method"] == "IfcSite reference point"


def test_a_model_without_georeferencing_needs_at(tmp_path):
    ids = small_model(tmp_path / "plain.ifc", site_reference=False)
    store = twin(tmp_path, "EPSG:4549")
    with pytest.raises(InvalidInput, match="--at"):
        ingest_ifc(store, tmp_path / "plain.ifc")
    assert store.list_layers() == []
    report = ingest_ifc(store, tmp_path / "plain.ifc", at=(118.79, 32.05, 8.0))
    model = ifcopenshell.open(str(tmp_path / "plain.ifc"))
    expected = enu_to_ecef(world_vertices(model, ids["wall"]), 118.79, 32.05, 8.0)
    assert_same_place(landed_elements(store, report.layer)[ids["wall"]], expected)


def test_ifczip_reads_like_the_plain_file(tmp_path):
    path = shared_file(f"{BSI}/geographic-referencing-utm.ifc")
    archive = tmp_path / "model.ifczip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(path, "model.ifc")
    store = twin(tmp_path, "EPSG:25832")
    zipped = ingest_ifc(store, archive, layer_id="zipped")
    plain = ingest_ifc(store, path, layer_id="plain")
    a, b = landed_elements(store, zipped.layer), landed_elements(store, plain.layer)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k]) for k in a)


# ----- bad input: a clear error, exit code 2, nothing changed ----------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args], capture_output=True, text=True, timeout=300
    )


def test_prerelease_and_broken_files_are_refused_and_change_nothing(tmp_path):
    folder = shared_file("ifc/ifc4x3_infra_unit_test")
    data = tmp_path / "twin"
    assert run_cli("init", str(data), "--crs", "EPSG:4549").returncode == 0
    broken = tmp_path / "broken.ifc"
    broken.write_bytes(shared_file(DUPLEX).read_bytes()[:20000])
    bad_zip = tmp_path / "bad.ifczip"
    bad_zip.write_bytes(b"PK\x03\x04 not really a zip")
    prerelease = sorted(folder.glob("*.ifc"))
    assert len(prerelease) >= 10
    for path, reason in [(p, "unsupported IFC schema") for p in prerelease[:3]] + [
        (broken, "IFC"),
        (bad_zip, "IFC"),
        (tmp_path / "missing.ifc", "no such file"),
    ]:
        result = run_cli("ingest", "ifc", str(path), "--data", str(data))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], lines
    with open_store(data) as store:
        assert store.list_layers() == [] and store.assets.keys() == []
        for path in prerelease:  # every pre-release file, through the library
            with pytest.raises(InvalidInput, match="IFC4X3_RC"):
                ingest_ifc(store, path)
        assert store.list_layers() == []


def test_bim_layers_work_on_both_store_backends(store, tmp_path):
    ids = small_model(tmp_path / "site.ifc", site_reference=True)
    report = ingest_ifc(store, tmp_path / "site.ifc", layer_id="small")
    assert report.inserted == 2
    built = ensure_built(store, "small")
    assert check_tileset(built.folder / "tileset.json").errors == []
    assert set(landed_elements(store, "small")) == set(ids.values())
    again = ingest_ifc(store, tmp_path / "site.ifc", layer_id="small")  # same model: nothing changes
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
