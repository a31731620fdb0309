"""The provisioned dashboards and alert rules, proven against a real InfluxDB without a Grafana server.

Module fixture (tests/grafana_world.py): a simulated facility through the real `core.Pipeline`
(small real models) into InfluxDB, with planted incidents, pipeline stats and the sensor registry,
rollups backfilled. Then, as the `grafana` reader:

- every template variable's query runs and offers the simulated values;
- every panel target of every dashboard, expanded as Grafana expands it, runs on every tier the
  `tier` variable offers and returns data; the panels that state a figure return the figure the
  data means (sensors online = the fleet minus the silenced sensor, active alerts = the planted
  incidents, zone summary per zone, the map's coordinates = the simulator's, tiers agree);
- every alert rule, evaluated with Grafana's semantics, fires for exactly the planted incident's
  sensor (or worker) and stays quiet for the healthy ones.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests import grafana_world
from tests.grafana_world import HOURS, MINUTE, NS, World
from tests.utils.stack import Stack, start_stack

from infrawatch.grafana import alerting, build, macros, rules
from infrawatch.grafana.common import TIERS
from infrawatch.grafana.dashboards import DEAD_LETTER_REASONS
from infrawatch.grafana.validate import BUILTIN_VARS
from infrawatch.ingest.influx_admin import InfluxClient, InfluxError
from infrawatch.ingest.simulate import SimConfig, plan
from infrawatch.ingest.stack import Stack as LocalStack
from infrawatch.ingest.stack import StackOptions

pytestmark = pytest.mark.integration
ONLINE_NS = 30 * MINUTE
DASHBOARDS = {
    d["uid"]: d
    for d in (json.loads(p.read_text()) for p in sorted((build.ROOT / "dashboards").rglob("*.json")))
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack = start_stack(tmp_path_factory.mktemp("grafana") / "run")
    try:
        yield grafana_world.build(stack)
    finally:
        stack.close()


@pytest.fixture(scope="module")
def reader(world: World) -> Iterator[InfluxClient]:
    """The Grafana datasource's user: read-only."""
    with InfluxClient(world.stack.settings, "grafana") as c:
        yield c


