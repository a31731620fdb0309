"""Reads from InfluxDB for the API: latest, history by tier, network metrics, report data.

Values the caller chooses (sensor ids, sites, times) are always bound parameters (`$name`);
identifiers that InfluxQL cannot bind (field names) must match a strict pattern and are quoted,
and durations are rendered from integers, never copied from the request.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from infrawatch.ingest.influx_admin import InfluxClient

Tier = Literal["raw", "rollup_1m", "rollup_1h"]
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# aggregated by max in the rollups and when re-aggregating (DESIGN.md §4: max of risk and probabilities)
MAX_FIELDS = frozenset(
    {"risk", "leak_probability", "burst_probability", "contamination_probability", "anomaly_score"}
)
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "water_flow": (
        "pressure_bar",
        "flow_rate_lps",
        "temperature_c",
        "total_flow_m3",
        "leak_probability",
        "burst_probability",
        "risk",
    ),
    "water_quality": (
        "ph",
        "turbidity_ntu",
        "dissolved_oxygen_mgl",
        "conductivity_uscm",
        "chlorine_mgl",
        "temperature_c",
        "contamination_probability",
        "risk",
    ),
    "energy": ("energy_kwh", "occupancy", "outdoor_temperature_c", "expected_kwh", "anomaly_score", "risk"),
}
ALL_DEFAULT_FIELDS = tuple(dict.fromkeys(f for fs in DEFAULT_FIELDS.values() for f in fs))
RAW_RETENTION = dt.timedelta(days=7)
ROLLUP_1M_RETENTION = dt.timedelta(days=90)
TIER_STEP_S: dict[Tier, int] = {"raw": 0, "rollup_1m": 60, "rollup_1h": 3600}


class QueryError(ValueError):
    """A request the reads cannot serve as asked (→ 422 with this message)."""


def ident(name: str) -> str:
    if not FIELD_NAME.match(name):
        raise QueryError(f"field {name!r} is not a field name ([a-z][a-z0-9_]{{0,63}})")
    return f'"{name}"'


def ns(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1_000_000) * 1000


def iso(t_ns: int) -> str:
    return dt.datetime.fromtimestamp(t_ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


def pick_tier(start: dt.datetime, end: dt.datetime, interval_s: int | None, now: dt.datetime) -> Tier:
    """The finest tier that still holds `start` and is not much finer than asked: raw for up to a
    day at sub-minute steps, rollup_1m for up to a month at sub-hour steps, else rollup_1h."""
    span, age = end - start, now - start
    if (interval_s is None or interval_s < 60) and span <= dt.timedelta(days=1) and age <= RAW_RETENTION:
        return "raw"
    if (
        (interval_s is None or interval_s < 3600)
        and span <= dt.timedelta(days=31)
        and age <= ROLLUP_1M_RETENTION
    ):
        return "rollup_1m"
    return "rollup_1h"


def _agg(field: str, tier: Tier) -> str:
    """The select expression of `field` re-aggregated per interval on `tier`."""
    fn = "max" if field in MAX_FIELDS else "mean"
    source = field if tier == "raw" else f"{'max' if field in MAX_FIELDS else 'mean'}_{field}"
    return f"{fn}({ident(source)}) AS {ident(field)}"


def _where(tags: dict[str, str | None], params: dict[str, Any]) -> str:
    parts = []
    for tag, value in tags.items():
        if value is not None:
            params[f"tag_{tag}"] = value
            parts.append(f'"{tag}" = $tag_{tag}')
    return "".join(f" AND {p}" for p in parts)


@dataclass(frozen=True)
class History:
    tier: Tier
    interval_s: int | None
    fields: list[str]
    rows: list[dict[str, Any]]


def history(
    client: InfluxClient,
    sensor_id: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    fields: Iterable[str],
    interval_s: int | None = None,
    tier: Tier | None = None,
    limit: int = 10_000,
    now: dt.datetime | None = None,
) -> History:
    if end <= start:
        raise QueryError("end must be after start")
    now = now or dt.datetime.now(dt.UTC)
    fields = list(dict.fromkeys(fields))
    for f in fields:
        ident(f)
    tier = tier or pick_tier(start, end, interval_s, now)
    if tier != "raw" and interval_s is None:
        # at least the tier's step; at most ~1,000 points over the range
        interval_s = max(TIER_STEP_S[tier], math.ceil((end - start).total_seconds() / 1000))
    params: dict[str, Any] = {"sensor": sensor_id, "t0": ns(start), "t1": ns(end)}
    where = 'WHERE "sensor_id" = $sensor AND time >= $t0 AND time < $t1'
    if interval_s is None:
        cols = ", ".join(ident(f) for f in fields)
        q = f'SELECT {cols} FROM "raw"."reading" {where} ORDER BY time ASC LIMIT {int(limit)}'
    else:
        cols = ", ".join(_agg(f, tier) for f in fields)
        q = (
            f'SELECT {cols} FROM "{tier}"."reading" {where} GROUP BY time({int(interval_s)}s) fill(none) '
            f"LIMIT {int(limit)}"
        )
    rows = []
    for r in client.rows(q, params):
        rows.append({"time": iso(int(r["time"])), **{f: r.get(f) for f in fields}})
    return History(tier, interval_s, fields, rows)


def latest(
    client: InfluxClient,
    *,
    sensor_id: str | None = None,
    site: str | None = None,
    kind: str | None = None,
    zone: str | None = None,
    lookback: dt.timedelta = dt.timedelta(days=1),
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest reading (with its verdict) of each matching sensor within `lookback`."""
    now = now or dt.datetime.now(dt.UTC)
    params: dict[str, Any] = {"t0": ns(now - lookback)}
    where = _where({"sensor_id": sensor_id, "site": site, "kind": kind, "zone": zone}, params)
    q = (
        f'SELECT * FROM "raw"."reading" WHERE time >= $t0{where} '
        'GROUP BY "sensor_id" ORDER BY time DESC LIMIT 1'
    )
    out = []
    for r in client.rows(q, params):
        tags = {k: r.pop(k, None) for k in ("sensor_id", "site", "kind", "zone")}
        t = int(r.pop("time"))
        out.append({**tags, "time": iso(t), "values": {k: v for k, v in r.items() if v is not None}})
    out.sort(key=lambda x: str(x["sensor_id"]))
    return out


