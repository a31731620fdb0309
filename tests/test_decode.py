"""`core.decode` against an independent pure-Python reference decoder.

The reference (`ref_decode`) is written from DESIGN.md §1 and the decode brief with the standard
`json` module, `decimal` and `datetime`; it shares no code with the Rust scanner. Hypothesis
generates valid and invalid payloads (both payload shapes, aliases in any case, gateway arrays,
every timestamp form, unknown fields, duplicate keys, wrong types, Python's NaN/Infinity tokens)
plus byte-level mutations and random bytes, and the decoder must give the same readings and the
same `(index, reason code)` errors. Every reason code also has one focused example.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrawatch import core

# ----------------------------------------------------------------------------------------------
# The reference decoder (DESIGN.md §1 and the decode brief)
# ----------------------------------------------------------------------------------------------

MAX_PAYLOAD = 64 * 1024
MAX_DEPTH = 16
MAX_FIELDS = 64
MAX_GATEWAY = 10_000
MAX_TS_DIGITS = 38  # significant digits of an epoch number (docs/reason-codes.md)
I64_MAX = 2**63 - 1
KINDS = ("water_flow", "water_quality", "energy")
RECEIVED_NS = 1_769_000_000_123_456_789

# DESIGN.md §1, in table order (the column order of decoded batches).
CANONICAL: dict[str, tuple[str, ...]] = {
    "pressure_bar": ("pressure",),
    "flow_rate_lps": ("flow", "flow_rate"),
    "temperature_c": ("temp", "temperature"),
    "total_flow_m3": ("total_flow", "volume"),
    "ph": (),
    "turbidity_ntu": ("turbidity",),
    "dissolved_oxygen_mgl": ("dissolved_oxygen", "do"),
    "conductivity_uscm": ("conductivity",),
    "chlorine_mgl": ("chlorine",),
    "redox_mv": ("redox",),
    "nitrate_mgl": ("nitrates",),
    "phosphate_mgl": ("phosphates",),
    "heavy_metals_ugl": ("heavy_metals",),
    "energy_kwh": ("kwh",),
    "voltage_v": ("voltage",),
    "current_a": ("current",),
    "power_factor": (),
    "occupancy": (),
    "outdoor_temperature_c": (),
    "humidity_pct": (),
    "battery_level": ("battery",),
    "signal_strength_dbm": ("signal_strength", "rssi"),
}
ALIAS = {n: c for c, aliases in CANONICAL.items() for n in (c, *aliases)}
CANONICAL_ORDER = {c: i for i, c in enumerate(CANONICAL)}

# Reserved (non-measurement) keys; keys in one group count as the same key.
GROUP = {
    "sensor_id": "sensor_id",
    "kind": "kind",
    "site": "site",
    "zone": "zone",
    "facility_zone": "zone",
    "timestamp": "timestamp",
    "ts": "timestamp",
    "time": "timestamp",
    "location": "location",
    "gateway_id": "gateway_id",
    "last_calibration": "last_calibration",
    "device_metadata": "device_metadata",
    "measurements": "measurements",
}
# Names an unknown field may not take: the reserved keys, and the tag/verdict/alert names written
# on the same InfluxDB points (DESIGN.md §3).
RESERVED_NAMES = set(GROUP) | {
    "leak_probability",
    "burst_probability",
    "contamination_probability",
    "anomaly_score",
    "expected_kwh",
    "anomaly_type",
    "risk",
    "risk_level",
    "confidence",
    "model_version",
    "severity",
    "alert_type",
    "message",
}
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
INT_RE = re.compile(r"-?[0-9]+")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class Obj(list):  # type: ignore[type-arg]
    """A JSON object as its list of (key, value) pairs: order and duplicates kept."""


@dataclass(frozen=True)
class Num:
    """A JSON number token, kept as text (exact timestamps, integer sensor ids)."""

    text: str


@dataclass(frozen=True)
class NonFinite:
    """Python's NaN / Infinity / -Infinity tokens."""

    text: str


class RejectError(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


def ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def tag_ok(s: str) -> bool:
    """1..128 UTF-8 bytes, no control character, no backslash."""
    return (
        0 < len(s.encode("utf-8", "surrogatepass")) <= 128
        and "\\" not in s
        and not any(unicodedata.category(c) == "Cc" for c in s)
    )


def parse_json(payload: bytes) -> Any:
    """Python's json with the decoder's extra rules; raises RejectError('invalid_json')."""
    try:
        text = payload.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=Obj, parse_int=Num, parse_float=Num, parse_constant=NonFinite
        )
    except (ValueError, RecursionError):
        raise RejectError("invalid_json") from None

    def check(v: Any, depth: int) -> None:
        if isinstance(v, str) and any("\ud800" <= c <= "\udfff" for c in v):
            raise RejectError("invalid_json")  # a lone surrogate escape
        if isinstance(v, (list, Obj)):
            if depth + 1 > MAX_DEPTH:
                raise RejectError("invalid_json")
            for item in v:
                if isinstance(v, Obj):
                    check(item[0], depth + 1)
                    check(item[1], depth + 1)
                else:
                    check(item, depth + 1)

    check(value, 0)
    return value


