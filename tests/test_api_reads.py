"""Reads, CSV, network metrics, reports (JSON, CSV, PDF rendered by pdftoppm), alerts, status and
models against a real InfluxDB holding known data: yesterday 10:00–12:00 UTC, one reading a
minute from two water-flow sensors and one energy meter, one leak alert."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.ensemble import RandomForestClassifier
from tests.utils.api import WEBHOOK_TOKEN, ApiHarness, api_settings
from tests.utils.stack import COARSE, FINE, Stack, start_stack

from infrawatch import core
from infrawatch.ingest import influx_admin

pytestmark = pytest.mark.integration
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
BASE = dt.datetime.combine(DAY, dt.time(10), dt.UTC)
END = BASE + dt.timedelta(hours=2)
N = 120  # readings per sensor, one a minute
LEAK_AT = 100


def ns(t: dt.datetime) -> int:
    return int(t.timestamp()) * 10**9


def known_lines() -> bytes:
    lines = []
    for i in range(N):
        t = ns(BASE + dt.timedelta(minutes=i))
        risk, leak = (3, 0.9) if i == LEAK_AT else (0, 0.05)
        p = 3.0 if i % 2 == 0 else 3.2
        lines += [
            f"reading,kind=water_flow,sensor_id=W1,site=north,zone=CRITICAL flow_rate_lps=10.0,"
            f'pressure_bar={p},leak_probability={leak},risk={risk}i,risk_level="x" {t}',
            f"reading,kind=water_flow,sensor_id=W2,site=north,zone=STANDARD flow_rate_lps=20.0,"
            f"pressure_bar=2.5,leak_probability=0.01,risk=0i {t}",
            f"reading,kind=energy,sensor_id=E1,site=north,zone=STANDARD energy_kwh=0.5,risk=0i {t}",
        ]
    t = ns(BASE + dt.timedelta(minutes=LEAK_AT))
    lines.append(
        f'alert,kind=water_flow,sensor_id=W1,severity=critical,site=north,zone=CRITICAL alert_type="leak",'
        f'message="leak suspected",risk=3i {t}'
    )
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, ApiHarness, dict[str, Any]]]:
    stack = start_stack(tmp_path_factory.mktemp("reads") / "run")
    h = None
    try:
        with stack.client("writer") as w:
            w.write(known_lines())
        influx_admin.backfill(stack.settings, ns(BASE), ns(END), fine=FINE, coarse=COARSE)
        h = ApiHarness(api_settings(tmp_path_factory.mktemp("api"), stack.settings))
        headers: dict[str, Any] = {}
        for role in ("admin", "scientist", "operator", "viewer"):
            h.add_user(f"u-{role}", role)
            headers[role] = h.bearer(f"u-{role}")
        headers["key"] = {"X-API-Key": h.add_key("read")}
        yield stack, h, headers
    finally:
        if h is not None:
            h.close()
        stack.close()


Q = {"start": BASE.isoformat(), "end": END.isoformat()}


def test_latest(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    _, h, hd = world
    r = h.get("/api/v1/readings/latest", params={"site": "north", "lookback_h": 72}, headers=hd["key"])
    assert r.status_code == 200, r.text
    rows = {x["sensor_id"]: x for x in r.json()}
    assert set(rows) == {"E1", "W1", "W2"}
    w1 = rows["W1"]
    assert w1["time"] == (BASE + dt.timedelta(minutes=N - 1)).isoformat().replace("+00:00", "Z")
    assert w1["zone"] == "CRITICAL"
    assert w1["values"]["flow_rate_lps"] == 10.0
    assert w1["values"]["pressure_bar"] == 3.2
    one = h.get("/api/v1/readings/latest", params={"sensor_id": "E1", "lookback_h": 72}, headers=hd["viewer"])
    assert [x["values"]["energy_kwh"] for x in one.json()] == [0.5]


def test_history_raw_json_and_csv(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    _, h, hd = world
    params = {**Q, "fields": "flow_rate_lps,pressure_bar,risk"}
    r = h.get("/api/v1/readings/W1/history", params=params, headers=hd["operator"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "raw"
    assert body["interval_s"] is None
    assert len(body["rows"]) == N
    assert [x["pressure_bar"] for x in body["rows"][:3]] == [3.0, 3.2, 3.0]
    assert body["rows"][LEAK_AT]["risk"] == 3
    c = h.get("/api/v1/readings/W1/history", params={**params, "format": "csv"}, headers=hd["operator"])
    assert c.status_code == 200
    assert c.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(c.text)))
    assert len(table) == N
    assert table[0].keys() == {"time", "flow_rate_lps", "pressure_bar", "risk"}
    assert [float(x["pressure_bar"]) for x in table] == [x["pressure_bar"] for x in body["rows"]]
    assert [x["time"] for x in table] == [x["time"] for x in body["rows"]]


def test_history_tiers(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    _, h, hd = world
    fields = "flow_rate_lps,pressure_bar,risk,leak_probability"
    r = h.get(
        "/api/v1/readings/W1/history", params={**Q, "interval": "10m", "fields": fields}, headers=hd["key"]
    )
    body = r.json()
    assert body["tier"] == "rollup_1m"  # a 10-minute step reads the minute rollup, not raw
    assert body["interval_s"] == 600
    assert len(body["rows"]) == 12
    assert all(x["flow_rate_lps"] == pytest.approx(10.0) for x in body["rows"])
    assert [x["pressure_bar"] for x in body["rows"]] == pytest.approx([3.1] * 12)
    # risk and probabilities keep their maximum through the rollups
    assert [x["risk"] for x in body["rows"]] == [0] * 10 + [3, 0]
    assert body["rows"][10]["leak_probability"] == pytest.approx(0.9)
    hourly = h.get(
        "/api/v1/readings/W1/history", params={**Q, "interval": "1h", "fields": fields}, headers=hd["key"]
    ).json()
    assert hourly["tier"] == "rollup_1h"
    assert [x["risk"] for x in hourly["rows"]] == [0, 3]
    assert [x["flow_rate_lps"] for x in hourly["rows"]] == pytest.approx([10.0, 10.0])
    bad = h.get("/api/v1/readings/W1/history", params={**Q, "fields": 'x" OR 1=1'}, headers=hd["key"])
    assert bad.status_code == 422
    assert (
        h.get("/api/v1/readings/W1/history", params={**Q, "interval": "5q"}, headers=hd["key"]).status_code
        == 422
    )


def test_network_metrics(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    _, h, hd = world
    r = h.get("/api/v1/network/metrics", params={**Q, "site": "north"}, headers=hd["scientist"])
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["flow_sensors"] == 2
    assert m["total_flow_lps"] == pytest.approx(30.0)
    # the integral of flow over the 119 minutes the readings span (InfluxDB's integral per hour
    # bucket carries on from the previous bucket's last reading, so no minute is lost between hours)
    assert m["total_volume_m3"] == pytest.approx(119 * 60 * (10 + 20) / 1000)
    band = m["pressure_band_bar"]
    assert (band["min"], band["max"]) == (2.5, 3.2)
    assert band["mean"] == pytest.approx(2.8)
    hours = m["consumption_by_site_hour"]
    assert [x["energy_kwh"] for x in hours] == pytest.approx([30.0, 30.0])
    # (an hour bucket integrates up to the next hour's first reading: the first hour holds 60 minutes)
    assert [x["water_m3"] for x in hours] == pytest.approx([60 * 60 * 30 / 1000, 59 * 60 * 30 / 1000])
    assert {x["site"] for x in hours} == {"north"}


def test_daily_report_json_csv_pdf(world: tuple[Stack, ApiHarness, dict[str, Any]], tmp_path: Path) -> None:
    _, h, hd = world
    params = {"site": "north", "date": DAY.isoformat()}
    r = h.get("/api/v1/reports/daily", params=params, headers=hd["viewer"])
    assert r.status_code == 200, r.text
    rep = r.json()
    assert (rep["sensors"], rep["readings"], rep["alerts"]) == (3, 3 * N, 1)
    assert rep["by_kind"] == {
        "energy": {"sensors": 1, "readings": N},
        "water_flow": {"sensors": 2, "readings": 2 * N},
    }
    zones = {z["zone"]: z for z in rep["risk_by_zone"]}
    assert zones["CRITICAL"]["max_risk"] == 3
    assert zones["CRITICAL"]["high_readings"] == 1
    assert zones["STANDARD"]["readings"] == 2 * N
    assert zones["STANDARD"]["high_readings"] == 0
    assert [x["alert_type"] for x in rep["top_incidents"]] == ["leak"]
    assert len(rep["hourly"]["water_flow"]) == 2
    assert [x["energy_kwh"] for x in rep["hourly"]["energy"]] == pytest.approx([30.0, 30.0])

    c = h.get("/api/v1/reports/daily", params={**params, "format": "csv"}, headers=hd["viewer"])
    rows = list(csv.reader(io.StringIO(c.text)))
    assert rows[0] == ["section", "time", "key", "metric", "value"]
    assert ["zone", DAY.isoformat(), "CRITICAL", "max_risk", "3"] in rows
    assert ["summary", DAY.isoformat(), "north", "readings", str(3 * N)] in rows

    p = h.get("/api/v1/reports/daily", params={**params, "format": "pdf"}, headers=hd["viewer"])
    assert p.headers["content-type"] == "application/pdf"
    assert p.content.startswith(b"%PDF")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(p.content)
    assert shutil.which("pdftoppm"), "poppler-utils provides pdftoppm"
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 3
    for page in pages:
        img = imread(page)[..., :3]
        ink = np.mean(img < 0.9)  # share of non-white pixels
        assert 0.005 < ink < 0.9, f"{page.name}: {ink:.4f} of the page inked"
        assert img.std() > 0.05


def test_alert_history_webhook_ack(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    _, h, hd = world
    token = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    starts = (BASE + dt.timedelta(minutes=LEAK_AT)).isoformat()
    alert = {
        "status": "firing",
        "labels": {
            "alertname": "risk high",
            "severity": "critical",
            "site": "north",
            "zone": "CRITICAL",
            "sensor_id": "W1",
        },
        "annotations": {"summary": "W1 leak probability 0.9"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "a1b2c3",
    }
    r = h.post("/api/v1/alerts/webhook", json={"status": "firing", "alerts": [alert]}, headers=token)
    assert r.json() == {"recorded": 1, "firing": 1, "resolved": 0}
    listed = h.get("/api/v1/alerts", params={"site": "north", "state": "firing"}, headers=hd["viewer"]).json()
    assert [(a["sensor_id"], a["severity"], a["summary"]) for a in listed] == [
        ("W1", "critical", "W1 leak probability 0.9")
    ]
    assert listed[0]["ends_at"] is None
    aid = listed[0]["id"]
    assert (
        h.post(f"/api/v1/alerts/{aid}/ack", json={"note": "crew sent"}, headers=hd["viewer"]).status_code
        == 403
    )
    ack = h.post(f"/api/v1/alerts/{aid}/ack", json={"note": "crew sent"}, headers=hd["operator"]).json()
    assert (ack["acknowledged_by"], ack["ack_note"]) == ("u-operator", "crew sent")
    assert ack["acknowledged_at"] is not None
    assert h.get("/api/v1/alerts", params={"state": "unacknowledged"}, headers=hd["viewer"]).json() == []
    ends = (BASE + dt.timedelta(minutes=LEAK_AT + 15)).isoformat()
    resolved = {**alert, "status": "resolved", "endsAt": ends}
    r = h.post("/api/v1/alerts/webhook", json={"status": "resolved", "alerts": [resolved]}, headers=token)
    assert r.json()["resolved"] == 1
    after = h.get("/api/v1/alerts", headers=hd["viewer"]).json()
    assert len(after) == 1  # the same instance, now resolved — still acknowledged
    assert after[0]["status"] == "resolved"
    assert after[0]["ends_at"].startswith(ends[:19])
    assert after[0]["acknowledged_by"] == "u-operator"
    assert h.get("/api/v1/alerts", params={"zone": "STANDARD"}, headers=hd["viewer"]).json() == []
    events = h.get("/api/v1/alerts/events", params={**Q, "site": "north"}, headers=hd["key"]).json()
    assert [(e["sensor_id"], e["alert_type"], e["risk"]) for e in events] == [("W1", "leak", 3)]


def test_status(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    stack, h, hd = world
    with stack.client("writer") as w:
        now = ns(dt.datetime.now(dt.UTC))
        w.write(f"pipeline,worker=w1 received=5i,written=5i,rate_limited=0i,dead_letter=0i {now}".encode())
    r = h.get("/api/v1/status", headers=hd["viewer"])
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["ok"]
    assert s["influxdb"]["ok"]
    assert s["broker"]["ok"]
    assert [(w["worker"], w["alive"], w["received"]) for w in s["workers"]] == [("w1", True, 5)]
    assert s["models"] == {"water_flow": None, "water_quality": None, "energy": None}
    assert h.get("/healthz").json() == {"status": "ok"}


def test_status_503_when_influx_is_down(tmp_path: Path) -> None:
    h = ApiHarness(api_settings(tmp_path))  # InfluxDB on a closed port, no broker
    try:
        h.add_user("v", "viewer")
        r = h.get("/api/v1/status", headers=h.bearer("v"))
        assert r.status_code == 503
        assert r.json()["influxdb"]["ok"] is False
        assert "error" in r.json()["influxdb"]
        latest = h.get("/api/v1/readings/latest", headers=h.bearer("v"))
        assert latest.status_code == 503
        assert "InfluxDB" in latest.json()["detail"]
    finally:
        h.close()


def test_models_list_and_activate(world: tuple[Stack, ApiHarness, dict[str, Any]]) -> None:
    _, h, hd = world
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)
    forest = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0).fit(x, y)
    ens = {"contamination": core.TreeEnsemble.from_sklearn(forest)}
    v1 = h.state.registry.save(
        "water_quality", ens, {"metrics": {"test": {"f1": 0.5}}, "window": 60}, activate=True
    )
    v2 = h.state.registry.save(
        "water_quality", ens, {"metrics": {"test": {"f1": 0.7}}, "window": 60}, activate=False
    )
    listed = h.get("/api/v1/models", params={"kind": "water_quality"}, headers=hd["scientist"]).json()
    # (two versions saved within a second sort by their random suffix: compare by name)
    assert {m["version"]: m["active"] for m in listed} == {v1.version: True, v2.version: False}
    assert {m["version"]: m["metrics"] for m in listed}[v2.version] == {"test": {"f1": 0.7}}
    r = h.post(f"/api/v1/models/water_quality/{v2.version}/activate", headers=hd["scientist"])
    assert r.status_code == 200
    assert r.json()["active"] is True
    assert h.state.registry.active_version("water_quality") == v2.version
    assert h.post("/api/v1/models/water_quality/nope/activate", headers=hd["admin"]).status_code == 404
