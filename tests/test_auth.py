"""Access control: keys stored hashed, every write route closed to anonymous and reader keys,
roles, revocation, closed reads, restricted layers, CORS origins from the settings."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api_fixtures import make_twin
from twin.api.app import create_app
from twin.api.security import READ_ONLY, READ_ONLY_POSTS
from twin.auth import KEYS_FILE, KeyStore, set_restricted

WRITE_METHODS = ("post", "put", "patch", "delete")


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A small twin with one key of each role (and one revoked)."""
    data = tmp_path_factory.mktemp("auth") / "data"
    make_twin(data).close()
    keys = KeyStore(data)
    tokens = {role: keys.create(f"test-{role}", role)[1] for role in ("reader", "editor", "admin")}
    revoked, tokens["revoked"] = keys.create("gone", "admin")
    keys.revoke(revoked.id)
    keys.close()
    return data, tokens


@pytest.fixture(scope="module")
def client(twin) -> TestClient:
    from twin.store import open_store

    store = open_store(twin[0])
    yield TestClient(create_app(store), raise_server_exceptions=False)
    store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int) -> None:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def write_operations(app) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document that may change data."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if method in WRITE_METHODS and not operation.get(READ_ONLY) and path not in READ_ONLY_POSTS:
                found.append((method.upper(), path))
    return sorted(found)


def concrete(path: str) -> str:
    """A path template with each parameter filled (a real layer id, so layer routes are reached)."""
    return re.sub(r"\{[^}]+\}", "buildings", path)


def test_keys_are_stored_hashed_not_in_plain_text(tmp_path):
    data = tmp_path / "data"
    make_twin(data).close()
    made = twin_cli("keys", "add", "gis-team", "--role", "editor", "--data", str(data))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"twin_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    secret = token.rsplit("_", 1)[1] if token.count("_") == 2 else token.split("_", 2)[2]
    raw = b"".join(p.read_bytes() for p in data.glob(f"{KEYS_FILE}*"))
    assert token.encode() not in raw and secret.encode() not in raw
    with sqlite3.connect(data / KEYS_FILE) as con:
        rows = con.execute("SELECT id, role, length(salt), length(digest) FROM api_keys").fetchall()
    assert rows == [(token.split("_")[1], "editor", 16, 32)]
    key = KeyStore(data).verify(token)
    assert key is not None and key.role == "editor" and key.name == "gis-team"
    assert KeyStore(data).verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # one character off


def test_cli_lists_and_revokes_keys(tmp_path):
    data = tmp_path / "data"
    make_twin(data).close()
    token = twin_cli("keys", "add", "sensors", "--role", "editor", "--data", str(data)).stdout.strip()
    key_id = token.split("_")[1]
    listing = twin_cli("keys", "list", "--data", str(data))
    assert key_id in listing.stdout and "sensors" in listing.stdout and token not in listing.stdout
    assert twin_cli("keys", "revoke", key_id, "--data", str(data)).returncode == 0
    assert KeyStore(data).verify(token) is None
    for args in (("keys", "revoke", "000000000000"), ("keys", "add", "x", "--role", "root")):
        result = twin_cli(*args, "--data", str(data))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_every_write_route_needs_an_editor_key(client, twin):
    tokens = twin[1]
    operations = write_operations(client.app)
    paths = {path for _, path in operations}
    assert {"/ingest", "/jobs/{job_id}/cancel", "/admin/keys"} <= paths, operations
    for method, path in operations:
        url = concrete(path)
        assert_problem(client.request(method, url, json={}), 401)
        assert_problem(client.request(method, url, json={}, headers=bearer(tokens["reader"])), 403)
        assert_problem(client.request(method, url, json={}, headers=bearer(tokens["revoked"])), 401)
        assert_problem(client.request(method, url, json={}, headers=bearer("twin_000000000000_" + "x" * 43)), 401)


def test_writes_are_denied_by_default_also_on_routes_added_later(twin):
    from twin.store import open_store

    store = open_store(twin[0])
    app = create_app(store)
    changed = []

    @app.delete("/hidden/{thing}", include_in_schema=False)
    def hidden(thing: str) -> dict:  # a write route that forgot to ask for a key
        changed.append(thing)
        return {}

    @app.post("/analysis/harmless", openapi_extra={READ_ONLY: True})
    def harmless() -> dict:  # a read-only analysis declared as such
        return {"ok": True}

    client = TestClient(app, raise_server_exceptions=False)
    assert_problem(client.delete("/hidden/a"), 401)
    assert_problem(client.delete("/hidden/a", headers=bearer(twin[1]["reader"])), 403)
    assert changed == []
    assert client.delete("/hidden/b", headers=bearer(twin[1]["editor"])).status_code == 200 and changed == ["b"]
    assert client.post("/analysis/harmless").json() == {"ok": True}
    store.close()