def ts_from_string(s: str) -> int:
    m = RFC3339_RE.fullmatch(s)
    if not m:
        raise RejectError("bad_timestamp")
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    frac, off = m.group(7), m.group(8)
    try:
        days = date(y, mo, d).toordinal() - EPOCH_ORDINAL
    except ValueError:
        raise RejectError("bad_timestamp") from None
    if h > 23 or mi > 59 or sec > 59:
        raise RejectError("bad_timestamp")
    offset = 0
    if off not in ("Z", "z"):
        oh, om = int(off[1:3]), int(off[4:6])
        if oh > 23 or om > 59:
            raise RejectError("bad_timestamp")
        offset = (oh * 3600 + om * 60) * (-1 if off[0] == "-" else 1)
    ns = (days * 86_400 + h * 3600 + mi * 60 + sec - offset) * 10**9
    ns += int((frac or "0").ljust(9, "0"))
    if not 0 <= ns <= I64_MAX:
        raise RejectError("bad_timestamp")
    return ns


def ts_from_number(text: str) -> int:
    mantissa = re.split("[eE]", text)[0].replace("-", "").replace(".", "").lstrip("0")
    if len(mantissa) > MAX_TS_DIGITS:
        raise RejectError("bad_timestamp")
    with localcontext() as ctx:
        ctx.prec = 200
        ctx.Emax = 10**9
        ctx.Emin = -(10**9)
        v = Decimal(text)
        if v == 0:
            return 0
        if v < 0 or v >= Decimal("1e30"):  # far beyond any i64 nanosecond count
            raise RejectError("bad_timestamp")
        if v < Decimal("1e11"):
            scale = 10**9  # seconds
        elif v < Decimal("1e14"):
            scale = 10**6  # milliseconds
        elif v < Decimal("1e17"):
            scale = 10**3  # microseconds
        else:
            scale = 1  # nanoseconds
        scaled = v * scale
        if scaled > I64_MAX + 1:
            raise RejectError("bad_timestamp")
        ns = int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if ns > I64_MAX:
        raise RejectError("bad_timestamp")
    return ns


@dataclass
class Reading:
    sensor_id: str
    kind: str
    site: str
    zone: str
    timestamp_ns: int
    source: int
    fields: dict[str, float]


@dataclass
class Draft:
    error: str | None = None
    groups: set[str] = field(default_factory=set)
    sensor: str | None = None
    kind: str | None = None
    site: str | None = None
    zone: str | None = None
    ts: int | None = None
    canonical: dict[str, float] = field(default_factory=dict)
    unknown: dict[str, float] = field(default_factory=dict)
    keys: int = 0
    values: int = 0

    def fail(self, code: str) -> None:
        if self.error is None:
            self.error = code


def measurement(v: Any) -> float | None:
    """A measurement value: a finite float, None for null; RejectError('bad_value') otherwise."""
    if v is None:
        return None
    if isinstance(v, Num):
        f = float(v.text)
        if math.isfinite(f):
            return f
    raise RejectError("bad_value")


def ref_field(d: Draft, key: str, v: Any) -> None:  # noqa: PLR0911 (one return per rule)
    if d.error:
        return None
    lower = ascii_lower(key)
    canonical = ALIAS.get(lower)
    try:
        value = measurement(v)
        problem = None
    except RejectError as r:
        value, problem = None, r.code
    if canonical is not None:
        if canonical in d.canonical:
            return d.fail("duplicate_field")
    else:
        if not NAME_RE.fullmatch(lower) or lower in RESERVED_NAMES:
            return d.fail("bad_field_name")
        if lower in d.unknown:
            return d.fail("duplicate_field")
    d.keys += 1
    if d.keys > MAX_FIELDS:
        return d.fail("too_many_fields")
    if problem:
        return d.fail(problem)
    (d.canonical if canonical else d.unknown)[canonical or lower] = math.nan if value is None else value
    d.values += value is not None
    return None


def ref_reading(  # noqa: PLR0912 (the rules, in order, in one place)
    obj: Obj, topic: tuple[str, ...] | None, source: int
) -> Reading:
    telemetry = topic if topic and topic[0] == "telemetry" else None
    d = Draft()
    for key, v in obj:
        lower = ascii_lower(key)
        group = GROUP.get(lower)
        if group is None:
            ref_field(d, key, v)
            continue
        if group in d.groups:
            d.fail("duplicate_field")
        d.groups.add(group)
        if group == "sensor_id":
            if isinstance(v, str):
                s: str = v
            elif isinstance(v, Num) and INT_RE.fullmatch(v.text) and not v.text.startswith("-"):
                s = v.text
            elif v is None:
                continue
            else:
                d.fail("bad_sensor_id")
                continue
            d.sensor = s
            if not tag_ok(s):
                d.fail("bad_sensor_id")
            elif telemetry and s != telemetry[3]:
                d.fail("sensor_mismatch")
        elif group == "kind":
            if v is None:
                continue
            k = ascii_lower(v) if isinstance(v, str) else None
            if k not in KINDS:
                d.fail("unknown_kind")
            else:
                if telemetry and k != telemetry[2]:
                    d.fail("kind_mismatch")
                d.kind = k
        elif group == "site":
            if v is None:
                continue
            if not isinstance(v, str) or not tag_ok(v):
                d.fail("bad_site")
            elif topic and v != topic[1]:
                d.fail("site_mismatch")
            else:
                d.site = v
        elif group == "zone":
            if v is None:
                continue
            if not isinstance(v, str) or not tag_ok(v):
                d.fail("bad_zone")
            else:
                d.zone = v
        elif group == "timestamp":
            try:
                if isinstance(v, str):
                    d.ts = ts_from_string(v)
                elif isinstance(v, Num):
                    d.ts = ts_from_number(v.text)
                elif v is not None:
                    raise RejectError("bad_timestamp")
            except RejectError as r:
                d.fail(r.code)
        elif group in ("measurements", "device_metadata"):
            if v is None:
                continue
            if not isinstance(v, Obj):
                d.fail("bad_value")
                continue
            for k2, v2 in v:
                if group == "device_metadata" and ascii_lower(k2) == "last_calibration":
                    if isinstance(v2, NonFinite):
                        d.fail("bad_value")
                else:
                    ref_field(d, k2, v2)
        elif isinstance(v, NonFinite):  # location, gateway_id, last_calibration: not stored
            d.fail("bad_value")
    if d.sensor is None and not telemetry:
        d.fail("missing_sensor_id")
    kind = telemetry[2] if telemetry else d.kind
    if kind is None:
        d.fail("unknown_kind")
    if d.values == 0:
        d.fail("no_measurements")
    if d.error:
        raise RejectError(d.error)
    assert kind is not None
    return Reading(
        sensor_id=telemetry[3] if telemetry else str(d.sensor),
        kind=kind,
        site=topic[1] if topic else (d.site or "default"),
        zone=d.zone.upper() if d.zone is not None else "STANDARD",
        timestamp_ns=RECEIVED_NS if d.ts is None else d.ts,
        source=source,
        fields={**d.canonical, **d.unknown},
    )


