"""Status of the dependencies: InfluxDB, the broker, the workers (their `pipeline` points), models."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from infrawatch.api import reads
from infrawatch.api.deps import AppState, Permit, Public, State
from infrawatch.api.schemas import StatusOut
from infrawatch.errors import UserError

router = APIRouter(tags=["status"])
health_router = APIRouter(tags=["status"])
WORKER_SILENT = dt.timedelta(seconds=60)  # workers write a `pipeline` point every 10 s


def _influx(state: AppState) -> dict[str, Any]:
    try:
        r = httpx.get(f"{state.settings.influx.url.rstrip('/')}/ping", timeout=2.0)
    except httpx.HTTPError as e:
        return {"ok": False, "url": state.settings.influx.url, "error": str(e)}
    return {
        "ok": r.status_code == 204,
        "url": state.settings.influx.url,
        "version": r.headers.get("X-Influxdb-Version"),
    }


def _broker(state: AppState) -> dict[str, Any]:
    b = state.settings.broker
    try:
        with socket.create_connection((b.host, b.port), timeout=2.0):
            pass
    except OSError as e:
        return {"ok": False, "host": b.host, "port": b.port, "error": e.strerror or str(e)}
    return {"ok": True, "host": b.host, "port": b.port}


def _workers(state: AppState) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    # plain fields of the newest point (several last() selectors would report the range's start time)
    rows = state.reader.rows(
        'SELECT "received", "written", "rate_limited", "dead_letter" FROM "raw"."pipeline" '
        'WHERE time >= $t0 GROUP BY "worker" ORDER BY time DESC LIMIT 1',
        {"t0": reads.ns(now - dt.timedelta(hours=1))},
    )
    out = []
    for r in rows:
        seen = dt.datetime.fromtimestamp(int(r["time"]) / 1e9, dt.UTC)
        out.append(
            {
                "worker": r.get("worker"),
                "last_seen": seen.isoformat(),
                "alive": now - seen <= WORKER_SILENT,
                **{k: r.get(k) for k in ("received", "written", "rate_limited", "dead_letter")},
            }
        )
    return out


@router.get(
    "/status",
    response_model=StatusOut,
    responses={503: {"model": StatusOut}},
    dependencies=[Depends(Permit("status:read"))],
)
def status(state: State) -> Any:
    """200 when InfluxDB and the broker answer, else 503 with the same body saying what is down."""
    influx, broker = _influx(state), _broker(state)
    workers: list[dict[str, Any]] = []
    if influx["ok"]:
        try:
            workers = _workers(state)
        except UserError as e:
            influx = {**influx, "ok": False, "error": str(e)}
    try:
        models = state.registry.fingerprint()
    except Exception:  # an unreadable registry is reported, not raised
        models = {}
    body = StatusOut(
        ok=influx["ok"] and broker["ok"], influxdb=influx, broker=broker, workers=workers, models=models
    )
    if not body.ok:
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    return body


@health_router.get("/healthz", dependencies=[Depends(Public())])
def healthz() -> dict[str, str]:
    """Liveness for probes: the process answers (dependencies: /api/v1/status)."""
    return {"status": "ok"}