def _raw_or_hourly(start: dt.datetime, now: dt.datetime) -> Tier:
    return "raw" if now - start <= RAW_RETENTION else "rollup_1h"


def network_metrics(
    client: InfluxClient, start: dt.datetime, end: dt.datetime, *, site: str | None = None
) -> dict[str, Any]:
    """Flow, volume, pressure band and consumption by site and hour (the network-analytics design)."""
    if end <= start:
        raise QueryError("end must be after start")
    now = dt.datetime.now(dt.UTC)
    tier = _raw_or_hourly(start, now)
    params: dict[str, Any] = {"t0": ns(start), "t1": ns(end)}
    where = "WHERE time >= $t0 AND time < $t1" + _where({"site": site}, params)
    flow, pressure = (
        ("flow_rate_lps", "pressure_bar") if tier == "raw" else ("mean_flow_rate_lps", "mean_pressure_bar")
    )
    src = f'"{tier}"."reading"'
    # volume per sensor and hour: the integral of its flow (L) — per series, never across sensors
    # (an hourly rollup point holds the hour's mean flow: × 3600 s)
    litres = f'integral("{flow}", 1s)' if tier == "raw" else f'sum("{flow}") * 3600'
    vq = f'SELECT {litres} AS litres FROM {src} {where} GROUP BY time(1h), "site", "sensor_id"'
    water: dict[tuple[str, int], float] = {}
    for r in client.rows(vq, params):
        if r.get("litres") is not None:
            key = (str(r["site"]), int(r["time"]))
            water[key] = water.get(key, 0.0) + float(r["litres"]) / 1000.0
    kwh = "energy_kwh" if tier == "raw" else "mean_energy_kwh"
    eq = f'SELECT sum("{kwh}") AS kwh FROM {src} {where} GROUP BY time(1h), "site"'
    energy: dict[tuple[str, int], float] = {}
    for r in client.rows(eq, params):
        if r.get("kwh") is not None:
            energy[(str(r["site"]), int(r["time"]))] = float(r["kwh"])
    by_hour = [
        {"site": s, "hour": iso(t), "water_m3": water.get((s, t)), "energy_kwh": energy.get((s, t))}
        for s, t in sorted(set(water) | set(energy))
    ]
    pq = (
        f'SELECT min("{pressure}") AS min, percentile("{pressure}", 5) AS p5, mean("{pressure}") AS mean, '
        f'percentile("{pressure}", 95) AS p95, max("{pressure}") AS max FROM {src} {where}'
    )
    band_rows = client.rows(pq, params)
    band = {k: band_rows[0].get(k) for k in ("min", "p5", "mean", "p95", "max")} if band_rows else None
    fq = f'SELECT last("{flow}") AS flow FROM {src} {where} GROUP BY "sensor_id"'
    flows = [float(r["flow"]) for r in client.rows(fq, params) if r.get("flow") is not None]
    return {
        "site": site,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "tier": tier,
        "flow_sensors": len(flows),
        "total_flow_lps": sum(flows) if flows else None,
        "total_volume_m3": sum(water.values()) if water else None,
        "total_energy_kwh": sum(energy.values()) if energy else None,
        "pressure_band_bar": band,
        "consumption_by_site_hour": by_hour,
    }