def ref_topic(t: str) -> tuple[str, ...]:
    parts = t.split("/")
    if len(parts) != 5 or parts[0] != "infrawatch":
        raise RejectError("bad_topic")
    _, site, kind, ident, leaf = parts
    for seg in (site, ident):
        if not tag_ok(seg) or "+" in seg or "#" in seg:
            raise RejectError("bad_topic")
    if kind == "gateway":
        if leaf != "batch":
            raise RejectError("bad_topic")
        return ("gateway", site, ident)
    if kind not in KINDS:
        raise RejectError("unknown_kind")
    if leaf != "telemetry":
        raise RejectError("bad_topic")
    return ("telemetry", site, kind, ident)


def ref_message(
    i: int, payload: bytes, topic_text: str | None
) -> tuple[list[Reading], list[tuple[int, str]]]:
    try:
        if len(payload) > MAX_PAYLOAD:
            raise RejectError("too_large")
        topic = ref_topic(topic_text) if topic_text is not None else None
        doc = parse_json(payload)
        if isinstance(doc, Obj):
            if topic and topic[0] == "gateway":
                raise RejectError("not_object")
            return [ref_reading(doc, topic, i)], []
        if not isinstance(doc, list) or (topic and topic[0] == "telemetry"):
            raise RejectError("not_object")
        if not doc:
            raise RejectError("empty_batch")
        if len(doc) > MAX_GATEWAY:
            raise RejectError("too_many_readings")
        readings, errors = [], []
        for element in doc:
            try:
                if not isinstance(element, Obj):
                    raise RejectError("not_object")
                readings.append(ref_reading(element, topic, i))
            except RejectError as r:
                errors.append((i, r.code))
        return readings, errors
    except RejectError as r:
        return [], [(i, r.code)]


def ref_decode(
    payloads: list[bytes], topics: list[str] | None
) -> tuple[list[Reading], list[tuple[int, str]]]:
    readings, errors = [], []
    for i, p in enumerate(payloads):
        r, e = ref_message(i, p, None if topics is None else topics[i])
        readings += r
        errors += e
    return readings, errors


# ----------------------------------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------------------------------


def check_accounting(batch: Any, n: int) -> None:
    """Every input index is either the source of ≥ 1 reading or has an error; only gateway
    batches (which may mix good and bad elements) give both or several errors."""
    sources = set(batch.source.tolist())
    errored = [e[0] for e in batch.errors]
    assert sources | set(errored) == set(range(n))
    assert all(0 <= s < n for s in sources)
    assert len(batch) == len(batch.source) == len(batch.timestamp_ns) == len(batch.sensor_id)
    for _index, code, message in batch.errors:
        assert code in core.REASON_CODES
        assert isinstance(message, str)
        assert message


def assert_same(payloads: list[bytes], topics: list[str] | None) -> Any:
    batch = core.decode(payloads, topics, received_ns=RECEIVED_NS)
    readings, errors = ref_decode(payloads, topics)
    check_accounting(batch, len(payloads))
    assert [(i, c) for i, c, _ in batch.errors] == errors
    assert len(batch) == len(readings)
    assert batch.sensor_id == [r.sensor_id for r in readings]
    assert batch.kind == [r.kind for r in readings]
    assert batch.site == [r.site for r in readings]
    assert batch.zone == [r.zone for r in readings]
    assert batch.timestamp_ns.dtype == np.int64
    assert batch.timestamp_ns.tolist() == [r.timestamp_ns for r in readings]
    assert batch.source.dtype == np.int32
    assert batch.source.tolist() == [r.source for r in readings]
    # Columns: every field with at least one value; canonical ones first in table order, then
    # unknown ones in order of first appearance.
    expected_names: list[str] = []
    for r in readings:
        for name, v in r.fields.items():
            if not math.isnan(v) and name not in expected_names:
                expected_names.append(name)
    expected_names.sort(key=lambda n: CANONICAL_ORDER.get(n, len(CANONICAL)))
    fields = batch.fields
    assert list(fields) == expected_names
    for name in expected_names:
        col = fields[name]
        assert col.dtype == np.float64
        assert col.shape == (len(readings),)
        want = np.array([r.fields.get(name, math.nan) for r in readings], dtype=np.float64)
        np.testing.assert_array_equal(col, want, err_msg=name)
    return batch


