"""Grafana's semantics, unit by unit: macro and variable expansion, reduce modes, math label
matching, thresholds, classic conditions, and the no-data / error states."""

from __future__ import annotations

import math
from typing import Any

import pytest

from infrawatch.grafana import macros, rules
from infrawatch.grafana.rules import Number, Series

# ---------------------------------------------------------------- macros

FROM, TO = 1_700_000_000_000, 1_700_021_600_000  # a 6 h range


def test_time_filter_and_interval_as_the_backend_renders_them() -> None:
    q = macros.render(
        "SELECT mean(x) FROM r WHERE $timeFilter GROUP BY time($__interval)", from_ms=FROM, to_ms=TO
    )
    # 6 h / 1000 points = 21.6 s → Grafana rounds to 20s
    assert q == f"SELECT mean(x) FROM r WHERE time >= {FROM}ms and time <= {TO}ms GROUP BY time(20s)"
    assert (
        macros.render("$__timeFilter $__interval_ms", from_ms=FROM, to_ms=TO)
        == f"time >= {FROM}ms and time <= {TO}ms 20000"
    )
    assert macros.render("$__from-$__to ${__from}", from_ms=FROM, to_ms=TO) == f"{FROM}-{TO} {FROM}"


@pytest.mark.parametrize(
    ("span_ms", "points", "min_interval", "expect"),
    [
        (3_600_000, 1000, None, "5s"),  # 3.6 s → 5s
        (3_600_000, 1000, "10s", "10s"),  # the datasource's min interval wins
        (7 * 86_400_000, 1000, "10s", "10m"),  # 604.8 s → 10m
        (90 * 86_400_000, 1000, "10s", "2h"),  # 2.16 h → 2h
        (5 * 365 * 86_400_000, 800, "10s", "1d"),
    ],
)
def test_interval_rounding(span_ms: int, points: int, min_interval: str | None, expect: str) -> None:
    iv = macros.interval_ms(0, span_ms, points, min_interval)
    assert macros.format_interval(iv) == expect


def _var(
    name: str, value: str | list[str], *, multi: bool = True, all_value: str | None = None
) -> macros.Variable:
    return macros.Variable(
        name, value, options=["a.b", "c"], multi=multi, include_all=multi, all_value=all_value
    )


def test_template_variables_as_grafana_renders_them_for_influxql() -> None:
    def r(text: str, **vs: macros.Variable) -> str:
        return macros.interpolate(text, vs, from_ms=FROM, to_ms=TO)

    assert r("/^$site$/", site=_var("site", ["a.b", "c"])) == "/^(a\\.b|c)$/"
    assert r("/^${site}$/", site=_var("site", ["a.b"])) == "/^a\\.b$/"
    assert (
        r("/^$site$/", site=_var("site", macros.ALL, all_value=".*")) == "/^.*$/"
    )  # a custom all value, as is
    assert r("/^$site$/", site=_var("site", macros.ALL)) == "/^(a\\.b|c)$/"  # All = every option
    assert r("'$sensor'", sensor=_var("sensor", "S.1", multi=False)) == "'S.1'"  # single value: not escaped
    assert (
        r("${s:regex}|${s:pipe}|${s:csv}|${s:singlequote}", s=_var("s", ["a.b", "c"]))
        == "(a\\.b|c)|a.b|c|a.b,c|'a.b','c'"
    )
    assert r("[[tier]].reading", tier=_var("tier", "rollup_1m", multi=False)) == "rollup_1m.reading"
    # unknown names are Grafana's backend macros or legend aliases: left alone
    assert r("$timeFilter $tag_zone $__interval") == "$timeFilter $tag_zone $__interval"


def test_names_used() -> None:
    assert macros.names_used('"$tier"."r" WHERE a =~ /^${site:regex}$/ AND [[x]] AND $timeFilter') == {
        "tier",
        "site",
        "x",
        "timeFilter",
    }


# ---------------------------------------------------------------- reduce

NAN = float("nan")


