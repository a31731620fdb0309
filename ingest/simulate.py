"""`infrawatch simulate`: a live simulated facility publishing over MQTT, with scheduled incidents.

The readings come from `infrawatch.sim` (deterministic from the seed) on each kind's own sampling
interval — the one the models were trained on (water flow 60 s, water quality 300 s, energy
900 s) — and are published faster than that: each sensor publishes `rate` readings per wall-clock
second, each reading the sensor's next simulated step, stamped with the wall-clock time of its
slot. So simulated time runs `interval × rate` times faster than the wall clock (at the demo's 0.2
readings/s, 12× for water flow), which is what lets a leak that grows over hours show up in
minutes; hour-of-day in the stored timestamps is the wall clock's, not the simulation's.

That mismatch matters to the models, whose features include the time between readings and the
hour of day: on a wall-clock-stamped run about 15% of healthy water-flow readings and 12% of
healthy energy readings score HIGH (measured with `train --candidates 1` models). `clock="sim"`
stamps each reading with the simulated clock instead (start + one kind interval per reading):
verdicts then match training (about 0.2% and 0.1%), but the stored times run ahead of now.

Incidents are planted, not hoped for: for each requested incident the plan simulates a second
fleet of as many sensors with plenty of incidents, and gives one sensor (keeping its id, zone and
place) the series of its namesake there, started at the step that puts an incident of the
requested type at the requested second. The schedule (every incident on every such sensor in the
run, with its wall-clock start and end) is known before the first message is sent.

Sensors are paced evenly: sensor k of N publishes reading w at `start + (w·N + k) / (N·rate)` s, so
the broker sees a smooth N·rate messages/s rather than bursts. Gateways batch their sensors'
readings of one round into one message per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infrawatch import sim
from infrawatch.config import Settings
from infrawatch.ingest import broker_admin
from infrawatch.ingest.broker_admin import Role
from infrawatch.ingest.publisher import Fleet
from infrawatch.sim import Event, Sensor, SimData
from infrawatch.sim._common import DEFAULT_START_NS

NS = 1_000_000_000
MS = 1_000_000
INTERVAL_S = {"water_flow": 60, "water_quality": 300, "energy": 900}
INCIDENT_KIND = {
    "leak": "water_flow",
    "burst": "water_flow",
    "contamination": "water_quality",
    "high_consumption": "energy",
    "low_consumption": "energy",
    "unusual_pattern": "energy",
}
# readings of history a sensor publishes before its first incident (the models' window is 60)
WARMUP_READINGS = 90
# an open-ended run repeats a cycle of at most this many steps per sensor (memory stays bounded)
MAX_CYCLE_STEPS = 2880
_HOT_ATTEMPTS = 8  # fleets with incidents drawn before giving up on planting one
MAX_BATCH_READINGS = 100  # per gateway message: well inside the 64 KiB payload limit


class SimulationError(ValueError):
    """The requested simulation cannot be built (the message says what to change)."""


@dataclass(frozen=True)
class IncidentRequest:
    """`type@seconds`: plant an incident of `type` starting `at_s` seconds into the run."""

    type: str
    at_s: float

    @property
    def kind(self) -> str:
        return INCIDENT_KIND[self.type]


@dataclass(frozen=True)
class Incident:
    """A planted incident as it will happen: whose, what, and when (wall-clock offsets in s)."""

    sensor_id: str
    kind: str
    type: str
    start_s: float
    end_s: float
    requested: bool  # False: another incident the host sensor's series happens to hold


def parse_incidents(text: str) -> tuple[IncidentRequest, ...]:
    """`leak@60,burst@120` → requests; `none` → no incidents."""
    text = text.strip()
    if text.lower() in {"", "none"}:
        return ()
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([a-z_]+)\s*@\s*([0-9]+(?:\.[0-9]*)?)\s*s?\s*", part)
        if not m or m.group(1) not in INCIDENT_KIND:
            raise SimulationError(
                f"bad incident {part.strip()!r}: write TYPE@SECONDS with TYPE one of "
                f"{', '.join(INCIDENT_KIND)} (e.g. leak@120,contamination@300), or 'none'"
            )
        out.append(IncidentRequest(m.group(1), float(m.group(2))))
    return tuple(out)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and how fast. `rate` is readings per second *per sensor*."""

    sensors: int = 300
    rate: float = 0.2
    kinds: tuple[str, ...] = sim.KINDS
    site: str = "site-01"
    gateways: int = 0  # per site; 0 = every sensor publishes as itself
    seed: int = 0
    duration_s: float | None = None  # None: until stopped (the series repeats each cycle)
    incidents: tuple[IncidentRequest, ...] | None = None  # None: one of each type of the kinds
    shape: str = "mixed"  # nested, flat or mixed (even sensors nested, odd flat)
    qos: int = 1
    # wall: stamped with the time of publishing; sim: with the simulated clock from the start
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.sensors < len(self.kinds) or not self.kinds:
            raise SimulationError(f"need at least one sensor per kind ({len(self.kinds)})")
        unknown = set(self.kinds) - set(sim.KINDS)
        if unknown:
            raise SimulationError(f"unknown kinds {sorted(unknown)}; choose from {', '.join(sim.KINDS)}")
        if not (0 < self.rate <= 1000):
            raise SimulationError("--rate must be > 0 and at most 1000 readings/s per sensor")
        if self.duration_s is not None and self.duration_s <= 0:
            raise SimulationError("--duration must be positive")
        if self.shape not in {"nested", "flat", "mixed"}:
            raise SimulationError("shape must be nested, flat or mixed")
        if self.clock not in {"wall", "sim"}:
            raise SimulationError("--clock must be wall or sim")
        if self.gateways < 0:
            raise SimulationError("--gateways must be 0 (per-sensor connections) or more")


