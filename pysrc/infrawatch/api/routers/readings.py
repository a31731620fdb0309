"""Latest and historical readings with their verdicts; history as JSON or streamed CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from infrawatch.api import reads
from infrawatch.api.deps import Db, Permit, State
from infrawatch.api.models import Sensor
from infrawatch.api.schemas import ErrorOut, HistoryOut, Kind, LatestOut

router = APIRouter(prefix="/readings", tags=["readings"], dependencies=[Depends(Permit("readings:read"))])
_DURATION = re.compile(r"^(\d{1,7})(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str | None) -> int | None:
    if text is None:
        return None
    m = _DURATION.match(text)
    if m is None or int(m.group(1)) == 0:
        raise HTTPException(422, f"interval {text!r}: use a number and s, m, h or d (e.g. 30s, 5m, 1h)")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def time_range(
    start: dt.datetime | None, end: dt.datetime | None, default: dt.timedelta
) -> tuple[dt.datetime, dt.datetime]:
    end = utc(end) if end is not None else dt.datetime.now(dt.UTC)
    start = utc(start) if start is not None else end - default
    if end <= start:
        raise HTTPException(422, "end must be after start")
    if start.year < 1971 or end.year > 2261:
        raise HTTPException(422, "times must lie between 1971 and 2261")
    return start, end


@router.get("/latest")
def latest(
    state: State,
    sensor_id: str | None = None,
    site: str | None = None,
    kind: Kind | None = None,
    zone: str | None = None,
    lookback_h: Annotated[float, Query(gt=0, le=168)] = 24.0,
) -> list[LatestOut]:
    """The newest reading and verdict of each matching sensor (within `lookback_h` hours)."""
    rows = reads.latest(
        state.reader,
        sensor_id=sensor_id,
        site=site,
        kind=kind,
        zone=zone,
        lookback=dt.timedelta(hours=lookback_h),
    )
    return [LatestOut(**r) for r in rows]


def _csv(fields: list[str], rows: list[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["time", *fields])
    for i, r in enumerate(rows):
        w.writerow([r["time"], *("" if r.get(f) is None else r[f] for f in fields)])
        if i % 500 == 499:  # stream in pieces rather than one large string
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


@router.get(
    "/{sensor_id}/history",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, 422: {"model": ErrorOut}},
)
def history(
    state: State,
    db: Db,
    sensor_id: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    interval: Annotated[str | None, Query(description="e.g. 30s, 5m, 1h; none: raw points")] = None,
    fields: Annotated[str | None, Query(description="comma-separated; default: the kind's")] = None,
    tier: Literal["raw", "rollup_1m", "rollup_1h"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """History of one sensor. The tier (raw, rollup_1m, rollup_1h) follows the range and interval
    unless given; rollups come back under the raw field names (mean, or max for risk/probabilities)."""
    start, end = time_range(start, end, dt.timedelta(hours=1))
    if fields:
        names = [f.strip() for f in fields.split(",") if f.strip()]
    else:
        sensor = db.get(Sensor, sensor_id)
        names = list(reads.DEFAULT_FIELDS[sensor.kind] if sensor else reads.ALL_DEFAULT_FIELDS)
    if not names or len(names) > 64:
        raise HTTPException(422, "give 1–64 fields")
    try:
        h = reads.history(
            state.reader,
            sensor_id,
            start,
            end,
            fields=names,
            interval_s=parse_interval(interval),
            tier=tier,
            limit=limit,
        )
    except reads.QueryError as e:
        raise HTTPException(422, str(e)) from e
    if format == "csv":
        return StreamingResponse(
            _csv(h.fields, h.rows),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{_safe(sensor_id)}-history.csv"',
                "X-Tier": h.tier,
            },
        )
    return HistoryOut(sensor_id=sensor_id, tier=h.tier, interval_s=h.interval_s, fields=h.fields, rows=h.rows)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "sensor"