@pytest.mark.parametrize(
    ("reducer", "mode", "values", "expect"),
    [
        ("last", "strict", [1.0, 2.0, 3.0], 3.0),
        ("mean", "strict", [1.0, 2.0, 3.0], 2.0),
        ("max", "strict", [1.0, 5.0, 3.0], 5.0),
        ("min", "strict", [4.0, 2.0, 3.0], 2.0),
        ("sum", "strict", [1.0, 2.0], 3.0),
        ("count", "strict", [1.0, None, 3.0], 3.0),
        ("last", "strict", [1.0, None], NAN),  # strict: any null or NaN → NaN
        ("mean", "strict", [1.0, NAN], NAN),
        ("last", "dropNN", [1.0, 2.0, None], 2.0),  # dropNN: nulls, NaN and ±Inf are dropped
        ("mean", "dropNN", [1.0, NAN, 3.0, math.inf], 2.0),
        ("count", "dropNN", [1.0, None, NAN], 1.0),
        ("last", "dropNN", [None, NAN], NAN),  # nothing left
        ("sum", "dropNN", [None], 0.0),
        ("last", "replaceNN", [1.0, None], -1.0),  # replaced by replaceWithValue (-1 here)
        ("median", "strict", [5.0, 1.0, 3.0, 2.0], 2.5),
    ],
)
def test_reduce(reducer: str, mode: str, values: list[float | None], expect: float) -> None:
    got = rules.reduce_values(values, reducer, mode, replace=-1.0)
    assert got is not None
    assert (math.isnan(got) and math.isnan(expect)) or got == expect


# ---------------------------------------------------------------- math and thresholds


def n(value: float, **labels: str) -> Number:
    return Number(dict(labels), value)


def test_math_pairs_by_labels_and_scalars_apply_to_all() -> None:
    a = [n(1, s="x"), n(5, s="y")]
    b = [n(2, s="x"), n(2, s="y"), n(9, s="z")]
    out = {x.labels["s"]: x.value for x in rules.math_expression("$A > $B && $A > 2", {"A": a, "B": b})}
    assert out == {"x": 0.0, "y": 1.0}  # z has no partner in A: dropped
    # a subset of labels matches the more specific series, whose labels the result keeps
    c = [n(3, site="1")]
    d = [n(1, site="1", sensor="a"), n(4, site="1", sensor="b"), n(4, site="2", sensor="c")]
    got = rules.math_expression("$D - $C", {"C": c, "D": d})
    assert [(x.labels, x.value) for x in got] == [
        ({"site": "1", "sensor": "a"}, -2.0),
        ({"site": "1", "sensor": "b"}, 1.0),
    ]
    assert rules.math_expression("abs($C - 10) || !$C", {"C": c})[0].value == 1.0
    assert (
        rules.math_expression("$C / 0", {"C": [n(0)]})[0].value
        != rules.math_expression("$C", {"C": [n(0)]})[0].value
    )


def test_math_refuses_unknown_refs() -> None:
    with pytest.raises(rules.EvalError):
        rules.math_expression("$Z > 1", {"A": [n(1)]})


@pytest.mark.parametrize(
    ("kind", "params", "x", "expect"),
    [
        ("gt", [2], 2.0, False),
        ("gt", [2], 2.1, True),
        ("lt", [1], 0.0, True),
        ("within_range", [1.5, 2.5], 2.0, True),
        ("within_range", [1.5, 2.5], 2.5, False),  # exclusive
        ("outside_range", [6.5, 8.5], 5.5, True),
        ("within_range_included", [2, 3], 3.0, True),
        ("gt", [0], NAN, False),
    ],
)
def test_threshold(kind: str, params: list[float], x: float, expect: bool) -> None:
    assert rules.threshold_test(kind, params, x) is expect


# ---------------------------------------------------------------- whole rules and states


def _rule(data: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "uid": "t",
        "condition": "C",
        "data": data,
        "noDataState": "NoData",
        "execErrState": "Error",
        **kw,
    }


def q(ref: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasourceUid": "ds",
        "relativeTimeRange": {"from": 600, "to": 0},
        "model": {"query": ref},
    }


def e(ref: str, **model: Any) -> dict[str, Any]:
    return {"refId": ref, "datasourceUid": "__expr__", "model": model}


REDUCE_THRESHOLD = [
    q("A"),
    e("B", type="reduce", expression="A", reducer="last", settings={"mode": "dropNN"}),
    e("C", type="threshold", expression="B", conditions=[{"evaluator": {"type": "gt", "params": [1]}}]),
]