@dataclass
class _Source:
    """One kind's simulated series in a dense (sensor, step) → row layout."""

    data: SimData
    rows: np.ndarray  # int64 (n_sensors, n_steps), -1 where the sensor sent nothing (dropout)


@dataclass
class Slot:
    """One sensor in the plan: where its readings come from."""

    sensor: Sensor
    rank: int  # 0..N-1 over the whole facility: its phase within a round
    source: _Source
    local: int  # sensor index in source.data
    offset: int  # source step of the run's reading 0
    nested: bool
    gateway: str | None = None


@dataclass
class Plan:
    """Everything decided before the first message: sensors, sources, incidents, round length."""

    config: SimConfig
    slots: list[Slot]
    incidents: list[Incident]
    cycle: int  # readings per sensor before the series repeats (open-ended runs)
    rounds: int | None  # readings per sensor in the run (None: until stopped)
    gateways: dict[str, list[int]] = field(default_factory=dict)  # gateway id → slot indices

    @property
    def period_s(self) -> float:
        return 1.0 / self.config.rate

    def slot_offset_ns(self, g: int) -> int:
        """Wall-clock offset of global slot g (reading g // N of sensor g % N), whole ms."""
        n = len(self.slots)
        return round(g * self.period_s / n * 1000) * MS

    def stamp_ns(self, g: int, start_ns: int) -> int:
        """The timestamp of global slot g in a run that started at `start_ns`.

        wall: the slot's own time. sim: the sensor's simulated clock — one kind interval per
        reading, so the stored series has the cadence and time of day the models were trained on
        (and runs ahead of the wall clock).
        """
        if self.config.clock == "wall":
            return start_ns + self.slot_offset_ns(g)
        w, rank = divmod(g, len(self.slots))  # slots are listed in rank order
        interval = INTERVAL_S[self.slots[rank].sensor.kind]
        return start_ns + w * interval * NS + self.slot_offset_ns(rank)

    def total_slots(self) -> int | None:
        return None if self.rounds is None else self.rounds * len(self.slots)

    def readings(
        self, items: Sequence[tuple[int, int]], ts_ns: Sequence[int]
    ) -> list[tuple[int, bytes, str]]:
        """Payloads for (slot index, reading number) pairs stamped `ts_ns`: (slot, payload, topic).

        Readings the simulation dropped (radio loss, dropouts) are skipped, as a sensor that
        sends nothing would.
        """
        groups: dict[tuple[int, bool], list[tuple[int, int, int]]] = {}
        for (si, w), t in zip(items, ts_ns, strict=True):
            s = self.slots[si]
            row = int(s.source.rows[s.local, s.offset + (w % self.cycle)])
            if row >= 0:
                groups.setdefault((id(s.source), s.nested), []).append((si, row, t))
        out: list[tuple[int, bytes, str]] = []
        for (_, nested), members in groups.items():
            src = self.slots[members[0][0]].source
            sub = src.data.select(np.array([r for _, r, _ in members], dtype=np.int64))
            sub.timestamp_ns = np.array([t for _, _, t in members], dtype=np.int64)
            payloads, topics = sim.payloads(sub, "nested" if nested else "flat")
            out.extend((m[0], p, tp) for m, p, tp in zip(members, payloads, topics, strict=True))
        return out


