"""Rolling-window features: `FeatureStore.update` against a plain-Python incremental store (dict of
deques, pure-Python stats) and a NumPy store (per-sensor ring arrays, stats vectorised over the fields
of each reading), all computing the same features on the same stream: 10k readings over 1k sensors,
4 fields, window 60, folded into stores already holding a full window per sensor.

Plus the memory of a sensor's state: RSS growth over 100k sensors, measured in a subprocess."""

from __future__ import annotations

import copy
import json
import math
import pathlib
import subprocess
import sys
import textwrap
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from infrawatch import core

WINDOW = 60
N_SENSORS = 1000
N_READINGS = 10_000
FIELDS = ["pressure_bar", "flow_rate_lps", "temperature_c", "total_flow_m3"]
T0 = 1_767_225_600 * 10**9
ROUNDS = 3
GROUP = "features: 10k readings, 1k sensors, 4 fields, window 60"


def _calendar(ts: int) -> list[float]:
    when = datetime.fromtimestamp(ts // 10**9, tz=UTC)
    h, d = when.hour, when.weekday()
    return [float(h), float(d), 1.0 if d >= 5 else 0.0, 1.0 if h < 6 or h >= 22 else 0.0]


def _ratio(vals: list[float]) -> float:
    p, f = vals[0], vals[1]
    return math.nan if f == 0 or math.isnan(p) or math.isnan(f) else p / f


# --------------------------------------------------------------------------- plain Python


class PyStore:
    """What one would write without NumPy: a dict of deques per sensor, stats in pure Python."""

    def __init__(self, window: int, k: int) -> None:
        self.window, self.k, self.alpha = window, k, 2.0 / (window + 1)
        self.sensors: dict[str, tuple[Any, ...]] = {}
        self.stale = 0

    def update(self, ids: list[str], ts: list[int], rows: list[list[float]]) -> list[list[float]]:
        return [self.update_one(s, t, v) for s, t, v in zip(ids, ts, rows, strict=True)]

    def update_one(self, sid: str, ts: int, vals: list[float]) -> list[float]:
        st = self.sensors.get(sid)
        if st is None:
            st = (
                deque(maxlen=self.window),
                [deque(maxlen=self.window) for _ in vals],
                [math.nan] * self.k,
                {},
                {},  # once-a-day profile per field and slot: [profile, sum today, n today, day]
                [math.nan] * self.k,  # day_dev EWMA, 1 h
                [math.nan] * self.k,  # day_dev EWMA, 3 h
            )
            self.sensors[sid] = st
        times, rings, ewma, profile, days, dev1, dev3 = st
        if times and ts <= times[-1]:
            self.stale += 1
            return [math.nan] * (13 * self.k + 7)
        prev_ts = times[-1] if times else None
        times.append(ts)
        row: list[float] = []
        weekend = (ts // 86_400_000_000_000 + 3) % 7 >= 5
        hour = ts // 900_000_000_000 % 96 + (96 if weekend else 0)  # quarter-hour, weekday/weekend
        day = ts // 86_400_000_000_000
        gap = math.nan if prev_ts is None else (ts - prev_ts) / 1e9
        keep1, keep3 = math.exp(-gap / 3600), math.exp(-gap / 10800)
        for j, v in enumerate(vals):
            d = days.setdefault(j * 192 + hour, [math.nan, 0.0, 0.0, -1])
            if d[3] != day:
                if d[2] > 0:
                    d[0] = d[1] / d[2] if math.isnan(d[0]) else 0.5 * d[1] / d[2] + 0.5 * d[0]
                d[1], d[2], d[3] = 0.0, 0.0, day
            dd = math.nan
            if not math.isnan(v):
                d[1] += v
                d[2] += 1
                dd = v - d[0]
            if not math.isnan(dd):
                for e, keep in ((dev1, keep1), (dev3, keep3)):
                    e[j] = dd if math.isnan(e[j]) or math.isnan(keep) else keep * e[j] + (1 - keep) * dd
            day_feats = [dd, dev1[j], dev3[j]]
            usual = profile.get(j * 192 + hour, math.nan)
            hod = v - usual
            if not math.isnan(v):
                profile[j * 192 + hour] = v if math.isnan(usual) else 0.25 * v + 0.75 * usual
            ring = rings[j]
            prev = ring[-1] if ring else math.nan
            ring.append(v)
            if not math.isnan(v):
                ewma[j] = v if math.isnan(ewma[j]) else self.alpha * v + (1 - self.alpha) * ewma[j]
            pts = [((t - ts) / 1e9, x) for t, x in zip(times, ring, strict=True) if not math.isnan(x)]
            n = len(pts)
            if n == 0:
                row += [v, math.nan, math.nan, math.nan, math.nan, v - prev, math.nan, ewma[j]]
                row += [math.nan if math.isnan(v) else 0.0, hod, *day_feats]
                continue
            xs = [x for _, x in pts]
            mean = sum(xs) / n
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)
            mt = sum(t for t, _ in pts) / n
            sxx = sum((t - mt) ** 2 for t, _ in pts)
            slope = sum((t - mt) * (x - mean) for t, x in pts) / sxx if n >= 2 and sxx > 0 else math.nan
            z = math.nan if math.isnan(v) else 0.0 if std == 0 else (v - mean) / std
            row += [v, mean, std, min(xs), max(xs), v - prev, slope, ewma[j], z, hod, *day_feats]
        row += [float(len(times)), math.nan if prev_ts is None else (ts - prev_ts) / 1e9]
        row += _calendar(ts)
        row.append(_ratio(vals))
        return row


# --------------------------------------------------------------------------- NumPy


class NpStore:
    """Per-sensor ring arrays; each reading's stats vectorised over its fields."""

    def __init__(self, window: int, k: int) -> None:
        self.window, self.k, self.alpha = window, k, 2.0 / (window + 1)
        # sensor -> [ts ring, value ring (window × k), ewma, head, len, time-of-day profile (192 × k)]
        self.sensors: dict[str, list[Any]] = {}
        self.stale = 0

    def update(self, ids: list[str], ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
        out = np.full((len(ids), 13 * self.k + 7), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            for i, sid in enumerate(ids):
                self._one(sid, int(ts[i]), vals[i], out[i])
        return out

    def _one(self, sid: str, ts: int, v: np.ndarray, out: np.ndarray) -> None:
        w, k = self.window, self.k
        st = self.sensors.get(sid)
        if st is None:
            st = [
                np.zeros(w, np.int64),
                np.full((w, k), np.nan),
                np.full(k, np.nan),
                0,
                0,
                np.full((192, k), np.nan),  # time-of-day profile: 96 quarter-hours × weekday/weekend
                np.full((192, k), np.nan),  # once-a-day profile (day_dev)
                np.zeros((192, k)),  # its sum today
                np.zeros((192, k)),  # its count today
                np.full(192, -1),  # its day
                np.full(k, np.nan),  # day_dev EWMA, 1 h
                np.full(k, np.nan),  # day_dev EWMA, 3 h
            ]
            self.sensors[sid] = st
        tr, vr, ew, head, n, prof, dp, dsum, dn, dday, d1, d3 = st
        if n and ts <= tr[(head - 1) % w]:
            self.stale += 1
            return
        prev_ts = tr[(head - 1) % w] if n else None
        prev = vr[(head - 1) % w].copy() if n else np.full(k, np.nan)
        tr[head], vr[head] = ts, v
        seen = ~np.isnan(v)
        weekend = (ts // 86_400_000_000_000 + 3) % 7 >= 5
        hour = ts // 900_000_000_000 % 96 + (96 if weekend else 0)  # quarter-hour, weekday/weekend
        hod = v - prof[hour]
        prof[hour] = np.where(
            seen, np.where(np.isnan(prof[hour]), v, 0.25 * v + 0.75 * prof[hour]), prof[hour]
        )
        ew[seen] = np.where(np.isnan(ew[seen]), v[seen], self.alpha * v[seen] + (1 - self.alpha) * ew[seen])
        day = ts // 86_400_000_000_000
        if dday[hour] != day:
            had = dn[hour] > 0
            m_day = np.where(had, dsum[hour] / np.where(had, dn[hour], 1), np.nan)
            dp[hour] = np.where(
                had, np.where(np.isnan(dp[hour]), m_day, 0.5 * m_day + 0.5 * dp[hour]), dp[hour]
            )
            dsum[hour], dn[hour], dday[hour] = 0.0, 0.0, day
        dsum[hour] += np.where(seen, v, 0.0)
        dn[hour] += seen
        dd = np.where(seen, v - dp[hour], np.nan)
        gap = np.nan if prev_ts is None else (ts - prev_ts) / 1e9
        for e, tau in ((d1, 3600.0), (d3, 10800.0)):
            keep = np.exp(-gap / tau)
            upd = ~np.isnan(dd)
            e[upd] = (
                dd[upd]
                if np.isnan(keep)
                else np.where(np.isnan(e[upd]), dd[upd], keep * e[upd] + (1 - keep) * dd[upd])
            )
        st[3], st[4] = (head + 1) % w, min(n + 1, w)
        n = st[4]
        t = ((tr[:n] - ts) / 1e9)[:, None]
        x = vr[:n]
        m = ~np.isnan(x)
        c = m.sum(0)
        xz = np.where(m, x, 0.0)
        mean = xz.sum(0) / c
        dev = np.where(m, x - mean, 0.0)
        std = np.sqrt((dev**2).sum(0) / c)
        mt = np.where(m, t, 0.0).sum(0) / c
        dt = np.where(m, t - mt, 0.0)
        sxx = (dt**2).sum(0)
        slope = np.where((c >= 2) & (sxx > 0), (dt * dev).sum(0) / sxx, np.nan)
        lo = np.where(c > 0, np.where(m, x, np.inf).min(0), np.nan)
        hi = np.where(c > 0, np.where(m, x, -np.inf).max(0), np.nan)
        z = np.where(np.isnan(v), np.nan, np.where(std == 0, 0.0, (v - mean) / std))
        z = np.where((c == 0) & ~np.isnan(v), 0.0, z)
        stats = np.stack([v, mean, std, lo, hi, v - prev, slope, ew, z, hod, dd, d1, d3], axis=1)
        b = 13 * k
        out[:b] = stats.ravel()
        out[b] = n
        out[b + 1] = np.nan if prev_ts is None else (ts - prev_ts) / 1e9
        out[b + 2 : b + 6] = _calendar(ts)
        out[b + 6] = _ratio([float(v[0]), float(v[1])])


# --------------------------------------------------------------------------- workload


def _stream(
    rng: np.random.Generator, n: int, start: np.ndarray, max_step_s: int = 120
) -> tuple[list[str], np.ndarray, np.ndarray]:
    sid = rng.integers(len(start), size=n)
    # irregular steps per sensor (1 s up to max_step_s), so every reading is newer than its last
    clock = start.copy()
    ts = np.empty(n, np.int64)
    for i, s in enumerate(sid):
        clock[s] += int(rng.integers(10**9, max_step_s * 10**9))
        ts[i] = clock[s]
    vals = np.array([3.0, 12.0, 15.0, 1000.0]) + rng.normal(0, 1, size=(n, 4))
    vals[rng.random((n, 4)) < 0.1] = np.nan
    return [f"wf-{s:05d}" for s in sid], ts, vals


def _cols(v: np.ndarray) -> dict[str, np.ndarray]:
    return {f: v[:, j] for j, f in enumerate(FIELDS)}


@pytest.fixture(scope="module")
def workload() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    # warm-up: a full window for every sensor, then the measured batch
    start = np.full(N_SENSORS, T0, np.int64)
    warm = _stream(rng, N_SENSORS * WINDOW, start)
    clock = start.copy()
    for s, t in zip(warm[0], warm[1], strict=True):
        clock[int(s[3:])] = max(clock[int(s[3:])], t)
    batch = _stream(rng, N_READINGS, clock)
    rust = core.FeatureStore(WINDOW, FIELDS)
    py, npy = PyStore(WINDOW, 4), NpStore(WINDOW, 4)
    rust.update_arrays(warm[0], warm[1], _cols(warm[2]))
    py.update(warm[0], warm[1].tolist(), warm[2].tolist())
    npy.update(*warm)
    ids, ts, vals = batch
    # the competitors compute the same features: check on the measured batch before timing it
    expected = core.FeatureStore.restore(rust.snapshot()).update_arrays(ids, ts, _cols(vals))
    got_py = np.array(copy.deepcopy(py).update(ids[:2000], ts[:2000].tolist(), vals[:2000].tolist()))
    got_np = copy.deepcopy(npy).update(ids[:2000], ts[:2000], vals[:2000])
    np.testing.assert_allclose(got_py, expected[:2000], rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(got_np, expected[:2000], rtol=1e-7, atol=1e-7)
    # the measured stream spans an hour of a Thursday: check the time-of-day profiles (every
    # quarter-hour, weekdays and weekends) on a stream of 20 sensors over about three weeks too
    ids_w, ts_w, vals_w = _stream(rng, 3000, np.full(20, T0, np.int64), max_step_s=4 * 3600)
    expected_w = core.FeatureStore(WINDOW, FIELDS).update_arrays(ids_w, ts_w, _cols(vals_w))
    got_py_w = np.array(PyStore(WINDOW, 4).update(ids_w, ts_w.tolist(), vals_w.tolist()))
    np.testing.assert_allclose(got_py_w, expected_w, rtol=1e-7, atol=1e-7)
    got_np_w = NpStore(WINDOW, 4).update(ids_w, ts_w, vals_w)
    np.testing.assert_allclose(got_np_w, expected_w, rtol=1e-7, atol=1e-7)
    return {
        "batch": batch,
        "cols": _cols(vals),
        "rust_blob": rust.snapshot(),
        "py": py,
        "np": npy,
    }


def _run(
    benchmark: Any, setup: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]], fn: Callable[..., Any]
) -> None:
    benchmark.extra_info["readings"] = N_READINGS
    benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)


@pytest.mark.benchmark(group=GROUP)
def test_plain_python(benchmark: Any, workload: dict[str, Any]) -> None:
    ids, ts, vals = workload["batch"]
    ts_l, vals_l = ts.tolist(), vals.tolist()
    _run(benchmark, lambda: ((copy.deepcopy(workload["py"]),), {}), lambda s: s.update(ids, ts_l, vals_l))


@pytest.mark.benchmark(group=GROUP)
def test_numpy(benchmark: Any, workload: dict[str, Any]) -> None:
    ids, ts, vals = workload["batch"]
    _run(benchmark, lambda: ((copy.deepcopy(workload["np"]),), {}), lambda s: s.update(ids, ts, vals))


@pytest.mark.benchmark(group=GROUP)
def test_feature_store(benchmark: Any, workload: dict[str, Any]) -> None:
    ids, ts, _ = workload["batch"]
    cols, blob = workload["cols"], workload["rust_blob"]
    benchmark.extra_info["readings"] = N_READINGS
    benchmark.pedantic(
        lambda s: s.update_arrays(ids, ts, cols),
        setup=lambda: ((core.FeatureStore.restore(blob),), {}),
        rounds=20,
        iterations=1,
        warmup_rounds=1,
    )


_MEMORY_PROBE = textwrap.dedent(
    """
    import gc, json, sys
    import numpy as np, psutil
    from infrawatch import core
    n, window, impl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    fields = ["pressure_bar", "flow_rate_lps", "temperature_c", "total_flow_m3"]
    ids = [f"sensor-{i:07d}" for i in range(n)]
    ts = np.full(n, 1_767_225_600 * 10**9, np.int64)
    vals = np.ones((n, 4))
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    if impl == "rust":
        store = core.FeatureStore(window, fields)
        for a in range(0, n, 10_000):
            b = a + 10_000
            store.update_arrays(ids[a:b], ts[a:b], {f: vals[a:b, j] for j, f in enumerate(fields)})
    else:
        sys.path.insert(0, sys.argv[4])
        from test_bench_features import PyStore
        from collections import deque
        store = PyStore(window, 4)
        # whole windows, built directly (a deque's memory grows with its content; folding 60
        # readings per sensor through the pure-Python stats would take minutes)
        t0 = int(ts[0])
        for sid in ids:
            store.sensors[sid] = (
                deque((t0 + k for k in range(window)), maxlen=window),
                [deque((float(k) + j / 7 for k in range(window)), maxlen=window) for j in range(4)],
                [1.0, 2.0, 3.0, 4.0],
                {},  # time-of-day profile: empty here, up to 192 entries per field once a week is seen
            )
    gc.collect()
    print(json.dumps({"bytes_per_sensor": (proc.memory_info().rss - before) / n}))
    """
)


def _probe(n: int, impl: str) -> dict[str, float]:
    here = str(pathlib.Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(n), str(WINDOW), impl, here],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


@pytest.mark.benchmark(group="features: memory per sensor (window 60, 4 fields)")
def test_memory_per_sensor(benchmark: Any) -> None:
    rust = _probe(100_000, "rust")
    py = _probe(10_000, "python")
    benchmark.extra_info["rust_bytes_per_sensor"] = rust["bytes_per_sensor"]
    benchmark.extra_info["python_bytes_per_sensor"] = py["bytes_per_sensor"]
    state = 8 * (WINDOW * 5 + 4 * (1 + 192))  # ring, EWMAs, weekday/weekend quarter-hour profiles
    print(
        f"\nFeatureStore: {rust['bytes_per_sensor']:.0f} B/sensor over 100k sensors (state allocation: "
        f"{state} B); plain Python: {py['bytes_per_sensor']:.0f} B/sensor over 10k sensors"
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
