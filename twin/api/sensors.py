"""Sensors, their readings and early-warning alerts over HTTP (the rules live in `twin.alerts`).

`GET /sensors` is a GeoJSON FeatureCollection (CRS84 unless `crs=` names the project CRS), one
Feature per sensor, `id` = sensor id, the sensor's own properties plus flat ones a map can
style on directly (MapLibre turns nested objects into strings):

    {"type": "Feature", "id": "WL001", "geometry": {"type": "Point", "coordinates": [lon, lat]},
     "properties": {..., "kind": "road_water_level", "quantity": "water_level", "unit": "m",
       "latest_value": 0.162, "latest_time": "2025-07-15T08:35:00.000Z",
       "alert_state": "alert" | "normal", "alert_count": 1, "alert_severity": "warning" | null,
       "alert_kinds": "ponding"}}

`GET /sensors/{id}` is one such Feature with `properties.alerts` (its active alerts) and links.
`POST /sensors/{id}/observations` (editor key) takes `{"observations": [{"time": RFC 3339,
"value": number, "quantity"?: text, "unit"?: text}, ...]}`, stores it all or nothing and answers
201 with `{"sensor_id", "stored", "evaluated", "late", "alerts": [alert + "change"]}`.
`GET /sensors/{id}/observations?datetime=&limit=` lists readings in time order.

An alert (in `GET /alerts`, `GET /alerts/{id}`, the stream and the POST answer):

    {"id": "road_ponding-WL001-20250715T083500000Z", "rule": "road_ponding", "kind": "ponding",
     "severity": "warning", "title": "...", "state": "raised" | "cleared",
     "sensor_id": "WL001", "sensor_name": "...", "sensor_type": "road_water_level",
     "quantity": "water_level", "unit": "m", "threshold": 0.15,
     "raised_at": "...Z", "raised_value": 0.16, "peak_value": 0.2, "peak_at": "...Z",
     "cleared_at": "...Z" | null, "cleared_value": 0.09 | null, "message": "...",
     "location": [lon, lat], "details": {...}, "recorded": "...Z",
     "links": [{"rel": "sensor", "href": ".../sensors/WL001"}, {"rel": "self", "href": ".../alerts/<id>"},
               {"rel": "burst-analysis", "href": ".../analysis/burst", "method": "POST",
                "type": "application/json", "body": {"network": "water", "pipe_id": "WP000123"}}]}

The burst link appears on pressure-drop alerts: POST its `body` to its `href` for the burst
analysis of the pipe nearest the sensor (`details.nearest_pipe`). `GET /alerts?state=&sensor=
&kind=&limit=` lists alerts newest first with `{"alerts": [...], "numberReturned", "active"}`.

`GET /alerts/stream` is a server-sent event stream: `: connected` at once, then one
`id: <seq>` / `event: alert` / `data: <the alert as it was then, plus "change": "raised" |
"cleared">` message per alert raised or
cleared after the stream opened (or after `Last-Event-ID`), and `: heartbeat` comments every
`heartbeat` seconds (default 15). It is left out of the OpenAPI document: it never ends, and
schema-driven clients would wait for its end. Every other route here is in it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from twin.alerts import Alert, AlertBook, Sensor, find_sensor, list_sensors, parse_readings, text_time
from twin.api.geojson import GEOJSON_MEDIA_TYPE, encode_geometries
from twin.api.params import MAX_LIMIT, CrsChoice, OutputCrsDep, StoreDep, TimeDep
from twin.api.problems import problem_responses
from twin.api.security import require_role
from twin.auth import Role
from twin.model import InvalidInput, Observation, TimeFilter, now_utc
from twin.store import Store

router = APIRouter(tags=["Sensors and early warning"])
_book_lock = threading.Lock()
POLL_S = 0.5  # how often the stream looks for new alert changes (any server process may write them)
SEVERITY_ORDER = ("info", "warning", "critical")

SensorId = Annotated[str, Path(description="Sensor id (the feature id in the sensor layer)")]


def alert_book(request: Request) -> AlertBook:
    """The app's alert book (rules read once), made on first use."""
    store = request.app.state.store
    with _book_lock:
        book = getattr(request.app.state, "alert_book", None)
        if book is None or book.path.parent != store.data_dir:
            book = AlertBook(store.data_dir)
            request.app.state.alert_book = book
    return book