def _split(n: int, kinds: Sequence[str]) -> dict[str, int]:
    base, extra = divmod(n, len(kinds))
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(kinds)}


def _on_site(data: SimData, site: str) -> SimData:
    """The simulator names its one site `site-01`; rename it to the facility's."""
    data.sensors = [
        dataclasses.replace(s, site=site, location=s.location.replace("site-01", site, 1))
        for s in data.sensors
    ]
    return data


@dataclass(frozen=True)
class _Clock:
    """A kind's simulated time grid: one step every `interval_s` from `start_ns`."""

    interval_s: int
    start_ns: int

    def step(self, t_ns: np.ndarray | int) -> Any:
        # sensors' clock jitter is under a quarter interval, so the floor is the grid step
        return (t_ns - self.start_ns) // (self.interval_s * NS)


def _source(data: SimData, clock: _Clock) -> _Source:
    step = clock.step(data.timestamp_ns)
    n_steps = int(step.max()) + 1
    rows = np.full((len(data.sensors), n_steps), -1, dtype=np.int64)
    rows[data.sensor_index, step] = np.arange(len(data), dtype=np.int64)
    return _Source(data, rows)


def _fleet_args(clock: _Clock, n: int, steps: int) -> dict[str, Any]:
    days = steps * clock.interval_s / 86_400
    return {
        "n_sensors": n,
        "days": days,
        "interval_s": clock.interval_s,
        "start_ns": clock.start_ns,
        "sites": 1,
    }


def _incident_fleet(kind: str, seed: int, n: int, clock: _Clock, steps: int, types: set[str]) -> SimData:
    """The same sensors with plenty of incidents of the wanted types (about two per sensor)."""
    kwargs = _fleet_args(clock, n, steps)
    per_week = 2.0 / (kwargs["days"] / 7.0)
    if kind == "water_flow":
        kwargs["leaks_per_sensor_week"] = per_week if "leak" in types else 0.0
        kwargs["bursts_per_sensor_week"] = per_week if "burst" in types else 0.0
    elif kind == "water_quality":
        kwargs["events_per_sensor_week"] = per_week
    else:
        kwargs["anomalies_per_sensor_week"] = 2 * per_week  # the type is drawn per anomaly
    return sim.simulate(kind, seed=seed, **kwargs)


def _calm_fleet(kind: str, seed: int, n: int, clock: _Clock, steps: int) -> SimData:
    """The facility's everyday series: no incidents (sensor faults stay: they must not page)."""
    kwargs = _fleet_args(clock, n, steps)
    if kind == "water_flow":
        kwargs |= {"leaks_per_sensor_week": 0.0, "bursts_per_sensor_week": 0.0}
    elif kind == "water_quality":
        kwargs["events_per_sensor_week"] = 0.0
    else:
        kwargs["anomalies_per_sensor_week"] = 0.0
    return sim.simulate(kind, seed=seed, **kwargs)


def default_incidents(config: SimConfig) -> tuple[IncidentRequest, ...]:
    """One incident of each type of the simulated kinds, spaced evenly after a warm-up."""
    types = [t for t, k in INCIDENT_KIND.items() if k in config.kinds]
    warm = WARMUP_READINGS / config.rate
    if config.duration_s is not None:
        warm = min(warm, 0.3 * config.duration_s)  # a short run: less history before the first
    span = config.duration_s if config.duration_s is not None else warm + 300.0 * (len(types) + 1)
    usable = max(span - warm, 1.0)
    gap = usable / (len(types) + 1)
    return tuple(IncidentRequest(t, round(warm + gap * i, 1)) for i, t in enumerate(types))


