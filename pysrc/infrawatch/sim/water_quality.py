"""Drinking-water quality stations: correlated parameters, contamination events, single-sensor faults.

Cross-correlations that matter for detection: free chlorine decays faster in warm water and is
consumed by contaminants; redox follows chlorine; dissolved oxygen falls as temperature rises. A
contamination event moves several parameters at once (turbidity and conductivity up, chlorine and
redox down, pH shifted); a sensor fault moves exactly one (stuck, spike, drift).
"""

from __future__ import annotations

import numpy as np

from infrawatch.sim._common import (
    DEFAULT_START_NS,
    Event,
    SimData,
    ar1,
    diurnal,
    flatten,
    make_grid,
    make_sensors,
    place_intervals,
)

LABELS = ("normal", "contamination")
FIELDS = (
    "ph",
    "turbidity_ntu",
    "conductivity_uscm",
    "chlorine_mgl",
    "redox_mv",
    "dissolved_oxygen_mgl",
    "temperature_c",
)


def simulate(
    seed: int,
    n_sensors: int = 20,
    days: float = 14.0,
    interval_s: int = 300,
    *,
    sites: int = 2,
    critical_share: float = 0.3,
    events_per_sensor_week: float = 0.7,
    faults_per_sensor_week: float = 1.0,
    start_ns: int = DEFAULT_START_NS,
) -> SimData:
    """Simulate `n_sensors` multi-parameter stations for `days` at one reading per `interval_s`."""
    rng = np.random.default_rng([seed, 2])
    sensors = make_sensors(rng, "water_quality", n_sensors, sites, critical_share, "WQ")
    grid = make_grid(days, interval_s, start_ns)
    n, m = n_sensors, grid.n_steps
    weeks = days / 7.0
    steps_per_h = 3600 / interval_s

    season = 12 + 6 * np.sin(2 * np.pi * (grid.day_of_year - 110) / 365.0)
    temp = (
        season[None, :]
        + rng.normal(0, 1.0, (n, 1))
        + 0.6 * diurnal(grid.hour[None, :], ((15.0, 4.0, 1.0),))
        + ar1(rng, (n, m), 0.995, 0.4)
    )
    # demand-driven water age: chlorine lowest when water sits at night
    age = diurnal(grid.hour[None, :], ((4.0, 3.0, 1.0),))
    cl0 = rng.uniform(0.4, 1.2, (n, 1))
    chlorine = cl0 * (1 - 0.02 * (temp - 12)) * (1 - 0.12 * age) + ar1(rng, (n, m), 0.95, 0.03)
    ph = rng.uniform(7.1, 7.9, (n, 1)) + ar1(rng, (n, m), 0.98, 0.05) - 0.05 * age
    cond = rng.uniform(250, 800, (n, 1)) * (1 + ar1(rng, (n, m), 0.99, 0.02))
    turb = np.exp(np.log(rng.uniform(0.15, 0.8, (n, 1))) + ar1(rng, (n, m), 0.9, 0.25))
    do = 14.6 - 0.39 * temp + 0.007 * temp**2 + ar1(rng, (n, m), 0.95, 0.15)

    label = np.zeros((n, m), np.int8)
    busy = np.zeros((n, m), bool)
    events: list[Event] = []
    tn = grid.t_ns
    for s, a, b in place_intervals(
        rng,
        n,
        m,
        events_per_sensor_week * weeks,
        int(0.75 * steps_per_h),
        int(8 * steps_per_h),
        busy,
        margin=int(3 * steps_per_h),
    ):
        ln = b - a
        up = max(1, int(ln * rng.uniform(0.1, 0.4)))
        prof = np.minimum(1.0, (np.arange(ln) + 1) / up)
        sev = float(rng.uniform(0.5, 1.5))  # severity: mild events are the hard ones
        turb[s, a:b] *= 1 + sev * rng.uniform(2, 12) * prof
        chlorine[s, a:b] -= sev * rng.uniform(0.15, 0.5) * prof * cl0[s, 0]
        cond[s, a:b] *= 1 + sev * rng.uniform(0.05, 0.4) * prof * rng.choice([-0.5, 1.0])
        ph[s, a:b] += sev * rng.uniform(0.15, 0.8) * prof * rng.choice([-1.0, 1.0])
        do[s, a:b] -= sev * rng.uniform(0.3, 1.5) * prof
        label[s, a:b] = 1
        events.append(Event.span(sensors[s].sensor_id, "water_quality", "contamination", tn, a, b))
    chlorine = np.maximum(chlorine, 0.0)
    redox = 450 + 180 * np.tanh(chlorine / 0.5) - 20 * (ph - 7.5) + ar1(rng, (n, m), 0.9, 8.0)

    faults: list[Event] = []
    present = np.ones((n, m), bool)
    sigs = {"ph": ph, "turbidity_ntu": turb, "conductivity_uscm": cond, "chlorine_mgl": chlorine}
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
        what = str(rng.choice(["stuck", "spike", "drift", "dropout"]))
        name = str(rng.choice(list(sigs)))
        sig = sigs[name]
        if what == "stuck":
            sig[s, a:b] = sig[s, a]
        elif what == "spike":
            # one wild reading: ±0.5 pH units, or ×3 for the concentration-like signals
            if name == "ph":
                sig[s, a] += float(rng.choice([-0.5, 0.5]))
            else:
                sig[s, a] *= 3.0
        elif what == "drift":
            sig[s, a:b] *= 1 + np.linspace(0, float(rng.uniform(-0.1, 0.1)), b - a)
        else:
            present[s, a:b] = False
        faults.append(Event.span(sensors[s].sensor_id, "water_quality", f"{what}:{name}", tn, a, b))
    present &= rng.random((n, m)) > 0.005

    fields = {
        "ph": np.round(ph, 3),
        "turbidity_ntu": np.round(np.maximum(turb, 0.01), 3),
        "conductivity_uscm": np.round(cond, 1),
        "chlorine_mgl": np.round(chlorine, 3),
        "redox_mv": np.round(redox, 1),
        "dissolved_oxygen_mgl": np.round(np.maximum(do, 0.0), 2),
        "temperature_c": np.round(temp, 2),
        "battery_level": np.round(np.clip(rng.uniform(60, 100, (n, 1)) - np.linspace(0, 2, m), 0, 100), 1),
    }
    jitter = rng.uniform(0, 20.0, size=(n, 1))
    return flatten("water_quality", sensors, grid, fields, label, LABELS, present, events, faults, jitter)


__all__ = ["FIELDS", "LABELS", "simulate"]
