"""Room electricity meters: beds, occupancy schedules, weather and season, and wasteful anomalies.

A room with `beds` beds is occupied mostly at night and in the evening (a dormitory / care ward
pattern); consumption per interval = standby + per-person load · occupancy + heating/cooling that
grows with the distance of the outdoor temperature from 18 °C. Anomalies (labelled by type):
`high_consumption` (a heater left on: +1.5–3 kW for hours, or a sustained 40–120% excess for days),
`low_consumption` (implausibly low: a meter fault reads near zero while the room is occupied), and
`unusual_pattern` (daytime-level use through the night).
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

LABELS = ("normal", "high_consumption", "low_consumption", "unusual_pattern")
FIELDS = (
    "energy_kwh",
    "voltage_v",
    "current_a",
    "power_factor",
    "occupancy",
    "outdoor_temperature_c",
    "humidity_pct",
)


def simulate(
    seed: int,
    n_sensors: int = 20,
    days: float = 28.0,
    interval_s: int = 900,
    *,
    sites: int = 2,
    critical_share: float = 0.2,
    anomalies_per_sensor_week: float = 0.8,
    start_ns: int = DEFAULT_START_NS,
) -> SimData:
    """Simulate `n_sensors` room meters for `days`, one kWh reading per `interval_s`."""
    rng = np.random.default_rng([seed, 3])
    sensors = make_sensors(rng, "energy", n_sensors, sites, critical_share, "EN")
    grid = make_grid(days, interval_s, start_ns)
    n, m = n_sensors, grid.n_steps
    weeks = days / 7.0
    steps_per_h = 3600 / interval_s
    h = interval_s / 3600.0
    beds = np.array([s.beds for s in sensors], float)[:, None]

    # weather: one per site, seasonal + diurnal + synoptic wander
    site_of = np.array([int(s.site.split("-")[1]) - 1 for s in sensors])
    n_sites = int(site_of.max()) + 1
    season = 10 - 8 * np.cos(2 * np.pi * (grid.day_of_year - 15) / 365.0)
    out_t = (
        season[None, :]
        + 4 * diurnal(grid.hour[None, :], ((15.0, 4.0, 1.0),))
        - 2
        + ar1(rng, (n_sites, m), 0.999, 3.0)
    )[site_of]
    humid = np.clip(70 - 1.2 * (out_t - 10) + ar1(rng, (n_sites, m), 0.99, 6.0)[site_of], 15, 100)

    # occupancy: probability of presence per bed, high at night and evening, lower at weekends' day
    weekend = (grid.dow >= 5)[None, :]
    p = 0.25 + diurnal(grid.hour[None, :], ((2.0, 4.0, 0.65), (20.0, 2.0, 0.35)))
    p = np.clip(p + np.where(weekend, 0.1, 0.0), 0, 0.97)
    occ = rng.binomial(beds.astype(int).repeat(m, axis=1), np.broadcast_to(p, (n, m))).astype(float)

    standby = rng.uniform(0.08, 0.25, (n, 1))  # kW
    per_person = rng.uniform(0.15, 0.35, (n, 1))  # kW
    hvac = rng.uniform(0.04, 0.09, (n, 1)) * beds / 4  # kW per °C from 18 °C
    awake = diurnal(grid.hour[None, :], ((8.0, 1.5, 1.0), (20.5, 2.0, 1.2)))
    kw = standby + per_person * occ * (0.4 + awake) + hvac * np.abs(out_t - 18)
    kw = kw * (1 + ar1(rng, (n, m), 0.7, 0.08))

    label = np.zeros((n, m), np.int8)
    busy = np.zeros((n, m), bool)
    events: list[Event] = []
    tn = grid.t_ns
    hours = grid.hour
    for s, a, b in place_intervals(
        rng,
        n,
        m,
        anomalies_per_sensor_week * weeks,
        int(2 * steps_per_h),
        int(48 * steps_per_h),
        busy,
        margin=int(6 * steps_per_h),
    ):
        kind = int(rng.choice([1, 1, 2, 3]))
        if kind == 1:
            if rng.random() < 0.5:
                kw[s, a:b] += rng.uniform(1.5, 3.0)  # heater left on
            else:
                kw[s, a:b] *= 1 + rng.uniform(0.4, 1.2)  # sustained high use
        elif kind == 2:
            kw[s, a:b] = rng.uniform(0.0, 0.02) + np.abs(rng.normal(0, 0.005, b - a))
        else:
            # daytime-level use through the night: only the night steps of the interval change
            night = (hours[a:b] < 6) | (hours[a:b] >= 22)
            if not night.any():
                continue
            # one night: the first contiguous run of night steps in the interval
            first = int(np.argmax(night))
            run = int(np.argmin(night[first:])) or len(night) - first
            lo, hi = a + first, a + first + run
            kw[s, lo:hi] += rng.uniform(1.0, 2.0) * float(per_person[s, 0]) * float(beds[s, 0]) / 2 + 0.4
            label[s, lo:hi] = 3
            events.append(Event.span(sensors[s].sensor_id, "energy", LABELS[3], tn, lo, hi))
            continue
        label[s, a:b] = kind
        events.append(Event.span(sensors[s].sensor_id, "energy", LABELS[kind], tn, a, b))

    kw = np.maximum(kw, 0.0)
    voltage = 230 + ar1(rng, (n, m), 0.9, 2.0)
    pf = np.clip(0.92 + ar1(rng, (n, m), 0.9, 0.02), 0.5, 1.0)
    current = kw * 1000 / (voltage * pf)
    present = rng.random((n, m)) > 0.003
    fields = {
        "energy_kwh": np.round(kw * h, 4),
        "voltage_v": np.round(voltage, 1),
        "current_a": np.round(current, 3),
        "power_factor": np.round(pf, 3),
        "occupancy": occ,
        "outdoor_temperature_c": np.round(out_t, 1),
        "humidity_pct": np.round(humid, 1),
    }
    jitter = rng.uniform(0, 30.0, size=(n, 1))
    return flatten("energy", sensors, grid, fields, label, LABELS, present, events, [], jitter)


__all__ = ["FIELDS", "LABELS", "simulate"]
