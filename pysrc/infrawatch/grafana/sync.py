"""`infrawatch grafana sync`: push the provisioned objects to a running Grafana with `grafana-client`.

The same objects as the files under `grafana/` (both come from `build`/`alerting`), in dependency
order: the datasource (the `grafana` reader's password from the influx settings), the folders, the
dashboards, the notification templates, the contact points, the alert rules and their groups'
intervals, the notification-policy tree. Each object is updated when it exists (by uid) and
created otherwise, so a sync is idempotent. Contact-point settings name `${INFRAWATCH_GRAFANA__X}`
variables (what file provisioning interpolates); here they are resolved from the `grafana`
settings: Slack, PagerDuty and Teams join only when their setting is set, and an email
integration without an address is left out.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from infrawatch.config import Settings, secret
from infrawatch.errors import UserError
from infrawatch.grafana import alerting, build
from infrawatch.grafana.common import DATASOURCE_UID, FOLDERS
from infrawatch.grafana.dashboards import dashboards

_ENV = re.compile(r"\$\{(INFRAWATCH_GRAFANA__[A-Z0-9_]+)\}")
Json = dict[str, Any]


class SyncError(UserError):
    """Grafana refused an object or cannot be reached; the message says which and why."""


def _setting(settings: Settings, var: str) -> str | None:
    name = var.removeprefix("INFRAWATCH_GRAFANA__").lower()
    g = settings.grafana
    value = getattr(g, name, None)
    file = getattr(g, f"{name}_file", None)
    if value is None and file is None:
        return None
    if isinstance(value, SecretStr) or file is not None:
        return secret(value if isinstance(value, SecretStr) else None, file, f"GRAFANA__{name.upper()}")
    return str(value) if value else None


def _resolve(obj: Any, settings: Settings) -> Any:
    """`${INFRAWATCH_GRAFANA__X}` in strings → the setting (None when any is unset)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            r = _resolve(v, settings)
            if r is None:
                return None
            out[k] = r
        return out
    if isinstance(obj, str):
        missing = False

        def sub(m: re.Match[str]) -> str:
            nonlocal missing
            v = _setting(settings, m.group(1))
            if v is None:
                missing = True
                return ""
            return v

        text = _ENV.sub(sub, obj)
        return None if missing else text
    return obj


def contact_points(settings: Settings) -> list[Json]:
    """The API's contact-point objects (one per integration), secrets resolved."""
    enabled = {v: "1" for v in alerting.OPTIONAL if _setting(settings, v)}
    out: list[Json] = []
    for cp in alerting.contact_points(enabled)["contactPoints"]:
        kept = []
        for rcv in cp["receivers"]:
            s = _resolve(rcv["settings"], settings)
            if s is None:
                if cp["name"] == "api-webhook":
                    raise UserError(
                        "the API webhook contact point needs INFRAWATCH_GRAFANA__API_WEBHOOK_URL "
                        "(…/api/v1/alerts/webhook) and INFRAWATCH_GRAFANA__API_WEBHOOK_TOKEN(_FILE)"
                    )
                continue
            kept.append(
                {
                    "uid": rcv["uid"],
                    "name": cp["name"],
                    "type": rcv["type"],
                    "settings": s,
                    "disableResolveMessage": rcv.get("disableResolveMessage", False),
                }
            )
        if not kept:
            var = alerting.EMAILS.get(cp["name"], "")
            raise UserError(f"contact point {cp['name']!r} has no integration: set {var} (an email address)")
        out.extend(kept)
    return out


def datasource(settings: Settings) -> Json:
    ds: Json = copy.deepcopy(build.datasources()["datasources"][0])
    ds["url"] = settings.grafana.influx_url or settings.influx.url
    ds["user"] = settings.influx.grafana_user
    ds["jsonData"]["dbName"] = settings.influx.database
    ds["secureJsonData"] = {"password": settings.influx.password("grafana")}
    return ds


def alert_rules(runbook_url: str | None = None) -> list[Json]:
    out = []
    for g in alerting.rule_groups()["groups"]:
        for r in g["rules"]:
            rule = {k: v for k, v in r.items() if k not in ("dashboardUid", "panelId")}
            rule |= {"folderUID": FOLDERS[g["folder"]], "ruleGroup": g["name"], "orgID": 1}
            # the HTTP API's form of the file format's dashboardUid/panelId
            notes = {
                **r["annotations"],
                "__dashboardUid__": r["dashboardUid"],
                "__panelId__": str(r["panelId"]),
            }
            if runbook_url:
                notes["runbook_url"] = notes["runbook_url"].replace(alerting.RUNBOOK, runbook_url, 1)
            rule["annotations"] = notes
            out.append(rule)
    return out


