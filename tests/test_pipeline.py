"""core.Pipeline: the fused hot path equals composing the separate kernels; risk, alerts, state."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests import test_features
from tests.utils.factories import (
    MINUTE,
    T0,
    flat,
    nested,
    telemetry_topic,
    train_models,
    water_flow_stream,
)
from tests.utils.lineproto import Point, parse

from infrawatch import core

WINDOW = 20
VERDICT_FIELDS = {
    "leak_probability",
    "burst_probability",
    "contamination_probability",
    "anomaly_score",
    "expected_kwh",
    "risk",
    "risk_level",
    "confidence",
    "model_version",
    "anomaly_type",
}


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Any]]:
    return train_models(seed=1, window=WINDOW)


def fleet_batches(seed: int, n_steps: int = 40) -> list[tuple[list[bytes], list[str], int]]:
    """Batches of mixed traffic: nested and flat single readings, a gateway batch, bad messages,
    and a leak and a burst planted on two water-flow sensors."""
    rng = np.random.default_rng(seed)
    wf = {
        "wf-ok": water_flow_stream(rng, n_steps)[0],
        "wf-leak": water_flow_stream(rng, n_steps, leak_at=10)[0],
        "wf-burst": water_flow_stream(rng, n_steps, burst_at=25)[0],
    }
    batches = []
    for step in range(n_steps):
        ts = T0 + step * MINUTE
        payloads: list[bytes] = []
        topics: list[str] = []
        for sid, cols in wf.items():
            zone = "CRITICAL" if sid == "wf-burst" else "STANDARD"
            payloads.append(nested(sid, ts, zone, **{k: float(v[step]) for k, v in cols.items()}))
            topics.append(telemetry_topic("plant a", "water_flow", sid))
        ph = 7.2 if step < 30 else 6.1  # a hard-limit breach at the end
        payloads.append(flat("wq 1,x=y", ts, pH=ph, turbidity=0.4, chlorine=0.5, temp=14.0))
        topics.append(telemetry_topic("plant a", "water_quality", "wq 1,x=y"))
        gateway = [
            {
                "sensor_id": f"room-{r}",
                "kind": "energy",
                "timestamp": ts,
                "kwh": 0.5 + 0.2 * r,
                "occupancy": r,
            }
            for r in range(3)
        ]
        payloads.append(json.dumps(gateway).encode())
        topics.append("infrawatch/plant a/gateway/gw-1/batch")
        payloads.append(b"{not json")
        topics.append(telemetry_topic("plant a", "water_flow", "wf-ok"))
        payloads.append(json.dumps({"sensor_id": "someone-else", "flow": 1.0}).encode())
        topics.append(telemetry_topic("plant a", "water_flow", "wf-ok"))
        batches.append((payloads, topics, ts + 5 * 10**8))
    return batches


# --- the reference: the separate kernels composed in Python ---------------------------------


def risk_water_flow(zone: str, leak: float, burst: float) -> int:
    c = zone == "CRITICAL"
    if burst > (0.3 if c else 0.5) or leak > (0.7 if c else 0.8):
        return 3
    if burst > (0.1 if c else 0.2) or leak > (0.4 if c else 0.6):
        return 2
    if leak > (0.2 if c else 0.3):
        return 1
    return 0


def band(score: float, medium: float, high: float, critical: float) -> int:
    return 3 if score >= critical else 2 if score >= high else 1 if score >= medium else 0


LEVELS = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
STATS = tuple(test_features.STATS)  # the per-field statistics, as the feature tests state them
# words that a plain-words reason for a per-reading feature contains
GENERIC_WORDS = {
    "count": "readings in the window",
    "dt_s": "since the previous reading",
    "hour": "UTC",
    "dow": "on a ",
    "weekend": "week",
    "night": "",
    "pressure_flow_ratio": "pressure/flow ratio",
}


def reason_marker(feature: str) -> str:
    """What the explanation of `feature` must mention: its field, or its generic words."""
    for stat in STATS:  # suffix match: a stat name may itself contain "_" (hod_dev)
        field = feature.removesuffix("_" + stat)
        if field and field != feature:
            return field + " "
    return GENERIC_WORDS[feature]


def top_reasons(model: core.TreeEnsemble, x_row: np.ndarray, sign: float, column: int = 0) -> list[str]:
    """Markers of the up-to-3 features pushing the row most towards the alert (Saabas)."""
    c = np.asarray(model.contributions(x_row[None, :]))[0]
    c = c[:-1] if c.ndim == 1 else c[:-1, column]
    order = [int(f) for f in np.argsort(-sign * c, kind="stable") if sign * c[f] > 0][:3]
    return [reason_marker(model.feature_names[f]) for f in order]


class Reference:
    """decode → TokenBucket.allow_many → FeatureStore per kind → TreeEnsemble → risk, in Python."""

    def __init__(self, models: dict[str, dict[str, Any]], limiter: core.TokenBucket | None) -> None:
        self.models = models
        self.limiter = limiter
        self.stores = {k: core.FeatureStore(window=WINDOW, fields=core.kind_fields(k)) for k in models}
        self.last_risk: dict[str, int] = {}

    def model_input(self, kind: str, model: core.TreeEnsemble, x: np.ndarray) -> np.ndarray:
        names = self.stores[kind].feature_names
        return x[:, [names.index(f) for f in model.feature_names]]

    def verdicts(self, kind: str, batch: core.ReadingBatch, rows: np.ndarray, x: np.ndarray) -> list[dict]:
        m = self.models[kind]
        out = []
        if kind == "water_flow":
            pl = m["leak"].predict_proba(self.model_input(kind, m["leak"], x))[:, 1]
            pb = m["burst"].predict_proba(self.model_input(kind, m["burst"], x))[:, 1]
            for r, i in enumerate(rows):
                risk = risk_water_flow(batch.zone[i], pl[r], pb[r])
                p = max(pl[r], pb[r])
                v = {
                    "leak_probability": pl[r],
                    "burst_probability": pb[r],
                    "risk": risk,
                    "confidence": max(p, 1 - p),
                }
                if risk >= 2:
                    crit = batch.zone[i] == "CRITICAL"
                    hb, cb, cl = (0.1, 0.3, 0.7) if crit else (0.2, 0.5, 0.8)
                    burst = pb[r] > hb and (pb[r] > cb or pl[r] <= cl)
                    mm = m["burst" if burst else "leak"]
                    v["explanation"] = top_reasons(mm, self.model_input(kind, mm, x[r : r + 1])[0], 1.0)
                out.append(v)
        elif kind == "water_quality":
            pc = m["contamination"].predict_proba(self.model_input(kind, m["contamination"], x))[:, 1]
            for r, i in enumerate(rows):
                risk = band(pc[r], 0.3, 0.5, 0.8)
                fields = batch.fields
                ph = fields["ph"][i] if "ph" in fields else np.nan
                turb = fields["turbidity_ntu"][i] if "turbidity_ntu" in fields else np.nan
                cl = fields["chlorine_mgl"][i] if "chlorine_mgl" in fields else np.nan
                model_risk = risk
                limits = [
                    name + " "
                    for name, bad in (
                        ("ph", ph < 6.5 or ph > 8.5),
                        ("turbidity_ntu", turb > 5),
                        ("chlorine_mgl", cl > 5),
                    )
                    if bad
                ]
                if limits:
                    risk = max(risk, 2)
                v = {"contamination_probability": pc[r], "risk": risk, "confidence": max(pc[r], 1 - pc[r])}
                if risk >= 2:
                    mm = m["contamination"]
                    model_reasons = (
                        top_reasons(mm, self.model_input(kind, mm, x[r : r + 1])[0], 1.0)
                        if model_risk >= 2
                        else []
                    )
                    v["explanation"] = (limits + model_reasons)[:3]
                out.append(v)
        else:
            exp = m["expected_kwh"].predict(self.model_input(kind, m["expected_kwh"], x))
            score = -m["anomaly"].score_samples(self.model_input(kind, m["anomaly"], x))
            for r, i in enumerate(rows):
                risk = band(score[r], 0.55, 0.62, 0.7)
                v = {
                    "anomaly_score": score[r],
                    "expected_kwh": exp[r],
                    "risk": risk,
                    "confidence": max(score[r], 1 - score[r]),
                }
                if risk >= 2:
                    mm = m["anomaly"]
                    reasons = top_reasons(mm, self.model_input(kind, mm, x[r : r + 1])[0], -1.0)
                    v["explanation"] = (["energy_kwh ", *reasons])[:3]
                if risk >= 1:
                    kwh = batch.fields["energy_kwh"][i]
                    v["anomaly_type"] = (
                        "high_consumption"
                        if kwh > exp[r] * 1.25
                        else "low_consumption"
                        if kwh < exp[r] * 0.75
                        else "unusual_pattern"
                    )
                out.append(v)
        for v in out:
            v["risk_level"] = LEVELS[v["risk"]]
            v["model_version"] = m["version"]
        return out

    def process(self, payloads: list[bytes], topics: list[str], received_ns: int) -> list[Point]:
        batch = core.decode(payloads, topics, received_ns)
        n = len(batch)
        if self.limiter is not None:
            accepted = self.limiter.allow_many(batch.sensor_id, received_ns)
        else:
            accepted = np.ones(n, bool)
        verdicts: dict[int, dict] = {}
        for kind in self.models:
            rows = np.array([i for i in range(n) if accepted[i] and batch.kind[i] == kind], dtype=np.int64)
            if len(rows) == 0:
                continue
            cols = {k: v[rows] for k, v in batch.fields.items()}
            x = self.stores[kind].update_arrays(
                [batch.sensor_id[i] for i in rows], batch.timestamp_ns[rows], cols
            )
            folded = ~np.all(np.isnan(x), axis=1)
            if folded.any():
                for i, v in zip(
                    rows[folded], self.verdicts(kind, batch, rows[folded], x[folded]), strict=True
                ):
                    verdicts[int(i)] = v
        points, alerts = [], []
        for i in range(n):
            if not accepted[i]:
                continue
            p = Point(
                "reading",
                {
                    "kind": batch.kind[i],
                    "sensor_id": batch.sensor_id[i],
                    "site": batch.site[i],
                    "zone": batch.zone[i],
                },
                {k: float(v[i]) for k, v in batch.fields.items() if not np.isnan(v[i])},
                int(batch.timestamp_ns[i]),
            )
            v = verdicts.get(i)
            if v is not None:
                p.fields.update({k: (float(x) if isinstance(x, np.floating) else x) for k, x in v.items()})
                prev = self.last_risk.get(batch.sensor_id[i], 0)
                self.last_risk[batch.sensor_id[i]] = v["risk"]
                if v["risk"] >= 2 and v["risk"] > prev:
                    alerts.append(
                        Point(
                            "alert",
                            {
                                "kind": batch.kind[i],
                                "sensor_id": batch.sensor_id[i],
                                "severity": LEVELS[v["risk"]].lower(),
                                "site": batch.site[i],
                                "zone": batch.zone[i],
                            },
                            {"risk": v["risk"], "model_version": v["model_version"]},
                            int(batch.timestamp_ns[i]),
                        )
                    )
            points.append(p)
        return points + alerts


def assert_points_equal(got: list[Point], want: list[Point]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.measurement, g.tags, g.timestamp) == (w.measurement, w.tags, w.timestamp)
        if g.measurement == "alert":
            # alert text is prose; its numbers and labels are checked in their own test
            assert {k: g.fields[k] for k in w.fields} == w.fields
            assert isinstance(g.fields["message"], str)
            assert g.fields["alert_type"] in {"leak", "burst", "contamination", "quality_limit"} | {
                "high_consumption",
                "low_consumption",
                "unusual_pattern",
            }
            continue
        assert set(g.fields) == set(w.fields), (g.tags, set(g.fields) ^ set(w.fields))
        for k, wv in w.fields.items():
            gv = g.fields[k]
            if k == "explanation":
                # prose: one reason per expected feature, in order, each naming what it is about
                phrases = gv.split("; ")
                assert len(phrases) == len(wv), (gv, wv)
                for phrase, marker in zip(phrases, wv, strict=True):
                    # a feature without a value (e.g. a slope of one point) is named whole
                    missing = phrase.startswith(marker.rstrip() + "_") and phrase.endswith(" missing")
                    assert marker in phrase or missing, (phrase, marker)
                continue
            if isinstance(wv, float):
                # the line protocol carries shortest round-trip floats: equality is exact
                assert gv == wv, (k, gv, wv)
            else:
                assert gv == wv, (k, gv, wv)


# --- tests ------------------------------------------------------------------------------------


def test_process_equals_composed_kernels(models: dict[str, dict[str, Any]]) -> None:
    pipe = core.Pipeline(models=models, window=WINDOW, limiter=core.TokenBucket(rate_per_s=1.0, burst=3.0))
    ref = Reference(models, core.TokenBucket(rate_per_s=1.0, burst=3.0))
    n_alerts = 0
    for payloads, topics, received in fleet_batches(seed=7):
        out = pipe.process(payloads, topics, received)
        want = ref.process(payloads, topics, received)
        assert_points_equal(parse(out.line_protocol), want)
        assert out.count == sum(p.measurement == "reading" for p in want)
        assert len(out.alerts) == sum(p.measurement == "alert" for p in want)
        assert [e[1] for e in out.errors] == [e[1] for e in core.decode(payloads, topics, received).errors]
        n_alerts += len(out.alerts)
    assert n_alerts > 0, "the planted incidents raised no alert at all"


def test_planted_incidents_alert_and_healthy_sensor_does_not(models: dict[str, dict[str, Any]]) -> None:
    pipe = core.Pipeline(models=models, window=WINDOW)
    alerts: list[dict] = []
    for payloads, topics, received in fleet_batches(seed=3):
        alerts += pipe.process(payloads, topics, received).alerts
    by_sensor = {a["sensor_id"] for a in alerts}
    assert "wf-burst" in by_sensor
    assert "wf-leak" in by_sensor
    assert "wq 1,x=y" in by_sensor  # the pH breach
    assert "wf-ok" not in by_sensor
    burst = next(a for a in alerts if a["sensor_id"] == "wf-burst")
    assert burst["zone"] == "CRITICAL"
    assert burst["severity"] in {"high", "critical"}
    assert burst["kind"] == "water_flow"
    assert 0 <= burst["burst_probability"] <= 1
    assert burst["sensor_id"] in burst["message"]
    ph = next(a for a in alerts if a["sensor_id"] == "wq 1,x=y")
    assert ph["alert_type"] in {"quality_limit", "contamination"}
    assert ph["risk"] >= 2


def test_rate_limited_readings_are_reported_not_written(models: dict[str, dict[str, Any]]) -> None:
    lim = core.TokenBucket(rate_per_s=1.0, burst=1.0)
    pipe = core.Pipeline(models=models, window=WINDOW, limiter=lim)
    sid = "wf-fast"
    topic = telemetry_topic("s", "water_flow", sid)
    payloads = [nested(sid, T0 + i * 10**6, pressure_bar=3.0, flow_rate_lps=10.0) for i in range(10)]
    out = pipe.process(payloads, [topic] * 10, T0 + 10**9)
    assert out.count == 1
    assert out.rate_limited == list(range(1, 10))
    assert out.rate_limited_sensors == [sid] * 9
    assert len([p for p in parse(out.line_protocol) if p.measurement == "reading"]) == 1
    assert pipe.limiter is lim


def test_event_clock_passes_a_backlog_and_still_holds_a_runaway_sensor() -> None:
    """limit_clock="event": a sensor that published once a second an hour ago, delivered all at
    once now, passes; one publishing ten readings per second of its own clock does not."""
    now = T0 + 3600 * 10**9
    backlog = [nested("wf-late", T0 + i * 10**9, pressure_bar=3.0, flow_rate_lps=10.0) for i in range(10)]
    runaway = [nested("wf-fast", T0 + i * 10**8, pressure_bar=3.0, flow_rate_lps=10.0) for i in range(10)]
    topics = [telemetry_topic("s", "water_flow", "wf-late")] * 10 + [
        telemetry_topic("s", "water_flow", "wf-fast")
    ] * 10
    for clock, passed in (("event", 10 + 1), ("arrival", 1 + 1)):
        pipe = core.Pipeline(window=WINDOW, limiter=core.TokenBucket(1.0, 1.0), limit_clock=clock)
        out = pipe.process(backlog + runaway, topics, now)
        assert out.count == passed, clock
        assert set(out.rate_limited_sensors) == ({"wf-fast"} if clock == "event" else {"wf-late", "wf-fast"})


def test_event_clock_caps_timestamps_at_receipt() -> None:
    """Readings stamped in the future buy no tokens ahead of time: limited as on arrival."""
    future = [
        nested("wf-ahead", T0 + (3600 + i) * 10**9, pressure_bar=3.0, flow_rate_lps=1.0) for i in range(5)
    ]
    pipe = core.Pipeline(window=WINDOW, limiter=core.TokenBucket(1.0, 1.0), limit_clock="event")
    out = pipe.process(future, [telemetry_topic("s", "water_flow", "wf-ahead")] * 5, T0)
    assert out.count == 1
    assert out.rate_limited == [1, 2, 3, 4]


def test_readings_older_than_the_sensors_newest_take_no_token() -> None:
    """A redelivered backlog (not newer than what the sensor already stored) is stored without a
    verdict, never dropped as rate_limited — the broker's redelivery after a crash loses nothing."""
    topic = telemetry_topic("s", "water_flow", "wf-1")
    pipe = core.Pipeline(window=WINDOW, limiter=core.TokenBucket(1.0, 1.0))
    first = pipe.process([nested("wf-1", T0 + 10 * 10**9, pressure_bar=3.0, flow_rate_lps=1.0)], [topic], T0)
    assert first.count == 1
    older = [nested("wf-1", T0 + i * 10**9, pressure_bar=3.0, flow_rate_lps=1.0) for i in range(10)]
    out = pipe.process(older, [topic] * 10, T0)
    assert out.count == 10
    assert out.rate_limited == []
    # the newest again (a duplicate) is stored too; a newer reading is judged (no token left)
    again = pipe.process([nested("wf-1", T0 + 10 * 10**9, pressure_bar=3.0, flow_rate_lps=1.0)], [topic], T0)
    assert again.rate_limited == []
    newer = pipe.process([nested("wf-1", T0 + 11 * 10**9, pressure_bar=3.0, flow_rate_lps=1.0)], [topic], T0)
    assert newer.rate_limited == [0]


