"""Operations: readiness, Prometheus metrics, request ids in structured logs, settings from file
and environment, analysis time limits, backup and restore."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api_fixtures import make_twin
from twin import metrics
from twin.api.app import create_app
from twin.api.security import READ_ONLY
from twin.auth import KeyStore
from twin.config import load_settings, settings_table
from twin.logging import configure_logging
from twin.model import InvalidInput, TimeFilter
from twin.store import open_store

SAMPLE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format 0.0.4: every sample line parsed (and any malformed line refused)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3).replace("+Inf", "inf"))
    return samples


@pytest.fixture
def twin(tmp_path):
    store = make_twin(tmp_path / "data")
    client = TestClient(create_app(store), raise_server_exceptions=False)
    yield store, client
    client.app.state.jobs.close()
    store.close()


def test_ready_and_health(twin):
    _, client = twin
    assert client.get("/ready").json() == {"status": "ready", "store": "ok"}
    assert client.get("/health").status_code == 200


def test_metrics_count_requests_by_route_and_status(twin):
    _, client = twin
    key = 'twin_http_requests_total{method="GET",route="/collections/{collection_id}",status="404"}'
    before = parse_metrics(client.get("/metrics").text).get(key, 0)
    for _ in range(3):
        assert client.get("/collections/nothing-here").status_code == 404
    client.get("/collections/buildings")
    text = client.get("/metrics").text
    samples = parse_metrics(text)
    assert samples[key] == before + 3
    assert samples['twin_http_requests_total{method="GET",route="/collections/{collection_id}",status="200"}'] >= 1
    count = samples['twin_http_request_duration_seconds_count{method="GET",route="/collections/{collection_id}"}']
    inf = samples[
        'twin_http_request_duration_seconds_bucket{method="GET",route="/collections/{collection_id}",le="+Inf"}'
    ]
    assert count == inf >= 4
    assert samples['twin_jobs{state="queued"}'] == 0 and samples["twin_store_up"] == 1
    assert samples["process_resident_memory_bytes"] > 10e6
    assert "# TYPE twin_tile_cache_total counter" in text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")


def test_metrics_module_renders_what_it_is_given():
    counter = metrics.Counter("demo_total", "demo", ("result",))
    counter.inc(result="hit")
    counter.inc(2, result="miss")
    histogram = metrics.Histogram("demo_seconds", "demo", (), buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        histogram.observe(value)
    registry = metrics.Registry()
    registry.register(counter)
    registry.register(histogram)
    samples = parse_metrics(registry.render())
    assert samples == {
        'demo_total{result="hit"}': 1,
        'demo_total{result="miss"}': 2,
        'demo_seconds_bucket{le="0.1"}': 1,
        'demo_seconds_bucket{le="1"}': 2,
        'demo_seconds_bucket{le="+Inf"}': 3,
        "demo_seconds_sum": 5.55,
        "demo_seconds_count": 3,
    }
    with pytest.raises(ValueError):
        counter.inc(kind="x")


def test_request_ids_reach_the_structured_log(twin):
    _, client = twin
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:
        answer = client.get("/collections/buildings/items", params={"limit": 2})
        given = client.get("/collections", headers={"X-Request-ID": "ticket-4711"})
        unsafe = client.get("/collections", headers={"X-Request-ID": "a b\nc"})
    finally:
        configure_logging("WARNING", "json", io.StringIO())
    rid = answer.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and given.headers["x-request-id"] == "ticket-4711"
    assert unsafe.headers["x-request-id"] != "a b\nc"
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [e for e in entries if e["logger"] == "twin.access"]
    mine = next(e for e in access if e["request_id"] == rid)
    assert mine["route"] == "/collections/{collection_id}/items" and mine["status"] == 200
    assert mine["method"] == "GET" and mine["duration_ms"] > 0 and mine["level"] == "INFO"
    assert any(e["request_id"] == "ticket-4711" for e in access)


def test_settings_from_file_and_environment(tmp_path, monkeypatch):
    for variable in ("TWIN_CONFIG", "TWIN_PUBLIC_READ", "TWIN_MAX_UPLOAD_MB", "TWIN_STORE", "TWIN_MAX_ZOOM"):
        monkeypatch.delenv(variable, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "twin.toml").write_text(
        '[twin]\npublic_read = false\nmax_upload_mb = 50\ncors_origins = ["https://a.example"]\n'
        'store = "postgresql://twin:secret@db/twin"\n'
    )
    settings = load_settings(data)
    assert settings.public_read is False and settings.max_upload_mb == 50
    assert settings.cors_origins == ("https://a.example",) and settings.data == data
    assert settings.describe()["store"] == "postgresql://twin:***@db/twin"
    monkeypatch.setenv("TWIN_MAX_UPLOAD_MB", "75")
    monkeypatch.setenv("TWIN_PUBLIC_READ", "yes")
    assert load_settings(data).max_upload_mb == 75 and load_settings(data).public_read is True
    other = tmp_path / "other.toml"
    other.write_text("max_zoom = 18\n")
    monkeypatch.setenv("TWIN_CONFIG", str(other))
    assert load_settings(data).max_zoom == 18 and load_settings(data).public_read is True
    for text, word in (("max_zoom = 99\n", "zoom"), ("colour = 1\n", "colour"), ("max_zoom = [\n", "TOML")):
        other.write_text(text)
        with pytest.raises(InvalidInput, match=word):
            load_settings(data)
    monkeypatch.setenv("TWIN_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(InvalidInput, match="missing.toml"):
        load_settings(data)
    monkeypatch.delenv("TWIN_CONFIG")
    monkeypatch.setenv("TWIN_MAX_UPLOAD_MB", "lots")
    with pytest.raises(InvalidInput, match="TWIN_MAX_UPLOAD_MB"):
        load_settings(data)


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for key, variable, _, _ in settings_table():
        assert f"`{key}`" in readme and f"`{variable}`" in readme, key


def test_slow_analyses_answer_503_at_the_time_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_ANALYSIS_TIMEOUT_S", "0.5")
    store = make_twin(tmp_path / "data")
    app = create_app(store)
    release = threading.Event()

    @app.post("/analysis/slow", openapi_extra={READ_ONLY: True})
    def slow() -> dict:
        release.wait(60)  # held until the test has its answer
        return {"late": True}

    client = TestClient(app, raise_server_exceptions=False)
    try:
        response = client.post("/analysis/slow")
    finally:
        release.set()
    assert response.status_code == 503 and "TWIN_ANALYSIS_TIMEOUT_S" in response.json()["detail"]
    assert client.get("/collections").status_code == 200  # not under the limit: not analyses
    app.state.jobs.close()
    store.close()


def twin_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *args], capture_output=True, text=True, timeout=300
    )


def state(data: Path) -> list:
    with open_store(data) as store:
        rows = [(layer.id, layer.version) for layer in store.list_layers()]
        for layer in store.list_layers():
            rows += [
                (f.fid, f.version, str(f.valid_to))
                for f in store.query(layer.id, time=TimeFilter(None, None), limit=None).features
            ]
        return sorted(rows, key=str) + store.assets.keys()


def test_backup_and_restore(tmp_path):
    data = tmp_path / "data"
    store = make_twin(data)
    token = KeyStore(data).create("ops", "admin")[1]
    store.close()
    before = state(data)
    made = twin_cli("backup", str(tmp_path / "bk"), "--data", str(data))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["layers"] == 2
    assert twin_cli("init", str(tmp_path / "scratch"), "--crs", "EPSG:4549").returncode == 0
    with open_store(data) as live:  # the twin changes after the backup
        live.delete_layer("pipes")
    refused = twin_cli("restore", str(tmp_path / "bk"), "--data", str(data))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "--force" in lines[0]
    assert twin_cli("restore", str(tmp_path / "bk"), "--data", str(data), "--force").returncode == 0
    assert state(data) == before
    assert KeyStore(data).verify(token) is not None
    fresh = tmp_path / "fresh"
    assert twin_cli("restore", str(tmp_path / "bk"), "--data", str(fresh)).returncode == 0
    assert state(fresh) == before
    damaged = tmp_path / "bk" / "twin.gpkg"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    broken = twin_cli("restore", str(tmp_path / "bk"), "--data", str(tmp_path / "third"))
    assert broken.returncode == 2 and "damaged" in broken.stderr and not (tmp_path / "third" / "twin.gpkg").exists()
    again = twin_cli("backup", str(tmp_path / "bk"), "--data", str(data))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_request_limits_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_ITEMS", "5")
    monkeypatch.setenv("TWIN_MAX_ZOOM", "18")
    monkeypatch.setenv("TWIN_MAX_BBOX_KM2", "10")
    store = make_twin(tmp_path / "data")
    client = TestClient(create_app(store), raise_server_exceptions=False)
    assert client.get("/collections/buildings/items", params={"limit": 5}).status_code == 200
    over = client.get("/collections/buildings/items", params={"limit": 6})
    assert over.status_code == 400 and "TWIN_MAX_ITEMS" in over.json()["detail"]
    documented = client.app.openapi()["paths"]
    if "/tiles/{tileset}/{z}/{x}/{y}.mvt" in documented:
        deep = client.get("/tiles/buildings/19/0/0.mvt")
        assert deep.status_code == 404 and "TWIN_MAX_ZOOM" in deep.json()["detail"]
    wide = client.get("/analysis/stats", params={"bbox": "118.0,31.5,119.0,32.5"})
    assert wide.status_code == 400 and "TWIN_MAX_BBOX_KM2" in wide.json()["detail"]
    small = client.get("/analysis/stats", params={"bbox": "118.79,32.04,118.80,32.05"})
    assert "TWIN_MAX_BBOX_KM2" not in small.text
    client.app.state.jobs.close()
    store.close()
