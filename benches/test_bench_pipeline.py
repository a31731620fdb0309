"""The fused hot path against its Python twin: orjson + dict features + scikit-learn batch +
f-string line protocol, doing the same work on the same batch."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.ensemble import RandomForestClassifier
from tests.utils.factories import MINUTE, T0, nested, telemetry_topic, water_flow_stream

from infrawatch import core

WINDOW = 60
N_SENSORS = 1000
STEPS = 10  # readings per sensor per batch → 10k payloads per batch
WARMUP, ROUNDS = 2, 3
N_BATCHES = WARMUP + ROUNDS  # every round gets new readings (a repeated batch would be stale)
FIELDS = core.kind_fields("water_flow")
ALIASES = {
    "pressure": "pressure_bar",
    "flow": "flow_rate_lps",
    "flow_rate": "flow_rate_lps",
    "temp": "temperature_c",
}


@pytest.fixture(scope="module")
def workload() -> dict[str, Any]:
    return make_workload()


def make_workload() -> dict[str, Any]:
    """The batches and the two forests (also dumped for the Rust profiling example)."""
    rng = np.random.default_rng(0)
    streams = [
        water_flow_stream(rng, STEPS * N_BATCHES, leak_at=15 if s % 10 == 0 else None)
        for s in range(N_SENSORS)
    ]
    batches = []
    for b in range(N_BATCHES):
        payloads, topics = [], []
        for step in range(b * STEPS, (b + 1) * STEPS):
            for s, (cols, _, _) in enumerate(streams):
                sid = f"wf-{s:05d}"
                payloads.append(
                    nested(sid, T0 + step * MINUTE, **{k: float(v[step]) for k, v in cols.items()})
                )
                topics.append(telemetry_topic("city", "water_flow", sid))
        batches.append((payloads, topics))
    # train the 100-tree, depth-12 forests on features from the production feature store
    fs = core.FeatureStore(window=WINDOW, fields=FIELDS)
    x = np.vstack(
        [
            fs.update_arrays(
                [f"t{s}"] * len(c["flow_rate_lps"]), T0 + np.arange(len(c["flow_rate_lps"])) * MINUTE, c
            )
            for s, (c, _, _) in enumerate(streams[:200])
        ]
    )
    # the twin computes the same features as the store: check before anything is timed
    twin, steps = PythonTwin(None, None), STEPS * N_BATCHES
    got = [
        twin.features(f"t{s}", T0 + i * MINUTE, {k: float(v[i]) for k, v in c.items()})
        for s, (c, _, _) in enumerate(streams[:20])
        for i in range(steps)
    ]
    np.testing.assert_allclose(np.array(got), x[: 20 * steps], rtol=1e-7, atol=1e-7)
    y_leak = np.concatenate([lk for _, lk, _ in streams[:200]])
    y_burst = x[:, fs.feature_names.index("flow_rate_lps_delta")] > 0.5  # any second target
    leak = RandomForestClassifier(100, max_depth=12, random_state=0, n_jobs=1).fit(x, y_leak)
    burst = RandomForestClassifier(100, max_depth=12, random_state=0, n_jobs=1).fit(x, y_burst)
    return {"batches": batches, "leak": leak, "burst": burst, "names": fs.feature_names}


def _stats(vals: deque[float], times: deque[float], ewma: float, hod: float) -> list[float]:
    pts = [(t, v) for t, v in zip(times, vals, strict=True) if not math.isnan(v)]
    last = vals[-1]
    if not pts:
        return [last] + [math.nan] * 5 + [math.nan, ewma, math.nan, hod]
    xs = [v for _, v in pts]
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in xs) / n)
    prev = vals[-2] if len(vals) > 1 else math.nan
    slope = math.nan
    if n > 1:
        t0 = pts[-1][0]
        ts = [t - t0 for t, _ in pts]
        tm = sum(ts) / n
        den = sum((t - tm) ** 2 for t in ts)
        if den > 0:
            slope = sum((t - tm) * (v - mean) for t, v in zip(ts, xs, strict=True)) / den
    z = (last - mean) / std if std > 0 else (0.0 if not math.isnan(last) else math.nan)
    return [last, mean, std, min(xs), max(xs), last - prev, slope, ewma, z, hod]


class PythonTwin:
    """What a team would write without the Rust core."""

    def __init__(self, leak: Any, burst: Any) -> None:
        self.leak, self.burst = leak, burst
        self.state: dict[str, dict[str, Any]] = {}
        self.alpha = 2 / (WINDOW + 1)

    def features(self, sid: str, ts: int, m: dict[str, float]) -> list[float]:
        st = self.state.get(sid)
        if st is None:
            st = {
                "t": deque(maxlen=WINDOW),
                "v": {f: deque(maxlen=WINDOW) for f in FIELDS},
                "e": {},
                "p": {},
                "d": {},  # (field, quarter) -> [profile, sum today, n today, day]: day_dev
                "s1": {},
                "s3": {},
                "last": None,
            }
            self.state[sid] = st
        dt = (ts - st["last"]) / 1e9 if st["last"] is not None else math.nan
        st["last"] = ts
        st["t"].append(ts / 1e9)
        row: list[float] = []
        hour = (ts // 3_600_000_000_000) % 24
        dow = ((ts // 86_400_000_000_000) + 3) % 7
        quarter = (ts // 900_000_000_000) % 96 + (96 if dow >= 5 else 0)
        day = ts // 86_400_000_000_000
        keep1, keep3 = math.exp(-dt / 3600), math.exp(-dt / 10800)
        for f in FIELDS:
            v = m.get(f, math.nan)
            st["v"][f].append(v)
            usual = st["p"].get((f, quarter), math.nan)
            if not math.isnan(v):
                e = st["e"].get(f)
                st["e"][f] = v if e is None else self.alpha * v + (1 - self.alpha) * e
                st["p"][(f, quarter)] = v if math.isnan(usual) else 0.25 * v + 0.75 * usual
            row += _stats(st["v"][f], st["t"], st["e"].get(f, math.nan), v - usual)
            # day_dev: against the slot's once-a-day profile, then its 1 h and 3 h EWMAs in time
            d = st["d"].setdefault((f, quarter), [math.nan, 0.0, 0.0, -1])
            if d[3] != day:
                if d[2] > 0:
                    m_ = d[1] / d[2]
                    d[0] = m_ if math.isnan(d[0]) else 0.5 * m_ + 0.5 * d[0]
                d[1], d[2], d[3] = 0.0, 0.0, day
            dev = math.nan
            if not math.isnan(v):
                d[1] += v
                d[2] += 1
                dev = v - d[0]
            for key, keep in (("s1", keep1), ("s3", keep3)):
                e_ = st[key].get(f, math.nan)
                if not math.isnan(dev):
                    e_ = dev if math.isnan(e_) or math.isnan(keep) else keep * e_ + (1 - keep) * dev
                    st[key][f] = e_
            row += [dev, st["s1"].get(f, math.nan), st["s3"].get(f, math.nan)]
        dow = ((ts // 86_400_000_000_000) + 3) % 7
        p, q = m.get("pressure_bar", math.nan), m.get("flow_rate_lps", math.nan)
        row += [
            len(st["t"]),
            dt,
            hour,
            dow,
            float(dow >= 5),
            float(hour < 6 or hour >= 22),
            p / q if q else math.nan,
        ]
        return row

    def process(self, payloads: list[bytes], topics: list[str]) -> bytes:
        recs = []
        for raw, topic in zip(payloads, topics, strict=True):
            msg = orjson.loads(raw)
            _, site, kind, sid, _ = topic.split("/")
            m = {ALIASES.get(k.lower(), k.lower()): float(v) for k, v in msg["measurements"].items()}
            recs.append((site, kind, sid, msg.get("facility_zone", "STANDARD"), int(msg["timestamp"]), m))
        x = np.array([self.features(r[2], r[4], r[5]) for r in recs])
        pl = self.leak.predict_proba(x)[:, 1]
        pb = self.burst.predict_proba(x)[:, 1]
        lines = []
        for (site, kind, sid, zone, ts, m), leak, burst in zip(recs, pl, pb, strict=True):
            risk = (
                3 if burst > 0.5 or leak > 0.8 else 2 if burst > 0.2 or leak > 0.6 else 1 if leak > 0.3 else 0
            )
            fields = ",".join(f"{k}={v!r}" for k, v in m.items())
            lines.append(
                f"reading,kind={kind},sensor_id={sid},site={site},zone={zone} {fields},"
                f"leak_probability={leak!r},burst_probability={burst!r},risk={risk}i {ts}"
            )
        return ("\n".join(lines) + "\n").encode()


@pytest.mark.benchmark(group="pipeline: 10k water-flow readings, two 100-tree depth-12 forests")
def test_python_twin(benchmark: Any, workload: dict[str, Any]) -> None:
    twin = PythonTwin(workload["leak"], workload["burst"])
    for b in workload["batches"][:WARMUP]:
        twin.process(*b)  # warm windows
    rounds = iter(workload["batches"][WARMUP:])
    out = benchmark.pedantic(twin.process, setup=lambda: (next(rounds), {}), rounds=ROUNDS, iterations=1)
    n = len(workload["batches"][0][0])
    assert out.count(b"\n") == n
    benchmark.extra_info["readings_per_s"] = n / benchmark.stats["mean"]


@pytest.mark.benchmark(group="pipeline: 10k water-flow readings, two 100-tree depth-12 forests")
def test_rust_pipeline(benchmark: Any, workload: dict[str, Any]) -> None:
    models = {
        "water_flow": {
            "leak": core.TreeEnsemble.from_sklearn(workload["leak"], feature_names=workload["names"]),
            "burst": core.TreeEnsemble.from_sklearn(workload["burst"], feature_names=workload["names"]),
            "version": "bench",
        }
    }
    pipe = core.Pipeline(models=models, window=WINDOW)
    for b in workload["batches"][:WARMUP]:
        pipe.process(*b)
    rounds = iter(workload["batches"][WARMUP:])
    out = benchmark.pedantic(pipe.process, setup=lambda: (next(rounds), {}), rounds=ROUNDS, iterations=1)
    n = len(workload["batches"][0][0])
    assert out.count == n
    assert out.stale == 0
    benchmark.extra_info["readings_per_s"] = n / benchmark.stats["mean"]