def test_limit_clock_is_checked() -> None:
    with pytest.raises(ValueError, match="limit_clock"):
        core.Pipeline(limit_clock="wall")


def test_redelivered_reading_is_stored_without_overwriting_its_verdict(
    models: dict[str, dict[str, Any]],
) -> None:
    pipe = core.Pipeline(models=models, window=WINDOW)
    topic = telemetry_topic("s", "water_flow", "wf-1")
    first = pipe.process([nested("wf-1", T0, pressure_bar=3.0, flow_rate_lps=10.0)], [topic], T0)
    again = pipe.process([nested("wf-1", T0, pressure_bar=3.0, flow_rate_lps=10.0)], [topic], T0)
    (p1,) = [p for p in parse(first.line_protocol) if p.measurement == "reading"]
    (p2,) = parse(again.line_protocol)  # a stale reading raises no alert
    assert "risk" in p1.fields
    assert again.stale == 1
    # same series and timestamp: InfluxDB merges the fields, so the first verdict stays
    assert (p2.tags, p2.timestamp) == (p1.tags, p1.timestamp)
    assert not VERDICT_FIELDS & set(p2.fields)
    assert p2.fields["flow_rate_lps"] == p1.fields["flow_rate_lps"]


def test_snapshot_restore_and_model_swap_keep_state(models: dict[str, dict[str, Any]]) -> None:
    batches = fleet_batches(seed=11, n_steps=30)
    whole = core.Pipeline(models=models, window=WINDOW)
    want = [whole.process(*b).line_protocol for b in batches]

    first = core.Pipeline(models=models, window=WINDOW)
    got = [first.process(*b).line_protocol for b in batches[:15]]
    blob = first.snapshot()
    second = core.Pipeline(models=None, window=WINDOW)
    second.restore(blob)
    second.set_models(models)  # hot reload keeps the restored state
    got += [second.process(*b).line_protocol for b in batches[15:]]
    assert got == want
    assert len(second) == len(whole)


