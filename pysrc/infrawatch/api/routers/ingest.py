"""HTTP ingest: the MQTT payloads through the same `core.Pipeline` and InfluxDB writer.

A body is one reading object or a JSON array of them. Each reading's sensor must be registered:
the registry gives the topic (site, kind) the decoder would get from MQTT, its zone, and its rate.
The token bucket runs on arrival time (`limit_clock="arrival"`): over the sensor's rate → 429
with `Retry-After`. Decoder errors → 422 with their reason codes (docs/reason-codes.md).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from infrawatch import core
from infrawatch.api.deps import AppState, Permit, State
from infrawatch.api.models import Sensor
from infrawatch.api.schemas import ErrorOut, IngestOut
from infrawatch.ingest.writer import WriteRejectedError, WriteUnavailableError

router = APIRouter(tags=["ingest"])
MAX_BODY = 4 * 1024 * 1024
MAX_READINGS = 10_000
_ZONE_KEYS = {"zone", "facility_zone"}

_BODY_SCHEMA: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"type": "object", "additionalProperties": True},
                    {"type": "array", "items": {"type": "object", "additionalProperties": True}},
                ]
            },
            "example": {"sensor_id": "S001", "flow_rate_lps": 125.5, "pressure_bar": 3.2},
        }
    },
    "required": True,
}


def _lookup(state: AppState, ids: list[str]) -> dict[str, Sensor]:
    with state.sessions() as db:
        return {s.id: s for s in db.scalars(select(Sensor).where(Sensor.id.in_(ids)))}


class Prepared:
    """Payloads for the pipeline: with a topic from the registry, or bare (no usable sensor id:
    the decoder names the problem — missing_sensor_id, not_object, invalid_json …)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.topics: list[str] = []
        self.index: list[int] = []
        self.bare: list[bytes] = []
        self.bare_index: list[int] = []
        self.errors: list[dict[str, Any]] = []


def _prepare(items: list[Any], raw: bytes | None, sensors: dict[str, Sensor]) -> Prepared:
    p = Prepared()
    for i, item in enumerate(items):
        sid = item.get("sensor_id") if isinstance(item, dict) else None
        if isinstance(sid, bool) or not isinstance(sid, str | int):
            p.bare.append(raw if raw is not None else json.dumps(item, allow_nan=True).encode())
            p.bare_index.append(i)
            continue
        assert isinstance(item, dict)
        sensor = sensors.get(str(sid))
        if sensor is None:
            p.errors.append(
                {
                    "index": i,
                    "reason": "unregistered_sensor",
                    "message": f"sensor {sid!r} is not in the registry",
                }
            )
            continue
        if raw is not None and not _ZONE_KEYS & {k.lower() for k in item}:
            raw = None  # the registry's zone must reach the risk table: re-encode with it
        if raw is None:
            doc = item if _ZONE_KEYS & {k.lower() for k in item} else {**item, "facility_zone": sensor.zone}
            body = json.dumps(doc, allow_nan=True).encode()  # NaN stays NaN: the decoder refuses it
        else:
            body = raw
        p.payloads.append(body)
        p.topics.append(f"infrawatch/{sensor.site_id}/{sensor.kind}/{sensor.id}/telemetry")
        p.index.append(i)
    return p


def _apply_rates(state: AppState, limiter: core.TokenBucket, sensors: dict[str, Sensor]) -> None:
    """Per-sensor overrides from the registry (kept in step on every call: the registry may change)."""
    burst = state.settings.api.ingest_burst
    for s in sensors.values():
        current = limiter.rate_of(s.id)
        if s.rate_per_s is None:
            if current is not None:
                limiter.clear_rate(s.id)
        elif current != (s.rate_per_s, max(burst, s.rate_per_s)):
            limiter.set_rate(s.id, s.rate_per_s, max(burst, s.rate_per_s))