def _json(body: Any, status: int = 200, media_type: str = "application/json") -> Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(text.encode("utf-8"), status_code=status, media_type=media_type)


def alert_json(request: Request, alert: Alert | dict[str, Any]) -> dict[str, Any]:
    """An alert with its links (the sensor; the burst analysis of the nearest pipe)."""
    body = alert.as_dict() if isinstance(alert, Alert) else dict(alert)
    links = [
        {"rel": "sensor", "href": str(request.url_for("sensor", sensor_id=body["sensor_id"]))},
        {"rel": "self", "href": str(request.url_for("alert", alert_id=body["id"]))},
    ]
    pipe = (body.get("details") or {}).get("nearest_pipe")
    if pipe:
        links.append(
            {
                "rel": "burst-analysis",
                "href": str(request.url_for("burst")),
                "method": "POST",
                "type": "application/json",
                "title": f"Burst analysis of {pipe['network']} pipe {pipe['pipe_id']}, nearest the sensor",
                "body": {"network": pipe["network"], "pipe_id": pipe["pipe_id"]},
            }
        )
    return {**body, "links": links}


# ------------------------------------------------------------------------------------ sensors
def _sensor_properties(sensor: Sensor, latest: Observation | None, active: list[Alert]) -> dict[str, Any]:
    severities = [a.severity for a in active]
    worst = max(severities, key=lambda s: SEVERITY_ORDER.index(s) if s in SEVERITY_ORDER else -1, default=None)
    return {
        **sensor.properties,
        "kind": sensor.type,
        "quantity": sensor.quantity,
        "unit": sensor.unit,
        "layer": sensor.layer,
        "latest_value": latest.value if latest else None,
        "latest_time": text_time(latest.time) if latest else None,
        "alert_state": "alert" if active else "normal",
        "alert_count": len(active),
        "alert_severity": worst,
        "alert_kinds": ",".join(sorted({a.kind for a in active})),
    }


def _features(sensors: list[Sensor], properties: list[dict[str, Any]], store: Store, crs: CrsChoice) -> list[str]:
    geometries = encode_geometries([s.geometry for s in sensors], store.crs, crs)
    return [
        f'{{"type":"Feature","id":{json.dumps(s.id)},"geometry":{g or "null"},'
        f'"properties":{json.dumps(p, ensure_ascii=False, default=str)}}}'
        for s, g, p in zip(sensors, geometries, properties, strict=True)
    ]


GEOJSON_CONTENT = {200: {"content": {GEOJSON_MEDIA_TYPE: {}}, "description": "GeoJSON"}}
JSON_CONTENT = {200: {"content": {"application/json": {}}, "description": "JSON"}}


@router.get(
    "/sensors",
    name="sensors",
    summary="Every sensor with its latest reading and alert state (GeoJSON)",
    response_class=Response,
    responses={**GEOJSON_CONTENT, **problem_responses(400)},
)
def sensors(
    request: Request,
    store: StoreDep,
    crs: OutputCrsDep,
    kind: Annotated[str | None, Query(description="Only sensors of this type, e.g. road_water_level")] = None,
) -> Response:
    book = alert_book(request)
    active = book.active_by_sensor()
    found = [s for s in list_sensors(store) if kind is None or s.type == kind]
    latest = book.latest(store, found)
    properties = [_sensor_properties(s, latest[s.id], active.get(s.id, [])) for s in found]
    features = _features(found, properties, store, crs)
    head = json.dumps(
        {
            "type": "FeatureCollection",
            "numberReturned": len(features),
            "timeStamp": text_time(now_utc()),
            "links": [{"rel": "alerts", "href": str(request.url_for("alerts"))}],
        }
    )
    text = f'{head[:-1]},"features":[{",".join(features)}]}}'
    return Response(text.encode("utf-8"), media_type=GEOJSON_MEDIA_TYPE, headers={"Content-Crs": f"<{crs.uri}>"})


