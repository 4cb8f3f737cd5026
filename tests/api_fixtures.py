"""A small twin for API tests: versioned buildings and 3D pipes in EPSG:4549 near Nanjing.

Plain functions (not fixtures) so that any API test module can build the same twin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from shapely.geometry import LineString, box

from twin.api.app import create_app
from twin.model import FeatureInput, Layer
from twin.store import Store, init_store

PROJECT_CRS = "EPSG:4549"
X0, Y0 = 386_000.0, 3_546_000.0  # Nanjing, Gauss-Kruger zone with central meridian 120E
T2015 = datetime(2015, 1, 1, tzinfo=UTC)
T2021 = datetime(2021, 6, 1, tzinfo=UTC)
N_BUILDINGS = 12
SCHOOLS = {f"b{i}" for i in range(N_BUILDINGS) if i % 5 == 0}
EDITED = "b2"  # gains a floor in the 2021 edition


def buildings_layer() -> Layer:
    return Layer(
        id="buildings",
        kind="vector",
        title="Buildings 1:500",
        scale_band="1:500",
        schema={"floors": "integer", "use": "text", "name": "text"},
    )


def pipes_layer() -> Layer:
    return Layer(id="pipes", kind="pipe_network", title="Water pipes")  # no schema declared


def building(i: int, floors: int = 3) -> FeatureInput:
    """A 10 m square every 20 m along x from the district corner."""
    use = "school" if f"b{i}" in SCHOOLS else "residential"
    properties = {"floors": floors, "use": use, "name": f"{i}号楼"}
    return FeatureInput(f"b{i}", box(X0 + 20 * i, Y0, X0 + 20 * i + 10, Y0 + 10), properties)


def pipe(i: int, material: str) -> FeatureInput:
    """A buried 3D pipe 500 m north of the buildings, z = pipe elevation in metres."""
    line = LineString([(X0 + 30 * i, Y0 + 500, 5.25 + i), (X0 + 30 * i + 25, Y0 + 500, 5.125 + i)])
    return FeatureInput(f"p{i}", line, {"material": material, "diameter": 200 + 100 * i})


def populate(store: Store) -> None:
    """The 2015 edition of the buildings, then the 2021 edit of one of them, and the pipes."""
    store.write_features(buildings_layer(), [building(i) for i in range(N_BUILDINGS)], valid_from=T2015)
    store.write_features(buildings_layer(), [building(2, floors=4)], valid_from=T2021)
    store.write_features(pipes_layer(), [pipe(i, "PE" if i % 2 else "DI") for i in range(4)], valid_from=T2015)


def make_twin(data_dir: Path) -> Store:
    store = init_store(data_dir, PROJECT_CRS)
    populate(store)
    return store


def make_client(store: Store) -> TestClient:
    """A client that gets 500 responses back instead of the server's exceptions."""
    return TestClient(create_app(store), raise_server_exceptions=False)


def http_fetch(client: TestClient):
    """A fetch function (URL -> bytes) over the app, for the tileset checks; non-200 is an OSError."""

    def fetch(url: str) -> bytes:
        response = client.get(url)
        if response.status_code != 200:
            raise OSError(f"HTTP {response.status_code} for {url}")
        return response.content

    return fetch
