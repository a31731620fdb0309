"""Grafana's InfluxQL macros and template variables, expanded as Grafana expands them.

Template variables first (the frontend's templateSrv): `$var`, `${var}`, `${var:format}`,
`[[var]]`; a multi-value or include-All variable renders in regex form — each value regex-escaped,
several joined as `(a|b)` — and All with a custom all value renders that value as is. Then the
InfluxQL data source's macros (Grafana's backend, `pkg/tsdb/influxdb/influxql`): `$timeFilter` and
`$__timeFilter` → `time >= {from}ms and time <= {to}ms`, `$__interval_ms`, `$__interval`
(`$interval`), and the global `$__from`/`$__to` (epoch ms). `$__interval` is Grafana's
(to − from) / maxDataPoints rounded to a "nice" interval, at least the panel's min interval or the
data source's `timeInterval`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ALL = "$__all"
# templateSrv's variable pattern: $name | [[name(:fmt)]] | ${name(.path)(:fmt)}
_VAR = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
# macros the backend expands after the frontend's variables (left alone by interpolate())
BACKEND = {"timeFilter", "__timeFilter", "__interval", "__interval_ms", "interval"}

# Grafana's roundInterval (gtime): upper bound of the calculated interval (ms) → interval (ms)
_ROUND: tuple[tuple[int, int], ...] = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
    (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
    (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
    (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (172800000, 86400000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
)  # fmt: skip
_UNITS = (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")


def round_interval(ms: float) -> int:
    for bound, value in _ROUND:
        if ms <= bound:
            return value
    return 365 * 86_400_000


def format_interval(ms: int) -> str:
    """Grafana's FormatInterval: the largest whole unit (1d, 2h, 10s, 200ms)."""
    for unit, size in _UNITS:
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def parse_duration_ms(text: str) -> int:
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"not a Grafana interval: {text!r}")
    size = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
    return int(m.group(1)) * size.get(m.group(2), 365 * 86_400_000)


def interval_ms(
    from_ms: int, to_ms: int, max_data_points: int = 1000, min_interval: str | None = "10s"
) -> int:
    """Grafana's calculated `$__interval` in ms."""
    calc = round_interval((to_ms - from_ms) / max(1, max_data_points))
    floor = parse_duration_ms(min_interval) if min_interval else 1
    return max(calc, floor)


@dataclass
class Variable:
    """A dashboard template variable's current state as the frontend holds it."""

    name: str
    value: str | list[str]  # ALL for "All"
    options: list[str] = field(default_factory=list)  # for All without a custom all value
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None

    @classmethod
    def from_json(
        cls, v: Mapping[str, object], value: str | list[str], options: Sequence[str] = ()
    ) -> Variable:
        all_value = v.get("allValue")
        return cls(
            name=str(v["name"]),
            value=value,
            options=list(options),
            multi=bool(v.get("multi")),
            include_all=bool(v.get("includeAll")),
            all_value=str(all_value) if all_value else None,
        )


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def _format(var: Variable, values: list[str], fmt: str | None) -> str:  # noqa: PLR0911 - one return per Grafana format
    if fmt is None:
        # the InfluxDB data source's interpolateQueryExpr
        if not var.multi and not var.include_all:
            return values[0] if len(values) == 1 else ",".join(values)
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "regex":
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "raw":
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise ValueError(f"format {fmt!r} of ${{{var.name}}} is not implemented")


def interpolate(text: str, variables: Mapping[str, Variable], *, from_ms: int, to_ms: int) -> str:
    """The frontend's templateSrv.replace: dashboard variables and the global $__from/$__to.
    Unknown names (the backend macros, `$tag_x` aliases) are left as they are."""
    globals_ = {"__from": str(from_ms), "__to": str(to_ms)}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in globals_:
            return globals_[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)
        value = var.value
        if value in (ALL, [ALL]):
            if var.all_value is not None and fmt not in ("text", "queryparam"):
                return var.all_value  # a custom all value is not formatted
            values = list(var.options)
        else:
            values = [value] if isinstance(value, str) else list(value)
        return _format(var, values, fmt)

    return _VAR.sub(sub, text)


def expand_macros(query: str, *, from_ms: int, to_ms: int, interval: int) -> str:
    """The InfluxQL backend's macros (after the variables)."""
    time_filter = f"time >= {from_ms}ms and time <= {to_ms}ms"
    q = query.replace("$timeFilter", time_filter).replace("$__timeFilter", time_filter)
    q = q.replace("$__interval_ms", str(interval))
    return q.replace("$__interval", format_interval(interval)).replace("$interval", format_interval(interval))


def render(
    query: str,
    variables: Mapping[str, Variable] | None = None,
    *,
    from_ms: int,
    to_ms: int,
    max_data_points: int = 1000,
    min_interval: str | None = "10s",
) -> str:
    """A panel target's query as InfluxDB receives it from Grafana."""
    q = interpolate(query, variables or {}, from_ms=from_ms, to_ms=to_ms)
    iv = interval_ms(from_ms, to_ms, max_data_points, min_interval)
    return expand_macros(q, from_ms=from_ms, to_ms=to_ms, interval=iv)


def names_used(text: str) -> set[str]:
    """Variable names a query refers to."""
    return {m.group(1) or m.group(2) or m.group(4) for m in _VAR.finditer(text)}
