"""Water mains: diurnal demand, pressure that falls as demand rises, leaks, bursts and sensor faults.

Physics in one line: head loss grows with the square of flow, so pressure = supply pressure −
k·flow² (+ noise). A leak is extra flow that creeps up over hours and stays until repaired; a burst
is a sudden large jump in flow with a pressure collapse, lasting until the valve is shut. Sensor
faults (stuck, spikes, drift, dropouts) touch one signal only and are labelled normal.
"""

from __future__ import annotations

import numpy as np

from infrawatch.sim._common import (
    DEFAULT_START_NS,
    NS,
    Event,
    SimData,
    ar1,
    diurnal,
    flatten,
    make_grid,
    make_sensors,
    place_intervals,
)

LABELS = ("normal", "leak", "burst")
FIELDS = ("pressure_bar", "flow_rate_lps", "temperature_c", "total_flow_m3")


def simulate(
    seed: int,
    n_sensors: int = 20,
    days: float = 7.0,
    interval_s: int = 60,
    *,
    sites: int = 2,
    critical_share: float = 0.3,
    leaks_per_sensor_week: float = 0.6,
    bursts_per_sensor_week: float = 0.4,
    faults_per_sensor_week: float = 1.0,
    start_ns: int = DEFAULT_START_NS,
) -> SimData:
    """Simulate `n_sensors` flow/pressure meters for `days` at one reading per `interval_s`."""
    rng = np.random.default_rng([seed, 1])
    sensors = make_sensors(rng, "water_flow", n_sensors, sites, critical_share, "WF")
    grid = make_grid(days, interval_s, start_ns)
    n, m = n_sensors, grid.n_steps
    weeks = days / 7.0
    steps_per_h = 3600 / interval_s

    weekend = (grid.dow >= 5)[None, :]
    hour = grid.hour[None, :] + np.where(weekend, 1.5, 0.0)  # people sleep in at weekends
    shape = 0.35 + diurnal(hour, ((7.5, 1.5, 0.9), (19.5, 2.0, 0.75), (13.0, 2.5, 0.35)))
    base = rng.uniform(20, 150, size=(n, 1))  # mean flow L/s
    supply = rng.uniform(3.0, 6.0, size=(n, 1))  # bar at zero flow
    # k so that headloss at the usual peak-hour flow (≈1.7× the mean) is 20–50% of supply
    # pressure: mains are sized to hold service pressure at peak hour (mean-flow headloss is then
    # 7–17%); only a burst's extra flow drives the pressure towards zero
    peak = base * float(shape.max() / shape.mean())
    k = supply * rng.uniform(0.2, 0.5, size=(n, 1)) / peak**2
    demand = base * shape / shape.mean() * (1 + ar1(rng, (n, m), 0.97, 0.06))
    demand = np.maximum(demand, 0.05 * base)

    label = np.zeros((n, m), np.int8)
    extra = np.zeros((n, m))
    extra_drop = np.zeros((n, m))
    events: list[Event] = []
    busy = np.zeros((n, m), bool)
    tn = grid.t_ns

    # leaks worth paging on: ramp over 1–6 h to 8–35% of mean flow, last 6–48 h
    for s, a, b in place_intervals(
        rng,
        n,
        m,
        leaks_per_sensor_week * weeks,
        int(6 * steps_per_h),
        int(48 * steps_per_h),
        busy,
        margin=int(2 * steps_per_h),
    ):
        ramp = max(1, int(rng.uniform(1, 6) * steps_per_h))
        size = float(rng.uniform(0.08, 0.35)) * float(base[s, 0])
        prof = np.minimum(1.0, (np.arange(b - a) + 1) / ramp)
        extra[s, a:b] += size * prof
        label[s, a:b] = 1
        events.append(Event.span(sensors[s].sensor_id, "water_flow", "leak", tn, a, b))
    # bursts: within one step, +60–250% flow and a pressure collapse, last 30 min – 4 h
    for s, a, b in place_intervals(
        rng,
        n,
        m,
        bursts_per_sensor_week * weeks,
        max(2, int(0.5 * steps_per_h)),
        max(3, int(4 * steps_per_h)),
        busy,
        margin=int(2 * steps_per_h),
    ):
        extra[s, a:b] += float(rng.uniform(0.6, 2.5)) * float(base[s, 0])
        extra_drop[s, a:b] += float(rng.uniform(0.3, 1.2))
        label[s, a:b] = 2
        events.append(Event.span(sensors[s].sensor_id, "water_flow", "burst", tn, a, b))

    flow = demand + extra
    pressure = supply - k * flow**2 - extra_drop + ar1(rng, (n, m), 0.8, 0.03)
    pressure = np.maximum(pressure, 0.05)
    flow_meas = flow * (1 + rng.normal(0, 0.01, size=(n, m)))
    season = 10 + 6 * np.sin(2 * np.pi * (grid.day_of_year - 110) / 365.0)
    temp = season[None, :] + rng.normal(0, 0.5, size=(n, 1)) + 0.4 * ar1(rng, (n, m), 0.99, 1.0)
    total = np.cumsum(flow_meas * interval_s / 1000.0, axis=1) + rng.uniform(1e3, 1e5, size=(n, 1))

    faults: list[Event] = []
    present = np.ones((n, m), bool)
    for s, a, b in place_intervals(
        rng,
        n,
        m,
        faults_per_sensor_week * weeks,
        int(0.5 * steps_per_h),
        int(12 * steps_per_h),
        busy.copy(),
        margin=int(1 * steps_per_h),
    ):
        what = str(rng.choice(["stuck", "spikes", "drift", "dropout"]))
        sig = pressure if rng.random() < 0.5 else flow_meas
        if what == "stuck":
            sig[s, a:b] = sig[s, a]
        elif what == "spikes":
            idx = rng.choice(np.arange(a, b), size=max(1, (b - a) // 20), replace=False)
            sig[s, idx] *= rng.choice([0.5, 1.8], size=len(idx))
        elif what == "drift":
            sig[s, a:b] *= 1 + np.linspace(0, float(rng.uniform(-0.08, 0.08)), b - a)
        else:
            present[s, a:b] = False
        faults.append(Event.span(sensors[s].sensor_id, "water_flow", what, tn, a, b))
    # random single lost readings (radio), 0.5%
    present &= rng.random((n, m)) > 0.005

    fields = {
        "pressure_bar": np.round(pressure, 4),
        "flow_rate_lps": np.round(flow_meas, 3),
        "temperature_c": np.round(temp, 2),
        "total_flow_m3": np.round(total, 3),
        "battery_level": np.round(np.clip(rng.uniform(60, 100, (n, 1)) - np.linspace(0, 2, m), 0, 100), 1),
        "signal_strength_dbm": np.round(rng.uniform(-95, -45, (n, 1)) + rng.normal(0, 2, (n, m)), 0),
    }
    jitter = rng.uniform(0, min(5.0, interval_s / 4), size=(n, 1))  # sensors are not in lockstep
    return flatten("water_flow", sensors, grid, fields, label, LABELS, present, events, faults, jitter)


__all__ = ["FIELDS", "LABELS", "NS", "simulate"]