def _seconds(interval: str) -> int:
    n, unit = int(interval[:-1]), interval[-1]
    return n * {"s": 1, "m": 60, "h": 3600}[unit]


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"created {x}" for x in self.created] + [f"updated {x}" for x in self.updated]


def connect(settings: Settings) -> Any:
    from grafana_client.api import GrafanaApi  # noqa: PLC0415 - niquests is loaded only to sync

    return GrafanaApi.from_url(
        settings.grafana.url, credential=settings.grafana.auth(), timeout=settings.grafana.timeout_s
    )


def sync(  # noqa: PLR0912 - one straight sequence of objects, in dependency order
    settings: Settings, api: Any | None = None, progress: Callable[[str], None] | None = None
) -> Report:
    from grafana_client.client import GrafanaClientError, GrafanaException  # noqa: PLC0415

    say = progress or (lambda _m: None)
    api = api if api is not None else connect(settings)
    report = Report()

    def step(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except GrafanaException as e:
            raise SyncError(f"Grafana at {settings.grafana.url} refused {what}: {e}") from e
        except OSError as e:
            raise SyncError(
                f"Grafana at {settings.grafana.url} unreachable ({e}): check INFRAWATCH_GRAFANA__URL"
            ) from e

    def exists(what: str, get: Callable[..., Any], *args: Any) -> bool:
        try:
            step(what, get, *args)
        except SyncError as e:
            cause = e.__cause__
            if isinstance(cause, GrafanaClientError) and cause.status_code == 404:
                return False
            raise
        return True

    ds = datasource(settings)
    if exists("the datasource lookup", api.datasource.get_datasource_by_uid, DATASOURCE_UID):
        step("the datasource", api.datasource.update_datasource_by_uid, DATASOURCE_UID, ds)
        report.updated.append(f"datasource {DATASOURCE_UID}")
    else:
        step("the datasource", api.datasource.create_datasource, ds)
        report.created.append(f"datasource {DATASOURCE_UID}")
    say("datasource done")

    for title, uid in FOLDERS.items():
        if not exists(f"folder {uid}", api.folder.get_folder, uid):
            step(f"folder {uid}", api.folder.create_folder, title, uid)
            report.created.append(f"folder {uid}")

    for rel, d in dashboards().items():
        folder = rel.split("/")[0]
        body = {"dashboard": d, "folderUid": FOLDERS[folder], "overwrite": True, "message": "infrawatch sync"}
        step(f"dashboard {d['uid']}", api.dashboard.update_dashboard, body)
        report.updated.append(f"dashboard {d['uid']}")
    say("dashboards done")

    ap = api.alertingprovisioning
    for t in alerting.templates()["templates"]:
        step(f"template {t['name']}", ap.create_or_update_template, t["name"], {"template": t["template"]})
        report.updated.append(f"template {t['name']}")

    existing = {c.get("uid") for c in step("the contact-point list", ap.get_contactpoints) or []}
    for cp in contact_points(settings):
        if cp["uid"] in existing:
            step(f"contact point {cp['uid']}", ap.update_contactpoint, cp["uid"], cp)
            report.updated.append(f"contact point {cp['uid']}")
        else:
            step(f"contact point {cp['uid']}", ap.create_contactpoint, cp)
            report.created.append(f"contact point {cp['uid']}")

    have = {r.get("uid") for r in step("the alert-rule list", ap.get_alertrules_all) or []}
    rules = alert_rules(settings.grafana.runbook_url)
    for r in rules:
        if r["uid"] in have:
            step(f"alert rule {r['uid']}", ap.update_alertrule, r["uid"], r)
            report.updated.append(f"alert rule {r['uid']}")
        else:
            step(f"alert rule {r['uid']}", ap.create_alertrule, r)
            report.created.append(f"alert rule {r['uid']}")
    for g in alerting.rule_groups()["groups"]:
        folder_uid = FOLDERS[g["folder"]]
        mine = [r for r in rules if r["ruleGroup"] == g["name"]]
        body = {
            "title": g["name"],
            "folderUid": folder_uid,
            "interval": _seconds(g["interval"]),
            "rules": mine,
        }
        step(f"rule group {g['name']}", ap.update_rule_group, folder_uid, g["name"], body)
        report.updated.append(f"rule group {g['name']}")
    say("alert rules done")

    tree = {k: v for k, v in alerting.policies()["policies"][0].items() if k != "orgId"}
    step("the notification policies", ap.set_notification_policy_tree, tree)
    report.updated.append("notification policies")
    return report
