"""FeatureStore against an independent NumPy reference of the feature definitions (the brief's
definitions re-implemented with per-sensor arrays, `np.polyfit` for the slope and `datetime` for the
calendar features), plus snapshots, corrupt blobs, validation and the batch entry point."""

from __future__ import annotations

import math
import pickle
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrawatch import core

FeatureStore = core.FeatureStore

STATS = [
    "last",
    "mean",
    "std",
    "min",
    "max",
    "delta",
    "slope",
    "ewma",
    "zscore",
    "hod_dev",
    "day_dev",
    "day_dev_1h",
    "day_dev_3h",
]
HOD_ALPHA = 0.25
DAY_ALPHA = 0.5
TAIL = ["count", "dt_s", "hour", "dow", "weekend", "night", "pressure_flow_ratio"]
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z, a Thursday


@dataclass
class _Sensor:
    ts: list[int] = field(default_factory=list)
    vals: list[np.ndarray] = field(default_factory=list)
    ewma: np.ndarray | None = None
    profile: dict[tuple[int, int], float] = field(
        default_factory=dict
    )  # (field, weekend·96 + UTC ¼ h) → EWMA
    # (field, slot) → [profile of earlier days, values seen on the slot's latest day, that day]
    day_profile: dict[tuple[int, int], list[object]] = field(default_factory=dict)
    day_dev_1h: dict[tuple[int, float], float] = field(default_factory=dict)  # (field, τ in h)


def _window_stats(v: np.ndarray, t: np.ndarray, last: float) -> tuple[float, ...]:
    """mean, std, min, max, slope and z-score of one field's non-NaN window points `v` at times `t`."""
    if v.size == 0:
        return np.nan, np.nan, np.nan, np.nan, np.nan, (np.nan if np.isnan(last) else 0.0)
    # centre on the reading's own value (or the oldest point) so that `1e6 + noise` data keeps
    # the noise's precision
    c = last if not np.isnan(last) else v[0]
    d = v - c
    lo, hi = v.min(), v.max()
    mean = c + d.mean()
    std = 0.0 if lo == hi else float(np.std(d))
    if v.size < 2 or np.var(t) == 0:
        slope = np.nan
    elif lo == hi:
        slope = 0.0
    else:
        slope = np.polyfit(t, d, 1)[0]
    if np.isnan(last):
        z = np.nan
    elif std == 0:
        z = 0.0
    else:
        z = -d.mean() / std
    return mean, std, lo, hi, slope, z