def test_snapshot_rejects_garbage_and_other_windows(models: dict[str, dict[str, Any]]) -> None:
    pipe = core.Pipeline(models=models, window=WINDOW)
    pipe.process(*fleet_batches(seed=2, n_steps=2)[0])
    blob = pipe.snapshot()
    for bad in [b"", b"garbage", blob[:-3], blob + b"x", b"\x89PNG\r\n\x1a\n" + blob[8:]]:
        with pytest.raises(ValueError, match="snapshot"):
            core.Pipeline(window=WINDOW).restore(bad)
    with pytest.raises(ValueError, match="features differ"):
        core.Pipeline(window=WINDOW + 1).restore(blob)


def test_escaping_of_tags_and_strings_round_trips(models: dict[str, dict[str, Any]]) -> None:
    pipe = core.Pipeline(models=models, window=WINDOW)
    sid = 'odd id,with=every "thing"'
    out = pipe.process(
        [flat(sid, T0, pH=7.0, weird_extra=1.25)],
        [telemetry_topic("site with spaces", "water_quality", sid)],
        T0,
    )
    (p,) = parse(out.line_protocol)
    assert p.tags == {
        "kind": "water_quality",
        "sensor_id": sid,
        "site": "site with spaces",
        "zone": "STANDARD",
    }
    assert p.fields["ph"] == 7.0
    assert p.fields["weird_extra"] == 1.25
    assert p.fields["model_version"] == "wq-test"


