"""Names shared by the dashboards, the alert rules and the sync: datasource, folders, tiers."""

from __future__ import annotations

from typing import Any

DATASOURCE_UID = "infrawatch-influx"
DATASOURCE_NAME = "InfluxDB infrawatch"
DATASOURCE: dict[str, str] = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39

# dashboard folder (a directory under grafana/dashboards/, and Grafana's folder title) → uid
FOLDERS: dict[str, str] = {
    "Facility": "iw-facility",
    "Water": "iw-water",
    "Energy": "iw-energy",
    "Operations": "iw-operations",
    "Alerting": "iw-alerting",
}

# The retention tiers (DESIGN.md §4). Panels that may span long ranges read `"$tier"."reading"`
# and select fields with a regex that matches the raw name and its rollup twin, e.g.
# mean(/^(mean_)?flow_rate_lps$/): `flow_rate_lps` in raw, `mean_flow_rate_lps` in a rollup (the
# rollup also holds min_/max_/count_ twins, which the anchored regex leaves out).
TIERS: tuple[tuple[str, str], ...] = (
    ("raw", "raw — up to 7 days"),
    ("rollup_1m", "1-minute rollup — up to 90 days"),
    ("rollup_1h", "1-hour rollup — years"),
)

# A sensor counts as online when it sent a scored reading in this window: the slowest kind
# (energy) reports every 15 minutes.
ONLINE_WINDOW = "30m"

# water-quality limits the pipeline applies (README, "Pipeline semantics"): (low, high)
QUALITY_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "ph": (6.5, 8.5),
    "turbidity_ntu": (None, 5.0),
    "chlorine_mgl": (None, 5.0),
}


def tiered(agg: str, field: str, prefix: str = "mean") -> str:
    """`agg` over `field` on any tier: `mean(/^(mean_)?ph$/)`."""
    return f"{agg}(/^({prefix}_)?{field}$/)"


def ref() -> dict[str, Any]:
    return dict(DATASOURCE)