# key series per kind on a report's chart: (field, how the hour aggregates it)
REPORT_SERIES: dict[str, tuple[tuple[str, str], ...]] = {
    "water_flow": (("flow_rate_lps", "mean"), ("pressure_bar", "mean")),
    "water_quality": (("ph", "mean"), ("turbidity_ntu", "mean")),
    "energy": (("energy_kwh", "sum"),),
}


def report_data(client: InfluxClient, site: str, day: dt.date) -> dict[str, Any]:
    """Everything a site's daily report shows, from the raw tier (or the hourly one when older)."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    tier = _raw_or_hourly(start, dt.datetime.now(dt.UTC))
    pre = "" if tier == "raw" else "mean_"
    risk = "risk" if tier == "raw" else "max_risk"
    params: dict[str, Any] = {"site": site, "t0": ns(start), "t1": ns(end)}
    where = 'WHERE "site" = $site AND time >= $t0 AND time < $t1'
    src = f'"{tier}"."reading"'
    count = "count" if tier == "raw" else "sum"
    count_field = "risk" if tier == "raw" else "count_risk"
    sensors = client.rows(
        f'SELECT {count}("{count_field}") AS readings, max("{risk}") AS max_risk FROM {src} {where} '
        'GROUP BY "sensor_id", "kind", "zone"',
        params,
    )
    series: dict[str, list[dict[str, Any]]] = {}
    for kind, spec in REPORT_SERIES.items():
        cols = ", ".join(f'{fn}("{pre}{f}") AS "{f}"' for f, fn in spec)
        rows = client.rows(
            f'SELECT {cols}, max("{risk}") AS max_risk FROM {src} {where} AND "kind" = $kind '
            "GROUP BY time(1h) fill(none)",
            {**params, "kind": kind},
        )
        if rows:
            series[kind] = [{**r, "time": iso(int(r["time"]))} for r in rows]
    zones = client.rows(
        f'SELECT mean("{risk}") AS mean_risk, max("{risk}") AS max_risk, '
        f'{count}("{count_field}") AS readings FROM {src} {where} GROUP BY "zone"',
        params,
    )
    high = {
        str(r["zone"]): int(r["n"])
        for r in client.rows(
            f'SELECT count("{risk}") AS n FROM {src} {where} AND "{risk}" >= 2 GROUP BY "zone"', params
        )
    }
    alerts = client.rows(
        'SELECT "alert_type", "message", "risk" FROM "raw"."alert" '
        f'{where} GROUP BY "sensor_id", "kind", "zone", "severity"',
        params,
    )
    alerts.sort(key=lambda a: (-(a.get("risk") or 0), int(a["time"])))
    return {
        "site": site,
        "date": day.isoformat(),
        "tier": tier,
        "sensors": len(sensors),
        "readings": int(sum(r.get("readings") or 0 for r in sensors)),
        "by_kind": {
            k: {
                "sensors": sum(1 for r in sensors if r["kind"] == k),
                "readings": int(sum(r.get("readings") or 0 for r in sensors if r["kind"] == k)),
            }
            for k in sorted({str(r["kind"]) for r in sensors})
        },
        "risk_by_zone": [
            {
                "zone": str(z["zone"]),
                "mean_risk": z.get("mean_risk"),
                "max_risk": z.get("max_risk"),
                "readings": int(z.get("readings") or 0),
                "high_readings": high.get(str(z["zone"]), 0),
            }
            for z in sorted(zones, key=lambda z: str(z["zone"]))
        ],
        "hourly": series,
        "alerts": len(alerts),
        "top_incidents": [
            {
                "time": iso(int(a["time"])),
                "sensor_id": a.get("sensor_id"),
                "kind": a.get("kind"),
                "zone": a.get("zone"),
                "severity": a.get("severity"),
                "alert_type": a.get("alert_type"),
                "risk": a.get("risk"),
                "message": a.get("message"),
            }
            for a in alerts[:10]
        ],
    }
