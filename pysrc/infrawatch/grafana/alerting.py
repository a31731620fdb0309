"""Alert rules, contact points, notification templates and policies (DESIGN.md §5), generated.

Grafana's file provisioning interpolates environment variables (`$VAR`, `${VAR}`) in contact-point
settings and rule labels, not in annotations or query models: so queries keep `$timeFilter`,
annotations use `{{ $labels.x }}`, and labels and templates contain no `$` at all (a test checks).

Every rule carries `category` (incident, maintenance, system) and `severity` labels; the series'
tags (site, kind, sensor_id, zone; worker) become labels too. The policy tree routes on them:
every alert first to the API webhook (`continue`), CRITICAL-zone critical ones to the emergency
receiver at once and repeating until resolved, other incidents to the on-call ops receiver,
maintenance to staff grouped per site, system alerts to IT.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from infrawatch.grafana.common import DATASOURCE_UID, FOLDERS, QUALITY_LIMITS
from infrawatch.grafana.dashboards import dashboards

Json = dict[str, Any]
RULE_FOLDER = "Alerting"
TEMPLATE_NAME = "infrawatch"
TAGS = '"site", "kind", "sensor_id", "zone"'
SENSOR_LINK = "/d/iw-sensor/sensor-detail?var-site={{ $labels.site }}&var-sensor={{ $labels.sensor_id }}"
# grafana/RUNBOOKS.md where ops staff can open it; `grafana sync` replaces the base with
# INFRAWATCH_GRAFANA__RUNBOOK_URL when set (file provisioning does not interpolate annotations)
RUNBOOK = "https://infrawatch.example/grafana/RUNBOOKS.md"


def query(ref_id: str, q: str, seconds: int, to: int = 0) -> Json:
    return {
        "refId": ref_id,
        "relativeTimeRange": {"from": seconds, "to": to},
        "datasourceUid": DATASOURCE_UID,
        "model": {
            "refId": ref_id,
            "rawQuery": True,
            "query": q,
            "resultFormat": "time_series",
            "intervalMs": 1000,
            "maxDataPoints": 43200,
        },
    }


def expr(ref_id: str, model: Json) -> Json:
    return {
        "refId": ref_id,
        "relativeTimeRange": {"from": 0, "to": 0},
        "datasourceUid": "__expr__",
        "model": {"refId": ref_id, "datasource": {"type": "__expr__", "uid": "__expr__"}, **model},
    }


def reduce(ref_id: str, of: str, reducer: str = "last", mode: str = "dropNN") -> Json:
    return expr(ref_id, {"type": "reduce", "expression": of, "reducer": reducer, "settings": {"mode": mode}})


def threshold(ref_id: str, of: str, kind: str, *params: float) -> Json:
    return expr(
        ref_id,
        {
            "type": "threshold",
            "expression": of,
            "conditions": [{"evaluator": {"type": kind, "params": list(params)}}],
        },
    )


def math(ref_id: str, expression: str) -> Json:
    return expr(ref_id, {"type": "math", "expression": expression})


def rule(
    uid: str,
    title: str,
    data: list[Json],
    *,
    category: str,
    severity: str,
    summary: str,
    description: str,
    runbook: str,
    condition: str = "C",
    for_: str = "0s",
    no_data: str = "OK",
    dashboard: str = "iw-sensor",
    panel: str = "Verdicts",
    link: str = SENSOR_LINK,
) -> Json:
    """A rule in the file-provisioning format: `dashboardUid`/`panelId` name the panel Grafana
    links the alert to (its `.DashboardURL`/`.PanelURL`; the HTTP API takes them as the
    `__dashboardUid__`/`__panelId__` annotations, see sync)."""
    return {
        "uid": uid,
        "title": title,
        "condition": condition,
        "data": data,
        "noDataState": no_data,
        "execErrState": "Error",
        "for": for_,
        "labels": {"category": category, "severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK}#{runbook}",
            "dashboard_url": link,
        },
        "dashboardUid": dashboard,
        "panelId": panel_id(dashboard, panel),
        "isPaused": False,
    }


RISK_WINDOW_S = 2400  # two energy intervals: a slow sensor's newest verdict never ages out between readings
PROBABILITIES = (
    ("L", "leak_probability"),
    ("U", "burst_probability"),
    ("K", "contamination_probability"),
    ("N", "anomaly_score"),
)


def panel_id(dashboard_uid: str, title: str) -> int:
    d = next(d for d in dashboards().values() if d["uid"] == dashboard_uid)
    return int(next(p["id"] for p in d["panels"] if p["title"] == title))


def _risk_rule(level: str, low: float, high: float) -> Json:
    # the latest verdict of the last RISK_WINDOW_S: twice the slowest kind's interval (energy,
    # 15 min, plus clock jitter), so every sensor's newest verdict is in it and a page does not
    # resolve between two readings; a fast sensor's newer verdict replaces it at once. One query
    # per model score (a query with several value columns would give Grafana several series with
    # the same labels), reduced to the highest of the window for the message.
    q = f'SELECT last("risk") AS "risk" FROM "raw"."reading" WHERE $timeFilter GROUP BY {TAGS}'
    data = [
        query("A", q, RISK_WINDOW_S),
        reduce("B", "A"),
    ]
    shown = []
    for ref_id, field in PROBABILITIES:
        q = f'SELECT max("{field}") FROM "raw"."reading" WHERE $timeFilter GROUP BY {TAGS}'
        data += [query(f"{ref_id}Q", q, RISK_WINDOW_S), reduce(ref_id, f"{ref_id}Q", "max")]
        shown.append(f'{{{{ with $values.{ref_id} }}}}{field} {{{{ printf "%.2f" .Value }}}} {{{{ end }}}}')
    data.append(threshold("C", "B", "within_range", low, high))
    return rule(
        f"iw-risk-{level}",
        f"Sensor risk {level.upper()}",
        data,
        category="incident",
        severity=level,
        summary=f"{level.upper()} risk at {{{{ $labels.sensor_id }}}} ({{{{ $labels.kind }}}}, zone "
        f"{{{{ $labels.zone }}}}, site {{{{ $labels.site }}}})",
        description=(
            "Highest scores, last 40 min: " + "".join(shown) + "— location and the model's explanation: "
            "the sensor dashboard (dashboard_url); the API's alert history keeps the alert message."
        ),
        runbook=f"risk-{level}",
    )


def quality_rule() -> Json:
    data = []
    checks = []
    for ref_id, field in (("PH", "ph"), ("TU", "turbidity_ntu"), ("CL", "chlorine_mgl")):
        data.append(
            query(
                f"{ref_id}Q",
                f'SELECT last("{field}") FROM "raw"."reading" WHERE $timeFilter AND "kind" = '
                f"'water_quality' "
                f"GROUP BY {TAGS}",
                1800,
            )
        )
        data.append(reduce(ref_id, f"{ref_id}Q"))
        low, high = QUALITY_LIMITS[field]
        if low is not None:
            checks.append(f"${ref_id} < {low}")
        if high is not None:
            checks.append(f"${ref_id} > {high}")
    data.append(math("C", " || ".join(checks)))
    return rule(
        "iw-quality-limit",
        "Water-quality limit breached",
        data,
        category="incident",
        severity="high",
        summary="Water-quality limit breached at {{ $labels.sensor_id }} (site {{ $labels.site }}, "
        "zone {{ $labels.zone }})",
        description=(
            "Latest pH {{ $values.PH.Value }} (limits 6.5–8.5), turbidity {{ $values.TU.Value }} NTU "
            "(max 5), chlorine {{ $values.CL.Value }} mg/L (max 5)."
        ),
        runbook="quality-limit",
        panel="Readings",
    )


def silent_rule() -> Json:
    # per sensor seen in the last 24 h: its readings per 5 minutes, averaged over the last six
    # intervals (30 min). fill(0) gives every series with data in the range a row per interval, so
    # a silent sensor's average falls to 0 instead of its series vanishing (a vanished series
    # cannot fire). InfluxDB 1.x drops all rows when the outer query of a subquery has its own
    # time condition, hence moving_average, not a sum over `time > now() - 30m`.
    q = (
        'SELECT moving_average("n", 6) AS "per_5m" FROM (SELECT count("risk") AS "n" FROM "raw"."reading" '
        f"WHERE $timeFilter GROUP BY time(5m), {TAGS} fill(0)) GROUP BY {TAGS}"
    )
    return rule(
        "iw-sensor-silent",
        "Sensor silent",
        [query("A", q, 86400), reduce("B", "A", "last"), threshold("C", "B", "lt", 0.1)],
        category="maintenance",
        severity="warning",
        summary="{{ $labels.sensor_id }} silent for 30 min (site {{ $labels.site }}, zone {{ "
        "$labels.zone }})",
        description="No scored reading in the last 30 minutes; it reported within the last day.",
        runbook="sensor-silent",
        panel="Battery and signal",
        for_="5m",
    )


def battery_rule() -> Json:
    q = f'SELECT last("battery_level") FROM "raw"."reading" WHERE $timeFilter GROUP BY {TAGS}'
    return rule(
        "iw-battery-low",
        "Battery low",
        [query("A", q, 3600), reduce("B", "A"), threshold("C", "B", "lt", 20)],
        category="maintenance",
        severity="warning",
        summary="Battery {{ $values.B.Value }}% at {{ $labels.sensor_id }} (site {{ $labels.site }})",
        description="Replace or recharge the battery before the sensor goes silent (below 20%).",
        runbook="battery-low",
        panel="Battery and signal",
    )


def stalled_rule() -> Json:
    q = 'SELECT sum("written") AS "written" FROM "raw"."pipeline" WHERE $timeFilter'
    return rule(
        "iw-ingest-stalled",
        "Ingest stalled",
        [query("A", q, 300), reduce("B", "A", "sum"), threshold("C", "B", "lt", 1)],
        category="system",
        severity="critical",
        summary="No readings stored in the last 5 minutes",
        description="The workers wrote nothing (or reported nothing) for 5 minutes: check the "
        "workers, the broker and InfluxDB.",
        runbook="ingest-stalled",
        no_data="Alerting",  # no pipeline points at all is the worst case of a stall
        dashboard="iw-pipeline",
        panel="Rates (per second)",
        link="/d/iw-pipeline/pipeline-health",
    )


def lagging_rule() -> Json:
    q = 'SELECT max("lag_p95_ms") FROM "raw"."pipeline" WHERE $timeFilter GROUP BY "worker"'
    return rule(
        "iw-ingest-lagging",
        "Ingest lagging",
        [query("A", q, 300), reduce("B", "A", "max"), threshold("C", "B", "gt", 120_000)],
        category="system",
        severity="high",
        summary="Worker {{ $labels.worker }}: p95 lag {{ $values.B.Value }} ms",
        description="Readings take over 2 minutes from sensor to InfluxDB (backlog, spool draining, "
        "overload).",
        runbook="ingest-lagging",
        for_="2m",
        dashboard="iw-pipeline",
        panel="Lag p50/p95/p99 (reading → stored)",
        link="/d/iw-pipeline/pipeline-health?var-worker={{ $labels.worker }}",
    )


def dead_letter_rule() -> Json:
    # rising: the last 10 minutes hold more than 20 dead letters and more than twice the previous
    # hour's rate per 10 minutes (a worker without points in that hour has no P and cannot fire:
    # a new worker's first dead letters are shown on the dashboard, not paged)
    now = 'SELECT sum("dead_letter") FROM "raw"."pipeline" WHERE $timeFilter GROUP BY "worker"'
    return rule(
        "iw-dead-letters",
        "Dead letters rising",
        [
            query("A", now, 600),
            query("H", now, 4200, 600),
            reduce("B", "A", "sum"),
            reduce("P", "H", "sum", "replaceNN"),
            math("C", "$B > 20 && $B > 2 * ($P / 6)"),
        ],
        category="system",
        severity="high",
        summary="Worker {{ $labels.worker }}: {{ $values.B.Value }} dead letters in 10 min",
        description="Malformed, oversized or rate-limited messages are rising: see the reasons on "
        "the pipeline dashboard.",
        runbook="dead-letters",
        dashboard="iw-pipeline",
        panel="Dead letters by reason",
        link="/d/iw-pipeline/pipeline-health?var-worker={{ $labels.worker }}",
    )


def rule_groups() -> Json:
    def group(name: str, interval: str, rules: list[Json]) -> Json:
        return {"orgId": 1, "name": name, "folder": RULE_FOLDER, "interval": interval, "rules": rules}

    return {
        "apiVersion": 1,
        "groups": [
            group(
                "incidents",
                "1m",
                [_risk_rule("critical", 2.5, 3.5), _risk_rule("high", 1.5, 2.5), quality_rule()],
            ),
            group("maintenance", "5m", [silent_rule(), battery_rule()]),
            group("system", "1m", [stalled_rule(), lagging_rule(), dead_letter_rule()]),
        ],
    }


def all_rules() -> list[Json]:
    return [r for g in rule_groups()["groups"] for r in g["rules"]]


# ---------------------------------------------------------------- templates

TEMPLATES = """{{ define "iw.title" -}}
[{{ .Status | toUpper }}{{ if eq .Status "firing" }} {{ len .Alerts.Firing }}{{ end }}]
{{- " " }}{{ .CommonLabels.alertname }}
{{- if .CommonLabels.zone }} · {{ .CommonLabels.zone }}{{ end }}
{{- end }}

