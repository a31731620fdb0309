"""The dashboards (DESIGN.md §5), generated: facility overview, sensor detail, water quality, energy,
pipeline health. `dashboards()` returns {relative path under grafana/dashboards: dashboard JSON}.

Queries are raw InfluxQL (the InfluxDB datasource in InfluxQL mode). Conventions:
- "now" panels (sensors online, active alerts, zone summary, the map) read the latest verdict per
  sensor from `raw` within ONLINE_WINDOW, independent of the dashboard's range;
- range panels (trends, readings, verdicts) read `"$tier"."reading"` with tier-proof regex fields
  (common.tiered) and GROUP BY time($__interval) — the `tier` variable picks raw, rollup_1m or
  rollup_1h (Grafana has no automatic, range-driven choice of a retention policy for InfluxQL);
- `$site`, `$zone`, … are multi-value with All = `.*`, matched as `=~ /^$site$/` (Grafana renders
  a multi-value selection as the regex group `(a|b)`).
"""

from __future__ import annotations

from typing import Any

from infrawatch.grafana.common import (
    DATASOURCE,
    ONLINE_WINDOW,
    QUALITY_LIMITS,
    SCHEMA_VERSION,
    TIERS,
    tiered,
)

Json = dict[str, Any]

LATEST = (
    'SELECT last("risk") AS "risk" FROM "raw"."reading" '
    f'WHERE time > now() - {ONLINE_WINDOW} AND "site" =~ /^$site$/ AND "zone" =~ /^$zone$/ '
    'GROUP BY "sensor_id", "zone", "kind", "site"'
)


def target(query: str, ref_id: str = "A", *, fmt: str = "time_series", alias: str | None = None) -> Json:
    t: Json = {
        "refId": ref_id,
        "datasource": dict(DATASOURCE),
        "rawQuery": True,
        "query": query,
        "resultFormat": fmt,
    }
    if alias:
        t["alias"] = alias
    return t


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    w: int = 12,
    h: int = 8,
    description: str = "",
    unit: str | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    options: Json | None = None,
    overrides: list[Json] | None = None,
    transformations: list[Json] | None = None,
    custom: Json | None = None,
    interval: str | None = None,
) -> Json:
    defaults: Json = {}
    if unit:
        defaults["unit"] = unit
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in thresholds],
        }
    if custom:
        defaults["custom"] = custom
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }
    if transformations:
        p["transformations"] = transformations
    if interval:
        p["interval"] = interval
    return p