def test_read_only_analyses_stay_open(client):
    documented = set(client.app.openapi()["paths"])
    for path in sorted(READ_ONLY_POSTS & documented):
        response = client.post(path, json={})
        assert response.status_code not in (401, 403), (path, response.text)


def test_roles_rank_reader_editor_admin(client, twin):
    tokens = twin[1]
    assert_problem(client.get("/admin/keys", headers=bearer(tokens["editor"])), 403)
    listing = client.get("/admin/keys", headers=bearer(tokens["admin"]))
    assert listing.status_code == 200
    assert {k["name"] for k in listing.json()["keys"]} >= {"test-reader", "test-editor", "test-admin"}
    assert all("token" not in k and "digest" not in k for k in listing.json()["keys"])
    made = client.post(
        "/admin/keys", json={"name": "made-over-http", "role": "editor"}, headers=bearer(tokens["admin"])
    )
    assert made.status_code == 201, made.text
    new_token = made.json()["token"]
    cancel = client.post("/jobs/0123/cancel", headers=bearer(new_token))
    assert_problem(cancel, 404)  # past the key check: the job does not exist
    revoked = client.delete(f"/admin/keys/{made.json()['id']}", headers=bearer(tokens["admin"]))
    assert revoked.status_code == 200 and revoked.json()["revoked"]
    assert_problem(client.post("/jobs/0123/cancel", headers=bearer(new_token)), 401)
    config = client.get("/admin/config", headers=bearer(tokens["admin"])).json()
    assert config["public_read"] is True and config["max_upload_mb"] > 0


def test_reads_need_a_key_when_public_read_is_off(tmp_path, monkeypatch):
    data = tmp_path / "data"
    store = make_twin(data)
    token = KeyStore(data).create("viewer", "reader")[1]
    monkeypatch.setenv("TWIN_PUBLIC_READ", "false")
    client = TestClient(create_app(store), raise_server_exceptions=False)
    for url in ("/collections", "/collections/buildings/items", "/jobs", "/metrics", "/"):
        assert_problem(client.get(url), 401)
        assert client.get(url, headers=bearer(token)).status_code == 200, url
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    monkeypatch.setenv("TWIN_PUBLIC_READ", "true")
    assert TestClient(create_app(store)).get("/collections").status_code == 200
    store.close()


def test_restricted_layers_need_a_key(tmp_path):
    data = tmp_path / "data"
    store = make_twin(data)
    set_restricted(store, "pipes", True)
    token = KeyStore(data).create("utility", "reader")[1]
    client = TestClient(create_app(store), raise_server_exceptions=False)
    listed = [c["id"] for c in client.get("/collections").json()["collections"]]
    assert "pipes" not in listed and "buildings" in listed
    keyed = [c["id"] for c in client.get("/collections", headers=bearer(token)).json()["collections"]]
    assert "pipes" in keyed
    documented = client.app.openapi()["paths"]
    urls = ["/collections/pipes", "/collections/pipes/items", "/collections/pipes/items/p1"]
    urls += [u for u in ("/features/pipes/p1",) if "/features/{layer_id}/{fid}" in documented]
    urls += [u for u in ("/tiles/pipes/tilejson.json",) if "/tiles/{tileset}/tilejson.json" in documented]
    for url in urls:
        assert_problem(client.get(url), 401)
        assert client.get(url, headers=bearer(token)).status_code == 200, url
    assert client.get("/collections/buildings/items").status_code == 200
    set_restricted(store, "pipes", False)
    assert client.get("/collections/pipes/items").status_code == 200
    store.close()


def test_cors_origins_come_from_the_settings(tmp_path, monkeypatch):
    data = tmp_path / "data"
    store = make_twin(data)
    (data / "twin.toml").write_text('cors_origins = ["https://gis.example.org"]\n')
    monkeypatch.delenv("TWIN_CORS_ORIGINS", raising=False)
    client = TestClient(create_app(store))
    allowed = client.get("/collections", headers={"Origin": "https://gis.example.org"})
    assert allowed.headers.get("access-control-allow-origin") == "https://gis.example.org"
    other = client.get("/collections", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers
    denied = client.post("/ingest", headers={"Origin": "https://gis.example.org"})
    assert denied.status_code == 401 and denied.headers.get("access-control-allow-origin") == "https://gis.example.org"
    store.close()