def _check(config: SimConfig, requests: Sequence[IncidentRequest]) -> None:
    for r in requests:
        if r.kind not in config.kinds:
            raise SimulationError(f"incident {r.type} needs kind {r.kind}, which is not simulated")
        if config.duration_s is not None and r.at_s >= config.duration_s:
            raise SimulationError(f"incident {r.type}@{r.at_s:g} is after the end (--duration)")


def _host(
    hot: _Source,
    events: dict[str, list[Event]],
    r: IncidentRequest,
    at_step: int,
    steps: int,
    clock: _Clock,
    used: set[int],
) -> tuple[int, int] | None:
    """(sensor, offset) whose series holds an `r.type` incident `at_step` readings into the run.

    Among the candidates, the one with the fewest other incidents inside the run's window.
    """
    best: tuple[int, int, int] | None = None  # (other incidents in the window, sensor, offset)
    for i, s in enumerate(hot.data.sensors):
        mine = events.get(s.sensor_id, [])
        for e in mine if i not in used else []:
            off = int(clock.step(e.start_ns)) - at_step
            if e.type != r.type or off < 0 or off + steps > hot.rows.shape[1]:
                continue
            others = sum(1 for o in mine if off <= clock.step(o.start_ns) < off + steps) - 1
            if best is None or others < best[0]:
                best = (others, i, off)
    return None if best is None else (best[1], best[2])


def _kind_slots(
    config: SimConfig,
    kind: str,
    seed: int,
    n: int,
    steps: int,
    wanted: list[IncidentRequest],
    clock: _Clock,
) -> tuple[list[Slot], list[Incident]]:
    """One kind's sensors: the calm fleet, with the planted incidents' hosts from the hot one.

    Incident times here are in readings of the host (converted to seconds by `plan`).
    """
    calm = _source(_on_site(_calm_fleet(kind, seed, n, clock, steps), config.site), clock)
    slots = [
        Slot(s, 0, calm, i, 0, nested=config.shape == "nested" or (config.shape == "mixed" and i % 2 == 0))
        for i, s in enumerate(calm.data.sensors)
    ]
    incidents: list[Incident] = []
    if not wanted:
        return slots, incidents
    # long enough that an incident can sit anywhere in the run after the warm-up
    hot_steps = 3 * steps + 10 * WARMUP_READINGS
    types = {r.type for r in wanted}
    hots: list[tuple[_Source, dict[str, list[Event]]]] = []
    used: set[int] = set()
    for r in sorted(wanted, key=lambda r: r.at_s):
        at_step = math.ceil(r.at_s * config.rate)
        found = None
        for attempt in range(_HOT_ATTEMPTS):  # a small fleet may need a few draws to hold one
            if attempt == len(hots):
                hot_data = _incident_fleet(kind, seed * 1000 + attempt + 1, n, clock, hot_steps, types)
                events: dict[str, list[Event]] = {}
                for e in hot_data.events:
                    events.setdefault(e.sensor_id, []).append(e)
                # the host keeps its identity (id, zone, place): only its readings come from here
                hot_data.sensors = calm.data.sensors
                hots.append((_source(hot_data, clock), events))
            hot, events = hots[attempt]
            found = _host(hot, events, r, at_step, steps, clock, used)
            if found is not None:
                break
        if found is None:
            raise SimulationError(
                f"cannot plant {r.type}@{r.at_s:g}: no simulated {r.kind} sensor is free to hold it; "
                "use more sensors or fewer incidents of that kind"
            )
        i, off = found
        used.add(i)
        slots[i] = dataclasses.replace(slots[i], source=hot, offset=off)
        for e in events[hot.data.sensors[i].sensor_id]:
            a = int(clock.step(e.start_ns)) - off
            b = int(clock.step(e.end_ns - 1)) + 1 - off
            if 0 <= a < steps:
                incidents.append(Incident(e.sensor_id, kind, e.type, a, b, a == at_step and e.type == r.type))
    return slots, incidents


