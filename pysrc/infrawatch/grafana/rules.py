"""Grafana-managed alert rules evaluated as Grafana evaluates them (server-side expressions).

A rule is a DAG of nodes by refId: data queries (run against InfluxDB, `$timeFilter` from the
node's relativeTimeRange), and expressions — `reduce` (last/mean/max/min/sum/count/median, modes
strict, dropNN, replaceNN), `math` ($A-style variables, arithmetic, comparisons, && || !, abs),
`threshold` (gt, lt, within_range, outside_range and their _included twins) and
`classic_conditions`. Label matching between two sets of numbers follows Grafana's union rule:
a single unlabelled item pairs with everything; else items pair when one's labels are a subset
of the other's; else, one item on each side pair anyway.

The condition's numbers give the states: non-zero → Alerting, zero → Normal, null → NoData; no
numbers at all → NoData, mapped by the rule's noDataState (NoData, Alerting, OK, KeepLast); a
query or expression error → execErrState.
"""

from __future__ import annotations

import ast
import math as _math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Labels = dict[str, str]


@dataclass
class Series:
    labels: Labels
    points: list[tuple[int, float | None]]


@dataclass
class Number:
    labels: Labels
    value: float | None


Value = list[Series] | list[Number]
# run(query_node, from_ms, to_ms) -> series: the caller executes the data query
Runner = Callable[[Mapping[str, Any], int, int], list[Series]]


class EvalError(Exception):
    """An expression Grafana would refuse (an unknown refId, a series where a number is due, …)."""


@dataclass
class Instance:
    labels: Labels
    state: str  # Alerting, Normal, NoData, Error
    value: float | None


@dataclass
class Evaluation:
    rule_uid: str
    instances: list[Instance]
    values: dict[str, Value] = field(default_factory=dict)
    error: str | None = None

    def firing(self) -> list[Labels]:
        return [i.labels for i in self.instances if i.state == "Alerting"]


def _finite(v: float | None) -> bool:
    return v is not None and _math.isfinite(v)


def reduce_values(  # noqa: PLR0911 - one return per reducer, as Grafana's table
    values: list[float | None], reducer: str, mode: str = "strict", replace: float = 0.0
) -> float | None:
    if mode == "dropNN":
        vals: list[float] = [v for v in values if _finite(v)]  # type: ignore[misc]
    elif mode == "replaceNN":
        vals = [v if _finite(v) else replace for v in values]  # type: ignore[misc]
    else:
        if any(v is None or _math.isnan(v) for v in values):
            return float("nan") if reducer != "count" else float(len(values))
        vals = [float(v) for v in values if v is not None]
    if reducer == "count":
        return float(len(vals))
    if reducer == "sum":
        return float(sum(vals))
    if not vals:
        return float("nan")
    if reducer == "last":
        return vals[-1]
    if reducer == "mean":
        return sum(vals) / len(vals)
    if reducer == "max":
        return max(vals)
    if reducer == "min":
        return min(vals)
    if reducer == "median":
        s = sorted(vals)
        k = len(s) // 2
        return s[k] if len(s) % 2 else (s[k - 1] + s[k]) / 2
    raise EvalError(f"unknown reducer {reducer!r}")


def _subset(a: Labels, b: Labels) -> bool:
    return all(b.get(k) == v for k, v in a.items())


def union(a: list[Number], b: list[Number]) -> list[tuple[Labels, Number, Number]]:
    if len(a) == 1 and not a[0].labels:  # a scalar or an unlabelled number applies to all
        return [(y.labels, a[0], y) for y in b]
    if len(b) == 1 and not b[0].labels:
        return [(x.labels, x, b[0]) for x in a]
    out: list[tuple[Labels, Number, Number]] = []
    for x in a:
        for y in b:
            if _subset(x.labels, y.labels) or _subset(y.labels, x.labels):
                out.append((x.labels if len(x.labels) >= len(y.labels) else y.labels, x, y))
    if not out and len(a) == 1 and len(b) == 1:
        out.append((a[0].labels, a[0], b[0]))
    return out