{{ define "iw.alert" -}}
{{ if eq .Status "firing" }}🔴{{ else }}✅{{ end }} {{ .Annotations.summary }}
{{ .Annotations.description }}
Since {{ .StartsAt.Format "15:04 MST 2 Jan" }}{{ if .DashboardURL }}
Open: {{ .DashboardURL }}
{{- if .Labels.sensor_id }}&var-site={{ .Labels.site }}&var-sensor={{ .Labels.sensor_id }}{{ end }}
{{- end }}{{ if .Annotations.runbook_url }}
Runbook: {{ .Annotations.runbook_url }}{{ end }}
{{- end }}

{{ define "iw.message" -}}
{{ range .Alerts.Firing }}{{ template "iw.alert" . }}

{{ end }}{{ range .Alerts.Resolved }}{{ template "iw.alert" . }}

{{ end }}
{{- end }}
"""


def templates() -> Json:
    return {"apiVersion": 1, "templates": [{"orgId": 1, "name": TEMPLATE_NAME, "template": TEMPLATES}]}


# ---------------------------------------------------------------- contact points

ENV = "INFRAWATCH_GRAFANA__"
# optional integrations: environment variable → (integration type, settings, receivers it joins)
OPTIONAL: dict[str, tuple[str, str, tuple[str, ...]]] = {
    f"{ENV}SLACK_WEBHOOK_URL": ("slack", "url", ("emergency", "ops", "it")),
    f"{ENV}PAGERDUTY_KEY": ("pagerduty", "integrationKey", ("emergency",)),
    f"{ENV}TEAMS_WEBHOOK_URL": ("teams", "url", ("emergency", "ops", "it")),
}
EMAILS = {
    "emergency": f"{ENV}EMERGENCY_EMAIL",
    "ops": f"{ENV}OPS_EMAIL",
    "staff": f"{ENV}STAFF_EMAIL",
    "it": f"{ENV}IT_EMAIL",
}
TITLE = '{{ template "iw.title" . }}'
MESSAGE = '{{ template "iw.message" . }}'


def _integration(receiver: str, kind: str, key: str, env: str) -> Json:
    settings: Json = {key: f"${{{env}}}"}
    if kind == "slack":
        settings |= {"title": TITLE, "text": MESSAGE}
    elif kind == "pagerduty":
        settings |= {"severity": "critical", "summary": TITLE, "class": "infrawatch"}
    elif kind == "teams":
        settings |= {"title": TITLE, "message": MESSAGE}
    return {
        "uid": f"iw-{receiver}-{kind}",
        "type": kind,
        "settings": settings,
        "disableResolveMessage": False,
    }


def contact_points(env: Mapping[str, str] | None = None) -> Json:
    """The contact points. Email and the API webhook always; Slack, PagerDuty and Teams only for the
    variables set in `env` (default: none, which is what the committed file holds — an unset
    variable would give Grafana a broken integration)."""
    env = {} if env is None else env
    points: list[Json] = [
        {
            "orgId": 1,
            "name": "api-webhook",
            "receivers": [
                {
                    "uid": "iw-api-webhook",
                    "type": "webhook",
                    "settings": {
                        "url": f"${{{ENV}API_WEBHOOK_URL}}",
                        "httpMethod": "POST",
                        "authorization_scheme": "Bearer",
                        "authorization_credentials": f"${{{ENV}API_WEBHOOK_TOKEN}}",
                        "maxAlerts": 0,
                    },
                    "disableResolveMessage": False,
                }
            ],
        }
    ]
    for name, var in EMAILS.items():
        receivers = [
            {
                "uid": f"iw-{name}-email",
                "type": "email",
                "settings": {
                    "addresses": f"${{{var}}}",
                    "singleEmail": True,
                    "subject": TITLE,
                    "message": MESSAGE,
                },
                "disableResolveMessage": False,
            }
        ]
        for var_name, (kind, key, joins) in OPTIONAL.items():
            if name in joins and env.get(var_name):
                receivers.append(_integration(name, kind, key, var_name))
        points.append({"orgId": 1, "name": name, "receivers": receivers})
    return {"apiVersion": 1, "contactPoints": points}


def enabled_optional(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [v for v in OPTIONAL if env.get(v)]


# ---------------------------------------------------------------- policies


def policies() -> Json:
    tree: Json = {
        "orgId": 1,
        "receiver": "ops",
        "group_by": ["alertname", "site", "zone"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
        "routes": [
            # every alert to the API (history, acknowledgements), then on down the list
            {
                "receiver": "api-webhook",
                "continue": True,
                "group_by": ["..."],
                "group_wait": "0s",
                "group_interval": "1m",
                "repeat_interval": "1h",
            },
            # CRITICAL zone, critical severity: page at once, repeat every 5 minutes until resolved
            {
                "receiver": "emergency",
                "object_matchers": [
                    ["category", "=", "incident"],
                    ["zone", "=", "CRITICAL"],
                    ["severity", "=", "critical"],
                ],
                "group_by": ["alertname", "site", "sensor_id"],
                "group_wait": "0s",
                "group_interval": "1m",
                "repeat_interval": "5m",
            },
            {"receiver": "ops", "object_matchers": [["category", "=", "incident"]], "group_wait": "30s"},
            # maintenance: batched per site, a digest at most every 30 min, reminded twice a day
            {
                "receiver": "staff",
                "object_matchers": [["category", "=", "maintenance"]],
                "group_by": ["alertname", "site"],
                "group_wait": "5m",
                "group_interval": "30m",
                "repeat_interval": "12h",
            },
            {
                "receiver": "it",
                "object_matchers": [["category", "=", "system"]],
                "group_by": ["alertname", "worker"],
                "group_wait": "1m",
                "repeat_interval": "1h",
            },
        ],
    }
    return {"apiVersion": 1, "policies": [tree]}


def folder_uid(title: str = RULE_FOLDER) -> str:
    return FOLDERS[title]