def plan(config: SimConfig) -> Plan:
    """Build the whole run (deterministic from the config): sensors, their series, the schedule."""
    requests = default_incidents(config) if config.incidents is None else config.incidents
    _check(config, requests)
    rounds = None if config.duration_s is None else math.ceil(config.duration_s * config.rate)
    steps = max(rounds if rounds is not None else MAX_CYCLE_STEPS, WARMUP_READINGS + 2)
    counts = _split(config.sensors, config.kinds)
    slots: list[Slot] = []
    incidents: list[Incident] = []
    for ki, kind in enumerate(config.kinds):
        wanted = [r for r in requests if r.kind == kind]
        clock = _Clock(INTERVAL_S[kind], DEFAULT_START_NS)
        seed = config.seed * 10 + ki
        k_slots, k_incidents = _kind_slots(config, kind, seed, counts[kind], steps, wanted, clock)
        slots.extend(k_slots)
        incidents.extend(k_incidents)
    # interleave the kinds so every part of a round carries all of them
    order = sorted(range(len(slots)), key=lambda j: (slots[j].local / counts[slots[j].sensor.kind], j))
    slots = [dataclasses.replace(slots[j], rank=r) for r, j in enumerate(order)]  # index = rank
    # sensor `rank` publishes its reading w at (w·N + rank)/(N·rate) s
    n, rank_of = len(slots), {s.sensor.sensor_id: s.rank for s in slots}

    def wall(reading: float, sensor_id: str) -> float:
        return (reading * n + rank_of[sensor_id]) / (n * config.rate)

    incidents = sorted(
        (
            dataclasses.replace(i, start_s=wall(i.start_s, i.sensor_id), end_s=wall(i.end_s, i.sensor_id))
            for i in incidents
        ),
        key=lambda i: i.start_s,
    )
    gateways: dict[str, list[int]] = {}
    if config.gateways:
        for j, sl in enumerate(slots):
            gid = f"GW-{config.site}-{(sl.rank % config.gateways) + 1:02d}"
            slots[j] = dataclasses.replace(sl, gateway=gid)
            gateways.setdefault(gid, []).append(j)
    return Plan(config, slots, incidents, steps, rounds, gateways)


def schedule_text(p: Plan) -> str:
    """The incident schedule as printed at start."""
    c = p.config
    n = len(p.slots)
    lines = [
        f"simulating {n} sensors ({', '.join(f'{k} {v}' for k, v in _split(c.sensors, c.kinds).items())}) "
        f"at site {c.site}, {c.rate:g} readings/s each ({n * c.rate:.1f} readings/s in all), "
        + (f"{len(p.gateways)} gateways" if p.gateways else "one connection per sensor")
        + f", QoS {c.qos}, seed {c.seed}",
        "simulated time runs "
        + ", ".join(f"{INTERVAL_S[k] * c.rate:g}x for {k}" for k in c.kinds)
        + " (one simulated step per reading); "
        + (
            "readings are stamped with the time they are sent"
            if c.clock == "wall"
            else "readings are stamped with the simulated clock (it runs ahead of the wall clock)"
        ),
    ]
    if p.rounds is None:
        lines.append(f"the series repeats every {p.cycle / c.rate:.0f} s (incidents too)")
    if not p.incidents:
        lines.append("no incidents scheduled")
    else:
        lines.append(f"incident schedule ({len(p.incidents)}), seconds from start:")
        for i in p.incidents:
            lines.append(
                f"  {i.start_s:9.1f} – {i.end_s:9.1f}  {i.type:<17} {i.sensor_id:<10} {i.kind}"
                + ("" if i.requested else "  (also in this sensor's series)")
            )
    return "\n".join(lines)


@dataclass
class SimStats:
    """What a run published; `per_sensor` counts readings acknowledged-or-sent per sensor id."""

    readings: int = 0
    messages: int = 0
    acked: int = 0
    failed: int = 0
    reconnects: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    per_sensor: dict[str, int] = field(default_factory=dict)
    incidents_started: list[Incident] = field(default_factory=list)
    elapsed_s: float = 0.0