def runner(series: dict[str, list[Series]], seen: list[tuple[int, int]] | None = None) -> rules.Runner:
    def run(node: Any, frm: int, to: int) -> list[Series]:
        if seen is not None:
            seen.append((frm, to))
        if node["model"]["query"] == "boom":
            raise RuntimeError("InfluxDB said no")
        return series[node["refId"]]

    return run


def test_states_per_series_and_the_time_range() -> None:
    seen: list[tuple[int, int]] = []
    data = {
        "A": [
            Series({"s": "x"}, [(1, 5.0), (2, None)]),
            Series({"s": "y"}, [(1, 0.0)]),
            Series({"s": "z"}, [(1, None)]),
        ]
    }
    ev = rules.evaluate(_rule(REDUCE_THRESHOLD), runner(data, seen), now_ms=1_000_000)
    assert {i.labels["s"]: i.state for i in ev.instances} == {"x": "Alerting", "y": "Normal", "z": "Normal"}
    assert seen == [(400_000, 1_000_000)]  # relativeTimeRange 600 s → 0


def test_no_data_and_error_states_follow_the_rule_settings() -> None:
    empty = runner({"A": []})
    assert [i.state for i in rules.evaluate(_rule(REDUCE_THRESHOLD), empty, 0).instances] == ["NoData"]
    assert [
        i.state for i in rules.evaluate(_rule(REDUCE_THRESHOLD, noDataState="Alerting"), empty, 0).instances
    ] == ["Alerting"]
    assert [
        i.state for i in rules.evaluate(_rule(REDUCE_THRESHOLD, noDataState="OK"), empty, 0).instances
    ] == ["Normal"]
    boom = [{**q("A"), "model": {"query": "boom"}}, *REDUCE_THRESHOLD[1:]]
    ev = rules.evaluate(_rule(boom), runner({}), 0)
    assert [i.state for i in ev.instances] == ["Error"]
    assert ev.error
    ev = rules.evaluate(_rule(boom, execErrState="Alerting"), runner({}), 0)
    assert [i.state for i in ev.instances] == ["Alerting"]
    # a threshold straight on series is refused, as Grafana refuses it
    unreduced = [
        q("A"),
        e("C", type="threshold", expression="A", conditions=[{"evaluator": {"type": "gt", "params": [1]}}]),
    ]
    assert (
        rules.evaluate(_rule(unreduced), runner({"A": [Series({}, [(1, 2.0)])]}), 0).instances[0].state
        == "Error"
    )


def cond(ref: str, reducer: str, kind: str, value: float, op: str) -> dict[str, Any]:
    return {
        "query": {"params": [ref]},
        "reducer": {"type": reducer},
        "evaluator": {"type": kind, "params": [value]},
        "operator": {"type": op},
    }


def test_classic_condition_is_one_alert_for_any_matching_series() -> None:
    classic = [
        q("A"),
        q("B"),
        e(
            "C",
            type="classic_conditions",
            conditions=[
                cond("A", "max", "gt", 10, "and"),
                cond("B", "last", "lt", 1, "or"),
            ],
        ),
    ]  # fmt: skip
    data = {
        "A": [Series({"w": "1"}, [(1, 3.0)]), Series({"w": "2"}, [(1, 30.0)])],
        "B": [Series({}, [(1, 5.0)])],
    }
    ev = rules.evaluate(_rule(classic), runner(data), 0)
    assert [(i.labels, i.state) for i in ev.instances] == [({}, "Alerting")]
    data["A"] = [Series({"w": "1"}, [(1, 3.0)])]
    assert rules.evaluate(_rule(classic), runner(data), 0).instances[0].state == "Normal"
    data = {"A": [Series({}, [])], "B": [Series({}, [])]}
    assert rules.evaluate(_rule(classic), runner(data), 0).instances[0].state == "NoData"


def test_influx_series_become_one_frame_per_value_column() -> None:
    out = rules.influx_series(
        [{"name": "r", "tags": {"s": "x"}, "columns": ["time", "a", "b"], "values": [[1, 1, None]]}]
    )
    assert [(s.labels, s.points) for s in out] == [({"s": "x"}, [(1, 1.0)]), ({"s": "x"}, [(1, None)])]
