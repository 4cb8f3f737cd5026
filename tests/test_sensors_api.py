"""Sensors and early warning over HTTP, on a copy of the demo twin served by uvicorn.

Each test writes readings for its own sensors on its own day, so the tests do not depend on
each other's order; the demo replay uses a later day than all of them.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import shapely

from tests.demo_twin import shared_demo
from twin.alerts import load_rules
from twin.api.app import create_app
from twin.auth import KeyStore
from twin.model import InvalidInput
from twin.store import open_store

STREAM_TIMEOUT = httpx.Timeout(30.0)  # guards a stream that never answers; nothing is timed


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """A writable copy of the demo twin, keys of each role, and the app on a loopback port."""
    demo = shared_demo(tmp_path_factory)
    data = tmp_path_factory.mktemp("sensors") / "twin-data"
    shutil.copytree(demo, data, ignore=shutil.ignore_patterns("sources"))
    keys = KeyStore(data)
    tokens = {role: keys.create(f"test-{role}", role)[1] for role in ("reader", "editor")}
    keys.close()
    store = open_store(data)

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(store), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        yield {"client": client, "base": base, "store": store, "tokens": tokens, "demo": demo}
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def editor(twin) -> dict[str, str]:
    return {"Authorization": f"Bearer {twin['tokens']['editor']}"}


def stamps(day: str, count: int, step_minutes: int = 5) -> list[str]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return [(start + timedelta(minutes=k * step_minutes)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(count)]


def post(twin, sensor: str, times: list[str], values: list[float], **extra) -> httpx.Response:
    body = {"observations": [{"time": t, "value": v, **extra} for t, v in zip(times, values, strict=True)]}
    return twin["client"].post(f"/sensors/{sensor}/observations", json=body, headers=editor(twin))


def alerts_of(twin, sensor: str, kind: str) -> list[dict]:
    answer = twin["client"].get("/alerts", params={"sensor": sensor, "kind": kind, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return answer.json()["alerts"]


def sensor_feature(twin, sensor: str) -> dict:
    answer = twin["client"].get(f"/sensors/{sensor}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"]


# --------------------------------------------------------------------------------- the sensors
def test_sensors_are_geojson_in_crs84_with_their_latest_reading(twin):
    answer = twin["client"].get("/sensors")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/geo+json")
    collection = answer.json()
    assert collection["type"] == "FeatureCollection"
    manifest = json.loads((twin["demo"] / "sources" / "manifest.json").read_text())
    # the last reading of each sensor in the demo's own CSV (the sensors written by other tests excluded)
    last: dict[str, tuple[str, float]] = {}
    with open(twin["demo"] / "sources" / "observations.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["sensor_id"] not in last or row["time"] >= last[row["sensor_id"]][0]:
                last[row["sensor_id"]] = (row["time"], float(row["value"]))
    features = {f["id"]: f for f in collection["features"]}
    assert len(features) == 19 == len(last)
    west, south, east, north = manifest["bbox_lonlat"]
    kinds = set()
    for sid, feature in features.items():
        lon, lat = feature["geometry"]["coordinates"][:2]
        assert west <= lon <= east and south <= lat <= north, (sid, lon, lat)
        props = feature["properties"]
        kinds.add(props["kind"])
        assert props["unit"] and props["quantity"]
        assert props["alert_state"] in ("alert", "normal")
        if props["latest_time"] < "2025":  # untouched by this module's writes
            assert props["latest_time"].replace(".000", "") == last[sid][0]
            assert props["latest_value"] == pytest.approx(last[sid][1])
    assert kinds == {"road_water_level", "pipe_pressure", "flow", "rain_gauge"}


def test_unknown_sensor_is_404(twin):
    assert_problem(twin["client"].get("/sensors/NOPE"), 404)
    assert_problem(twin["client"].get("/sensors/NOPE/observations"), 404)


# ------------------------------------------------------------------------------------- ponding
def test_rising_water_level_raises_one_ponding_alert_and_clears_it(twin):
    times = stamps("2025-03-01T06:00:00", 12)
    levels = [0.0, 0.05, 0.10, 0.14, 0.15, 0.16, 0.14, 0.17, 0.21, 0.12, 0.09, 0.04]
    # in three batches: the state carries over from one request to the next
    first = post(twin, "WL002", times[:5], levels[:5])
    assert first.status_code == 201, first.text
    assert first.json()["alerts"] == []  # 0.15 is the limit itself, not over it
    second = post(twin, "WL002", times[5:9], levels[5:9])
    assert second.status_code == 201
    assert [a["change"] for a in second.json()["alerts"]] == ["raised"]
    during = sensor_feature(twin, "WL002")["properties"]
    assert during["alert_state"] == "alert" and during["alert_kinds"] == "ponding"
    assert [a["kind"] for a in during["alerts"]] == ["ponding"]
    third = post(twin, "WL002", times[9:], levels[9:])
    assert [a["change"] for a in third.json()["alerts"]] == ["cleared"]

    alerts = alerts_of(twin, "WL002", "ponding")
    assert len(alerts) == 1  # the dip to 0.14 did not clear it, so it did not flap
    alert = alerts[0]
    assert alert["state"] == "cleared"
    assert (alert["raised_at"], alert["raised_value"]) == (times[5].replace("Z", ".000Z"), 0.16)
    assert (alert["cleared_at"], alert["cleared_value"]) == (times[10].replace("Z", ".000Z"), 0.09)
    assert (alert["peak_value"], alert["peak_at"]) == (0.21, times[8].replace("Z", ".000Z"))
    assert alert["threshold"] == 0.15
    assert sensor_feature(twin, "WL002")["properties"]["alert_state"] == "normal"
    listed = twin["client"].get("/sensors").json()["features"]
    assert next(f for f in listed if f["id"] == "WL002")["properties"]["latest_value"] == 0.04
    assert twin["client"].get(f"/alerts/{alert['id']}").json()["id"] == alert["id"]


def test_readings_in_centimetres_are_converted_to_the_sensors_unit(twin):
    times = stamps("2025-03-06T06:00:00", 3)
    answer = post(twin, "WL006", times, [5.0, 18.0, 2.0], unit="cm")
    assert answer.status_code == 201, answer.text
    assert [a["change"] for a in answer.json()["alerts"]] == ["raised", "cleared"]
    stored = twin["client"].get("/sensors/WL006/observations", params={"datetime": f"{times[0]}/{times[-1]}"})
    assert [o["value"] for o in stored.json()["observations"]] == pytest.approx([0.05, 0.18, 0.02])
    assert {o["unit"] for o in stored.json()["observations"]} == {"m"}


# ---------------------------------------------------------------------------------------- burst
def nearest_water_pipe(store, sensor_id: str) -> tuple[str, set[str]]:
    """Independently: distances from the sensor to every current water pipe, with shapely."""
    sensor = store.get_feature("sensors", sensor_id).geometry
    pipes = store.query("water_pipes", limit=None).features
    distances = shapely.distance(np.array([p.geometry for p in pipes], dtype=object), sensor)
    closest = {p.fid for p, d in zip(pipes, distances, strict=True) if d <= distances.min() + 1e-3}
    # ties (a logger on a junction touches every pipe meeting there): the largest diameter, then the id
    best = min(closest, key=lambda fid: (-next(p for p in pipes if p.fid == fid).properties["diameter"], fid))
    return best, closest


def test_pressure_drop_raises_a_burst_alert_linking_to_the_nearest_pipes_burst_analysis(twin):
    times = stamps("2025-03-02T09:00:00", 20)
    rng = np.random.default_rng(7)
    values = list(np.round(0.34 + rng.normal(0, 0.002, 20), 3))
    values[8:14] = [0.262, 0.25, 0.248, 0.246, 0.25, 0.255]  # a burst: 80-90 kPa under the baseline
    values[14:] = [0.30, 0.328, 0.336, 0.339, 0.34, 0.341]  # valves shut, main restored
    answer = post(twin, "PP001", times, [float(v) for v in values])
    assert answer.status_code == 201, answer.text
    bursts = alerts_of(twin, "PP001", "burst_suspected")
    assert len(bursts) == 1
    alert = bursts[0]
    assert alert["raised_at"] == times[8].replace("Z", ".000Z")
    assert alert["severity"] == "critical"
    assert alert["details"]["baseline"] == pytest.approx(np.median(values[5:8]))
    assert alert["peak_value"] == 0.246
    assert alert["state"] == "cleared" and alert["cleared_at"] == times[15].replace("Z", ".000Z")

    expected, closest = nearest_water_pipe(twin["store"], "PP001")
    assert alert["details"]["nearest_pipe"]["pipe_id"] == expected
    link = next(link for link in alert["links"] if link["rel"] == "burst-analysis")
    assert link["method"] == "POST" and link["href"] == f"{twin['base']}/analysis/burst"
    burst = httpx.post(link["href"], json=link["body"], timeout=120)
    assert burst.status_code == 200, burst.text
    answer = burst.json()
    assert answer["network"] == "water"
    assert answer["burst"]["pipes"] == [expected]
    assert expected in closest
    # other pressure sensors were left alone, and the small diurnal wobble raised nothing
    assert all(a["sensor_id"] == "PP001" for a in alerts_of(twin, "PP001", "burst_suspected"))


# ------------------------------------------------------------------------------------ the stream
def read_events(lines, until) -> list[dict]:
    """Server-sent events (comments as {'comment': text}) until `until(events)` is true."""
    events: list[dict] = []
    event: dict = {}
    for line in lines:
        if line.startswith(":"):
            events.append({"comment": line[1:].strip()})
        elif line == "":
            if event:
                events.append(event)
                event = {}
        else:
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value
        if until(events):
            return events
    raise AssertionError(f"the stream ended before the expected events: {events}")


def test_alert_stream_sends_the_alert_raised_after_it_opened(twin):
    client = twin["client"]
    url = f"{twin['base']}/alerts/stream"
    with httpx.stream("GET", url, params={"heartbeat": 0.2}, timeout=STREAM_TIMEOUT) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        read_events(lines, lambda events: {"comment": "connected"} in events)
        assert client.get("/health").status_code == 200  # an open stream does not hold the server up
        times = stamps("2025-03-03T07:00:00", 3)
        assert post(twin, "WL003", times, [0.1, 0.2, 0.25]).status_code == 201

        def seen(events: list[dict]) -> bool:
            alerts = [e for e in events if e.get("event") == "alert"]
            return bool(alerts) and any(e.get("comment") == "heartbeat" for e in events)

        events = read_events(lines, seen)
    alerts = [json.loads(e["data"]) for e in events if e.get("event") == "alert"]
    assert [(a["sensor_id"], a["kind"], a["change"], a["state"]) for a in alerts] == [
        ("WL003", "ponding", "raised", "raised")
    ]
    assert alerts[0]["raised_at"] == times[1].replace("Z", ".000Z")
    event_id = next(e["id"] for e in events if e.get("event") == "alert")

    # a client that reconnects with Last-Event-ID gets what it missed, from that event on
    assert post(twin, "WL003", stamps("2025-03-03T08:00:00", 1), [0.02]).status_code == 201
    headers = {"Last-Event-ID": event_id}
    with httpx.stream("GET", url, headers=headers, timeout=STREAM_TIMEOUT) as stream:
        resumed = read_events(stream.iter_lines(), lambda events: any(e.get("event") == "alert" for e in events))
    missed = json.loads(next(e for e in resumed if e.get("event") == "alert")["data"])
    assert (missed["sensor_id"], missed["change"]) == ("WL003", "cleared")
    assert int(next(e for e in resumed if e.get("event") == "alert")["id"]) > int(event_id)


def test_alert_stream_refuses_a_bad_last_event_id(twin):
    answer = twin["client"].get("/alerts/stream", headers={"Last-Event-ID": "yesterday"})
    assert_problem(answer, 400)


# ----------------------------------------------------------------------------------- readings
def test_observations_by_datetime_return_exactly_the_readings_in_range(twin):
    times = stamps("2025-03-04T00:00:00", 24, step_minutes=10)
    values = [round(0.1 * k, 1) for k in range(24)]
    assert post(twin, "RG001", times, values).status_code == 201
    client = twin["client"]

    def fetch(**params) -> list[tuple[str, float]]:
        answer = client.get("/sensors/RG001/observations", params=params)
        assert answer.status_code == 200, answer.text
        return [(o["time"].replace(".000", ""), o["value"]) for o in answer.json()["observations"]]

    posted = list(zip(times, values, strict=True))
    assert fetch(datetime=f"{times[3]}/{times[9]}") == posted[3:10]  # closed interval
    assert fetch(datetime="2025-03-04T00:25:00Z/2025-03-04T01:05:00Z") == posted[3:7]
    assert fetch(datetime=times[5]) == [posted[5]]  # an instant
    assert fetch(datetime="2025-03-04T00:05:00Z") == []
    assert fetch(datetime=f"{times[20]}/..") == posted[20:]
    assert fetch(datetime=f"../{times[0]}")[-1] == posted[0]  # the demo's day comes before
    # pages follow the next link and meet without gaps or repeats
    pages, url = (
        [],
        client.get("/sensors/RG001/observations", params={"datetime": f"{times[0]}/{times[-1]}", "limit": 7}).json(),
    )
    while True:
        pages += [(o["time"].replace(".000", ""), o["value"]) for o in url["observations"]]
        following = [link["href"] for link in url["links"] if link["rel"] == "next"]
        if not following:
            break
        url = httpx.get(following[0]).json()
    assert pages == posted
    assert_problem(client.get("/sensors/RG001/observations", params={"datetime": "noon"}), 400)
    assert_problem(client.get("/sensors/RG001/observations", params={"datetime": f"{times[5]}/{times[1]}"}), 400)


def count_readings(twin, sensor: str) -> int:
    return len(twin["store"].query_observations(sensor))


def alert_count(twin) -> int:
    return len(twin["client"].get("/alerts", params={"limit": 10000}).json()["alerts"])


def test_writes_need_an_editor_key(twin):
    before = count_readings(twin, "WL004")
    body = {"observations": [{"time": "2025-03-05T06:00:00Z", "value": 0.3}]}
    url = "/sensors/WL004/observations"
    anonymous = twin["client"].post(url, json=body)
    assert_problem(anonymous, 401)
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    reader = twin["client"].post(url, json=body, headers={"Authorization": f"Bearer {twin['tokens']['reader']}"})
    assert_problem(reader, 403)
    unknown = twin["client"].post(url, json=body, headers={"Authorization": "Bearer not-a-key"})
    assert_problem(unknown, 401)
    assert count_readings(twin, "WL004") == before
    assert alerts_of(twin, "WL004", "ponding") == []


NOW = datetime.now(UTC)
GOOD = {"time": "2025-03-05T07:00:00Z", "value": 0.3}
MALFORMED = {
    "empty batch": {"observations": []},
    "no observations member": {"readings": [GOOD]},
    "a bare list": [GOOD],
    "value missing": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z"}]},
    "value is text": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z", "value": "0.2"}]},
    "value is true": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z", "value": True}]},
    "time is not a time": {"observations": [GOOD, {"time": "yesterday", "value": 0.2}]},
    "time is a number": {"observations": [GOOD, {"time": 1700000000, "value": 0.2}]},
    "time in the future": {
        "observations": [GOOD, {"time": (NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "value": 0.2}]
    },
    "two readings at one time": {"observations": [GOOD, dict(GOOD, value=0.1)]},
    "another quantity": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z", "value": 3, "quantity": "flow"}]},
    "a unit of pressure": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z", "value": 3, "unit": "kPa"}]},
    "an unknown unit": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z", "value": 3, "unit": "furlong"}]},
    "negative water level": {"observations": [GOOD, {"time": "2025-03-05T07:05:00Z", "value": -0.2}]},
    "unknown member": {"observations": [dict(GOOD, colour="red")]},
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_batches_are_refused_and_store_nothing(twin, name):
    before, alerts_before = count_readings(twin, "WL004"), alert_count(twin)
    answer = twin["client"].post("/sensors/WL004/observations", json=MALFORMED[name], headers=editor(twin))
    assert_problem(answer, 400)
    assert count_readings(twin, "WL004") == before
    assert alert_count(twin) == alerts_before


def test_not_a_number_and_resent_readings_are_refused(twin):
    before = count_readings(twin, "WL005")
    text = (
        '{"observations": [{"time": "2025-03-07T07:00:00Z", "value": 0.3}, '
        '{"time": "2025-03-07T07:05:00Z", "value": NaN}]}'
    )
    answer = twin["client"].post(
        "/sensors/WL005/observations",
        content=text,
        headers={**editor(twin), "Content-Type": "application/json"},
    )
    assert_problem(answer, 400)
    assert count_readings(twin, "WL005") == before
    times = stamps("2025-03-07T08:00:00", 2)
    assert post(twin, "WL005", times, [0.01, 0.02]).status_code == 201
    again = post(twin, "WL005", [times[1], "2025-03-07T09:00:00Z"], [0.3, 0.3])
    assert_problem(again, 409)
    assert count_readings(twin, "WL005") == before + 2
    assert alerts_of(twin, "WL005", "ponding") == []
    assert_problem(post(twin, "NOPE", times, [0.1, 0.2]), 404)


def test_alert_filters_are_checked(twin):
    assert_problem(twin["client"].get("/alerts", params={"state": "burning"}), 400)
    assert_problem(twin["client"].get("/alerts", params={"since": "a/b"}), 400)
    raised = twin["client"].get("/alerts", params={"state": "raised", "limit": 10000}).json()
    assert all(a["state"] == "raised" for a in raised["alerts"])
    assert raised["active"] == raised["numberReturned"]


# ------------------------------------------------------------------------------ the demo's day
def test_replaying_the_demo_day_warns_of_every_ponded_road_and_the_burst(twin):
    """The generator's day (shifted to a later date) against the facts its manifest records."""
    manifest = json.loads((twin["demo"] / "sources" / "manifest.json").read_text())
    events = manifest["events"]
    shift = datetime(2025, 6, 1, tzinfo=UTC) - datetime(2024, 7, 15, tzinfo=UTC)
    batches: dict[str, list[dict]] = defaultdict(list)
    with open(twin["demo"] / "sources" / "observations.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            when = datetime.fromisoformat(row["time"].replace("Z", "+00:00")) + shift
            batches[row["sensor_id"]].append({"time": when.isoformat(), "value": float(row["value"])})
    for sensor, readings in sorted(batches.items()):
        answer = twin["client"].post(
            f"/sensors/{sensor}/observations", json={"observations": readings}, headers=editor(twin)
        )
        assert answer.status_code == 201, answer.text
    day = twin["client"].get("/alerts", params={"since": "2025-06-01T00:00:00Z", "limit": 10000}).json()["alerts"]
    ponding = {a["sensor_id"]: a for a in day if a["kind"] == "ponding"}
    assert set(ponding) == set(events["rain"]["peak_levels_m"])
    for sensor, peak in events["rain"]["peak_levels_m"].items():
        assert ponding[sensor]["peak_value"] == pytest.approx(peak)
        assert ponding[sensor]["raised_value"] > 0.15 and ponding[sensor]["state"] == "cleared"
    assert len([a for a in day if a["kind"] == "ponding"]) == len(ponding)  # one each, no flapping
    bursts = [a for a in day if a["kind"] == "burst_suspected"]
    assert [a["sensor_id"] for a in bursts] == [events["pressure_drop"]["sensor_id"]]

    def shifted(text: str) -> str:
        return (datetime.fromisoformat(text.replace("Z", "+00:00")) + shift).isoformat(timespec="milliseconds")

    drop = events["pressure_drop"]
    raised = bursts[0]["raised_at"].replace("Z", "+00:00")
    assert shifted(drop["start"]) < raised <= shifted(drop["valves_shut"])
    assert bursts[0]["peak_value"] == pytest.approx(drop["min_value_mpa"])


# ------------------------------------------------------------------------------------ the rules
def test_a_twins_own_rules_file_is_checked(tmp_path: Path):
    rule = {
        "id": "ponding",
        "sensor_types": ["road_water_level"],
        "quantity": "water_level",
        "test": "above",
        "raise": {"value": 15, "unit": "cm"},
        "clear": {"value": 0.2, "unit": "m"},  # clears above the raise level: it would flap
    }
    (tmp_path / "alert_rules.json").write_text(json.dumps({"rules": [rule]}))
    with pytest.raises(InvalidInput, match="safe side"):
        load_rules(tmp_path)
    rule["clear"] = {"value": 10, "unit": "cm"}
    (tmp_path / "alert_rules.json").write_text(json.dumps({"rules": [rule]}))
    (loaded,) = load_rules(tmp_path)
    assert loaded.raise_level.to("m") == pytest.approx(0.15)
    assert [r.id for r in load_rules(None)][:2] == ["road_ponding", "pipe_burst_suspected"]


# ------------------------------------------------------------------------- both store backends
def test_alert_book_on_each_store_backend(store, tmp_path: Path):
    """The rules on a small twin (GeoPackage and PostGIS): ponding with hysteresis, a burst alert
    naming the nearest pipe (a tie at a junction goes to the larger main), a resent batch refused."""
    from shapely.geometry import LineString, Point

    from twin.alerts import AlertBook, find_sensor, parse_readings
    from twin.model import Conflict, FeatureInput, Layer

    x, y = 385600.0, 3547900.0
    store.write_features(
        Layer("sensors", kind="sensor"),
        [
            FeatureInput(
                "WL1", Point(x, y + 300), {"type": "road_water_level", "quantity": "water_level", "unit": "m"}
            ),
            FeatureInput("PP1", Point(x, y), {"type": "pipe_pressure", "quantity": "pressure", "unit": "MPa"}),
        ],
    )
    store.write_features(
        Layer("water_pipes", kind="pipe_network", metadata={"role": "pipes", "network": "water"}),
        [
            FeatureInput("P-small", LineString([(x, y), (x + 80, y)]), {"diameter": 150}),
            FeatureInput("P-main", LineString([(x - 90, y), (x, y)]), {"diameter": 400}),
            FeatureInput("P-near", LineString([(x + 5, y + 20), (x + 5, y + 200)]), {"diameter": 600}),
        ],
    )
    book = AlertBook(tmp_path)
    level = find_sensor(store, "WL1")
    times = stamps("2025-04-01T06:00:00", 6)
    items = [{"time": t, "value": v} for t, v in zip(times, [0.1, 0.151, 0.12, 0.2, 0.1, 0.3], strict=True)]
    report = book.record(store, level, parse_readings(level, items))
    stamped = [t.replace("Z", ".000Z") for t in times]
    assert [(e["change"], e["raised_at"], e["cleared_at"]) for e in report.events] == [
        ("raised", stamped[1], None),  # 0.12 is not yet down to 0.10: no clear, no second alert
        ("cleared", stamped[1], stamped[4]),
        ("raised", stamped[5], None),
    ]
    assert book.alerts(sensor_id="WL1", state="cleared")[0].peak_value == 0.2
    with pytest.raises(Conflict):
        book.record(store, level, parse_readings(level, items[-1:]))
    assert len(store.query_observations("WL1")) == 6

    pressure = find_sensor(store, "PP1")
    values = [0.35, 0.351, 0.349, 0.35, 0.30, 0.28, 0.345]
    times = stamps("2025-04-01T09:00:00", len(values))
    items = [{"time": t, "value": v} for t, v in zip(times, values, strict=True)]
    report = book.record(store, pressure, parse_readings(pressure, items))
    raised = [e for e in report.events if e["change"] == "raised"]
    assert [e["kind"] for e in raised] == ["burst_suspected"]
    assert raised[0]["raised_at"] == times[5].replace("Z", ".000Z")  # 50 kPa exactly is not over it
    assert raised[0]["details"]["nearest_pipe"]["pipe_id"] == "P-main"
    assert book.alerts(sensor_id="PP1")[0].state == "cleared"
    assert book.latest(store, [pressure])["PP1"].value == 0.345
