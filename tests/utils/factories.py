"""Test factories: payload builders and small models trained on simple synthetic streams.

The streams here are deliberately simple (the real simulator lives in `infrawatch.sim`); the models
only need to be real scikit-learn ensembles that react to planted incidents.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest, RandomForestClassifier, RandomForestRegressor

from infrawatch import core

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
MINUTE = 60 * 10**9


def telemetry_topic(site: str, kind: str, sensor: str) -> str:
    return f"infrawatch/{site}/{kind}/{sensor}/telemetry"


def nested(sensor: str, ts_ns: int, zone: str = "STANDARD", **measurements: float) -> bytes:
    return json.dumps(
        {
            "sensor_id": sensor,
            "timestamp": ts_ns,
            "location": "Plant room",
            "facility_zone": zone,
            "measurements": measurements,
            "device_metadata": {"battery_level": 80, "signal_strength": -50},
        }
    ).encode()


def flat(sensor: str, ts_ns: int, **measurements: float) -> bytes:
    return json.dumps({"sensor_id": sensor, "timestamp": ts_ns, **measurements}).encode()


def water_flow_stream(
    rng: np.random.Generator, n: int, *, leak_at: int | None = None, burst_at: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One sensor's pressure/flow series and its leak and burst labels."""
    t = np.arange(n)
    flow = 10 + 3 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.3, n)
    leak = np.zeros(n, bool)
    burst = np.zeros(n, bool)
    if leak_at is not None:
        ramp = np.clip((t - leak_at) / 20, 0, 1) * 4
        flow += ramp
        leak[leak_at:] = True
    if burst_at is not None:
        flow[burst_at:] += 25
        burst[burst_at:] = True
    pressure = 4.0 - 0.04 * flow + rng.normal(0, 0.02, n) - np.where(burst, 1.2, 0)
    temp = 12 + rng.normal(0, 0.2, n)
    return {"pressure_bar": pressure, "flow_rate_lps": flow, "temperature_c": temp}, leak, burst


def _features(kind: str, streams: list[dict[str, np.ndarray]], window: int) -> np.ndarray:
    fs = core.FeatureStore(window=window, fields=core.kind_fields(kind))
    rows = []
    for s, cols in enumerate(streams):
        n = len(next(iter(cols.values())))
        ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
        rows.append(fs.update_arrays([f"train-{s}"] * n, ts, cols))
    return np.vstack(rows)


def train_models(seed: int = 0, window: int = 20, n_trees: int = 15) -> dict[str, dict[str, Any]]:
    """Small but real models for every kind, trained on features from `core.FeatureStore`."""
    rng = np.random.default_rng(seed)
    wf_streams, leaks, bursts = [], [], []
    for s in range(24):
        cols, leak, burst = water_flow_stream(
            rng, 240, leak_at=120 if s % 3 == 1 else None, burst_at=150 if s % 3 == 2 else None
        )
        wf_streams.append(cols)
        leaks.append(leak)
        bursts.append(burst)
    xw = _features("water_flow", wf_streams, window)  # NaN kept: the forests route it
    leak_m = RandomForestClassifier(n_trees, max_depth=6, random_state=seed).fit(xw, np.concatenate(leaks))
    burst_m = RandomForestClassifier(n_trees, max_depth=6, random_state=seed).fit(xw, np.concatenate(bursts))

    q_streams, contaminated = [], []
    for s in range(16):
        n = 200
        bad = np.zeros(n, bool)
        if s % 2:
            bad[100:140] = True
        cols = {
            "ph": 7.2 + rng.normal(0, 0.05, n) - np.where(bad, 0.5, 0),
            "turbidity_ntu": 0.4 + rng.normal(0, 0.05, n) + np.where(bad, 1.5, 0),
            "chlorine_mgl": 0.5 + rng.normal(0, 0.03, n) - np.where(bad, 0.3, 0),
            "temperature_c": 14 + rng.normal(0, 0.2, n),
        }
        q_streams.append(cols)
        contaminated.append(bad)
    xq = _features("water_quality", q_streams, window)
    contam_m = RandomForestClassifier(n_trees, max_depth=6, random_state=seed).fit(
        xq, np.concatenate(contaminated)
    )

    e_streams = []
    for _ in range(12):
        n = 300
        occ = rng.integers(0, 5, n).astype(float)
        out_t = 5 + rng.normal(0, 2, n)
        kwh = 0.3 + 0.2 * occ + 0.05 * np.maximum(18 - out_t, 0) + rng.normal(0, 0.03, n)
        e_streams.append({"energy_kwh": kwh, "occupancy": occ, "outdoor_temperature_c": out_t})
    xe = _features("energy", e_streams, window)
    names = core.FeatureStore(window=window, fields=core.kind_fields("energy")).feature_names
    # the expected-use regressor must not see the measured kWh of the reading it predicts
    ctx = [i for i, n in enumerate(names) if not n.startswith("energy_kwh")]
    y = np.concatenate([s["energy_kwh"] for s in e_streams])
    expected_m = RandomForestRegressor(n_trees, max_depth=6, random_state=seed).fit(xe[:, ctx], y)
    anomaly_m = IsolationForest(n_estimators=n_trees, random_state=seed).fit(xe)

    def ens(m: Any, cols: list[str]) -> core.TreeEnsemble:
        return core.TreeEnsemble.from_sklearn(m, feature_names=cols)

    wf_names = core.FeatureStore(window=window, fields=core.kind_fields("water_flow")).feature_names
    q_names = core.FeatureStore(window=window, fields=core.kind_fields("water_quality")).feature_names
    return {
        "water_flow": {"leak": ens(leak_m, wf_names), "burst": ens(burst_m, wf_names), "version": "wf-test"},
        "water_quality": {"contamination": ens(contam_m, q_names), "version": "wq-test"},
        "energy": {
            "expected_kwh": ens(expected_m, [names[i] for i in ctx]),
            "anomaly": ens(anomaly_m, names),
            "version": "en-test",
        },
    }