def _refresh_models(state: AppState, pipeline: core.Pipeline) -> None:
    if state.models is None:
        return
    try:
        state.models.refresh(pipeline)
    except Exception:  # a broken registry must not stop ingest: readings are stored without verdicts
        state.models.fingerprint = None


@router.post(
    "/ingest",
    openapi_extra={"requestBody": _BODY_SCHEMA},
    responses={
        422: {"model": ErrorOut, "description": "decoder reason codes"},
        429: {"model": ErrorOut, "description": "over the sensor's rate; see Retry-After"},
        503: {"model": ErrorOut},
    },
    dependencies=[Depends(Permit("ingest:write"))],
)
async def ingest(request: Request, state: State) -> IngestOut:
    """Store readings: one object (as an MQTT telemetry payload) or an array of them."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPException(413, f"body over {MAX_BODY} bytes: send fewer readings per request")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
        items: list[Any] = [None]
        whole: bytes | None = raw  # the decoder reports invalid_json itself
    else:
        whole = raw if isinstance(doc, dict) else None
        items = doc if isinstance(doc, list) else [doc]
        if isinstance(doc, list) and not 1 <= len(doc) <= MAX_READINGS:
            raise HTTPException(
                422,
                [
                    {
                        "index": 0,
                        "reason": "empty_batch" if not doc else "too_many_readings",
                        "message": f"send 1–{MAX_READINGS} readings",
                    }
                ],
            )
    ids = [
        str(x["sensor_id"])
        for x in items
        if isinstance(x, dict) and isinstance(x.get("sensor_id"), str | int)
    ]
    sensors = await run_in_threadpool(_lookup, state, ids) if ids else {}
    if doc is None:
        prep = Prepared()
        prep.bare, prep.bare_index = [raw], [0]
    else:
        prep = _prepare(items, whole, sensors)
    pipeline, bare_pipeline = state.pipeline, state.bare_pipeline
    assert pipeline is not None
    assert bare_pipeline is not None
    limiter = pipeline.limiter
    assert limiter is not None
    errors = prep.errors
    received = time.time_ns()
    async with state.pipeline_lock:
        _apply_rates(state, limiter, sensors)
        _refresh_models(state, pipeline)
        # in a thread: the core releases the GIL, the event loop keeps serving reads meanwhile
        out = (
            await run_in_threadpool(pipeline.process, prep.payloads, prep.topics, received)
            if prep.payloads
            else None
        )
        retry = [limiter.retry_after_s(sid, received) for sid in (out.rate_limited_sensors if out else [])]
        # messages without a sensor id are refused by the decoder whatever their topic; a pipeline
        # of their own keeps them off the real one (its limiter and rolling state)
        bare = bare_pipeline.process(prep.bare, None, received) if prep.bare else None
    if bare is not None:
        errors += [{"index": prep.bare_index[i], "reason": r, "message": m} for i, r, m in bare.errors]
    if out is not None:
        errors += [{"index": prep.index[i], "reason": r, "message": m} for i, r, m in out.errors]
        if out.line_protocol:
            try:
                await state.writer.write(out.line_protocol)
            except (WriteUnavailableError, WriteRejectedError) as e:
                raise HTTPException(503, f"InfluxDB did not take the readings: {e}; retry later") from e
    errors.sort(key=lambda e: int(e["index"]))
    accepted = out.count if out else 0
    limited = sorted(set(out.rate_limited_sensors)) if out else []
    if accepted == 0 and limited:
        wait = max(1, math.ceil(max(retry)))
        return JSONResponse(  # type: ignore[return-value]
            {"detail": f"over the rate of sensor(s) {', '.join(limited)}; retry after {wait} s"},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    if accepted == 0 and errors:
        raise HTTPException(422, errors)
    return IngestOut(
        accepted=accepted,
        stale=out.stale if out else 0,
        rate_limited=limited,
        errors=errors,
        alerts=out.alerts if out else [],
    )
