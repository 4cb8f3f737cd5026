"""Shared fixtures: the real test data, fresh stores on both backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from twin.store import Store, init_store

pytest_plugins = ["tests.postgis_cluster"]

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("TWIN_TESTDATA", REPO.parent / "shared" / "testdata"))
PROJECT_CRS = "EPSG:4549"


def shared_file(relative: str) -> Path:
    """A file of the shared test data, or a skip saying why it is not here."""
    path = TESTDATA / relative
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (set TWIN_TESTDATA to the shared/testdata folder)")
    return path


@pytest.fixture(params=["gpkg", "postgis"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend: str, tmp_path: Path, request) -> Store:
    """An empty twin in EPSG:4549 on each backend."""
    url = request.getfixturevalue("postgis_database") if backend == "postgis" else None
    twin = init_store(tmp_path / "data", PROJECT_CRS, url=url)
    yield twin
    twin.close()
