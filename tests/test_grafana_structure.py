"""The provisioned files: equal to the generator's output, structurally sound (checks that are
shown to catch each kind of mistake), and routed as intended for every severity × zone × kind."""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrawatch.grafana import alerting, build, routing, validate

ROOT = build.ROOT


def test_committed_files_equal_the_generator() -> None:
    assert build.stale(ROOT) == []
    on_disk = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.suffix in (".json", ".yaml")}
    assert on_disk == set(build.files())


def test_the_provisioned_tree_is_sound() -> None:
    assert validate.check(ROOT) == []
    dashboards = validate.load_dashboards(ROOT)
    assert {d["uid"] for d in dashboards.values()} == {
        "iw-overview",
        "iw-sensor",
        "iw-quality",
        "iw-energy",
        "iw-pipeline",
    }
    assert all(d["schemaVersion"] >= 39 for d in dashboards.values())
    assert {rel.split("/")[0] for rel in dashboards} == {"Facility", "Water", "Energy", "Operations"}


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "grafana"
    shutil.copytree(ROOT, root)
    return root


def _edit_json(path: Path, fn: Any) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _edit_yaml(path: Path, fn: Any) -> None:
    d = yaml.safe_load(path.read_text())
    fn(d)
    path.write_text(yaml.safe_dump(d))


def _overlap(d: dict[str, Any]) -> None:
    d["panels"][1]["gridPos"] = dict(d["panels"][0]["gridPos"])


def _dup_id(d: dict[str, Any]) -> None:
    d["panels"][1]["id"] = d["panels"][0]["id"]


def _bad_ds(d: dict[str, Any]) -> None:
    d["panels"][0]["targets"][0]["datasource"] = {"type": "influxdb", "uid": "nope"}


def _undefined_var(d: dict[str, Any]) -> None:
    d["panels"][0]["targets"][0]["query"] += ' AND "x" =~ /^$building$/'


def _old_schema(d: dict[str, Any]) -> None:
    d["schemaVersion"] = 27


def _wide(d: dict[str, Any]) -> None:
    d["panels"][0]["gridPos"]["x"] = 20


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (_overlap, "overlap"),
        (_dup_id, "panel ids not unique"),
        (_bad_ds, "'nope' is not provisioned"),
        (_undefined_var, "undefined variables ['building']"),
        (_old_schema, "schemaVersion 27"),
        (_wide, "outside the 24 columns"),
    ],
)
def test_dashboard_checks_catch_mistakes(tmp_path: Path, mutate: Any, expect: str) -> None:
    root = _copy(tmp_path)
    _edit_json(root / "dashboards/Facility/facility-overview.json", mutate)
    problems = validate.check(root)
    assert any(expect in p for p in problems), problems


def test_duplicate_dashboard_uid_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit_json(root / "dashboards/Energy/energy.json", lambda d: d.update(uid="iw-overview"))
    assert any("uid 'iw-overview' also in" in p for p in validate.check(root))


