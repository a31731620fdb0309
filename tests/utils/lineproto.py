"""A small, independent InfluxDB line-protocol reader for tests (escaping per InfluxDB 1.x)."""

from __future__ import annotations

from dataclasses import dataclass, field

Value = float | int | str | bool


@dataclass
class Point:
    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Value] = field(default_factory=dict)
    timestamp: int = 0


def _split(s: str, sep: str, *, quotes: bool) -> list[str]:
    out, cur, in_q, i = [], [], False, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if quotes and c == '"':
            in_q = not in_q
        if c == sep and not in_q:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _value(v: str) -> Value:
    if v.startswith('"'):
        assert v.endswith('"'), v
        return _unescape(v[1:-1])
    if v.endswith("i"):
        return int(v[:-1])
    if v in ("true", "false"):
        return v == "true"
    return float(v)


def parse_line(line: str) -> Point:
    parts = _split(line, " ", quotes=True)
    assert len(parts) == 3, f"expected 'head fields ts': {line!r}"
    head = _split(parts[0], ",", quotes=False)
    p = Point(_unescape(head[0]), timestamp=int(parts[2]))
    for kv in head[1:]:
        k, v = _split(kv, "=", quotes=False)
        p.tags[_unescape(k)] = _unescape(v)
    for kv in _split(parts[1], ",", quotes=True):
        k, v = _split(kv, "=", quotes=True)
        p.fields[_unescape(k)] = _value(v)
    return p


def parse(data: bytes) -> list[Point]:
    return [parse_line(line) for line in data.decode("utf-8").splitlines() if line]