# ----------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------


def encode(v: Any) -> str:
    if isinstance(v, Obj):
        return "{" + ", ".join(f"{json.dumps(k)}: {encode(x)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(encode(x) for x in v) + "]"
    if isinstance(v, (Num, NonFinite)):
        return v.text
    return json.dumps(v)


def dumps(v: Any) -> bytes:
    return encode(v).encode()


def mixed_case(draw: st.DrawFn, s: str) -> str:
    mode = draw(st.sampled_from(["lower", "lower", "upper", "title"]))
    return {"lower": s, "upper": s.upper(), "title": s.title()}[mode]


SENSORS = ["S001", "S002", "123", "sensor-7", "ünï", "a" * 128]
SITES = ["plant-1", "site_b", "default"]
UNKNOWN_NAMES = ["flow_2", "vibration", "x", "a" * 64]
BAD_NAMES = ["2x", "_x", "a-b", "a" * 65, "", "é", "risk", "zone", "time", "sensor_id"]

finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(lambda f: Num(repr(f))),
    st.integers(-(10**20), 10**20).map(lambda i: Num(str(i))),
    st.sampled_from([Num("1e400"), Num("-1e400"), Num("1e-400"), Num("0.1e1"), Num("-0")]),
)
bad_value = st.sampled_from(
    [NonFinite("NaN"), NonFinite("Infinity"), NonFinite("-Infinity"), "7.2", True, False, [1]]
)
value = st.one_of(finite, finite, finite, st.none(), bad_value, st.just(Obj([("a", Num("1"))])))


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    dt = draw(st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1)))
    digits = draw(st.integers(0, 9))
    frac = (
        "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
        if digits
        else ""
    )
    minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    off = draw(st.sampled_from(["Z", "z", "offset"]))
    if off == "offset":
        off = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    sep = draw(st.sampled_from(["T", "t", " "]))
    return dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + off


epoch_number = st.one_of(
    st.integers(-5, 3 * 10**19).map(lambda i: Num(str(i))),
    st.sampled_from([10**10, 10**11, 10**13, 10**14, 10**16, 10**17, I64_MAX, I64_MAX + 1]).map(
        lambda i: Num(str(i + 0))
    ),
    st.floats(0, 2e18, allow_nan=False).map(lambda f: Num(repr(f))),
    st.sampled_from([Num("1769337000.5e0"), Num("1.7693370001234567E9"), Num("-0.0"), Num("1e-30")]),
)
bad_timestamp_text = st.sampled_from(
    [
        "2026-01-25",
        "2026-02-30T00:00:00Z",
        "2026-01-25T24:00:00Z",
        "2026-01-25T10:30:60Z",
        "2026-01-25T10:30:00",
        "2026-01-25T10:30:00.Z",
        "2026-01-25T10:30:00.1234567890Z",
        "2026-01-25T10:30:00+24:00",
        "2026-01-25T10:30:00+0100",
        "1969-12-31T23:59:59Z",
        "2262-04-12T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "yesterday",
        "２０２６-01-25T10:30:00Z",
    ]
)
timestamp_value = st.one_of(rfc3339(), epoch_number, bad_timestamp_text, st.none(), bad_value)