class Reference:
    """The feature definitions, straight from the brief, in NumPy."""

    def __init__(self, window: int, fields: list[str]) -> None:
        self.window, self.fields = window, fields
        self.sensors: dict[str, _Sensor] = {}
        self.stale = 0

    def update(self, sid: str, ts: int, values: np.ndarray) -> np.ndarray:
        k = len(self.fields)
        s = self.sensors.setdefault(sid, _Sensor(ewma=np.full(k, np.nan)))
        if s.ts and ts <= s.ts[-1]:
            self.stale += 1
            return np.full(k * len(STATS) + 7, np.nan)
        prev_ts = s.ts[-1] if s.ts else None
        prev_vals = s.vals[-1] if s.vals else None
        s.ts.append(ts)
        s.vals.append(values.copy())
        s.ts, s.vals = s.ts[-self.window :], s.vals[-self.window :]
        alpha = 2.0 / (self.window + 1)
        t_all = (np.array(s.ts, dtype=np.int64) - ts) / 1e9
        v_all = np.array(s.vals)
        row: list[float] = []
        assert s.ewma is not None
        when = datetime.fromtimestamp(ts // 10**9, tz=UTC)
        for j in range(k):
            last = values[j]
            if not np.isnan(last):
                s.ewma[j] = last if np.isnan(s.ewma[j]) else alpha * last + (1 - alpha) * s.ewma[j]
            ok = ~np.isnan(v_all[:, j])
            delta = last - prev_vals[j] if prev_vals is not None else np.nan
            mean, std, lo, hi, slope, z = _window_stats(v_all[ok, j], t_all[ok], last)
            # deviation from the sensor's usual level at this time of day, before learning this reading
            quarter = when.hour * 4 + when.minute // 15 + (96 if when.weekday() >= 5 else 0)
            usual = s.profile.get((j, quarter))
            hod = np.nan if usual is None or np.isnan(last) else last - usual
            if not np.isnan(last):
                s.profile[(j, quarter)] = (
                    last if usual is None else HOD_ALPHA * last + (1 - HOD_ALPHA) * usual
                )
            # against the once-a-day profile: a slot's previous day enters as its mean when the
            # slot is first seen on a new day
            day = ts // (86_400 * 10**9)
            p, seen, on = s.day_profile.setdefault((j, quarter), [np.nan, [], None])
            if on != day:
                if seen:
                    m = float(np.mean(seen))
                    p = m if np.isnan(p) else DAY_ALPHA * m + (1 - DAY_ALPHA) * p
                seen, on = [], day
            dd = np.nan if np.isnan(last) else last - p
            if not np.isnan(last):
                seen.append(last)
            s.day_profile[(j, quarter)] = [p, seen, on]
            # its means over about 1 h and 3 h: EWMAs in time, weight exp(−dt / τ) for the old value
            means = []
            for tau in (1.0, 3.0):
                old = s.day_dev_1h.get((j, tau), np.nan)
                if not np.isnan(dd):
                    keep = np.exp(-(ts - prev_ts) / 1e9 / (3600 * tau)) if prev_ts is not None else np.nan
                    s.day_dev_1h[(j, tau)] = (
                        dd if np.isnan(old) or np.isnan(keep) else keep * old + (1 - keep) * dd
                    )
                means.append(s.day_dev_1h.get((j, tau), np.nan))
            row += [last, mean, std, lo, hi, delta, slope, s.ewma[j], z, hod, dd, *means]
        row += [
            len(s.ts),
            (ts - prev_ts) / 1e9 if prev_ts is not None else np.nan,
            when.hour,
            when.weekday(),
            1.0 if when.weekday() >= 5 else 0.0,
            1.0 if when.hour < 6 or when.hour >= 22 else 0.0,
        ]
        if "pressure_bar" in self.fields and "flow_rate_lps" in self.fields:
            p = values[self.fields.index("pressure_bar")]
            f = values[self.fields.index("flow_rate_lps")]
            with np.errstate(over="ignore"):  # a tiny flow gives inf, as IEEE division does
                row.append(np.nan if f == 0 or np.isnan(p) or np.isnan(f) else p / f)
        else:
            row.append(np.nan)
        return np.array(row, dtype=float)


def random_stream(
    rng: np.random.Generator, n: int, n_sensors: int, k: int, offset: float = 1e6
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Interleaved sensors, irregular steps, out-of-order and duplicate timestamps, NaN holes,
    large offsets."""
    clock = np.full(n_sensors, T0, dtype=np.int64)
    ids, ts = [], np.empty(n, dtype=np.int64)
    for i in range(n):
        s = int(rng.integers(n_sensors))
        r = rng.random()
        if r < 0.05:
            step = -int(rng.integers(1, 5 * 10**9))  # out of order
        elif r < 0.08:
            step = 0  # redelivered duplicate
        else:
            step = int(rng.integers(1, 7200 * 10**9))  # up to two hours: crosses hours and days
        clock[s] += step
        ids.append(f"sensor-{s}")
        ts[i] = clock[s]
    vals = offset * (1 + np.arange(k)) + rng.normal(0, 3, size=(n, k))
    vals[rng.random((n, k)) < 0.2] = np.nan
    return ids, ts, vals


def run_reference(ref: Reference, ids: list[str], ts: np.ndarray, vals: np.ndarray) -> np.ndarray:
    return np.array([ref.update(s, int(t), v) for s, t, v in zip(ids, ts, vals, strict=True)])


def columns(fields: list[str], vals: np.ndarray) -> dict[str, np.ndarray]:
    return {f: vals[:, j] for j, f in enumerate(fields)}


def assert_same(actual: np.ndarray, expected: np.ndarray, names: list[str]) -> None:
    assert actual.shape == expected.shape
    for j, name in enumerate(names):
        np.testing.assert_allclose(actual[:, j], expected[:, j], rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize(("window", "seed"), [(2, 0), (5, 1), (60, 2)])
def test_matches_numpy_reference_on_random_streams(window: int, seed: int) -> None:
    fields = ["pressure_bar", "flow_rate_lps", "temperature_c", "ph"]
    rng = np.random.default_rng(seed)
    ids, ts, vals = random_stream(rng, 1500, 7, len(fields))
    fs = FeatureStore(window=window, fields=fields)
    ref = Reference(window, fields)
    # several batches: state carries across calls
    got = np.vstack(
        [
            fs.update_arrays(ids[a:b], ts[a:b], columns(fields, vals[a:b]))
            for a, b in [(0, 1), (1, 400), (400, 401), (401, 1500)]
        ]
    )
    assert_same(got, run_reference(ref, ids, ts, vals), fs.feature_names)
    assert fs.stale_count == ref.stale > 0
    assert len(fs) == 7


@settings(max_examples=40, deadline=None)
@given(
    window=st.integers(2, 6),
    steps=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(-3, 10),
            st.one_of(st.none(), st.floats(-1e3, 1e3)),
            st.one_of(st.none(), st.floats(-1e3, 1e3)),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_matches_reference_on_small_generated_streams(
    window: int, steps: list[tuple[int, int, float | None, float | None]]
) -> None:
    fields = ["pressure_bar", "flow_rate_lps"]
    clock = [T0] * 3
    ids, ts, rows = [], [], []
    for s, dt, p, f in steps:
        clock[s] += dt * 10**9
        ids.append(f"s{s}")
        ts.append(clock[s])
        rows.append([np.nan if p is None else p, np.nan if f is None else f])
    vals = np.array(rows, dtype=float)
    fs = FeatureStore(window, fields)
    got = fs.update_arrays(ids, np.array(ts, dtype=np.int64), columns(fields, vals))
    assert_same(got, run_reference(Reference(window, fields), ids, np.array(ts), vals), fs.feature_names)


def test_feature_names_and_defaults() -> None:
    fs = FeatureStore(window=10, fields=["ph", "redox_mv"])
    assert fs.feature_names == [f"{f}_{s}" for f in ["ph", "redox_mv"] for s in STATS] + TAIL
    assert fs.window == 10
    assert fs.fields == ["ph", "redox_mv"]
    default = FeatureStore()
    assert default.window == 60
    # every kind's model fields (DESIGN.md §1 kinds), deduplicated, in order
    expected = [
        "pressure_bar", "flow_rate_lps", "temperature_c", "total_flow_m3",
        "ph", "turbidity_ntu", "dissolved_oxygen_mgl", "conductivity_uscm", "chlorine_mgl", "redox_mv",
        "energy_kwh", "occupancy", "outdoor_temperature_c", "humidity_pct", "voltage_v", "current_a",
        "power_factor",
    ]  # fmt: skip
    assert default.fields == expected
    assert len(default.feature_names) == len(STATS) * len(expected) + 7


@pytest.mark.parametrize(
    ("window", "fields"),
    [(1, ["ph"]), (0, ["ph"]), (10, ["pressure"]), (10, ["nope"]), (10, ["ph", "ph"]), (10**9, ["ph"])],
)
def test_invalid_arguments_raise_value_error(window: int, fields: list[str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        FeatureStore(window, fields)


def test_shape_errors() -> None:
    fs = FeatureStore(5, ["ph"])
    with pytest.raises(ValueError, match="timestamp_ns"):
        fs.update_arrays(["a", "b"], np.array([1], dtype=np.int64), {})
    with pytest.raises(ValueError, match="ph"):
        fs.update_arrays(["a"], np.array([1], dtype=np.int64), {"ph": np.zeros(2)})
    with pytest.raises(ValueError, match="sequence of str"):
        fs.update_arrays("ab", np.array([1, 2], dtype=np.int64), {})
    assert len(fs) == 0


def test_empty_input() -> None:
    fs = FeatureStore(5, ["ph"])
    x = fs.update_arrays([], np.array([], dtype=np.int64), {"ph": np.array([])})
    assert x.shape == (0, len(STATS) + 7)
    assert x.dtype == np.float64


def test_missing_fields_are_nan_never_zero() -> None:
    fields = ["pressure_bar", "flow_rate_lps", "ph"]
    fs = FeatureStore(4, fields)
    # ph never given; other keys ignored; non-contiguous input and lists accepted
    p = np.array([[1.0, 9.0], [2.0, 9.0], [4.0, 9.0]])[:, 0]
    x = fs.update_arrays(
        ["a", "a", "a"],
        [T0, T0 + 10**9, T0 + 3 * 10**9],
        {"pressure_bar": p, "flow_rate_lps": [2.0, 0.0, 1.0], "x": [1]},
    )
    names = fs.feature_names
    ph = [i for i, n in enumerate(names) if n.startswith("ph_")]
    assert np.isnan(x[:, ph]).all()
    ratio = x[:, names.index("pressure_flow_ratio")]
    assert ratio[0] == 0.5
    assert np.isnan(ratio[1])  # flow == 0
    assert ratio[2] == 4.0
    # no flow in the store: the ratio is NaN even with both present in the data
    fs2 = FeatureStore(4, ["pressure_bar"])
    x2 = fs2.update_arrays(["a"], [T0], {"pressure_bar": [1.0], "flow_rate_lps": [2.0]})
    assert np.isnan(x2[0, -1])


def test_calendar_features_match_datetime() -> None:
    rng = random.Random(5)
    stamps = [rng.randrange(-(10**18), 4 * 10**18) for _ in range(500)]
    fs = FeatureStore(2, ["ph"])
    # one sensor per reading: every reading folds
    x = fs.update_arrays([str(i) for i in range(len(stamps))], np.array(stamps), {})
    names = fs.feature_names
    for row, ts in zip(x, stamps, strict=True):
        when = datetime.fromtimestamp(ts // 10**9, tz=UTC)
        assert row[names.index("hour")] == when.hour
        assert row[names.index("dow")] == when.weekday()
        assert row[names.index("weekend")] == float(when.weekday() >= 5)
        assert row[names.index("night")] == float(when.hour < 6 or when.hour >= 22)
        assert row[names.index("count")] == 1.0
        assert math.isnan(row[names.index("dt_s")])


def test_stale_and_duplicate_readings_are_not_folded() -> None:
    fs = FeatureStore(3, ["ph"])
    x = fs.update_arrays(
        ["a", "a", "a", "b", "a"], [T0, T0, T0 - 1, T0 - 5, T0 + 1], {"ph": [7.0, 99.0, 99.0, 6.0, 8.0]}
    )
    assert np.isnan(x[1]).all()
    assert np.isnan(x[2]).all()
    assert not np.isnan(x[3]).all()  # another sensor's older clock is fine
    names = fs.feature_names
    assert x[4, names.index("ph_delta")] == 1.0  # against 7.0, the duplicates were not folded
    assert x[4, names.index("count")] == 2.0
    assert fs.stale_count == 2


def test_hod_dev_by_hand() -> None:
    """Worked by hand: one profile slot per UTC quarter-hour, weekdays apart from weekends, each an
    EWMA (alpha 0.25) read before the reading updates it; NaN and stale readings leave it alone."""
    h, m, d = 3600 * 10**9, 60 * 10**9, 86_400 * 10**9  # T0 is a Thursday midnight
    stream = [
        ("a", T0 + 2 * h, 10.0, math.nan),  # Thu 02:00: slot empty
        ("a", T0 + 2 * h + 20 * m, 50.0, math.nan),  # Thu 02:20: another quarter-hour
        ("a", T0 + d + 2 * h + 5 * m, 14.0, 14.0 - 10.0),  # Fri 02:05; slot → 11
        ("a", T0 + d + 2 * h + 1 * m, 1000.0, math.nan),  # stale: not folded, slot untouched
        ("b", T0 + d + 2 * h + 5 * m, 100.0, math.nan),  # another sensor, its own profile
        ("a", T0 + 2 * d + 2 * h, 99.0, math.nan),  # Sat 02:00: the weekend profile is empty
        ("a", T0 + 3 * d + 2 * h + 3 * m, 95.0, 95.0 - 99.0),  # Sun 02:03
        ("a", T0 + 4 * d + 2 * h + 14 * m, math.nan, math.nan),  # Mon 02:14: missing, slot kept
        ("a", T0 + 5 * d + 2 * h, 15.0, 15.0 - 11.0),  # Tue 02:00; slot → 12
        ("a", T0 + 6 * d + 2 * h + 15 * m - 10**9, 12.0, 0.0),  # Wed 02:14:59
        ("a", T0 + 7 * d + 2 * h - 10**9, 7.0, math.nan),  # Thu 01:59:59: the quarter before
    ]
    fs = FeatureStore(3, ["flow_rate_lps"])
    x = fs.update_arrays(
        [r[0] for r in stream], np.array([r[1] for r in stream]), {"flow_rate_lps": [r[2] for r in stream]}
    )
    got = x[:, fs.feature_names.index("flow_rate_lps_hod_dev")]
    np.testing.assert_array_equal(got, [r[3] for r in stream])
    assert fs.stale_count == 1


def test_day_dev_by_hand() -> None:
    """Worked by hand: the once-a-day profile learns a slot's mean when the slot is first seen on
    a later day (alpha 0.5); `day_dev_1h` is an EWMA in time (1 h) of the deviations."""
    h, m, d = 3600 * 10**9, 60 * 10**9, 86_400 * 10**9  # T0 is a Thursday midnight
    stream = [
        ("a", T0 + 2 * h, 10.0, math.nan),  # Thu 02:00: no earlier day
        ("a", T0 + 2 * h + 5 * m, 20.0, math.nan),  # still Thursday: profile still empty
        ("a", T0 + d + 2 * h + 1 * m, 18.0, 18.0 - 15.0),  # Fri: Thursday's mean 15
        ("a", T0 + d + 2 * h + 2 * m, math.nan, math.nan),  # missing: nothing learnt
        ("a", T0 + d + 2 * h + 3 * m, 12.0, 12.0 - 15.0),  # the profile holds all Friday
        ("a", T0 + 4 * d + 2 * h, 25.0, 25.0 - (0.5 * 15.0 + 0.5 * 15.0)),  # Mon: Friday's mean 15
        ("a", T0 + 5 * d + 2 * h, 25.0, 25.0 - (0.5 * 25.0 + 0.5 * 15.0)),  # Tue: Monday's 25
    ]
    fs = FeatureStore(3, ["flow_rate_lps"])
    x = fs.update_arrays(
        [r[0] for r in stream], np.array([r[1] for r in stream]), {"flow_rate_lps": [r[2] for r in stream]}
    )
    got = x[:, fs.feature_names.index("flow_rate_lps_day_dev")]
    np.testing.assert_array_equal(got, [r[3] for r in stream])
    smooth = x[:, fs.feature_names.index("flow_rate_lps_day_dev_1h")]
    k = math.exp(-1 / 60)  # a minute after the previous (missing) reading
    np.testing.assert_array_equal(smooth[:2], [math.nan, math.nan])
    np.testing.assert_array_equal(smooth[2:4], [3.0, 3.0])  # the first deviation; a missing one keeps it
    assert smooth[4] == pytest.approx(k * 3.0 + (1 - k) * -3.0, rel=1e-12)


def test_snapshot_restore_continues_bit_identically() -> None:
    fields = ["pressure_bar", "flow_rate_lps", "temperature_c"]
    ids, ts, vals = random_stream(np.random.default_rng(9), 3000, 50, len(fields))
    a = FeatureStore(20, fields)
    a.update_arrays(ids[:1800], ts[:1800], columns(fields, vals[:1800]))
    blob = a.snapshot()
    assert isinstance(blob, bytes)
    b = FeatureStore.restore(blob)
    c = pickle.loads(pickle.dumps(a))
    assert (b.window, b.fields, len(b), b.stale_count) == (a.window, a.fields, len(a), a.stale_count)
    rest = (ids[1800:], ts[1800:], columns(fields, vals[1800:]))
    xa, xb, xc = a.update_arrays(*rest), b.update_arrays(*rest), c.update_arrays(*rest)
    assert xa.tobytes() == xb.tobytes() == xc.tobytes()
    assert a.snapshot() == b.snapshot() == c.snapshot()


def test_corrupt_or_foreign_snapshots_raise_value_error() -> None:
    fs = FeatureStore(4, ["ph", "chlorine_mgl"])
    fs.update_arrays(["a", "b", "a"], [1, 2, 3], {"ph": [7.0, 7.1, 7.2]})
    blob = fs.snapshot()
    for cut in range(len(blob)):
        with pytest.raises(ValueError, match="corrupt feature store snapshot"):
            FeatureStore.restore(blob[:cut])
    with pytest.raises(ValueError, match="trailing"):
        FeatureStore.restore(blob + b"\0")
    with pytest.raises(ValueError, match="magic"):
        FeatureStore.restore(b"PK\x03\x04 definitely a zip file")
    with pytest.raises(ValueError, match="version"):
        FeatureStore.restore(blob[:8] + (99).to_bytes(4, "little") + blob[12:])
    # blobs of earlier formats (2: one quarter-hour profile, 1: no profile) are refused by version
    for old in (1, 2):
        with pytest.raises(ValueError, match=f"unsupported version {old}"):
            FeatureStore.restore(blob[:8] + old.to_bytes(4, "little") + blob[12:])
    rng = random.Random(3)
    for _ in range(500):
        junk = rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(ValueError):  # noqa: PT011 - any corruption message
            FeatureStore.restore(junk)
        flipped = bytearray(blob)
        flipped[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        try:
            s = FeatureStore.restore(bytes(flipped))
        except ValueError:
            continue
        s.update_arrays(["a"], [100], {})  # a flip the format cannot detect still gives a usable store


def test_update_reads_a_batch() -> None:
    fields = ["pressure_bar", "flow_rate_lps"]
    ids, ts, vals = random_stream(np.random.default_rng(4), 300, 5, 2)
    # the decoder's batch shape: canonical columns plus columns the store does not keep
    batch: Any = SimpleNamespace(
        sensor_id=ids, timestamp_ns=ts, fields={**columns(fields, vals), "ph": np.zeros(len(ids))}
    )
    a, b = FeatureStore(8, fields), FeatureStore(8, fields)
    assert a.update(batch).tobytes() == b.update_arrays(ids, ts, columns(fields, vals)).tobytes()


def test_update_with_decoded_batch() -> None:
    decode = core.decode
    payloads = [
        f'{{"sensor_id": "S1", "timestamp": {T0 + i * 10**9}, "pressure": {1 + i}, "flow": 2.0}}'.encode()
        for i in range(5)
    ]
    batch = decode(payloads, ["infrawatch/site/water_flow/S1/telemetry"] * 5)
    fs = FeatureStore(3, ["pressure_bar", "flow_rate_lps"])
    x = fs.update(batch)
    ref = Reference(3, ["pressure_bar", "flow_rate_lps"])
    vals = np.array([[1.0 + i, 2.0] for i in range(5)])
    expected = run_reference(ref, ["S1"] * 5, np.array([T0 + i * 10**9 for i in range(5)]), vals)
    assert_same(x, expected, fs.feature_names)
