"""Alert history: list, acknowledge, and the Grafana webhook receiver that records it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select

from infrawatch.api import reads
from infrawatch.api.deps import Db, Permit, Principal, State, WebhookToken
from infrawatch.api.models import Alert, utcnow
from infrawatch.api.routers.readings import time_range
from infrawatch.api.schemas import AckIn, AlertEventOut, AlertOut, GrafanaWebhook, RowId, WebhookOut

router = APIRouter(prefix="/alerts", tags=["alerts"])


def _naive(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return (t.astimezone(dt.UTC) if t.tzinfo else t).replace(tzinfo=None)


@router.get("", dependencies=[Depends(Permit("alerts:read"))])
def list_alerts(
    db: Db,
    site: str | None = None,
    zone: str | None = None,
    severity: str | None = None,
    sensor_id: str | None = None,
    state: Literal["firing", "resolved", "acknowledged", "unacknowledged"] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> list[AlertOut]:
    """Alerts recorded from Grafana, newest first; `start`/`end` bound when they started."""
    q = select(Alert).order_by(Alert.starts_at.desc(), Alert.id.desc())
    for col, value in (
        (Alert.site, site),
        (Alert.zone, zone),
        (Alert.severity, severity),
        (Alert.sensor_id, sensor_id),
    ):
        if value is not None:
            q = q.where(col == value)
    if state in ("firing", "resolved"):
        q = q.where(Alert.status == state)
    elif state == "acknowledged":
        q = q.where(Alert.acknowledged_at.is_not(None))
    elif state == "unacknowledged":
        q = q.where(Alert.acknowledged_at.is_(None))
    if start is not None:
        q = q.where(Alert.starts_at >= _naive(start))
    if end is not None:
        q = q.where(Alert.starts_at < _naive(end))
    return [AlertOut.model_validate(a) for a in db.scalars(q.limit(limit))]


@router.get("/events", dependencies=[Depends(Permit("alerts:read"))])
def alert_events(
    state: State,
    site: str | None = None,
    severity: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> list[AlertEventOut]:
    """The pipeline's own `alert` points in InfluxDB (risk rising to HIGH/CRITICAL), newest first."""
    t0, t1 = time_range(start, end, dt.timedelta(days=1))
    params: dict[str, Any] = {"t0": reads.ns(t0), "t1": reads.ns(t1)}
    where = "WHERE time >= $t0 AND time < $t1"
    for tag, value in (("site", site), ("severity", severity)):
        if value is not None:
            params[tag] = value
            where += f' AND "{tag}" = ${tag}'
    rows = state.reader.rows(
        f'SELECT "alert_type", "message", "risk" FROM "raw"."alert" {where} '
        f'GROUP BY "sensor_id", "site", "kind", "zone", "severity" ORDER BY time DESC LIMIT {int(limit)}',
        params,
    )
    rows.sort(key=lambda r: -int(r["time"]))
    return [
        AlertEventOut(
            time=reads.iso(int(r["time"])),
            **{
                k: r.get(k)
                for k in ("sensor_id", "site", "kind", "zone", "severity", "alert_type", "risk", "message")
            },
        )
        for r in rows[:limit]
    ]


@router.get("/{alert_id}", dependencies=[Depends(Permit("alerts:read"))])
def get_alert(db: Db, alert_id: RowId) -> AlertOut:
    alert = db.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id}")
    return AlertOut.model_validate(alert)


@router.post("/{alert_id}/ack")
def acknowledge(
    db: Db, alert_id: RowId, body: AckIn, me: Annotated[Principal, Depends(Permit("alerts:ack"))]
) -> AlertOut:
    """Acknowledge an alert: who and when are recorded, with an optional note."""
    alert = db.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id}")
    alert.acknowledged_by = me.name
    alert.acknowledged_at = utcnow()
    alert.ack_note = body.note
    alert.updated_at = utcnow()
    db.commit()
    return AlertOut.model_validate(alert)


@router.post("/webhook", dependencies=[Depends(WebhookToken())])
def grafana_webhook(db: Db, body: GrafanaWebhook) -> WebhookOut:
    """Grafana's webhook contact point: each alert instance (fingerprint, startsAt) is recorded
    firing, and marked resolved (with its end) when Grafana says so."""
    firing = resolved = 0
    for a in body.alerts:
        starts = _naive(a.startsAt)
        assert starts is not None
        # Grafana sends endsAt 0001-01-01 while firing
        ends = _naive(a.endsAt) if a.endsAt is not None and a.endsAt.year > 1 else None
        row = db.scalar(select(Alert).where(Alert.fingerprint == a.fingerprint, Alert.starts_at == starts))
        if row is None:
            row = Alert(fingerprint=a.fingerprint, starts_at=starts, status=a.status)
            db.add(row)
        labels = a.labels
        row.status = a.status
        row.alertname = labels.get("alertname", "")
        row.severity = labels.get("severity")
        row.site = labels.get("site")
        row.zone = labels.get("zone") or labels.get("facility_zone")
        row.sensor_id = labels.get("sensor_id")
        row.summary = a.annotations.get("summary") or a.annotations.get("description") or ""
        row.labels = dict(labels)
        row.annotations = dict(a.annotations)
        row.ends_at = ends if a.status == "resolved" else None
        row.updated_at = utcnow()
        db.flush()
        if a.status == "firing":
            firing += 1
        else:
            resolved += 1
    db.commit()
    return WebhookOut(recorded=firing + resolved, firing=firing, resolved=resolved)