def either(draw: st.DrawFn, clean: bool, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A valid choice when `clean`, else sometimes (one time in three) an invalid one."""
    if clean or draw(st.integers(0, 2)) > 0:
        return draw(good)
    return draw(bad)


@st.composite
def measurement_pairs(draw: st.DrawFn, clean: bool, max_size: int = 6) -> list[tuple[str, Any]]:
    good_name = st.one_of(st.sampled_from(sorted(ALIAS)), st.sampled_from(UNKNOWN_NAMES))
    good_value = st.one_of(finite, finite, finite, st.none())
    n = draw(st.integers(0, max_size))
    pairs: list[tuple[str, Any]] = []
    for _ in range(n):
        k = either(draw, clean, good_name, st.sampled_from(BAD_NAMES))
        v = either(draw, clean, good_value, value)
        if clean and ALIAS.get(k, k) in {ALIAS.get(ascii_lower(q), ascii_lower(q)) for q, _ in pairs}:
            continue  # mostly distinct fields in clean readings (duplicates are tested elsewhere)
        pairs.append((mixed_case(draw, k), v))
    return pairs


@st.composite
def reading(draw: st.DrawFn, topic: tuple[str, ...] | None = None, clean: bool = False) -> Obj:
    """A reading object: plausible when `clean` (it may still repeat a field or miss
    measurements), otherwise wrong in one or several ways."""
    pairs: list[tuple[str, Any]] = []
    telemetry = topic if topic and topic[0] == "telemetry" else None
    if not telemetry or draw(st.booleans()):
        sid = either(
            draw,
            clean,
            st.just(telemetry[3])
            if telemetry
            else st.one_of(st.sampled_from(SENSORS), st.integers(0, 10**6).map(lambda i: Num(str(i)))),
            st.sampled_from(["", "a\\b", "a\x01b", "a" * 129, Num("-1"), Num("1.5"), True, None, "S002"]),
        )
        pairs.append(("sensor_id", sid))
    if not telemetry or draw(st.booleans()):
        k = either(
            draw,
            clean,
            st.just(telemetry[2]) if telemetry else st.sampled_from(KINDS),
            st.sampled_from([*KINDS, "steam", "", Num("3"), None]),
        )
        pairs.append(("kind", mixed_case(draw, k) if isinstance(k, str) else k))
    if draw(st.integers(0, 3)) == 0:
        site = either(
            draw,
            clean,
            st.just(topic[1]) if topic else st.sampled_from(SITES),
            st.sampled_from([*SITES, "", "a\\b", Num("1"), None]),
        )
        pairs.append((draw(st.sampled_from(["site", "Site"])), site))
    if draw(st.booleans()):
        zone = either(
            draw,
            clean,
            st.sampled_from(["CRITICAL", "standard", "Zone-b", "straße", None]),
            st.sampled_from(["", "a\x7fb", "a\\b", Num("1")]),
        )
        pairs.append((draw(st.sampled_from(["facility_zone", "zone", "ZONE"])), zone))
    if draw(st.integers(0, 3)) > 0:
        ts = either(draw, clean, st.one_of(rfc3339(), epoch_number, st.none()), timestamp_value)
        pairs.append((draw(st.sampled_from(["timestamp", "ts", "time", "TimeStamp"])), ts))
    if draw(st.booleans()):
        loc = either(
            draw, clean, st.sampled_from(["Server Room A", Num("1"), [1, 2], None]), st.just(NonFinite("NaN"))
        )
        pairs.append(("location", loc))
    if draw(st.integers(0, 4)) == 0:
        pairs.append(("gateway_id", "gw1"))
    nested = draw(st.booleans())
    if nested:
        section = either(
            draw, clean, measurement_pairs(clean).map(Obj), st.sampled_from([None, Num("1"), "x"])
        )
        pairs.append((draw(st.sampled_from(["measurements", "Measurements"])), section))
        if draw(st.booleans()):
            meta = Obj(draw(measurement_pairs(clean, max_size=3)))
            if draw(st.booleans()):
                cal = either(draw, clean, st.just("2026-01-20T09:00:00Z"), st.just(NonFinite("NaN")))
                meta.append(("last_calibration", cal))
            pairs.append(("device_metadata", meta))
    if not nested or draw(st.integers(0, 3)) == 0:
        pairs += draw(measurement_pairs(clean))
    if len(pairs) > 1 and draw(st.integers(0, 9)) == 0:  # a key given twice
        pairs.append(draw(st.sampled_from(pairs)))
    return Obj(draw(st.permutations(pairs)) if draw(st.booleans()) else pairs)


def topic_for(draw: st.DrawFn, gateway: bool, clean: bool) -> str:
    site = draw(st.sampled_from(SITES))
    good_gateway = st.just(f"infrawatch/{site}/gateway/gw1/batch")
    good = st.tuples(st.sampled_from(KINDS), st.sampled_from(SENSORS)).map(
        lambda t: f"infrawatch/{site}/{t[0]}/{t[1]}/telemetry"
    )
    bad = st.sampled_from(
        [
            "infrawatch/x/gateway/gw1/telemetry",
            "infrawatch/p/steam/S001/telemetry",
            "infrawatch/p/water_flow/S001",
            "infrawatch/p/water_flow/S+1/telemetry",
            "infrawatch//energy/S001/telemetry",
            "other/p/energy/S001/telemetry",
            "infrawatch/p/energy/S001/batch",
        ]
    )
    wrong_shape = draw(st.integers(0, 9)) == 0
    return str(either(draw, clean, good if gateway == wrong_shape else good_gateway, bad))


@st.composite
def message(draw: st.DrawFn, with_topic: bool) -> tuple[bytes, str | None]:
    clean = draw(st.booleans())
    shape = draw(st.sampled_from(["reading"] * 6 + ["gateway"] * 3 + ["scalar", "empty"]))
    topic = topic_for(draw, shape in ("gateway", "empty"), clean) if with_topic else None
    try:
        parsed = ref_topic(topic) if topic else None
    except RejectError:
        parsed = None
    if shape == "reading":
        doc: Any = draw(reading(parsed, clean))
    elif shape == "gateway":
        element: st.SearchStrategy[Any] = st.one_of(
            reading(parsed, clean), reading(parsed, clean), st.sampled_from([Num("1"), "x", None, []])
        )
        doc = draw(st.lists(reading(parsed, clean) if clean else element, min_size=1, max_size=5))
    elif shape == "empty":
        doc = []
    else:
        doc = draw(st.sampled_from([Num("1"), "x", None, True, NonFinite("NaN")]))
    return dumps(doc), topic


@st.composite
def messages(draw: st.DrawFn) -> tuple[list[bytes], list[str] | None]:
    with_topic = draw(st.booleans())
    msgs = draw(st.lists(message(with_topic), min_size=1, max_size=6))
    return [m[0] for m in msgs], [m[1] for m in msgs] if with_topic else None  # type: ignore[misc]


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    b = bytearray(payload)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, len(b)))
        if op == "flip" and b:
            i = min(at, len(b) - 1)
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del b[at:]
        elif op == "insert":
            b[at:at] = draw(
                st.sampled_from([b"{", b"}", b"[", b",", b'"', b"\\", b"\x00", b"\xff", b"1e9", b"NaN", b" "])
            )
        elif b:
            del b[min(at, len(b) - 1)]
    return bytes(b)


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------------------------
# Property tests: the decoder equals the reference
# ----------------------------------------------------------------------------------------------


@FAST
@given(messages())
def test_matches_reference_on_generated_messages(msgs: tuple[list[bytes], list[str] | None]) -> None:
    assert_same(*msgs)


@FAST
@given(st.data())
def test_matches_reference_on_mutated_payloads(data: st.DataObject) -> None:
    payloads, topics = data.draw(messages())
    payloads = [data.draw(mutated(p)) if data.draw(st.booleans()) else p for p in payloads]
    assert_same(payloads, topics)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=8))
def test_random_bytes_never_raise(payloads: list[bytes]) -> None:
    assert_same(payloads, None)
    topics = ["infrawatch/p/gateway/g/batch"] * len(payloads)
    assert_same(payloads, topics)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=5))
def test_random_json_values(values: list[Any]) -> None:
    assert_same([json.dumps(v).encode() for v in values], None)


@FAST
@given(
    st.lists(
        st.tuples(st.sampled_from(KINDS), st.sampled_from(SENSORS), measurement_pairs(False)),
        min_size=1,
        max_size=5,
    )
)
def test_valid_flat_telemetry(items: list[tuple[str, str, list[tuple[str, Any]]]]) -> None:
    """Mostly-valid flat readings on telemetry topics (sensor and kind from the topic)."""
    payloads = [dumps(Obj([*pairs, ("temp", Num("15.5"))])) for _, _, pairs in items]
    topics = [f"infrawatch/p/{k}/{s}/telemetry" for k, s, _ in items]
    assert_same(payloads, topics)


# ----------------------------------------------------------------------------------------------
# Exact readings
# ----------------------------------------------------------------------------------------------

NESTED = {
    "sensor_id": "S001",
    "timestamp": "2026-01-25T10:30:00Z",
    "location": "Server Room A",
    "facility_zone": "CRITICAL",
    "measurements": {"pressure_bar": 3.2, "flow_rate_lps": 125.5, "temperature_c": 18.5},
    "device_metadata": {
        "battery_level": 85,
        "signal_strength": -45,
        "last_calibration": "2026-01-20T09:00:00Z",
    },
}


def test_design_examples() -> None:
    topics = [
        "infrawatch/plant-1/water_flow/S001/telemetry",
        "infrawatch/plant-1/water_quality/123/telemetry",
    ]
    payloads = [json.dumps(NESTED).encode(), b'{"sensor_id": "123", "pH": 7.2, "temp": 15.4}']
    batch = assert_same(payloads, topics)
    assert batch.sensor_id == ["S001", "123"]
    assert batch.kind == ["water_flow", "water_quality"]
    assert batch.site == ["plant-1", "plant-1"]
    assert batch.zone == ["CRITICAL", "STANDARD"]
    want_ts = int(datetime(2026, 1, 25, 10, 30, tzinfo=UTC).timestamp()) * 10**9
    assert batch.timestamp_ns.tolist() == [want_ts, RECEIVED_NS]
    f = batch.fields
    np.testing.assert_array_equal(f["pressure_bar"], [3.2, np.nan])
    np.testing.assert_array_equal(f["temperature_c"], [18.5, 15.4])
    np.testing.assert_array_equal(f["ph"], [np.nan, 7.2])
    np.testing.assert_array_equal(f["battery_level"], [85.0, np.nan])
    np.testing.assert_array_equal(f["signal_strength_dbm"], [-45.0, np.nan])
    assert batch.errors == []


def test_gateway_batch_keeps_good_elements() -> None:
    elements = [
        {"sensor_id": "a", "kind": "energy", "kwh": 1.5, "vibration": 2},
        {"sensor_id": "b", "kind": "water_flow"},
        7,
        {"sensor_id": 42, "kind": "WATER_QUALITY", "do": 8.1, "zone": "critical"},
    ]
    batch = assert_same([json.dumps(elements).encode()], ["infrawatch/hub/gateway/gw9/batch"])
    assert batch.sensor_id == ["a", "42"]
    assert batch.site == ["hub", "hub"]
    assert batch.zone == ["STANDARD", "CRITICAL"]
    assert batch.source.tolist() == [0, 0]
    assert [(i, c) for i, c, _ in batch.errors] == [(0, "no_measurements"), (0, "not_object")]
    assert "element 1" in batch.errors[0][2]
    assert "element 2" in batch.errors[1][2]
    # Without a topic a top-level array is a gateway batch too (site "default").
    batch = assert_same([json.dumps(elements).encode()], None)
    assert batch.site == ["default", "default"]


def iso_ns(text: str) -> int:
    """Python's own datetime parsing (3.11+ accepts RFC 3339), to nanoseconds."""
    main, _, rest = text.replace("z", "Z").partition(".")
    frac = ""
    if rest:
        digits = re.match("[0-9]*", rest).group(0)  # type: ignore[union-attr]
        frac, main = digits, main + rest[len(digits) :]
    dt = datetime.fromisoformat(main.replace("Z", "+00:00"))
    td = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (td.days * 86_400 + td.seconds) * 10**9 + int(frac.ljust(9, "0") or 0)


@settings(max_examples=200, deadline=None)
@given(rfc3339())
def test_rfc3339_matches_python_datetime(text: str) -> None:
    batch = core.decode(
        [dumps(Obj([("sensor_id", "s"), ("kind", "energy"), ("kwh", Num("1")), ("timestamp", text)]))]
    )
    want = iso_ns(text)
    if 0 <= want <= I64_MAX:
        assert batch.timestamp_ns.tolist() == [want], batch.errors
    else:
        assert [e[1] for e in batch.errors] == ["bad_timestamp"]


@pytest.mark.parametrize(
    ("raw", "ns"),
    [
        ("1769337000", 1_769_337_000 * 10**9),  # seconds
        ("1769337000.25", 1_769_337_000_250_000_000),
        ("9223372036.854775807", I64_MAX),  # seconds, up to the last representable ns
        ("100000000000", 100_000_000_000 * 10**6),  # 1e11: milliseconds
        ("1769337000123", 1_769_337_000_123_000_000),
        ("1769337000123456", 1_769_337_000_123_456_000),  # microseconds
        ("1769337000123456789", 1_769_337_000_123_456_789),  # ns integer, exact (no float rounding)
        ("9223372036854775807", I64_MAX),
        ("1.7693370001234567e18", 1_769_337_000_123_456_700),
        ("0", 0),
    ],
)
def test_epoch_numbers(raw: str, ns: int) -> None:
    payload = b'{"sensor_id": "s", "kind": "energy", "kwh": 1, "ts": %s}' % raw.encode()
    batch = assert_same([payload], None)
    assert batch.timestamp_ns.tolist() == [ns]


def test_aliases_case_insensitive_and_unknown_fields() -> None:
    payload = (
        b'{"SENSOR_ID": "s", "Kind": "Water_Quality", "PH": 7, "Turbidity": 1.5, "DO": 8,'
        b' "Flow_2": 3, "x": null}'
    )
    batch = assert_same([payload], None)
    assert list(batch.fields) == ["ph", "turbidity_ntu", "dissolved_oxygen_mgl", "flow_2"]
    assert batch.kind == ["water_quality"]


def test_sensor_id_lists_ascii_or_not() -> None:
    # ASCII ids are sliced from one str, others built one by one: both give plain str items.
    for ids in (["a", "bb", "S0001", "7"], ["a", "é", "日本", "b"], ["only"], ["x", 12, "x"]):
        payloads = [json.dumps({"sensor_id": s, "kind": "energy", "kwh": 1}).encode() for s in ids]
        batch = core.decode(payloads)
        assert batch.sensor_id == [str(s) for s in ids]
        assert all(type(s) is str for s in batch.sensor_id)
    assert core.decode([b'{"kind": "energy", "kwh": 1}']).sensor_id == []


def test_input_types_give_the_same_batch() -> None:
    raw = json.dumps(NESTED).encode()
    for item in (raw, bytearray(raw), memoryview(raw), memoryview(b"xx" + raw)[2:]):
        batch = core.decode([item], ["infrawatch/p/water_flow/S001/telemetry"], received_ns=1)
        assert batch.sensor_id == ["S001"]
        assert batch.errors == []
    topics = ("infrawatch/p/water_flow/S001/telemetry",)
    batch = core.decode((p for p in [raw]), topics, 1)  # type: ignore[arg-type]
    assert len(batch) == 1


def test_received_ns_defaults_to_now() -> None:
    before = time.time_ns()
    batch = core.decode([b'{"sensor_id": "s", "kind": "energy", "kwh": 1}'])
    assert before - 10**9 <= batch.timestamp_ns[0] <= time.time_ns() + 10**9


def test_misuse_raises() -> None:
    with pytest.raises(TypeError):
        core.decode(b'{"sensor_id": "s"}')  # type: ignore[arg-type]  # one bytes, not a sequence
    with pytest.raises(TypeError):
        core.decode(['{"sensor_id": "s"}'])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        core.decode([1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="topics"):
        core.decode([b"{}", b"{}"], ["infrawatch/p/energy/s/telemetry"])
    with pytest.raises(TypeError):
        core.decode([b"{}"], "infrawatch/p/energy/s/telemetry")  # a str, not a sequence of str
    assert len(core.decode([])) == 0


def test_repr_and_messages() -> None:
    batch = core.decode([json.dumps({**NESTED, "kind": "water_flow"}).encode(), b"nope"], received_ns=0)
    assert batch.messages == 2
    text = repr(batch)
    assert "ReadingBatch" in text
    assert "1 error" in text


# ----------------------------------------------------------------------------------------------
# One focused example per reason code
# ----------------------------------------------------------------------------------------------

T = "infrawatch/p/water_flow/S1/telemetry"
G = "infrawatch/p/gateway/g1/batch"
OK = '"sensor_id": "S1", "kind": "water_flow", "flow": 1'
EXAMPLES: dict[str, tuple[bytes, str | None]] = {
    "too_large": (b'{"sensor_id": "S1", "flow": 1, "x": "' + b"a" * MAX_PAYLOAD + b'"}', T),
    "invalid_json": (b'{"sensor_id": "S1", "flow": 1,}', T),
    "not_object": (b"[1, 2]", T),
    "bad_topic": (b'{"flow": 1}', "infrawatch/p/water_flow/S1"),
    "unknown_kind": (b'{"sensor_id": "S1", "kind": "steam", "flow": 1}', None),
    "kind_mismatch": (b'{"kind": "energy", "flow": 1}', T),
    "missing_sensor_id": (b'{"kind": "energy", "kwh": 1}', None),
    "bad_sensor_id": (b'{"sensor_id": "S\\\\1", "kind": "energy", "kwh": 1}', None),
    "sensor_mismatch": (b'{"sensor_id": "S2", "flow": 1}', T),
    "bad_site": (b'{"site": "", ' + OK.encode() + b"}", None),
    "site_mismatch": (b'{"site": "q", "flow": 1}', T),
    "bad_zone": (b'{"zone": 3, ' + OK.encode() + b"}", None),
    "bad_timestamp": (b'{"timestamp": "1969-12-31T23:59:59Z", "flow": 1}', T),
    "bad_value": (b'{"flow": NaN}', T),
    "bad_field_name": (b'{"flow": 1, "2nd": 1}', T),
    "duplicate_field": (b'{"temp": 1, "temperature": 2}', T),
    "too_many_fields": (("{" + ", ".join(f'"f{i}": {i}' for i in range(65)) + "}").encode(), T),
    "no_measurements": (b'{"flow": null}', T),
    "too_many_readings": (("[" + ",".join(["{" + OK + "}"] + ["{}"] * MAX_GATEWAY) + "]").encode(), G),
    "empty_batch": (b"[]", G),
}


@pytest.mark.parametrize("code", core.REASON_CODES)
def test_each_reason_code(code: str) -> None:
    assert code in EXAMPLES, f"no example for reason code {code}"
    payload, topic = EXAMPLES[code]
    batch = assert_same([payload], None if topic is None else [topic])
    assert [e[1] for e in batch.errors] == [code]
    assert len(batch) == 0


def test_examples_cover_exactly_the_reason_codes() -> None:
    assert sorted(EXAMPLES) == sorted(core.REASON_CODES)
    assert len(set(core.REASON_CODES)) == len(core.REASON_CODES)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"flow": 1e400}', "bad_value"),
        (b'{"flow": -Infinity}', "bad_value"),
        (b'{"flow": "1"}', "bad_value"),
        (b'{"flow": true}', "bad_value"),
        (b'{"flow": {"v": 1}}', "bad_value"),
        (b'{"measurements": [1]}', "bad_value"),
        (b'{"flow": 1} x', "invalid_json"),
        (b'{"flow": 1, "s": "\\ud800"}', "invalid_json"),
        (b'{"flow": 1, "s": "\xff"}', "invalid_json"),
        (b"[" * 17 + b"]" * 17, "invalid_json"),
        (b'{"flow": 1, "location": ' + b"[" * 16 + b"]" * 16 + b"}", "invalid_json"),
        (b'{"flow": 1, "location": ' + b"[" * 15 + b"]" * 15 + b"}", "ok"),
        (b'{"flow": 1, "Flow_Rate": 2}', "duplicate_field"),
        (b'{"flow": 1, "ts": 1, "time": 2}', "duplicate_field"),
        (b'{"flow": 1, "A": 1, "a": 2}', "duplicate_field"),
        (b'{"flow": 1, "risk": 1}', "bad_field_name"),
        (b'{"flow": 1, "' + b"a" * 65 + b'": 1}', "bad_field_name"),
        (b'{"flow": 1, "measurements": {"sensor_id": 1}}', "bad_field_name"),
        (b'{"flow": 1, "location": NaN}', "bad_value"),
        (b'{"flow": 1, "timestamp": "2026-01-25T10:30:00.1234567891Z"}', "bad_timestamp"),
        (b'{"flow": 1, "timestamp": 9223372036854775808}', "bad_timestamp"),
        (b'{"flow": 1, "timestamp": true}', "bad_timestamp"),
        (b'{"flow": 1, "timestamp": null}', "ok"),
        (b'{"flow": 1, "sensor_id": "S1", "kind": "Water_Flow", "site": "p"}', "ok"),
        (b'"flow"', "not_object"),
        (b"", "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
    ],
)
def test_edge_cases(raw: bytes, code: str) -> None:
    batch = assert_same([raw], [T])
    assert [e[1] for e in batch.errors] == ([] if code == "ok" else [code])


