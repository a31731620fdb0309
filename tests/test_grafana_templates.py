"""The notification templates and rule annotations, rendered: short, plain lines that read on a
phone. Grafana renders them with Go's text/template; `render` below is a small interpreter of the
subset they use (define/template, if/else, range, with, pipelines, eq/len/toUpper/printf, a time's
Format, `{{-`/`-}}` trimming, `$labels`/`$values`), strict about anything else."""

from __future__ import annotations

import datetime as dt
import re
import shlex
from typing import Any

import pytest

from infrawatch.grafana import alerting

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
NO_VALUE = "<no value>"


def _tokens(text: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", s)] with Go's trim markers applied."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(text):
        chunk = text[pos : m.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if m.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        out.append(("action", m.group(2)))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = text[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(
    tokens: list[tuple[str, str]], i: int, defines: dict[str, list[Any]]
) -> tuple[list[Any], int, str]:
    """Nodes up to a closing {{ end }} / {{ else }}; returns (nodes, next index, closer)."""
    nodes: list[Any] = []
    while i < len(tokens):
        kind, s = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(("text", s))
            continue
        word = s.split(" ", 1)[0]
        rest = s[len(word) :].strip()
        if word in ("end", "else"):
            return nodes, i, word
        if word in ("if", "range", "with"):
            body, i, closer = _parse(tokens, i, defines)
            other: list[Any] = []
            if closer == "else":
                other, i, _ = _parse(tokens, i, defines)
            nodes.append((word, rest, body, other))
        elif word == "define":
            body, i, _ = _parse(tokens, i, defines)
            defines[shlex.split(rest)[0]] = body
        elif word == "template":
            name, arg = rest.split(" ", 1)
            nodes.append(("template", name.strip('"'), arg))
        else:
            nodes.append(("action", s))
    return nodes, i, ""


def _go_time(t: dt.datetime, layout: str) -> str:
    table = {"15": "%H", "04": "%M", "MST": t.tzname() or "UTC", "2": str(t.day), "Jan": "%b"}
    parts = re.split(r"(15|04|MST|Jan|2)", layout)
    return "".join(t.strftime(table[p]) if p in {"15", "04", "Jan"} else table.get(p, p) for p in parts)


def _truthy(v: Any) -> bool:
    return v not in (None, "", 0, False) and not (hasattr(v, "__len__") and len(v) == 0)


class Renderer:
    def __init__(self, source: str) -> None:
        self.defines: dict[str, list[Any]] = {}
        self.top, _, _ = _parse(_tokens(source), 0, self.defines)

    def _operand(self, tok: str, dot: Any, env: dict[str, Any]) -> Any:
        if tok.startswith('"'):
            return tok[1:-1]
        if re.fullmatch(r"-?\d+(\.\d+)?", tok):
            return float(tok)
        if tok == ".":
            return dot
        if tok.startswith("$"):
            head, *path = tok[1:].split(".")
            value = env[head]
        elif tok.startswith("."):
            value, path = dot, tok[1:].split(".")
        else:
            raise ValueError(f"unsupported operand {tok!r}")
        for p in path:
            value = value.get(p) if isinstance(value, dict) else getattr(value, p)
        return value

    def _command(self, words: list[str], dot: Any, env: dict[str, Any], piped: list[Any]) -> Any:
        fn, args = words[0], words[1:]
        if fn in ("eq", "len", "toUpper", "printf"):
            vals = [self._operand(a, dot, env) for a in args] + piped
            if fn == "eq":
                return vals[0] == vals[1]
            if fn == "len":
                return len(vals[0])
            if fn == "toUpper":
                return str(vals[0]).upper()
            return vals[0] % tuple(vals[1:])
        if fn.endswith(".Format"):  # a time.Time method
            return _go_time(self._operand(fn[: -len(".Format")], dot, env), self._operand(args[0], dot, env))
        if args:
            raise ValueError(f"unsupported command {words}")
        return self._operand(fn, dot, env)

    def _eval(self, expr: str, dot: Any, env: dict[str, Any]) -> Any:
        value: list[Any] = []
        for part in expr.split("|"):
            value = [self._command(shlex.split(part.strip(), posix=False), dot, env, value)]
        return value[0]

    def _run(self, nodes: list[Any], dot: Any, env: dict[str, Any]) -> str:
        out = []
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "action":
                v = self._eval(n[1], dot, env)
                out.append(NO_VALUE if v is None else str(v))
            elif n[0] == "if":
                out.append(self._run(n[2] if _truthy(self._eval(n[1], dot, env)) else n[3], dot, env))
            elif n[0] == "with":
                v = self._eval(n[1], dot, env)
                out.append(self._run(n[2], v, env) if _truthy(v) else self._run(n[3], dot, env))
            elif n[0] == "range":
                out.append("".join(self._run(n[2], item, env) for item in self._eval(n[1], dot, env) or []))
            elif n[0] == "template":
                out.append(self._run(self.defines[n[1]], self._eval(n[2], dot, env), env))
        return "".join(out)

    def render(self, name: str | None, dot: Any, env: dict[str, Any] | None = None) -> str:
        return self._run(self.defines[name] if name else self.top, dot, env or {})


def annotations(rule_uid: str, labels: dict[str, str], values: dict[str, float]) -> dict[str, str]:
    """A rule's annotations as Grafana renders them at evaluation ($labels, $values)."""
    rule = next(r for r in alerting.all_rules() if r["uid"] == rule_uid)
    env = {"labels": labels, "values": {k: {"Value": v, "Labels": labels} for k, v in values.items()}}
    return {k: Renderer(v).render(None, None, env) for k, v in rule["annotations"].items()}


T0 = dt.datetime(2026, 3, 14, 9, 26, tzinfo=dt.UTC)
SENSOR = {"site": "site-01", "kind": "water_flow", "sensor_id": "WF00005", "zone": "CRITICAL"}


def alert(
    uid: str, labels: dict[str, str], values: dict[str, float], status: str = "firing"
) -> dict[str, Any]:
    rule = next(r for r in alerting.all_rules() if r["uid"] == uid)
    full = {"alertname": rule["title"], **labels, **rule["labels"]}
    return {
        "Status": status,
        "Labels": full,
        "Annotations": annotations(uid, labels, values),
        "StartsAt": T0,
        "DashboardURL": f"https://grafana.example/d/{rule['dashboardUid']}?orgId=1",
    }


def group(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    common = dict.fromkeys(alerts[0]["Labels"])
    common = {
        k: alerts[0]["Labels"][k]
        for k in common
        if all(a["Labels"].get(k) == alerts[0]["Labels"][k] for a in alerts)
    }
    firing = [a for a in alerts if a["Status"] == "firing"]
    return {
        "Status": "firing" if firing else "resolved",
        "Alerts": {"Firing": firing, "Resolved": [a for a in alerts if a["Status"] == "resolved"]},
        "CommonLabels": common,
    }


TEMPLATES = Renderer(alerting.TEMPLATES)


def test_critical_page_reads_on_a_phone() -> None:
    a = alert("iw-risk-critical", SENSOR, {"B": 3, "C": 1, "U": 0.5, "L": 0.12})
    title = TEMPLATES.render("iw.title", group([a]))
    assert title == "[FIRING 1] Sensor risk CRITICAL · CRITICAL"
    body = TEMPLATES.render("iw.message", group([a])).strip()
    lines = body.splitlines()
    assert lines[0] == "🔴 CRITICAL risk at WF00005 (water_flow, zone CRITICAL, site site-01)"
    assert "burst_probability 0.50" in lines[1]
    assert "leak_probability 0.12" in lines[1]
    assert "contamination" not in lines[1]  # scores the sensor does not have are left out
    assert lines[2] == "Since 09:26 UTC 14 Mar"
    assert lines[3] == "Open: https://grafana.example/d/iw-sensor?orgId=1&var-site=site-01&var-sensor=WF00005"
    assert lines[4].startswith("Runbook: ")
    assert lines[4].endswith("#risk-critical")
    assert len(lines) == 5


def test_group_of_maintenance_alerts_and_a_resolved_one() -> None:
    silent = [
        alert("iw-sensor-silent", {**SENSOR, "sensor_id": s, "zone": "STANDARD"}, {"B": 0})
        for s in ("A1", "A2")
    ]
    done = alert("iw-sensor-silent", {**SENSOR, "sensor_id": "A3", "zone": "STANDARD"}, {"B": 0}, "resolved")
    g = group([*silent, done])
    assert TEMPLATES.render("iw.title", g) == "[FIRING 2] Sensor silent · STANDARD"
    body = TEMPLATES.render("iw.message", g)
    blocks = [b for b in body.strip().split("\n\n") if b]
    assert [b.splitlines()[0][:2].strip() for b in blocks] == ["🔴", "🔴", "✅"]
    assert "A3 silent for 30 min" in blocks[2]


@pytest.mark.parametrize("uid", [r["uid"] for r in alerting.all_rules()])
def test_every_rule_renders_short_plain_lines(uid: str) -> None:
    labels = {**SENSOR, "worker": "worker-1"}
    values = {"B": 2.0, "PH": 5.5, "TU": 0.4, "CL": 0.5, "P": 10.0, "U": 0.31}
    g = group([alert(uid, labels, values)])
    text = TEMPLATES.render("iw.title", g) + "\n" + TEMPLATES.render("iw.message", g)
    assert NO_VALUE not in text
    assert "{{" not in text
    assert "$" not in text
    assert len(TEMPLATES.render("iw.title", g)) <= 60
    for line in text.splitlines():
        assert len(line) <= 200, line  # one phone screen width of wrapped text at most
