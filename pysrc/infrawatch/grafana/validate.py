"""Structure checks of the provisioned tree (`infrawatch grafana check`; the tests call them too).

Each check returns problems as strings ("where: what"); an empty list means the files are sound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from infrawatch.grafana import macros, routing

MIN_SCHEMA_VERSION = 39
BUILTIN_VARS = {
    "__interval",
    "__interval_ms",
    "__from",
    "__to",
    "__range",
    "timeFilter",
    "__timeFilter",
    "interval",
}
EXPR_UID = "__expr__"
GRAFANA_UIDS = {"grafana", "-- Grafana --", EXPR_UID}
_TEMPLATE_USE = re.compile(r'\{\{\s*template\s+"([^"]+)"')
_TEMPLATE_DEF = re.compile(r'\{\{-?\s*define\s+"([^"]+)"')


def load_dashboards(root: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(root / "dashboards")): json.loads(p.read_text())
        for p in sorted((root / "dashboards").rglob("*.json"))
    }


def _yaml_files(root: Path, kind: str) -> dict[str, Any]:
    d = root / "provisioning" / kind
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(d.glob("*.y*ml"))}


def datasource_uids(root: Path) -> set[str]:
    return {ds["uid"] for f in _yaml_files(root, "datasources").values() for ds in f.get("datasources", [])}


def alerting(root: Path) -> dict[str, Any]:
    return _yaml_files(root, "alerting")


def _panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows


def _refs(obj: Any) -> Iterator[dict[str, Any]]:
    """Every datasource reference in a JSON tree."""
    if isinstance(obj, dict):
        ds = obj.get("datasource")
        if isinstance(ds, dict):
            yield ds
        for v in obj.values():
            yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def check_dashboards(root: Path) -> list[str]:  # noqa: PLR0912 - one check per branch, read top to bottom
    problems: list[str] = []
    ds_uids = datasource_uids(root) | GRAFANA_UIDS
    uids: dict[str, str] = {}
    for name, d in load_dashboards(root).items():
        where = f"dashboards/{name}"
        if d.get("uid") in uids:
            problems.append(f"{where}: uid {d.get('uid')!r} also in {uids[d['uid']]}")
        uids[d.get("uid", "")] = name
        if not d.get("uid") or len(d["uid"]) > 40:
            problems.append(f"{where}: uid missing or longer than 40 characters")
        if int(d.get("schemaVersion", 0)) < MIN_SCHEMA_VERSION:
            problems.append(f"{where}: schemaVersion {d.get('schemaVersion')} < {MIN_SCHEMA_VERSION}")
        if "/" in name and name.split("/")[0] == "General":
            problems.append(f"{where}: 'General' is Grafana's root folder, not a folder name")
        panels = list(_panels(d))
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)) or None in ids:
            problems.append(f"{where}: panel ids not unique: {ids}")
        for i, p in enumerate(panels):
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] < 0 or g["x"] + g["w"] > 24:
                problems.append(f"{where}: panel {p.get('title')!r} gridPos {g} outside the 24 columns")
                continue
            for q in panels[:i]:
                if _overlap(g, q["gridPos"]):
                    problems.append(f"{where}: panels {q.get('title')!r} and {p.get('title')!r} overlap")
            if p.get("type") != "row" and not p.get("targets"):
                problems.append(f"{where}: panel {p.get('title')!r} has no query")
        for ref in _refs(d):
            if ref.get("uid") not in ds_uids:
                problems.append(f"{where}: datasource uid {ref.get('uid')!r} is not provisioned")
        variables = d.get("templating", {}).get("list", [])
        defined: set[str] = set()
        for v in variables:
            used = macros.names_used(str(v.get("query", "")))
            missing = used - defined - BUILTIN_VARS
            if missing:
                problems.append(
                    f"{where}: variable {v['name']} uses {sorted(missing)} before they are defined"
                )
            defined.add(v["name"])
        texts = [t.get("query", "") for p in panels for t in p.get("targets", [])]
        texts += [a.get("query", "") for a in d.get("annotations", {}).get("list", [])]
        for text in texts:
            missing = macros.names_used(text) - defined - BUILTIN_VARS
            if missing:
                problems.append(f"{where}: query uses undefined variables {sorted(missing)}: {text[:80]}")
    return problems


def check_alerting(root: Path, dashboards: dict[str, dict[str, Any]] | None = None) -> list[str]:  # noqa: PLR0912 - one check per branch, read top to bottom
    problems: list[str] = []
    files = alerting(root)
    ds_uids = datasource_uids(root)
    panels = {(d["uid"], p["id"]) for d in (dashboards or load_dashboards(root)).values() for p in _panels(d)}
    for name, f in files.items():
        if f.get("apiVersion") != 1:
            problems.append(f"alerting/{name}: apiVersion {f.get('apiVersion')!r}, expected 1")
    rules = [(g, r) for f in files.values() for g in f.get("groups", []) for r in g.get("rules", [])]
    seen: set[str] = set()
    for g, r in rules:
        where = f"rule {r.get('uid')!r} ({g.get('name')})"
        if r.get("uid") in seen:
            problems.append(f"{where}: uid not unique")
        seen.add(r.get("uid", ""))
        if not r.get("uid") or len(r["uid"]) > 40 or not re.fullmatch(r"[A-Za-z0-9_-]+", r["uid"]):
            problems.append(f"{where}: uid must be 1-40 letters, digits, - or _")
        if not g.get("folder") or not re.fullmatch(r"\d+[smh]", str(g.get("interval", ""))):
            problems.append(f"{where}: group needs a folder and an interval like 1m")
        refs = {d["refId"] for d in r.get("data", [])}
        if r.get("condition") not in refs:
            problems.append(f"{where}: condition {r.get('condition')!r} is not a refId")
        for d in r.get("data", []):
            uid = d.get("datasourceUid")
            model = d.get("model", {})
            if uid == EXPR_UID:
                deps = (
                    re.findall(r"\$?([A-Za-z_][A-Za-z0-9_]*)", str(model.get("expression", "")))
                    if model.get("type") != "math"
                    else re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", model["expression"])
                )
                deps += [c["query"]["params"][0] for c in model.get("conditions", []) if "query" in c]
                for dep in deps:
                    if dep not in refs:
                        problems.append(f"{where}: {d['refId']} refers to unknown {dep!r}")
            elif uid not in ds_uids:
                problems.append(f"{where}: {d['refId']} datasource {uid!r} is not provisioned")
            elif not d.get("relativeTimeRange", {}).get("from"):
                problems.append(f"{where}: {d['refId']} has no relativeTimeRange")
        for k, v in (r.get("labels") or {}).items():
            if "$" in str(v) or "$" in k:
                problems.append(f"{where}: label {k} holds '$' (file provisioning would interpolate it)")
        dash = r.get("dashboardUid")
        if dash and (dash, r.get("panelId")) not in panels:
            problems.append(
                f"{where}: dashboardUid {dash!r} panelId {r.get('panelId')} is not a provisioned panel"
            )
        for k in ("noDataState", "execErrState"):
            if r.get(k) not in {"NoData", "Alerting", "OK", "Error", "KeepLast"}:
                problems.append(f"{where}: {k} {r.get(k)!r}")
    contact = {cp["name"]: cp for f in files.values() for cp in f.get("contactPoints", [])}
    defined = {
        m
        for f in files.values()
        for t in f.get("templates", [])
        for m in _TEMPLATE_DEF.findall(t["template"])
    }
    for f in files.values():
        for t in f.get("templates", []):
            if "$" in t["template"]:
                problems.append(f"template {t['name']}: holds '$' (file provisioning would interpolate it)")
            for used in _TEMPLATE_USE.findall(t["template"]):
                if used not in defined:
                    problems.append(f"template {t['name']}: uses undefined template {used!r}")
    receiver_uids: set[str] = set()
    for cp in contact.values():
        for rcv in cp.get("receivers", []):
            if rcv["uid"] in receiver_uids:
                problems.append(f"contact point {cp['name']}: receiver uid {rcv['uid']} not unique")
            receiver_uids.add(rcv["uid"])
            texts = [v for v in (rcv.get("settings") or {}).values() if isinstance(v, str)]
            for used in (u for t in texts for u in _TEMPLATE_USE.findall(t)):
                if used not in defined:
                    problems.append(f"contact point {cp['name']}: uses undefined template {used!r}")
    trees = [p for f in files.values() for p in f.get("policies", [])]
    if len(trees) != 1:
        problems.append(f"expected one notification-policy tree, found {len(trees)}")
    for tree in trees:
        for rcv in routing.receivers_used(tree):
            if rcv not in contact:
                problems.append(f"policies: receiver {rcv!r} is not a contact point")
    return problems


def check(root: Path) -> list[str]:
    return check_dashboards(root) + check_alerting(root)