_BIN: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y if y != 0 else (_math.nan if x == 0 else _math.copysign(_math.inf, x)),
    ast.Mod: lambda x, y: _math.fmod(x, y) if y != 0 else _math.nan,
    ast.Pow: lambda x, y: x**y,
    ast.BitAnd: lambda x, y: float(x != 0 and y != 0),  # && (Go: NaN != 0 is true)
    ast.BitOr: lambda x, y: float(x != 0 or y != 0),  # ||
}
_CMP: dict[type, Callable[[float, float], bool]] = {
    ast.Gt: lambda x, y: x > y,
    ast.Lt: lambda x, y: x < y,
    ast.GtE: lambda x, y: x >= y,
    ast.LtE: lambda x, y: x <= y,
    ast.Eq: lambda x, y: x == y,
    ast.NotEq: lambda x, y: x != y,
}
_FUNCS: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "log": lambda x: _math.log(x) if x > 0 else _math.nan,
    "is_nan": lambda x: float(_math.isnan(x)),
    "is_null": lambda x: 0.0,
}


def _to_python(expression: str) -> str:
    """Grafana's math syntax in Python's: $A → A, && → &, || → |, ! → ~ (precedence as in Go:
    comparisons bind tighter than && and ||, which Python's & | do not — so parenthesise them)."""
    e = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", r"__v_\1", expression)
    e = re.sub(r"!(?!=)", "~", e)
    parts = re.split(r"(&&|\|\|)", e)
    return "".join(" & " if p == "&&" else " | " if p == "||" else f"({p})" for p in parts)


def math_expression(expression: str, env: Mapping[str, list[Number]]) -> list[Number]:
    tree = ast.parse(_to_python(expression), mode="eval")

    def ev(node: ast.AST) -> list[Number]:  # noqa: PLR0911 - one return per node type
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return [Number({}, float(node.value))]
        if isinstance(node, ast.Name):
            name = node.id.removeprefix("__v_")
            if name not in env:
                raise EvalError(f"math: ${name} is not a refId of this rule")
            return env[name]
        if isinstance(node, ast.UnaryOp):
            vals = ev(node.operand)
            if isinstance(node.op, ast.USub):
                return [Number(n.labels, None if n.value is None else -n.value) for n in vals]
            if isinstance(node.op, ast.Invert):  # !
                return [Number(n.labels, None if n.value is None else float(n.value == 0)) for n in vals]
            raise EvalError(f"math: unsupported unary operator in {expression!r}")
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            fn = _BIN[type(node.op)]
            return [
                Number(lbl, None if x.value is None or y.value is None else fn(x.value, y.value))
                for lbl, x, y in union(ev(node.left), ev(node.right))
            ]
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
            cmp = _CMP[type(node.ops[0])]
            return [
                Number(lbl, None if x.value is None or y.value is None else float(cmp(x.value, y.value)))
                for lbl, x, y in union(ev(node.left), ev(node.comparators[0]))
            ]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            fn1 = _FUNCS[node.func.id]
            return [Number(n.labels, None if n.value is None else fn1(n.value)) for n in ev(node.args[0])]
        raise EvalError(f"math: unsupported expression {ast.dump(node)[:80]} in {expression!r}")

    return ev(tree)


def threshold_test(kind: str, params: list[float], x: float) -> bool:
    if kind == "gt":
        return x > params[0]
    if kind == "lt":
        return x < params[0]
    if kind == "within_range":
        return params[0] < x < params[1]
    if kind == "outside_range":
        return x < params[0] or x > params[1]
    if kind == "within_range_included":
        return params[0] <= x <= params[1]
    if kind == "outside_range_included":
        return x <= params[0] or x >= params[1]
    raise EvalError(f"unknown threshold type {kind!r}")


def _numbers(value: Value, what: str) -> list[Number]:
    if value and isinstance(value[0], Series):
        raise EvalError(f"{what} needs numbers: reduce the series first")
    return value  # type: ignore[return-value]


def _series(value: Value, what: str) -> list[Series]:
    if value and isinstance(value[0], Number):
        raise EvalError(f"{what} needs series, got numbers")
    return value  # type: ignore[return-value]


