"""The data the Grafana proof runs on: a simulated facility through the real `core.Pipeline` into a
real InfluxDB, with planted incidents, plus pipeline stats points and the sensor registry.

Small real models (scikit-learn forests on the production features of other simulator seeds, a
few seconds) score a healthy fleet — the simulators' own incident rates set to zero — into which
these incidents are planted on the last minutes:

- `critical`: a burst on a CRITICAL-zone water main (flow ×3, pressure ×0.4, last 8 minutes) —
  the burst model scores it CRITICAL;
- `quality`: a water-quality station whose last three readings have pH 5.5 (the pipeline's hard
  limit makes them at least HIGH);
- `silent`: a water main that stopped sending 45 minutes ago;
- `battery`: a water main whose battery reads 12% for the last hour;
- `energy`: a room whose last two readings (15 min apart) use six times the energy.

The water incidents page at any time of day (checked offline at 3-hour shifts over a week: the
burst is CRITICAL, the breach HIGH, the healthy water sensors stay below HIGH). The small energy
model is not that steady — the room's waste scores HIGH at most hours but only MEDIUM at some,
and a healthy room pages now and then — so the tests hold the rules to exactly the sensors the
pipeline's own verdicts put at HIGH/CRITICAL, and require the water incidents among them.

Pipeline stats points come from the worker's own `WorkerStats.line` (so the field names are the
real ones): worker `w-ok` wrote 100 readings per 10 s from 70 to 20 minutes ago, with 2 dead
letters each and a 400 ms p95 lag; worker `w-bad` reports from 70 minutes ago until now but
writes nothing, and in the last 10 minutes has a 300 s p95 lag and 50 dead letters (`invalid_json`)
per interval. So now the ingest is stalled, lagging at `w-bad` and its dead letters are rising,
while 25 minutes ago all was well. The rollups are backfilled (the CQs' SELECT … INTO, at the
production intervals 1m and 1h) over the last 6 hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from tests.utils import lineproto
from tests.utils.stack import Stack

from infrawatch import core, sim
from infrawatch.detection.training import features
from infrawatch.ingest import influx_admin, sensor_meta
from infrawatch.ingest.stats import WorkerStats

NS = 10**9
MS = 10**6
MINUTE = 60 * NS
WINDOW = 20
HOURS = 6  # the dashboards' time range in the proof, and the backfilled rollup span


def small_models() -> dict[str, dict[str, Any]]:
    """Forests on the production features (core.FeatureStore) of simulated training fleets."""

    def rf(leaf: int = 20, depth: int = 8) -> RandomForestClassifier:
        return RandomForestClassifier(10, max_depth=depth, min_samples_leaf=leaf, random_state=0, n_jobs=1)

    ens = core.TreeEnsemble.from_sklearn
    wf = sim.simulate("water_flow", 101, n_sensors=8, days=3)
    x, names = features(wf, WINDOW)
    labels = list(wf.label_names)
    leak = rf().fit(x, wf.label == labels.index("leak"))
    burst = rf(leaf=3, depth=10).fit(x, wf.label == labels.index("burst"))
    wq = sim.simulate("water_quality", 102, n_sensors=8, days=6)
    xq, nq = features(wq, WINDOW)
    contamination = rf().fit(xq, wq.label > 0)
    en = sim.simulate("energy", 103, n_sensors=8, days=6)
    xe, ne = features(en, WINDOW)
    anomaly = rf().fit(xe, en.label > 0)
    ctx = [i for i, n in enumerate(ne) if not n.startswith("energy_kwh")]  # expected use: not its own kWh
    kwh = en.fields["energy_kwh"]
    normal = (en.label == 0) & ~np.isnan(kwh)
    expected = RandomForestRegressor(10, max_depth=10, min_samples_leaf=5, random_state=0, n_jobs=1)
    expected.fit(xe[normal][:, ctx], kwh[normal])
    return {
        "water_flow": {
            "leak": ens(leak, feature_names=names),
            "burst": ens(burst, feature_names=names),
            "version": "wf-g",
        },
        "water_quality": {"contamination": ens(contamination, feature_names=nq), "version": "wq-g"},
        "energy": {
            "anomaly": ens(anomaly, feature_names=ne),
            "expected_kwh": ens(expected, feature_names=[ne[i] for i in ctx]),
            "version": "en-g",
            # score bands as training would choose them on validation data (training.bands_from_high)
            "bands": {"medium": 0.3, "high": 0.45, "critical": 0.8},
        },
    }


@dataclass
class World:
    stack: Stack
    now_ns: int
    fleets: dict[str, sim.SimData]
    planted: dict[str, str]  # role → sensor_id
    points: list[lineproto.Point] = field(default_factory=list)  # what the pipeline wrote
    pipeline_lines: list[lineproto.Point] = field(default_factory=list)

    @property
    def now_ms(self) -> int:
        return self.now_ns // MS

    @property
    def sensors(self) -> list[sim.Sensor]:
        return [s for d in self.fleets.values() for s in d.sensors]

    def readings(self) -> list[lineproto.Point]:
        return [p for p in self.points if p.measurement == "reading"]

    def alerts(self) -> list[lineproto.Point]:
        return [p for p in self.points if p.measurement == "alert"]

    def paging(self, window_ns: int) -> set[str]:
        """Sensors whose newest verdict within `window_ns` is HIGH or CRITICAL."""
        return {s for s, r in self.latest_risk(window_ns).items() if r >= 2}

    def latest_risk(self, window_ns: int) -> dict[str, int]:
        """Each sensor's newest verdict within `window_ns` before now (what "now" panels show)."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.readings():
            if "risk" in p.fields and p.timestamp > self.now_ns - window_ns:
                sid = p.tags["sensor_id"]
                if sid not in out or p.timestamp > out[sid][0]:
                    out[sid] = (p.timestamp, int(p.fields["risk"]))  # type: ignore[arg-type]
        return {k: v for k, (_, v) in out.items()}


