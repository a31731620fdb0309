"""`infrawatch grafana sync` against a tiny local HTTP server that records every request (real
HTTP through grafana-client, no mock library): what it creates and updates, in which order, with
which credentials and bodies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from infrawatch import cli
from infrawatch.config import GrafanaSettings, Settings
from infrawatch.errors import UserError
from infrawatch.grafana import alerting, sync
from infrawatch.grafana.common import DATASOURCE_UID, FOLDERS
from infrawatch.grafana.dashboards import dashboards


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeGrafana(ThreadingHTTPServer):
    """Answers like Grafana's HTTP API for what sync asks; `known` uids exist already."""

    def __init__(self, known: set[str]) -> None:
        self.requests: list[Request] = []
        self.known = known
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        body = json.loads(raw) if raw else None
        self.server.requests.append(Request(self.command, self.path, dict(self.headers), body))
        status, out = 200, {}
        last = self.path.rstrip("/").split("/")[-1].split("?")[0]
        if self.command == "GET":
            if self.path.endswith("/contact-points") or self.path.endswith("/alert-rules"):
                out = [{"uid": u} for u in self.server.known]  # type: ignore[assignment]
            elif last not in self.server.known:
                status, out = 404, {"message": "not found"}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


for _method in ("GET", "POST", "PUT", "DELETE"):  # BaseHTTPRequestHandler dispatches on do_<METHOD>
    setattr(Handler, f"do_{_method}", Handler._reply)


def serve(known: set[str]) -> Iterator[FakeGrafana]:
    srv = FakeGrafana(known)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


@pytest.fixture
def fresh() -> Iterator[FakeGrafana]:
    yield from serve(set())


@pytest.fixture
def existing() -> Iterator[FakeGrafana]:
    yield from serve({DATASOURCE_UID, *FOLDERS.values(), "iw-api-webhook", "iw-ops-email", "iw-risk-high"})


def settings(url: str, **grafana: Any) -> Settings:
    base: dict[str, Any] = {
        "url": url,
        "token": SecretStr("svc-token"),
        "api_webhook_url": "http://api.local/api/v1/alerts/webhook",
        "api_webhook_token": SecretStr("hook-secret"),
        "emergency_email": "oncall@example.org",
        "ops_email": "ops@example.org",
        "staff_email": "staff@example.org",
        "it_email": "it@example.org",
        "runbook_url": "https://wiki.example/rb.md",
    }
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    influx = s.influx.model_copy(
        update={"grafana_password": SecretStr("reader-pw"), "url": "http://influx:8086"}
    )
    return s.model_copy(update={"grafana": GrafanaSettings(**{**base, **grafana}), "influx": influx})


def url(srv: FakeGrafana) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_first_sync_creates_everything_in_order(fresh: FakeGrafana) -> None:
    report = sync.sync(settings(url(fresh)))
    reqs = fresh.requests
    assert all(r.headers.get("Authorization") == "Bearer svc-token" for r in reqs)
    writes = [(r.method, r.path) for r in reqs if r.method != "GET"]
    order = ["provisioning" if "/provisioning/" in p else p.split("/")[2] for _, p in writes]
    kinds = ["datasources", "folders", "dashboards", "provisioning"]
    assert [k for k in dict.fromkeys(order) if k in kinds] == kinds
    ds = next(r.body for r in reqs if (r.method, r.path) == ("POST", "/api/datasources"))
    assert ds["uid"] == DATASOURCE_UID
    assert ds["type"] == "influxdb"
    assert (ds["url"], ds["user"], ds["secureJsonData"]) == (
        "http://influx:8086",
        "grafana",
        {"password": "reader-pw"},
    )
    assert ds["jsonData"]["version"] == "InfluxQL"
    folders = {r.body["uid"]: r.body["title"] for r in reqs if (r.method, r.path) == ("POST", "/api/folders")}
    assert folders == {v: k for k, v in FOLDERS.items()}
    dash = [r.body for r in reqs if r.path == "/api/dashboards/db"]
    assert {(d["dashboard"]["uid"], d["folderUid"], d["overwrite"]) for d in dash} == {
        (d["uid"], FOLDERS[rel.split("/")[0]], True) for rel, d in dashboards().items()
    }
    tpl = next(r for r in reqs if r.path.startswith("/api/v1/provisioning/templates/"))
    assert tpl.method == "PUT"
    assert tpl.path.endswith("/infrawatch")
    assert 'define "iw.title"' in tpl.body["template"]
    cps = {
        r.body["uid"]: r.body
        for r in reqs
        if (r.method, r.path) == ("POST", "/api/v1/provisioning/contact-points")
    }
    assert set(cps) == {
        "iw-api-webhook",
        "iw-emergency-email",
        "iw-ops-email",
        "iw-staff-email",
        "iw-it-email",
    }
    hook = cps["iw-api-webhook"]["settings"]
    assert (hook["url"], hook["authorization_scheme"], hook["authorization_credentials"]) == (
        "http://api.local/api/v1/alerts/webhook", "Bearer", "hook-secret",
    )  # fmt: skip
    assert cps["iw-staff-email"]["settings"]["addresses"] == "staff@example.org"
    assert not any("${" in json.dumps(c) for c in cps.values())  # every variable resolved
    rules = {
        r.body["uid"]: r.body
        for r in reqs
        if (r.method, r.path) == ("POST", "/api/v1/provisioning/alert-rules")
    }
    assert set(rules) == {r["uid"] for r in alerting.all_rules()}
    assert all(r["folderUID"] == FOLDERS["Alerting"] and r["ruleGroup"] for r in rules.values())
    assert "$timeFilter" in rules["iw-risk-high"]["data"][0]["model"]["query"]  # queries travel unexpanded
    battery = rules["iw-battery-low"]["annotations"]
    assert battery["runbook_url"] == "https://wiki.example/rb.md#battery-low"
    assert (battery["__dashboardUid__"], battery["__panelId__"]) == ("iw-sensor", "3")  # the API's form
    assert "dashboardUid" not in rules["iw-battery-low"]
    groups = {r.path.split("/")[-1]: r.body for r in reqs if "/rule-groups/" in r.path}
    assert {g: b["interval"] for g, b in groups.items()} == {
        "incidents": 60,
        "maintenance": 300,
        "system": 60,
    }
    policy = next(r for r in reqs if r.path == "/api/v1/provisioning/policies")
    assert policy.method == "PUT"
    assert policy.body["receiver"] == "ops"
    assert policy.body["routes"][0] == {**alerting.policies()["policies"][0]["routes"][0]}
    assert "created datasource infrawatch-influx" in report.lines()