Progress = Callable[[str], None]


def ensure_credentials(
    settings: Settings, users: Sequence[tuple[str, Role]], known: Mapping[str, str] | None
) -> dict[str, str]:
    """Passwords for (user, role) pairs: from `known`, else created with `broker_admin` (re-keyed)."""
    known = dict(known or {})
    missing = [(u, r) for u, r in users if u not in known]
    if missing:
        known |= broker_admin.add_users(settings, missing)
    return {u: known[u] for u, _ in users}


class _Run:
    """The publishing loop's state: the next slot, the incident log, gateway buffers, the status line."""

    def __init__(self, p: Plan, fleet: Fleet, say: Progress, status_every_s: float) -> None:
        self.p, self.fleet, self.say = p, fleet, say
        self.n = len(p.slots)
        self.stats = SimStats()
        self.t0 = time.monotonic()
        self.start_ns = time.time_ns() // MS * MS
        self.g = 0  # next global slot: reading g // N of the sensor of rank g % N
        # incident k starts at global slot (its round · N + rank); open-ended runs repeat every cycle
        self.starts = sorted(
            (round(i.start_s * p.config.rate * self.n), k) for k, i in enumerate(p.incidents)
        )
        self.next_inc = 0
        self.cycle_base = 0
        self.buffers: dict[str, list[bytes]] = {gid: [] for gid in p.gateways}
        self.last_rank = {gid: max(p.slots[j].rank for j in js) for gid, js in p.gateways.items()}
        self.status_every_s = status_every_s
        self.last_status, self.last_acked = self.t0, 0

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def step(self) -> None:
        """Publish every slot that is due."""
        total = self.p.total_slots()
        due = int(self.now_s() * self.p.config.rate * self.n) + 1
        if total is not None:
            due = min(due, total)
        items = [(g % self.n, g // self.n) for g in range(self.g, due)]
        ts = [self.p.stamp_ns(g, self.start_ns) for g in range(self.g, due)]
        self.g = max(self.g, due)
        if not items:
            return
        out = self.p.readings(items, ts)
        qos = self.p.config.qos
        if self.p.gateways:
            for si, payload, _ in out:
                self.buffers[str(self.p.slots[si].gateway)].append(payload)
            for si, _w in items:  # a gateway sends a round once its last sensor's slot has passed
                gid = str(self.p.slots[si].gateway)
                if self.p.slots[si].rank == self.last_rank[gid]:
                    self.flush(gid)
        else:
            for si, payload, topic in out:
                self.fleet.publish(self.p.slots[si].sensor.sensor_id, topic, payload, qos)
            self.stats.messages += len(out)
        for si, _, _ in out:
            sid = self.p.slots[si].sensor.sensor_id
            self.stats.per_sensor[sid] = self.stats.per_sensor.get(sid, 0) + 1
        self.stats.readings += len(out)
        self.log_incidents()

    def flush(self, gid: str) -> None:
        chunk, self.buffers[gid] = self.buffers[gid], []
        for a in range(0, len(chunk), MAX_BATCH_READINGS):
            body = b"[" + b",".join(chunk[a : a + MAX_BATCH_READINGS]) + b"]"
            self.fleet.publish(
                gid, f"infrawatch/{self.p.config.site}/gateway/{gid}/batch", body, self.p.config.qos
            )
            self.stats.messages += 1

    def log_incidents(self) -> None:
        while self.next_inc < len(self.starts) and self.starts[self.next_inc][0] + self.cycle_base < self.g:
            inc = self.p.incidents[self.starts[self.next_inc][1]]
            self.stats.incidents_started.append(inc)
            at = inc.start_s + self.cycle_base / (self.p.config.rate * self.n)
            self.say(
                f"[{self.now_s():8.1f} s] incident starts: {inc.type} on {inc.sensor_id} "
                f"(scheduled at {at:.1f} s, lasts {inc.end_s - inc.start_s:.0f} s)"
            )
            self.next_inc += 1
            if self.next_inc == len(self.starts) and self.p.rounds is None:
                self.next_inc, self.cycle_base = 0, self.cycle_base + self.p.cycle * self.n

    def status(self, force: bool = False) -> None:
        t = time.monotonic()
        if force or t - self.last_status >= self.status_every_s:
            c = self.fleet.counters
            self.say(
                f"[{t - self.t0:8.1f} s] published {self.stats.readings} readings in "
                f"{self.stats.messages} messages, acked {c.acked} "
                f"({(c.acked - self.last_acked) / max(t - self.last_status, 1e-9):.0f}/s), "
                f"pending {c.pending}, failures {c.failed}, reconnects {c.reconnects}"
            )
            self.last_status, self.last_acked = t, c.acked

    def done(self) -> bool:
        total = self.p.total_slots()
        return total is not None and self.g >= total

    def sleep_s(self) -> float:
        """Until the next slot is due (at least 5 ms: high rates go out in small bursts)."""
        next_s = (self.g + 0.5) / (self.p.config.rate * self.n)
        return min(0.5, max(0.005, next_s - self.now_s()))


async def simulate(
    settings: Settings,
    config: SimConfig,
    *,
    stop: asyncio.Event | None = None,
    credentials: Mapping[str, str] | None = None,
    reload: Callable[[], None] | None = None,
    progress: Progress | None = None,
    status_every_s: float = 2.0,
) -> SimStats:
    """Run the facility until `duration_s` is over or `stop` is set; returns what was published.

    `credentials` maps broker usernames (sensor and gateway ids) to passwords; identities it lacks
    are created in the broker's password file and ACL, after which `reload` (e.g. SIGHUP to the
    broker) runs so the broker knows them.
    """
    say = progress or (lambda _m: None)
    p = plan(config)
    say(schedule_text(p))
    users: list[tuple[str, Role]] = (
        [(g, "gateway") for g in p.gateways]
        if p.gateways
        else [(s.sensor.sensor_id, "sensor") for s in p.slots]
    )
    creds = ensure_credentials(settings, users, credentials)
    if reload is not None and len(creds) > len(credentials or {}):
        reload()
    stop = stop or asyncio.Event()
    b = settings.broker
    async with Fleet(b.host, b.port, client_prefix="sim", keepalive_s=b.keepalive_s) as fleet:
        await fleet.add_many(creds)
        say(f"connected {len(fleet.connections)} broker identities to {b.host}:{b.port}")
        run = _Run(p, fleet, say, status_every_s)
        while not stop.is_set() and not run.done():
            run.step()
            run.status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=run.sleep_s())
        for gid in run.buffers:  # stopped mid-round: what the gateways hold still goes out
            if run.buffers[gid]:
                run.flush(gid)
        await fleet.drain(30.0)
        run.status(force=True)
        stats, c = run.stats, fleet.counters
        stats.acked, stats.failed, stats.reconnects = c.acked, c.failed, c.reconnects
        stats.failures = dict(c.failures)
        stats.elapsed_s = run.now_s()
    say(
        f"done: {stats.readings} readings in {stats.messages} messages over {stats.elapsed_s:.1f} s, "
        f"acked {stats.acked}, failures {stats.failed}"
    )
    return stats


def run_simulation(
    settings: Settings,
    config: SimConfig,
    *,
    stop: threading.Event | None = None,
    credentials: Mapping[str, str] | None = None,
    reload: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> SimStats:
    """`simulate` on its own event loop (for threads and tests); a set `stop` ends it cleanly."""

    async def main() -> SimStats:
        ev = asyncio.Event()

        async def watch() -> None:
            while stop is not None and not stop.is_set():
                await asyncio.sleep(0.05)
            ev.set()

        watcher = asyncio.get_running_loop().create_task(watch()) if stop is not None else None
        try:
            return await simulate(
                settings, config, stop=ev, credentials=credentials, reload=reload, progress=progress
            )
        finally:
            if watcher is not None:
                watcher.cancel()

    return asyncio.run(main())


__all__ = [
    "INCIDENT_KIND",
    "Incident",
    "IncidentRequest",
    "Plan",
    "SimConfig",
    "SimStats",
    "SimulationError",
    "parse_incidents",
    "plan",
    "run_simulation",
    "schedule_text",
    "simulate",
]