def _rule0(d: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = d["groups"][0]["rules"][0]
    return rule


def _dup_rule(d: dict[str, Any]) -> None:
    d["groups"][1]["rules"].append(copy.deepcopy(_rule0(d)))


def _bad_condition(d: dict[str, Any]) -> None:
    _rule0(d)["condition"] = "Z"


def _bad_rule_ds(d: dict[str, Any]) -> None:
    _rule0(d)["data"][0]["datasourceUid"] = "other"


def _dollar_label(d: dict[str, Any]) -> None:
    _rule0(d)["labels"]["team"] = "$TEAM"


def _gone_dashboard(d: dict[str, Any]) -> None:
    _rule0(d)["panelId"] = 99


def _nobody(d: dict[str, Any]) -> None:
    d["policies"][0]["routes"].append({"receiver": "nobody"})


def _nope_template(d: dict[str, Any]) -> None:
    d["contactPoints"][1]["receivers"][0]["settings"]["subject"] = '{{ template "iw.nope" . }}'


def _renamed_define(d: dict[str, Any]) -> None:
    t = d["templates"][0]
    t["template"] = t["template"].replace('define "iw.alert"', 'define "iw.other"')


@pytest.mark.parametrize(
    ("file", "mutate", "expect"),
    [
        ("rules.yaml", lambda d: d.update(apiVersion=2), "apiVersion 2"),
        ("rules.yaml", _dup_rule, "uid not unique"),
        ("rules.yaml", _bad_condition, "condition 'Z' is not a refId"),
        ("rules.yaml", _bad_rule_ds, "'other' is not provisioned"),
        ("rules.yaml", _dollar_label, "holds '$'"),
        ("rules.yaml", _gone_dashboard, "panelId 99 is not a provisioned panel"),
        ("policies.yaml", _nobody, "'nobody' is not a contact point"),
        ("contact-points.yaml", _nope_template, "undefined template 'iw.nope'"),
        ("templates.yaml", _renamed_define, "undefined template 'iw.alert'"),
    ],
)
def test_alerting_checks_catch_mistakes(tmp_path: Path, file: str, mutate: Any, expect: str) -> None:
    root = _copy(tmp_path)
    _edit_yaml(root / "provisioning/alerting" / file, mutate)
    problems = validate.check(root)
    assert any(expect in p for p in problems), problems


# ---------------------------------------------------------------- routing

TREE = yaml.safe_load((ROOT / "provisioning/alerting/policies.yaml").read_text())["policies"][0]
RULES = {r["uid"]: r for r in alerting.all_rules()}


def _labels(rule_uid: str, **series: str) -> dict[str, str]:
    r = RULES[rule_uid]
    return {"alertname": r["title"], "grafana_folder": alerting.RULE_FOLDER, **series, **r["labels"]}


INCIDENT_RULES = {"critical": "iw-risk-critical", "high": "iw-risk-high"}


@pytest.mark.parametrize(
    ("severity", "zone", "kind"),
    list(
        itertools.product(
            ["critical", "high"], ["CRITICAL", "STANDARD"], ["water_flow", "water_quality", "energy"]
        )
    ),
)
def test_incident_routing(severity: str, zone: str, kind: str) -> None:
    labels = _labels(INCIDENT_RULES[severity], site="site-01", kind=kind, sensor_id="S1", zone=zone)
    out = routing.route(TREE, labels)
    assert out[0].receiver == "api-webhook"  # every alert: the API keeps history and acks
    assert [d.receiver for d in out[1:]] == [
        "emergency" if (severity, zone) == ("critical", "CRITICAL") else "ops"
    ]
    if out[1].receiver == "emergency":  # at once, and again every 5 min until resolved
        assert (out[1].group_wait, out[1].repeat_interval) == ("0s", "5m")
        assert out[1].group_by == ("alertname", "site", "sensor_id")


@pytest.mark.parametrize("zone", ["CRITICAL", "STANDARD"])
def test_quality_limit_goes_to_ops_in_any_zone(zone: str) -> None:
    out = routing.route(
        TREE, _labels("iw-quality-limit", kind="water_quality", sensor_id="Q", zone=zone, site="s")
    )
    assert [d.receiver for d in out] == ["api-webhook", "ops"]


@pytest.mark.parametrize(
    ("rule", "zone"),
    list(itertools.product(["iw-sensor-silent", "iw-battery-low"], ["CRITICAL", "STANDARD"])),
)
def test_maintenance_goes_to_staff_grouped_per_site(rule: str, zone: str) -> None:
    a = routing.route(TREE, _labels(rule, site="site-01", kind="water_flow", sensor_id="A", zone=zone))
    b = routing.route(TREE, _labels(rule, site="site-01", kind="energy", sensor_id="B", zone="STANDARD"))
    assert [d.receiver for d in a] == ["api-webhook", "staff"]
    assert a[1].group_key(_labels(rule, site="site-01", sensor_id="A")) == b[1].group_key(
        _labels(rule, site="site-01", sensor_id="B")
    )
    assert (a[1].group_wait, a[1].group_interval) == ("5m", "30m")


@pytest.mark.parametrize("rule", ["iw-ingest-stalled", "iw-ingest-lagging", "iw-dead-letters"])
def test_system_alerts_go_to_it(rule: str) -> None:
    out = routing.route(TREE, _labels(rule, worker="worker-1"))
    assert [d.receiver for d in out] == ["api-webhook", "it"]


def test_every_rule_reaches_the_api_and_one_team() -> None:
    for uid in RULES:
        out = routing.route(
            TREE, _labels(uid, site="s", kind="water_flow", sensor_id="x", zone="STANDARD", worker="w")
        )
        assert out[0].receiver == "api-webhook", (uid, out)
        assert len(out) == 2, (uid, out)


def test_router_semantics() -> None:
    tree = {
        "receiver": "root",
        "group_by": ["alertname"],
        "routes": [
            {"receiver": "a", "object_matchers": [["team", "=~", "db|web"]], "continue": True},
            {
                "receiver": "b",
                "matchers": ["team=db"],
                "routes": [{"receiver": "b1", "matchers": ['sev!="low"']}],
            },
            {"receiver": "c", "matchers": ["team=db"]},
        ],
    }
    assert [d.receiver for d in routing.route(tree, {"team": "db", "sev": "high"})] == ["a", "b1"]
    assert [d.receiver for d in routing.route(tree, {"team": "db", "sev": "low"})] == ["a", "b"]
    assert [d.receiver for d in routing.route(tree, {"team": "web"})] == ["a"]
    assert [d.receiver for d in routing.route(tree, {"team": "dbx"})] == ["root"]  # regexes are anchored
    assert routing.route(tree, {"team": "db", "sev": "high"})[1].group_by == ("alertname",)  # inherited


def test_contact_points_optional_integrations() -> None:
    plain = {
        cp["name"]: [r["type"] for r in cp["receivers"]] for cp in alerting.contact_points()["contactPoints"]
    }
    assert plain == {
        "api-webhook": ["webhook"],
        "emergency": ["email"],
        "ops": ["email"],
        "staff": ["email"],
        "it": ["email"],
    }
    env = {"INFRAWATCH_GRAFANA__PAGERDUTY_KEY": "k", "INFRAWATCH_GRAFANA__SLACK_WEBHOOK_URL": "u"}
    on = {
        cp["name"]: [r["type"] for r in cp["receivers"]]
        for cp in alerting.contact_points(env)["contactPoints"]
    }
    assert on["emergency"] == ["email", "slack", "pagerduty"]
    assert on["ops"] == on["it"] == ["email", "slack"]
    assert on["staff"] == ["email"]
    webhook = alerting.contact_points()["contactPoints"][0]["receivers"][0]["settings"]
    assert webhook["authorization_credentials"] == "${INFRAWATCH_GRAFANA__API_WEBHOOK_TOKEN}"