@router.get(
    "/sensors/{sensor_id}",
    name="sensor",
    summary="One sensor with its latest reading and active alerts",
    response_class=Response,
    responses={**GEOJSON_CONTENT, **problem_responses(400, 404)},
)
def sensor(request: Request, store: StoreDep, crs: OutputCrsDep, sensor_id: SensorId) -> Response:
    book = alert_book(request)
    found = find_sensor(store, sensor_id)
    active = book.alerts(state="raised", sensor_id=sensor_id, limit=MAX_LIMIT)
    properties = _sensor_properties(found, book.latest(store, [found])[found.id], active)
    properties["alerts"] = [alert_json(request, a) for a in active]
    text = _features([found], [properties], store, crs)[0]
    links = [
        {"rel": "observations", "href": str(request.url_for("observations", sensor_id=sensor_id))},
        {"rel": "alerts", "href": str(request.url_for("alerts").include_query_params(sensor=sensor_id))},
    ]
    text = f'{text[:-1]},"links":{json.dumps(links)}}}'
    return Response(text.encode("utf-8"), media_type=GEOJSON_MEDIA_TYPE, headers={"Content-Crs": f"<{crs.uri}>"})


# ----------------------------------------------------------------------------------- readings
class Reading(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: str = Field(description="RFC 3339 instant, e.g. 2025-07-15T08:30:00Z")
    value: float = Field(strict=True, description="The reading, in `unit`")
    quantity: str | None = Field(None, description="Must be the sensor's quantity (the default)")
    unit: str | None = Field(None, description="Default: the sensor's unit; others are converted to it")


class ReadingBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observations: list[Reading] = Field(description="The readings, in any order, at distinct times")


BATCH_EXAMPLE = {
    "observations": [
        {"time": "2025-07-15T08:30:00Z", "value": 0.12},
        {"time": "2025-07-15T08:35:00Z", "value": 0.16, "unit": "m"},
    ]
}


@router.post(
    "/sensors/{sensor_id}/observations",
    name="add_observations",
    status_code=201,
    summary="Add a batch of readings (all or nothing) and evaluate the alert rules on it",
    response_class=Response,
    responses={201: {"content": {"application/json": {}}, "description": "Stored; the alerts raised or cleared"}}
    | problem_responses(400, 401, 403, 404, 409),
    dependencies=[Depends(require_role(Role.editor))],
)
def add_observations(
    request: Request,
    store: StoreDep,
    sensor_id: SensorId,
    body: Annotated[ReadingBatch, Body(openapi_examples={"ponding": {"value": BATCH_EXAMPLE}})],
) -> Response:
    found = find_sensor(store, sensor_id)
    readings = parse_readings(found, [r.model_dump() for r in body.observations])
    report = alert_book(request).record(store, found, readings).as_dict()
    report["alerts"] = [alert_json(request, a) for a in report["alerts"]]
    response = _json(report, 201)
    response.headers["Location"] = str(request.url_for("observations", sensor_id=sensor_id))
    return response


@router.get(
    "/sensors/{sensor_id}/observations",
    name="observations",
    summary="A sensor's readings in time order, at an instant or in an interval",
    response_class=Response,
    responses={**JSON_CONTENT, **problem_responses(400, 404)},
)
def observations(
    request: Request,
    store: StoreDep,
    sensor_id: SensorId,
    when: TimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Readings per page")] = 1000,
) -> Response:
    found = find_sensor(store, sensor_id)
    found_time = when if when is not None and (when.start or when.end) else None
    rows = store.query_observations(sensor_id, time=found_time, limit=limit + 1)
    page, more = rows[:limit], rows[limit:]
    links = [{"rel": "self", "href": str(request.url)}]
    if more and more[0].time > page[-1].time:
        end = text_time(found_time.end) if found_time and found_time.end else ".."
        interval = f"{text_time(more[0].time)}/{end}"
        links.append({"rel": "next", "href": str(request.url.include_query_params(datetime=interval))})
    body = {
        "sensor_id": sensor_id,
        "quantity": found.quantity,
        "unit": found.unit,
        "numberReturned": len(page),
        "observations": [
            {"time": text_time(o.time), "value": o.value, "quantity": o.quantity, "unit": o.unit} for o in page
        ],
        "links": links,
    }
    return _json(body)


# ------------------------------------------------------------------------------------- alerts
class AlertState(StrEnum):
    raised = "raised"
    cleared = "cleared"


@router.get(
    "/alerts",
    name="alerts",
    summary="Active and recent alerts, newest first; live changes at /alerts/stream (server-sent events)",
    response_class=Response,
    responses={**JSON_CONTENT, **problem_responses(400)},
)
def alerts(
    request: Request,
    state: Annotated[AlertState | None, Query(description="raised (active) or cleared")] = None,
    sensor: Annotated[str | None, Query(description="Only this sensor's alerts")] = None,
    kind: Annotated[str | None, Query(description="Only this kind, e.g. ponding, burst_suspected")] = None,
    since: Annotated[
        str | None, Query(description="RFC 3339 instant: alerts active then or raised or cleared after it")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Alerts to return")] = 100,
) -> Response:
    book = alert_book(request)
    after = None
    if since:
        parsed = TimeFilter.parse(since)
        if parsed is None or not parsed.instant:
            raise InvalidInput(f"since {since!r}: give one RFC 3339 instant")
        after = parsed.start
    found = book.alerts(state=state.value if state else None, sensor_id=sensor, kind=kind, since=after, limit=limit)
    body = {
        "alerts": [alert_json(request, a) for a in found],
        "numberReturned": len(found),
        "active": sum(len(v) for v in book.active_by_sensor().values()),
        "links": [
            {"rel": "self", "href": str(request.url)},
            {"rel": "stream", "href": str(request.url_for("alert_stream")), "type": "text/event-stream"},
        ],
    }
    return _json(body)


@router.get(
    "/alerts/stream",
    name="alert_stream",
    summary="Server-sent events: one `alert` event per alert raised or cleared, heartbeat comments",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"}},
)
async def alert_stream(
    request: Request,
    heartbeat: Annotated[float, Query(gt=0, le=300, description="Seconds between heartbeat comments")] = 15.0,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id (sent by EventSource)")
    ] = None,
) -> StreamingResponse:
    book = alert_book(request)
    if last_event_id is not None and not last_event_id.strip().isdigit():
        raise InvalidInput(f"Last-Event-ID {last_event_id!r}: expected an event id sent by this stream")
    start = int(last_event_id) if last_event_id is not None else await run_in_threadpool(book.last_seq)

    async def events() -> AsyncIterator[str]:
        seq = start
        loop = asyncio.get_running_loop()
        beat = loop.time()
        yield "retry: 3000\n: connected\n\n"
        while not await request.is_disconnected():
            for number, _change, alert in await run_in_threadpool(book.events_after, seq):
                seq = number
                data = json.dumps(alert_json(request, alert), ensure_ascii=False, separators=(",", ":"))
                yield f"id: {number}\nevent: alert\ndata: {data}\n\n"
            if loop.time() - beat >= heartbeat:
                beat = loop.time()
                yield ": heartbeat\n\n"
            await asyncio.sleep(min(POLL_S, heartbeat))

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get(
    "/alerts/{alert_id}",
    name="alert",
    summary="One alert",
    response_class=Response,
    responses={**JSON_CONTENT, **problem_responses(404)},
)
def alert(request: Request, alert_id: Annotated[str, Path(description="Alert id")]) -> Response:
    return _json(alert_json(request, alert_book(request).get(alert_id)))