def _layout(panels: list[Json]) -> list[Json]:
    """Ids and grid positions: left to right, wrapping at Grafana's 24 columns."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_h = max(row_h, h)
    return panels


def query_var(name: str, label: str, query: str, *, multi: bool = True) -> Json:
    v: Json = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": dict(DATASOURCE),
        "query": query,
        "definition": query,
        "refresh": 1,  # on dashboard load
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
    }
    if multi:
        v["allValue"] = ".*"
        v["current"] = {"text": "All", "value": "$__all"}
    return v


def tier_var() -> Json:
    options = [{"text": label, "value": rp, "selected": rp == "raw"} for rp, label in TIERS]
    return {
        "type": "custom",
        "name": "tier",
        "label": "Data tier",
        "description": "raw keeps 7 days; pick a rollup for longer ranges (they keep 90 days / years)",
        "query": ",".join(rp for rp, _ in TIERS),
        "multi": False,
        "includeAll": False,
        "current": {"text": TIERS[0][1], "value": "raw"},
        "options": options,
    }


SITE = query_var("site", "Site", 'SHOW TAG VALUES FROM "reading" WITH KEY = "site"')
ZONE = query_var("zone", "Zone", 'SHOW TAG VALUES FROM "reading" WITH KEY = "zone" WHERE "site" =~ /^$site$/')


def dashboard(
    uid: str,
    title: str,
    panels: list[Json],
    variables: list[Json],
    *,
    tags: list[str],
    time_from: str = "now-6h",
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "tags": ["infrawatch", *tags],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["infrawatch"],
                "asDropdown": True,
                "title": "infrawatch",
                "icon": "external link",
            }
        ],
        "panels": _layout(panels),
    }


RISK_STEPS: list[tuple[float | None, str]] = [(None, "green"), (1, "yellow"), (2, "orange"), (3, "red")]
RISK_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "LOW", "color": "green"},
            "1": {"text": "MEDIUM", "color": "yellow"},
            "2": {"text": "HIGH", "color": "orange"},
            "3": {"text": "CRITICAL", "color": "red"},
        },
    }
]


def facility_overview() -> Json:
    stat = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
    }
    panels = [
        panel(
            "stat",
            "Sensors online",
            [target(f'SELECT count("risk") AS "online" FROM ({LATEST})')],
            w=6,
            h=4,
            description=f"Sensors with a scored reading in the last {ONLINE_WINDOW}",
            options=stat,
            thresholds=[(None, "blue")],
        ),
        panel(
            "stat",
            "Active alerts",
            [target(f'SELECT count("risk") AS "active" FROM ({LATEST}) WHERE "risk" >= 2')],
            w=6,
            h=4,
            description="Sensors whose latest verdict is HIGH or CRITICAL",
            options=stat,
            thresholds=[(None, "green"), (1, "red")],
        ),
        panel(
            "stat",
            "Average risk",
            [target(f'SELECT mean("risk") AS "avg_risk" FROM ({LATEST})')],
            w=6,
            h=4,
            description="Mean of the latest risk (0 LOW … 3 CRITICAL) over the sensors online",
            options={**stat, "colorMode": "value"},
            thresholds=RISK_STEPS,
            unit="none",
        ),
        panel(
            "stat",
            "Pipeline: readings/s",
            [target('SELECT sum("written") / 300 AS "per_s" FROM "raw"."pipeline" WHERE time > now() - 5m')],
            w=6,
            h=4,
            description="Readings stored per second over the last 5 minutes, all workers",
            options=stat,
            thresholds=[(None, "red"), (0.001, "green")],
            unit="reqps",
        ),
        panel(
            "table",
            "Active alerts by sensor",
            [
                target(
                    'SELECT last("risk") AS "risk", last("alert_type") AS "type", last("message") '
                    'AS "message" '
                    'FROM "raw"."alert" WHERE $timeFilter AND "site" =~ /^$site$/ AND "zone" =~ /^$zone$/ '
                    'GROUP BY "sensor_id", "zone", "kind", "severity", "site"',
                    fmt="table",
                )
            ],
            w=24,
            h=8,
            description="The latest alert point per sensor in the time range (newest verdict rises)",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "risk"},
                    "properties": [
                        {"id": "mappings", "value": RISK_MAPPING},
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                    ],
                }
            ],
            thresholds=RISK_STEPS,
        ),
        panel(
            "geomap",
            "Facility map",
            [
                target(
                    'SELECT last("lat") AS "lat", last("lon") AS "lon", last("location") AS "location" '
                    'FROM "rollup_1h"."sensor" WHERE "site" =~ /^$site$/ AND "zone" =~ /^$zone$/ '
                    'GROUP BY "sensor_id", "zone", "kind"',
                    "A",
                    fmt="table",
                ),
                target(LATEST, "B", fmt="table"),
            ],
            w=14,
            h=12,
            description="Sensors at their registered coordinates, coloured by their latest risk",
            transformations=[{"id": "joinByField", "options": {"byField": "sensor_id", "mode": "outer"}}],
            thresholds=RISK_STEPS,
            options={
                "view": {"id": "fit", "lat": 0, "lon": 0, "zoom": 12},
                "controls": {"showZoom": True, "mouseWheelZoom": True},
                "layers": [
                    {
                        "type": "markers",
                        "name": "Sensors",
                        "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                        "config": {
                            "style": {
                                "color": {"field": "risk", "fixed": "green"},
                                "size": {"fixed": 6},
                                "text": {"field": "sensor_id", "mode": "field"},
                            },
                            "showLegend": True,
                        },
                        "tooltip": True,
                    }
                ],
            },
        ),
        panel(
            "table",
            "Zone summary",
            [
                target(
                    'SELECT count("risk") AS "sensors", max("risk") AS "max_risk", mean("risk") AS '
                    '"mean_risk" '
                    f'FROM ({LATEST}) GROUP BY "zone"',
                    fmt="table",
                )
            ],
            w=10,
            h=12,
            description="Per zone: sensors online, the highest and the mean latest risk",
            thresholds=RISK_STEPS,
        ),
        panel(
            "timeseries",
            "Risk trend by zone (max)",
            [
                target(
                    f'SELECT {tiered("max", "risk", "max")} FROM "$tier"."reading" WHERE $timeFilter '
                    'AND "site" =~ /^$site$/ AND "zone" =~ /^$zone$/ GROUP BY time($__interval), '
                    '"zone" fill(none)',
                    alias="$tag_zone",
                )
            ],
            w=12,
            description="Highest risk per zone and interval (the tier variable picks raw or a rollup)",
            thresholds=RISK_STEPS,
        ),
        panel(
            "timeseries",
            "Alerts raised",
            [
                target(
                    'SELECT count("risk") FROM "raw"."alert" WHERE $timeFilter AND "site" =~ /^$site$/ '
                    'AND "zone" =~ /^$zone$/ GROUP BY time($__interval), "severity" fill(0)',
                    alias="$tag_severity",
                )
            ],
            w=12,
            custom={"drawStyle": "bars"},
        ),
    ]
    return dashboard("iw-overview", "Facility overview", panels, [SITE, ZONE, tier_var()], tags=["facility"])


MEASURED = (
    "pressure_bar",
    "flow_rate_lps",
    "temperature_c",
    "ph",
    "turbidity_ntu",
    "chlorine_mgl",
    "energy_kwh",
)
VERDICTS = ("risk", "leak_probability", "burst_probability", "contamination_probability", "anomaly_score")


def sensor_detail() -> Json:
    sensor = query_var(
        "sensor",
        "Sensor",
        'SHOW TAG VALUES FROM "reading" WITH KEY = "sensor_id" WHERE "site" =~ /^$site$/',
        multi=False,
    )
    where = "$timeFilter AND \"sensor_id\" = '$sensor'"
    panels = [
        panel(
            "timeseries",
            "Readings",
            [
                target(
                    f'SELECT mean(/^(mean_)?({"|".join(MEASURED)})$/) FROM "$tier"."reading" '
                    f"WHERE {where} GROUP BY time($__interval) fill(none)"
                )
            ],
            w=24,
            description="The sensor's measured values (means per interval)",
        ),
        panel(
            "timeseries",
            "Verdicts",
            [
                target(
                    f'SELECT max(/^(max_)?({"|".join(VERDICTS)})$/) FROM "$tier"."reading" '
                    f"WHERE {where} GROUP BY time($__interval) fill(none)"
                )
            ],
            w=12,
            description="Risk (0–3) and the model probabilities (0–1), highest per interval",
        ),
        panel(
            "timeseries",
            "Battery and signal",
            [
                target(
                    'SELECT min(/^(min_)?(battery_level|signal_strength_dbm)$/) FROM "$tier"."reading" '
                    f"WHERE {where} GROUP BY time($__interval) fill(none)"
                )
            ],
            w=12,
        ),
        panel(
            "table",
            "Explanations (HIGH and CRITICAL verdicts)",
            [
                target(
                    'SELECT "risk_level", "explanation", "model_version" FROM "raw"."reading" '
                    f'WHERE {where} AND "risk" >= 2 ORDER BY time DESC LIMIT 50',
                    fmt="table",
                )
            ],
            w=24,
            description="Why the model paged: the top contributions of the deciding model",
        ),
        panel(
            "table",
            "Registry",
            [
                target(
                    'SELECT last("location") AS "location", last("lat") AS "lat", last("lon") AS "lon" '
                    'FROM "rollup_1h"."sensor" WHERE "sensor_id" = \'$sensor\' GROUP BY "site", '
                    '"zone", "kind"',
                    fmt="table",
                )
            ],
            w=24,
            h=4,
        ),
    ]
    d = dashboard(
        "iw-sensor", "Sensor detail", panels, [SITE, sensor, tier_var()], tags=["facility", "sensor"]
    )
    d["annotations"]["list"] = [
        {
            "name": "Alerts",
            "enable": True,
            "iconColor": "red",
            "datasource": dict(DATASOURCE),
            "query": 'SELECT "message", "severity" FROM "raw"."alert" WHERE $timeFilter AND '
            "\"sensor_id\" = '$sensor'",
            "textColumn": "message",
            "tagsColumn": "severity",
        }
    ]
    return d


def water_quality() -> Json:
    station = query_var(
        "station",
        "Station",
        'SHOW TAG VALUES FROM "reading" WITH KEY = "sensor_id" WHERE "kind" = \'water_quality\' AND '
        '"site" =~ /^$site$/',
    )
    where = (
        '$timeFilter AND "kind" = \'water_quality\' AND "site" =~ /^$site$/ AND "sensor_id" =~ /^$station$/'
    )
    params = [
        ("ph", "pH", "none"),
        ("turbidity_ntu", "Turbidity", "NTU"),
        ("chlorine_mgl", "Chlorine", "mg/L"),
        ("dissolved_oxygen_mgl", "Dissolved oxygen", "mg/L"),
        ("conductivity_uscm", "Conductivity", "µS/cm"),
        ("temperature_c", "Temperature", "celsius"),
    ]
    panels = []
    for field, title, unit in params:
        low, high = QUALITY_LIMITS.get(field, (None, None))
        steps: list[tuple[float | None, str]] = [(None, "red" if low is not None else "green")]
        if low is not None:
            steps.append((low, "green"))
        if high is not None:
            steps.append((high, "red"))
        limits = f" (limits: {low if low is not None else '–'} … {high if high is not None else '–'})"
        panels.append(
            panel(
                "timeseries",
                title + (limits if field in QUALITY_LIMITS else ""),
                [
                    target(
                        f'SELECT {tiered("mean", field)} FROM "$tier"."reading" WHERE {where} '
                        'GROUP BY time($__interval), "sensor_id" fill(none)',
                        alias="$tag_sensor_id",
                    )
                ],
                w=12,
                unit=unit,
                thresholds=steps,
                custom={"thresholdsStyle": {"mode": "line+area" if field in QUALITY_LIMITS else "off"}},
            )
        )
    panels.append(
        panel(
            "timeseries",
            "Contamination probability (max)",
            [
                target(
                    f'SELECT {tiered("max", "contamination_probability", "max")} FROM "$tier"."reading" '
                    f'WHERE {where} GROUP BY time($__interval), "sensor_id" fill(none)',
                    alias="$tag_sensor_id",
                )
            ],
            w=12,
            unit="percentunit",
        )
    )
    panels.append(
        panel(
            "table",
            "Limit breaches and contamination alerts",
            [
                target(
                    'SELECT "alert_type", "severity", "message" FROM "raw"."alert" WHERE $timeFilter '
                    'AND "kind" = \'water_quality\' AND "site" =~ /^$site$/ AND "sensor_id" =~ /^$station$/ '
                    "ORDER BY time DESC LIMIT 100",
                    fmt="table",
                )
            ],
            w=12,
        )
    )
    return dashboard("iw-quality", "Water quality", panels, [SITE, station, tier_var()], tags=["water"])


def energy() -> Json:
    room = query_var(
        "room",
        "Room",
        'SHOW TAG VALUES FROM "reading" WITH KEY = "sensor_id" WHERE "kind" = \'energy\' AND "site" '
        "=~ /^$site$/",
    )
    where = '$timeFilter AND "kind" = \'energy\' AND "site" =~ /^$site$/ AND "sensor_id" =~ /^$room$/'
    panels = [
        panel(
            "timeseries",
            "Actual vs expected kWh",
            [
                target(
                    f'SELECT {tiered("mean", "(energy|expected)_kwh")} FROM "$tier"."reading" WHERE {where} '
                    'GROUP BY time($__interval), "sensor_id" fill(none)',
                    alias="$tag_sensor_id $col",
                )
            ],
            w=24,
            unit="kwatth",
        ),
        panel(
            "timeseries",
            "Anomaly score (max)",
            [
                target(
                    f'SELECT {tiered("max", "anomaly_score", "max")} FROM "$tier"."reading" WHERE {where} '
                    'GROUP BY time($__interval), "sensor_id" fill(none)',
                    alias="$tag_sensor_id",
                )
            ],
            w=12,
            unit="percentunit",
        ),
        panel(
            "table",
            "Energy anomalies",
            [
                target(
                    'SELECT "alert_type", "severity", "message" FROM "raw"."alert" WHERE $timeFilter '
                    'AND "kind" = \'energy\' AND "site" =~ /^$site$/ AND "sensor_id" =~ /^$room$/ '
                    "ORDER BY time DESC LIMIT 100",
                    fmt="table",
                )
            ],
            w=12,
        ),
        panel(
            "table",
            "Use by room (sum over the range)",
            [
                target(
                    f'SELECT sum("energy_kwh") AS "actual", sum("expected_kwh") AS "expected" FROM '
                    f'"raw"."reading" '
                    f'WHERE {where} GROUP BY "sensor_id"',
                    fmt="table",
                )
            ],
            w=24,
            unit="kwatth",
        ),
    ]
    return dashboard("iw-energy", "Energy", panels, [SITE, room, tier_var()], tags=["energy"])


# the per-reason dead-letter counters (dead_letter_<reason>), not their `_total` twins: InfluxQL's
# regexes (RE2) have no lookahead, so "not ending in l" — no reason code ends in l (a test checks)
DEAD_LETTER_REASONS = "^dead_letter_[a-z_]+[^l]$"


def pipeline_health() -> Json:
    worker = query_var("worker", "Worker", 'SHOW TAG VALUES FROM "pipeline" WITH KEY = "worker"')
    where = '$timeFilter AND "worker" =~ /^$worker$/'
    rate = " * 1000 / $__interval_ms"
    panels = [
        panel(
            "timeseries",
            "Rates (per second)",
            [
                target(
                    f'SELECT sum("received"){rate} AS "received", sum("written"){rate} AS "written", '
                    f'sum("rate_limited"){rate} AS "rate_limited", sum("dead_letter"){rate} AS "dead_letter" '
                    f'FROM "raw"."pipeline" WHERE {where} GROUP BY time($__interval) fill(0)'
                )
            ],
            w=12,
            unit="reqps",
            interval="10s",
            description="Counts of each stats interval (10 s) summed over all workers, per second",
        ),
        panel(
            "timeseries",
            "Lag p50/p95/p99 (reading → stored)",
            [
                target(
                    'SELECT max(/^(max_)?lag_p(50|95|99)_ms$/) FROM "$tier"."pipeline" '
                    f"WHERE {where} GROUP BY time($__interval) fill(none)"
                )
            ],
            w=12,
            unit="ms",
            interval="10s",
        ),
        panel(
            "timeseries",
            "Spool",
            [
                target(
                    'SELECT max(/^(max_)?spooled_(batches|bytes)$/) FROM "$tier"."pipeline" '
                    f'WHERE {where} GROUP BY time($__interval), "worker" fill(none)',
                    alias="$tag_worker $col",
                )
            ],
            w=12,
            interval="10s",
        ),
        panel(
            "timeseries",
            "Dead letters by reason",
            [
                target(
                    f'SELECT sum(/{DEAD_LETTER_REASONS}/) FROM "raw"."pipeline" WHERE {where} '
                    "GROUP BY time($__interval) fill(0)"
                )
            ],
            w=12,
            interval="10s",
            custom={"drawStyle": "bars", "stacking": {"mode": "normal"}},
        ),
        panel(
            "timeseries",
            "Write errors and rejected batches",
            [
                target(
                    'SELECT sum("write_errors") AS "write_errors", sum("write_rejected") AS "write_rejected" '
                    f'FROM "raw"."pipeline" WHERE {where} GROUP BY time($__interval), "worker" fill(0)',
                    alias="$tag_worker $col",
                )
            ],
            w=12,
            interval="10s",
        ),
        panel(
            "stat",
            "Workers reporting",
            [
                target(
                    'SELECT count("written") AS "workers" FROM (SELECT last("written") AS "written" '
                    'FROM "raw"."pipeline" WHERE time > now() - 1m GROUP BY "worker")'
                )
            ],
            w=12,
            h=8,
            description="Workers that wrote a pipeline point in the last minute",
            thresholds=[(None, "red"), (1, "green")],
        ),
    ]
    return dashboard(
        "iw-pipeline",
        "Pipeline health",
        panels,
        [worker, tier_var()],
        tags=["operations"],
        time_from="now-1h",
    )


def dashboards() -> dict[str, Json]:
    """Relative path under grafana/dashboards/ (the directory is the Grafana folder) → dashboard."""
    return {
        "Facility/facility-overview.json": facility_overview(),
        "Facility/sensor-detail.json": sensor_detail(),
        "Water/water-quality.json": water_quality(),
        "Energy/energy.json": energy(),
        "Operations/pipeline-health.json": pipeline_health(),
    }