def _classic(model: Mapping[str, Any], values: Mapping[str, Value]) -> list[Number]:
    result: bool | None = None
    no_data = True
    for cond in model["conditions"]:
        ref = cond["query"]["params"][0]
        reducer = cond.get("reducer", {}).get("type", "last")
        ev = cond["evaluator"]
        hit = False
        for s in _series(values[ref], "classic condition"):
            if s.points:
                no_data = False
            r = reduce_values([v for _, v in s.points], reducer, "dropNN")
            if r is not None and not _math.isnan(r) and threshold_test(ev["type"], ev.get("params", [0]), r):
                hit = True
        op = cond.get("operator", {}).get("type", "and")
        result = hit if result is None else (result and hit if op == "and" else result or hit)
    if no_data:
        return [Number({}, None)]
    return [Number({}, float(bool(result)))]


def evaluate(rule: Mapping[str, Any], run: Runner, now_ms: int) -> Evaluation:
    """Evaluate `rule` (provisioning format) once at `now_ms`."""
    nodes = {d["refId"]: d for d in rule["data"]}
    values: dict[str, Value] = {}

    def value(ref: str, stack: tuple[str, ...] = ()) -> Value:
        if ref in values:
            return values[ref]
        if ref not in nodes or ref in stack:
            raise EvalError(f"refId {ref!r} unknown or circular in rule {rule['uid']}")
        node = nodes[ref]
        model = node["model"]
        if node["datasourceUid"] != "__expr__":
            rel = node.get("relativeTimeRange", {"from": 600, "to": 0})
            out: Value = run(node, now_ms - int(rel["from"]) * 1000, now_ms - int(rel.get("to", 0)) * 1000)
        else:
            kind = model["type"]
            deps = (*stack, ref)
            if kind == "reduce":
                settings = model.get("settings") or {}
                src = _series(value(model["expression"].lstrip("$"), deps), f"reduce {ref}")
                out = [
                    Number(
                        s.labels,
                        reduce_values(
                            [v for _, v in s.points],
                            model["reducer"],
                            settings.get("mode", "strict"),
                            float(settings.get("replaceWithValue", 0)),
                        ),
                    )
                    for s in src
                ]
            elif kind == "math":
                names = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", model["expression"]))
                env = {n: _numbers(value(n, deps), f"math {ref}") for n in names}
                out = math_expression(model["expression"], env)
            elif kind == "threshold":
                ev = model["conditions"][0]["evaluator"]
                src_n = _numbers(value(model["expression"].lstrip("$"), deps), f"threshold {ref}")
                out = [
                    Number(
                        n.labels,
                        None if n.value is None else float(threshold_test(ev["type"], ev["params"], n.value)),
                    )
                    for n in src_n
                ]
            elif kind == "classic_conditions":
                for cond in model["conditions"]:
                    value(cond["query"]["params"][0], deps)
                out = _classic(model, values)
            else:
                raise EvalError(f"expression type {kind!r} is not implemented")
        values[ref] = out
        return out

    try:
        for ref in nodes:
            value(ref)
        cond = _numbers(values[rule["condition"]], "the condition")
    except Exception as e:  # a query or expression error → execErrState
        state = {"Alerting": "Alerting", "OK": "Normal"}.get(rule.get("execErrState", "Error"), "Error")
        return Evaluation(rule["uid"], [Instance({}, state, None)], values, error=str(e))
    if not cond:
        state = {"Alerting": "Alerting", "OK": "Normal"}.get(rule.get("noDataState", "NoData"), "NoData")
        return Evaluation(rule["uid"], [Instance({}, state, None)], values)
    instances = []
    for n in cond:
        if n.value is None:
            st = {"Alerting": "Alerting", "OK": "Normal"}.get(rule.get("noDataState", "NoData"), "NoData")
        else:
            st = "Alerting" if n.value != 0 else "Normal"
        instances.append(Instance(n.labels, st, n.value))
    return Evaluation(rule["uid"], instances, values)


def influx_series(series: list[Mapping[str, Any]]) -> list[Series]:
    """InfluxDB /query series as Grafana's InfluxQL data source frames them: one frame per value
    column of each series, labelled by the series' tags (times in ns here)."""
    out = []
    for s in series:
        tags = {k: str(v) for k, v in (s.get("tags") or {}).items()}
        cols = s["columns"]
        for j, col in enumerate(cols):
            if col == "time":
                continue
            pts = [(int(row[0]), None if row[j] is None else float(row[j])) for row in s["values"]]
            out.append(Series(dict(tags), pts))
    return out