def _values(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in series:
        for row in s["values"]:
            out.append({**(s.get("tags") or {}), **dict(zip(s["columns"], row, strict=True))})
    return out


def variables(
    d: dict[str, Any], reader: InfluxClient, world: World, pick: dict[str, str]
) -> dict[str, macros.Variable]:
    """Resolve a dashboard's variables in order, as Grafana does on load: run each query (with the
    variables before it), take `pick`'s value, else All (multi) or the first option."""
    out: dict[str, macros.Variable] = {}
    frm, to = world.now_ms - HOURS * 3_600_000, world.now_ms
    for v in d["templating"]["list"]:
        if v["type"] == "custom":
            options = [o["value"] for o in v["options"]]
        else:
            q = macros.render(v["query"], out, from_ms=frm, to_ms=to)
            options = [r["value"] for r in _values(reader.query(q))]
        assert options, f"{d['uid']}: variable {v['name']} offers nothing"
        value = pick.get(v["name"]) or (macros.ALL if v.get("multi") else options[0])
        assert value == macros.ALL or value in options
        out[v["name"]] = macros.Variable.from_json(v, value, options)
    return out


PICKS: dict[str, dict[str, str]] = {"iw-sensor": {"sensor": "critical"}}


def run_panels(world: World, reader: InfluxClient) -> dict[tuple[str, str, str, str], list[dict[str, Any]]]:
    """Every target of every panel (and every annotation), per tier: uid, title, refId, tier → rows."""
    results: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    frm, to = world.now_ms - HOURS * 3_600_000, world.now_ms
    for uid, d in DASHBOARDS.items():
        pick = {k: world.planted[v] for k, v in PICKS.get(uid, {}).items()}
        base = variables(d, reader, world, pick)
        queries = [(p["title"], t, p.get("interval")) for p in d["panels"] for t in p["targets"]]
        queries += [
            (f"annotation {a['name']}", {"refId": "A", "query": a["query"]}, None)
            for a in d["annotations"]["list"]
        ]
        for title, t, min_interval in queries:
            tiers = [rp for rp, _ in TIERS] if "$tier" in t["query"] else ["raw"]
            for tier in tiers:
                vs = {**base, "tier": macros.Variable("tier", tier)} if "tier" in base else base
                q = macros.render(t["query"], vs, from_ms=frm, to_ms=to, min_interval=min_interval or "10s")
                assert not macros.names_used(q) & (set(vs) | BUILTIN_VARS), f"unexpanded variable in {q}"
                results[(uid, title, t["refId"], tier)] = _values(reader.query(q))
    return results


@pytest.fixture(scope="module")
def panels(world: World, reader: InfluxClient) -> dict[tuple[str, str, str, str], list[dict[str, Any]]]:
    return run_panels(world, reader)


def test_every_panel_query_runs_as_the_reader_and_returns_data(
    world: World, panels: dict[tuple[str, str, str, str], list[dict[str, Any]]]
) -> None:
    n_targets = sum(len(p["targets"]) for d in DASHBOARDS.values() for p in d["panels"])
    assert len({k[:3] for k in panels}) >= n_targets
    empty = {k for k, rows in panels.items() if not rows}
    # a table of energy alerts is rightly empty when the energy model raised none (see the module doc)
    since = world.now_ns - HOURS * 3600 * NS
    if not [a for a in world.alerts() if a.tags["kind"] == "energy" and a.timestamp >= since]:
        empty.discard(("iw-energy", "Energy anomalies", "A", "raw"))
    assert not empty, f"panels without data: {sorted(empty)}"
    tiered = {k[3] for k in panels}
    assert tiered == {"raw", "rollup_1m", "rollup_1h"}


def one(
    panels: dict[tuple[str, str, str, str], list[dict[str, Any]]],
    uid: str,
    title: str,
    ref: str = "A",
    tier: str = "raw",
) -> list[dict[str, Any]]:
    return panels[(uid, title, ref, tier)]


def test_overview_figures_mean_what_the_data_says(
    world: World, panels: dict[tuple[str, str, str, str], list[dict[str, Any]]]
) -> None:
    latest = world.latest_risk(ONLINE_NS)
    fleet = {s.sensor_id for s in world.sensors}
    assert set(latest) == fleet - {world.planted["silent"]}
    assert one(panels, "iw-overview", "Sensors online")[0]["online"] == len(fleet) - 1
    active = {sid for sid, r in latest.items() if r >= 2}
    assert active == world.paging(ONLINE_NS)
    assert {world.planted["critical"], world.planted["quality"]} <= active
    assert one(panels, "iw-overview", "Active alerts")[0]["active"] == len(active)
    assert one(panels, "iw-overview", "Average risk")[0]["avg_risk"] == pytest.approx(
        sum(latest.values()) / len(latest)
    )
    # the stalled worker writes nothing now: the pipeline stat shows 0 readings/s
    assert one(panels, "iw-overview", "Pipeline: readings/s")[0]["per_s"] == 0
    table = one(panels, "iw-overview", "Active alerts by sensor")
    since = world.now_ns - HOURS * 3600 * NS
    assert {r["sensor_id"] for r in table} == {
        a.tags["sensor_id"] for a in world.alerts() if a.timestamp >= since
    }
    # one row per sensor and severity: the burst reached CRITICAL (possibly through HIGH)
    burst = {r["severity"]: r["risk"] for r in table if r["sensor_id"] == world.planted["critical"]}
    assert burst["critical"] == 3
    assert set(burst) <= {"high", "critical"}
    zones = {r["zone"]: r for r in one(panels, "iw-overview", "Zone summary")}
    for zone in ("CRITICAL", "STANDARD"):
        mine = [
            r
            for sid, r in latest.items()
            if next(s.zone for s in world.sensors if s.sensor_id == sid) == zone
        ]
        assert zones[zone]["sensors"] == len(mine)
        assert zones[zone]["max_risk"] == max(mine)
    # the map: every sensor at the simulator's coordinates, and the latest risk to colour it by
    coords = {r["sensor_id"]: (r["lat"], r["lon"]) for r in one(panels, "iw-overview", "Facility map", "A")}
    assert coords == {s.sensor_id: (s.lat, s.lon) for s in world.sensors}
    risks = {r["sensor_id"]: r["risk"] for r in one(panels, "iw-overview", "Facility map", "B")}
    assert risks == latest


def test_long_range_panels_read_every_tier_alike(
    world: World, panels: dict[tuple[str, str, str, str], list[dict[str, Any]]]
) -> None:
    """The rollups hold the same maxima as raw: the tier variable only changes where a panel reads."""

    def peak(tier: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in one(panels, "iw-overview", "Risk trend by zone (max)", tier=tier):
            value = next(v for k, v in r.items() if k.startswith("max"))
            out[r["zone"]] = max(out.get(r["zone"], 0.0), value)
        return out

    assert peak("raw") == peak("rollup_1m") == peak("rollup_1h")
    assert peak("raw")[next(s.zone for s in world.sensors if s.sensor_id == world.planted["critical"])] == 3
    for tier in ("raw", "rollup_1m", "rollup_1h"):
        rows = one(panels, "iw-sensor", "Verdicts", tier=tier)
        cols = {k for r in rows for k, v in r.items() if v is not None} - {"time"}
        assert any("burst_probability" in c for c in cols), (tier, cols)


def test_sensor_detail_shows_the_explanations_of_the_incident(
    world: World, panels: dict[tuple[str, str, str, str], list[dict[str, Any]]]
) -> None:
    rows = one(panels, "iw-sensor", "Explanations (HIGH and CRITICAL verdicts)")
    assert rows
    assert all(r["risk_level"] in ("HIGH", "CRITICAL") and r["explanation"] for r in rows)
    notes = one(panels, "iw-sensor", "annotation Alerts")
    assert {r["severity"] for r in notes} == {
        a.tags["severity"] for a in world.alerts() if a.tags["sensor_id"] == world.planted["critical"]
    }


# ---------------------------------------------------------------- alert rules


def runner(reader: InfluxClient) -> rules.Runner:
    def run(node: Any, from_ms: int, to_ms: int) -> list[rules.Series]:
        model = node["model"]
        q = macros.render(
            model["query"],
            {},
            from_ms=from_ms,
            to_ms=to_ms,
            max_data_points=model["maxDataPoints"],
            min_interval="1s",
        )
        return rules.influx_series(reader.query(q))

    return run


def evaluate(uid: str, reader: InfluxClient, at_ms: int) -> rules.Evaluation:
    rule = next(r for r in alerting.all_rules() if r["uid"] == uid)
    ev = rules.evaluate(rule, runner(reader), at_ms)
    assert ev.error is None, ev.error
    return ev


def firing(ev: rules.Evaluation, label: str = "sensor_id") -> set[str]:
    return {i.labels.get(label, "") for i in ev.instances if i.state == "Alerting"}


def quiet(ev: rules.Evaluation, label: str = "sensor_id") -> set[str]:
    return {i.labels.get(label, "") for i in ev.instances if i.state == "Normal"}


def test_every_rule_is_evaluated_here() -> None:
    covered = {
        "iw-risk-critical", "iw-risk-high", "iw-quality-limit", "iw-sensor-silent", "iw-battery-low",
        "iw-ingest-stalled", "iw-ingest-lagging", "iw-dead-letters",
    }  # fmt: skip
    assert {r["uid"] for r in alerting.all_rules()} == covered


def test_risk_rules_page_for_the_planted_incidents_only(world: World, reader: InfluxClient) -> None:
    recent = world.latest_risk(alerting.RISK_WINDOW_S * NS)
    crit = evaluate("iw-risk-critical", reader, world.now_ms)
    high = evaluate("iw-risk-high", reader, world.now_ms)
    # exactly the sensors whose latest verdict is CRITICAL / HIGH in the pipeline's own output …
    assert firing(crit) == {s for s, r in recent.items() if r == 3}
    assert firing(high) == {s for s, r in recent.items() if r == 2}
    assert quiet(crit) & quiet(high) == {s for s, r in recent.items() if r < 2}
    # … which are the planted incidents, while the healthy water sensors stay quiet
    assert world.planted["critical"] in firing(crit)
    assert world.planted["quality"] in firing(high)
    water = {s.sensor_id for k in ("water_flow", "water_quality") for s in world.fleets[k].sensors}
    healthy = water - {world.planted[k] for k in ("critical", "quality", "silent")}
    assert healthy <= quiet(crit) & quiet(high)
    assert len(healthy) == 7
    inst = next(i for i in crit.instances if i.state == "Alerting")
    assert inst.labels["zone"] == "CRITICAL"
    assert inst.labels["kind"] == "water_flow"
    # the message's probabilities: the burst's highest score of the last 10 minutes
    burst = max(
        p.fields["burst_probability"]
        for p in world.readings()
        if p.tags["sensor_id"] == world.planted["critical"]
        and p.timestamp > world.now_ns - alerting.RISK_WINDOW_S * NS
        and "burst_probability" in p.fields
    )
    u = next(n for n in crit.values["U"] if n.labels["sensor_id"] == world.planted["critical"])  # type: ignore[union-attr]
    assert u.value == pytest.approx(burst)


def test_quality_rule_fires_for_the_limit_breach(world: World, reader: InfluxClient) -> None:
    ev = evaluate("iw-quality-limit", reader, world.now_ms)
    assert firing(ev) == {world.planted["quality"]}
    assert quiet(ev) == {s.sensor_id for s in world.fleets["water_quality"].sensors} - {
        world.planted["quality"]
    }


def test_silent_sensor_rule(world: World, reader: InfluxClient) -> None:
    ev = evaluate("iw-sensor-silent", reader, world.now_ms)
    assert firing(ev) == {world.planted["silent"]}
    assert quiet(ev) == {s.sensor_id for s in world.sensors} - {world.planted["silent"]}


def test_battery_rule(world: World, reader: InfluxClient) -> None:
    ev = evaluate("iw-battery-low", reader, world.now_ms)
    assert firing(ev) == {world.planted["battery"]}
    with_battery = {s.sensor_id for k in ("water_flow", "water_quality") for s in world.fleets[k].sensors}
    assert quiet(ev) == with_battery - {world.planted["battery"]}  # the silent one's last hour has a battery


def test_ingest_rules_fire_now_and_were_quiet_before(world: World, reader: InfluxClient) -> None:
    before = world.now_ms - 25 * 60_000
    stalled = evaluate("iw-ingest-stalled", reader, world.now_ms)
    assert [i.state for i in stalled.instances] == ["Alerting"]
    assert [i.state for i in evaluate("iw-ingest-stalled", reader, before).instances] == ["Normal"]
    # no pipeline points at all in the window: NoData, which this rule maps to Alerting
    long_ago = world.now_ms - 3 * 3_600_000
    empty = evaluate("iw-ingest-stalled", reader, long_ago)
    assert [i.state for i in empty.instances] == ["Alerting"]
    assert not empty.values["A"]

    lag = evaluate("iw-ingest-lagging", reader, world.now_ms)
    assert firing(lag, "worker") == {"w-bad"}
    lag_before = evaluate("iw-ingest-lagging", reader, before)
    assert quiet(lag_before, "worker") == {"w-ok", "w-bad"}

    dead = evaluate("iw-dead-letters", reader, world.now_ms)
    assert firing(dead, "worker") == {"w-bad"}
    # w-ok's steady two per interval (120 per 10 min) is not "rising"
    dead_before = evaluate("iw-dead-letters", reader, world.now_ms - 20 * 60_000)
    assert quiet(dead_before, "worker") >= {"w-ok"}
    assert not firing(dead_before, "worker")


def test_the_reader_cannot_write(world: World, reader: InfluxClient) -> None:

    with pytest.raises(InfluxError):
        reader.write(b"reading,site=x,kind=energy,sensor_id=X,zone=STANDARD risk=3i\n")


def test_pipeline_panels(world: World, panels: dict[tuple[str, str, str, str], list[dict[str, Any]]]) -> None:
    # w-ok stored 100 readings per 10 s interval: 10 readings/s at its busiest
    rates = one(panels, "iw-pipeline", "Rates (per second)")
    assert max(r["written"] for r in rates) == pytest.approx(10.0)
    assert rates[-1]["written"] == 0  # stalled now
    assert one(panels, "iw-pipeline", "Workers reporting")[0]["workers"] == 1  # only w-bad reports now
    reasons = one(panels, "iw-pipeline", "Dead letters by reason")
    assert {k for r in reasons for k in r} == {"time", "sum_dead_letter_invalid_json"}  # no _total twins
    written = [int(p.fields.get("dead_letter_invalid_json", 0)) for p in world.pipeline_lines]
    assert sum(r["sum_dead_letter_invalid_json"] for r in reasons) == sum(written)
    for tier in ("raw", "rollup_1m", "rollup_1h"):
        lag = one(panels, "iw-pipeline", "Lag p50/p95/p99 (reading → stored)", tier=tier)
        assert max(v for r in lag for k, v in r.items() if k != "time" and v is not None) == 300_000


def test_no_reason_code_ends_in_l() -> None:
    """The dead-letter panel's regex relies on it (see dashboards.DEAD_LETTER_REASONS)."""
    docs = (build.ROOT.parent / "docs" / "reason-codes.md").read_text()
    codes = set(re.findall(r"^\| `([a-z_]+)`", docs, re.M)) | {"rate_limited", "write_rejected"}
    assert len(codes) > 10
    assert not [c for c in codes if c.endswith("l")]
    assert all(re.fullmatch(DEAD_LETTER_REASONS, f"dead_letter_{c}") for c in codes)
    assert not re.fullmatch(DEAD_LETTER_REASONS, "dead_letter_invalid_json_total")


def test_local_stack_writes_the_sensor_registry(stack: Stack) -> None:
    """`infrawatch stack` writes its simulated facility's coordinates for the map."""
    s = stack.settings
    opts = StackOptions(
        run_dir=s.run_dir, influx_port=stack.influx.port, broker_port=stack.broker.port, sensors=9
    )  # same run directory: the same secrets
    local = LocalStack(opts, out=io.StringIO())
    local.write_sensor_registry()
    rows = stack.rows('SELECT "lat", "lon", "location" FROM "rollup_1h"."sensor" GROUP BY *')
    expected = [sl.sensor for sl in plan(SimConfig(sensors=9)).slots]
    assert {(r["sensor_id"], r["kind"], r["zone"], r["lat"], r["lon"], r["location"]) for r in rows} == {
        (x.sensor_id, x.kind, x.zone, x.lat, x.lon, x.location) for x in expected
    }