def test_second_sync_updates_what_exists(existing: FakeGrafana) -> None:
    sync.sync(settings(url(existing), token=None, user="admin", password=SecretStr("pw")))
    reqs = existing.requests
    assert all(r.headers["Authorization"].startswith("Basic ") for r in reqs)
    calls = {(r.method, r.path) for r in reqs if r.method != "GET"}
    assert ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") in calls
    assert not any(p == "/api/folders" for _, p in calls)
    assert ("PUT", "/api/v1/provisioning/contact-points/iw-api-webhook") in calls
    assert ("POST", "/api/v1/provisioning/contact-points") in calls  # the others are new
    assert ("PUT", "/api/v1/provisioning/alert-rules/iw-risk-high") in calls
    put = next(r for r in reqs if r.path == "/api/v1/provisioning/alert-rules/iw-risk-high")
    assert put.headers.get("X-Disable-Provenance") is None  # provisioned: not editable in the UI


def test_optional_integrations_join_only_when_set(fresh: FakeGrafana) -> None:
    sync.sync(
        settings(
            url(fresh),
            slack_webhook_url=SecretStr("https://hooks.example/T/B"),
            pagerduty_key=SecretStr("pd-key"),
        )
    )
    cps = {
        r.body["uid"]: r.body
        for r in fresh.requests
        if (r.method, r.path) == ("POST", "/api/v1/provisioning/contact-points")
    }
    assert cps["iw-emergency-pagerduty"]["settings"]["integrationKey"] == "pd-key"
    assert cps["iw-emergency-slack"]["settings"]["url"] == "https://hooks.example/T/B"
    assert cps["iw-ops-slack"]["name"] == "ops"
    assert not any(u.endswith("-teams") for u in cps)
    assert "iw-staff-pagerduty" not in cps


def test_missing_secrets_say_what_to_set(fresh: FakeGrafana, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="INFRAWATCH_GRAFANA__API_WEBHOOK_URL"):
        sync.sync(settings(url(fresh), api_webhook_url=None))
    with pytest.raises(UserError, match="INFRAWATCH_GRAFANA__STAFF_EMAIL"):
        sync.sync(settings(url(fresh), staff_email=None))
    with pytest.raises(UserError, match="INFRAWATCH_GRAFANA__TOKEN"):
        sync.sync(settings(url(fresh), token=None))
    token = tmp_path / "token"
    token.write_text("from-file\n")
    fresh.requests.clear()
    sync.sync(settings(url(fresh), token=None, token_file=token))
    assert fresh.requests[0].headers["Authorization"] == "Bearer from-file"


def test_unreachable_grafana_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"unreachable|refused"):
        sync.sync(settings("http://127.0.0.1:9", timeout_s=2))


def test_cli_sync_and_check(
    fresh: FakeGrafana, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "INFRAWATCH_GRAFANA__URL": url(fresh),
        "INFRAWATCH_GRAFANA__TOKEN": "cli-token",
        "INFRAWATCH_GRAFANA__API_WEBHOOK_URL": "http://api/api/v1/alerts/webhook",
        "INFRAWATCH_GRAFANA__API_WEBHOOK_TOKEN": "t",
        "INFRAWATCH_GRAFANA__EMERGENCY_EMAIL": "a@x",
        "INFRAWATCH_GRAFANA__OPS_EMAIL": "b@x",
        "INFRAWATCH_GRAFANA__STAFF_EMAIL": "c@x",
        "INFRAWATCH_GRAFANA__IT_EMAIL": "d@x",
        "INFRAWATCH_INFLUX__GRAFANA_PASSWORD": "pw",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cli.main(["grafana", "sync"]) == 0
    assert fresh.requests
    assert fresh.requests[0].headers["Authorization"] == "Bearer cli-token"
    assert "created alert rule iw-risk-critical" in capsys.readouterr().out
    assert cli.main(["grafana", "check"]) == 0
