"""Daily report per site: JSON, CSV (long form) or PDF with charts."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.concurrency import run_in_threadpool

from infrawatch.api import reads
from infrawatch.api.deps import Permit, State
from infrawatch.api.schemas import ErrorOut

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(Permit("reports:read"))])


def report_csv(r: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "time", "key", "metric", "value"])
    w.writerow(["summary", r["date"], r["site"], "sensors", r["sensors"]])
    w.writerow(["summary", r["date"], r["site"], "readings", r["readings"]])
    w.writerow(["summary", r["date"], r["site"], "alerts", r["alerts"]])
    for kind, v in r["by_kind"].items():
        for metric in ("sensors", "readings"):
            w.writerow(["kind", r["date"], kind, metric, v[metric]])
    for z in r["risk_by_zone"]:
        for metric in ("mean_risk", "max_risk", "readings", "high_readings"):
            w.writerow(["zone", r["date"], z["zone"], metric, z[metric]])
    for kind, rows in r["hourly"].items():
        for row in rows:
            for metric, value in row.items():
                if metric != "time":
                    w.writerow(["hourly", row["time"], kind, metric, value])
    for a in r["top_incidents"]:
        w.writerow(["incident", a["time"], a["sensor_id"], a["alert_type"], a["risk"]])
    return buf.getvalue()


@router.get(
    "/daily",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            }
        },
        422: {"model": ErrorOut},
    },
)
async def daily(
    state: State,
    site: str,
    date: dt.date | None = None,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Any:
    """The day's sensors, readings, risk by zone, hourly series and top incidents of one site."""
    day = date or dt.datetime.now(dt.UTC).date()
    if not dt.date(1971, 1, 1) <= day <= dt.date(2261, 12, 31):
        raise HTTPException(422, "date out of range")
    data = await run_in_threadpool(reads.report_data, state.reader, site, day)
    if format == "csv":
        return Response(report_csv(data), media_type="text/csv")
    if format == "pdf":
        # matplotlib loads on the first PDF, not with the service (a second of start-up)
        from infrawatch.api import report_pdf  # noqa: PLC0415

        pdf = await run_in_threadpool(report_pdf.render, data)
        return Response(pdf, media_type="application/pdf")
    return data