def test_bad_configuration_is_a_clear_error(models: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        core.Pipeline(models={"gas": {}})
    with pytest.raises(KeyError, match="burst"):
        core.Pipeline(models={"water_flow": {"leak": models["water_flow"]["leak"]}})
    with pytest.raises(TypeError, match="TreeEnsemble"):
        core.Pipeline(models={"water_flow": {"leak": "nope", "burst": "nope"}})
    with pytest.raises(ValueError, match="not produced"):
        # an energy model's features are not water-flow features
        core.Pipeline(
            models={
                "water_flow": {"leak": models["energy"]["anomaly"], "burst": models["water_flow"]["burst"]}
            }
        )
    with pytest.raises(ValueError, match="unknown key"):
        core.Pipeline(zone_policy={"CRITICAL": {"leak": 0.1}})


def test_zone_policy_override_changes_the_table(models: dict[str, dict[str, Any]]) -> None:
    # a policy under which any leak probability above 0 is CRITICAL everywhere
    strict = {"STANDARD": {"critical_leak": -1.0}, "CRITICAL": {"critical_leak": -1.0}}
    pipe = core.Pipeline(models=models, window=WINDOW, zone_policy=strict)
    out = pipe.process(
        [nested("wf-x", T0, "LAB", pressure_bar=3.6, flow_rate_lps=10.0)],
        [telemetry_topic("s", "water_flow", "wf-x")],
        T0,
    )
    (p, alert) = parse(out.line_protocol)
    assert p.fields["risk"] == 3
    assert alert.measurement == "alert"
    assert alert.tags["severity"] == "critical"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payloads=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.builds(
                lambda d: json.dumps(d).encode(),
                st.dictionaries(st.text(max_size=12), st.floats() | st.text()),
            ),
        ),
        max_size=8,
    ),
    kind=st.sampled_from(["water_flow", "water_quality", "energy", "gateway", "bogus"]),
)
def test_arbitrary_input_never_raises(
    models: dict[str, dict[str, Any]], payloads: list[bytes], kind: str
) -> None:
    pipe = core.Pipeline(models=models, window=WINDOW, limiter=core.TokenBucket(rate_per_s=5.0, burst=5.0))
    suffix = "batch" if kind == "gateway" else "telemetry"
    topics = [f"infrawatch/s/{kind}/x{i}/{suffix}" for i in range(len(payloads))]
    out = pipe.process(payloads, topics, T0)
    points = parse(out.line_protocol)
    assert out.count == sum(p.measurement == "reading" for p in points)
    failed = {e[0] for e in out.errors}
    assert failed <= set(range(len(payloads)))