def _fleets(end: int) -> dict[str, sim.SimData]:
    def start(days: float) -> int:
        return end - int(days * 86_400 * NS)

    return {
        "water_flow": sim.simulate(
            "water_flow", 21, n_sensors=6, days=0.5, start_ns=start(0.5),
            leaks_per_sensor_week=0, bursts_per_sensor_week=0, faults_per_sensor_week=0,
        ),
        "water_quality": sim.simulate(
            "water_quality", 22, n_sensors=4, days=1.0, start_ns=start(1.0),
            events_per_sensor_week=0, faults_per_sensor_week=0,
        ),
        "energy": sim.simulate(
            "energy", 23, n_sensors=4, days=2.0, start_ns=start(2.0), anomalies_per_sensor_week=0,
        ),
    }  # fmt: skip


def _plant(fleets: dict[str, sim.SimData], end: int) -> tuple[dict[str, sim.SimData], dict[str, str]]:
    wf, wq = fleets["water_flow"], fleets["water_quality"]
    crit = next(i for i, s in enumerate(wf.sensors) if s.zone == "CRITICAL")
    healthy = [i for i, s in enumerate(wf.sensors) if i != crit]
    silent, battery = healthy[0], healthy[1]
    burst = (wf.sensor_index == crit) & (wf.timestamp_ns >= end - 8 * MINUTE)
    wf.fields["flow_rate_lps"][burst] *= 3.0
    wf.fields["pressure_bar"][burst] *= 0.4
    low = (wf.sensor_index == battery) & (wf.timestamp_ns >= end - 60 * MINUTE)
    wf.fields["battery_level"][low] = 12.0
    wf = wf.select(~((wf.sensor_index == silent) & (wf.timestamp_ns > end - 45 * MINUTE)))
    q_rows = np.flatnonzero(wq.sensor_index == 0)[-3:]
    wq.fields["ph"][q_rows] = 5.5
    en = fleets["energy"]
    e_rows = np.flatnonzero(en.sensor_index == 0)[-2:]
    en.fields["energy_kwh"][e_rows] *= 6.0  # the room burns six times its use: HIGH
    planted = {
        "critical": wf.sensors[crit].sensor_id,
        "silent": wf.sensors[silent].sensor_id,
        "battery": wf.sensors[battery].sensor_id,
        "quality": wq.sensors[0].sensor_id,
        "energy": en.sensors[0].sensor_id,
    }
    return {**fleets, "water_flow": wf}, planted


def _pipeline_points(now: int) -> bytes:
    out = []
    for worker in ("w-ok", "w-bad"):
        st = WorkerStats(_started_ns=now - 71 * MINUTE)
        for t in range(now - 70 * MINUTE, now + 1, 10 * NS):
            if worker == "w-ok":
                if t > now - 20 * MINUTE:
                    break
                st.received += 102
                st.written += 100
                st.dead_letter["invalid_json"] += 2
                st._lag_ms.extend([120.0, 250.0, 400.0])
            else:
                recent = t > now - 10 * MINUTE
                st.received += 50 if recent else 0
                if recent:
                    st.dead_letter["invalid_json"] += 50
                st._lag_ms.extend([300_000.0] * 3 if recent else [200.0])
                st.spool_batches = 3 if recent else 0
            out.append(st.line(worker, t))
    return b"".join(out)


def build(stack: Stack) -> World:
    models = small_models()  # first: "now" panels read relative to InfluxDB's now()
    now = (time.time_ns() // NS) * NS
    end = now - 60 * NS  # the fleets' last readings a minute ago
    fleets, planted = _plant(_fleets(end), end)
    pipe = core.Pipeline(models=models, window=WINDOW)
    world = World(stack, now, fleets, planted)
    with stack.client("writer") as w:
        for data in fleets.values():
            payloads, topics = sim.payloads(data)
            res = pipe.process(payloads, topics, now)
            assert not res.errors, res.errors[:3]
            world.points += lineproto.parse(res.line_protocol)
            lines = res.line_protocol.splitlines(keepends=True)
            for i in range(0, len(lines), 5000):
                w.write(b"".join(lines[i : i + 5000]))
        stats = _pipeline_points(now)
        world.pipeline_lines = lineproto.parse(stats)
        w.write(stats)
        w.write(sensor_meta.sensor_lines(world.sensors, ts_ns=now), rp=sensor_meta.RETENTION_POLICY)
    # the production rollup intervals (1m, 1h), not the test schema's seconds: the tiers then hold
    # what they hold in production, and the backfill takes a fraction of the time
    influx_admin.backfill(stack.settings, now - HOURS * 3600 * NS, now + NS, fine="1m", coarse="1h")
    return world