def test_limits_at_the_boundary() -> None:
    fits = b'{"flow": 1, "location": "' + b"a" * (MAX_PAYLOAD - 25 - 2) + b'"}'
    assert len(fits) == MAX_PAYLOAD
    assert assert_same([fits, fits + b" "], [T, T]).errors[0][1] == "too_large"
    fields64 = ("{" + ", ".join(f'"f{i}": {i}' for i in range(64)) + "}").encode()
    assert len(assert_same([fields64], [T]).fields) == 64
    # 10,000 elements is allowed (each is judged on its own); 10,001 is not (EXAMPLES).
    gateway = ("[" + ",".join(["{}"] * (MAX_GATEWAY - 1) + ["{" + OK + "}"]) + "]").encode()
    batch = assert_same([gateway], [G])
    assert len(batch) == 1
    assert len(batch.errors) == MAX_GATEWAY - 1


# ----------------------------------------------------------------------------------------------
# docs/reason-codes.md: THE table
# ----------------------------------------------------------------------------------------------

DOC = Path(__file__).parent.parent / "docs" / "reason-codes.md"
ROW_RE = re.compile(r"^\| `([a-z_]+)` \| (.+?) \| (.+?) \| (.+?) \|$")


def doc_rows() -> list[tuple[str, str, str]]:
    rows = [ROW_RE.match(line) for line in DOC.read_text().splitlines()]
    return [(m[1], m[3], m[4]) for m in rows if m]


def test_doc_table_lists_exactly_the_reason_codes() -> None:
    assert [code for code, _, _ in doc_rows()] == list(core.REASON_CODES)


def _literal(example: str) -> bool:
    # rows that describe their example in words (too large to print) are covered by EXAMPLES
    return example.startswith("`") and example.endswith("`") and example.count("`") == 2


@pytest.mark.parametrize(("code", "example", "topic"), [r for r in doc_rows() if _literal(r[1])])
def test_doc_examples_give_their_code(code: str, example: str, topic: str) -> None:
    topics = {"T": T, "G": G, "—": None}
    t = topics[topic] if topic in topics else topic.strip("`")
    batch = assert_same([example.strip("`").encode()], None if t is None else [t])
    assert [e[1] for e in batch.errors] == [code]
