"""`infrawatch simulate`: a live simulated facility publishing over MQTT, with scheduled incidents.

The readings come from `infrawatch.sim` (deterministic from the seed) on each kind's own sampling
interval — the one the models were trained on (water flow 60 s, water quality 300 s, energy
900 s). The models' features include the hour of day and the time since the previous reading, so
how readings are stamped and paced decides whether healthy sensors page. Three clocks:

- `live` (the default): the simulation starts `history_s` before now (each kind at least
  MIN_HISTORY_READINGS back). Each sensor first publishes its history — the simulation's own
  timestamps, in the past, one interval apart — as fast as `rate` readings/s allows, so the
  workers' feature windows fill with realistic data and dashboards show the last hours; then each
  reading when its simulated time comes, which now tracks the wall clock (each sensor keeps the
  simulation's clock offset, under a quarter interval). Reading w of a sensor goes out at
  max((rank/N + w)/rate, its timestamp − start): never before its time, never faster than `rate`.
  The workers' per-sensor token bucket (default 1/s, burst 1) runs on the readings' own
  timestamps (capped at receipt), so the catch-up — readings a kind's interval apart — passes at
  any `rate` (on arrival time it lost a third of the history at rate 1).
  Measured offline with one `core.Pipeline` (models of /tmp/mtrain, 60 sensors, 2 h live, seeds
  0-1): healthy readings at HIGH or above 0–0.33% water flow, 0% quality, 0.03–0.18% energy.
- `wall`: each sensor publishes `rate` readings per wall-clock second, each the sensor's next
  simulated step, stamped with the time of its slot; simulated time runs `interval × rate` times
  faster than the clock, which makes the spacing and hour of day unlike training: 1.3–1.8% of
  healthy water-flow and 12–14% of healthy energy readings score HIGH (same measurement, rate 1).
- `sim`: paced like `wall` but stamped with the simulated clock (start + one interval per
  reading): verdicts match training (0–0.4% water flow, 0.1–0.7% energy), but the stored times
  run ahead of now.

Incidents are planted, not hoped for: for each requested incident the plan simulates a second
fleet of as many sensors with plenty of incidents, and gives one sensor (keeping its id, zone and
place) the series of its namesake there, started at the step that puts an incident of the
requested type at the requested second. The schedule (every incident on every such sensor in the
run, with its wall-clock start and end) is known before the first message is sent.

With `wall` and `sim`, sensors are paced evenly: sensor k of N publishes reading w at
`start + (w·N + k) / (N·rate)` s, so the broker sees a smooth N·rate messages/s rather than bursts,
and gateways batch their sensors' readings of one round into one message per round; with `live`,
a gateway sends what its sensors have due whenever the loop wakes.

With `live`, incident times are seconds from now: the defaults put bursts, contamination and
energy anomalies a few minutes into the live part, at least five minutes apart (each starts on its
kind's step), and a leak — it grows over hours — two hours before now, inside the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import heapq
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
# live: readings of history each kind publishes at least (unless --history 0): a full feature
# window (60 readings) and then some; energy two days — its detectors catch far fewer anomalies
# on 16 h of history than on 48 h (measured: 9 vs 12 of 12 planted, seeds 0-3), and two days of
# energy (192 readings) still catch up sooner than 6 h of water flow
MIN_HISTORY_READINGS = {"water_flow": 64, "water_quality": 64, "energy": 192}
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
    reading: int = 0  # the host's reading number (from the run's first) where it starts


def parse_duration(text: str) -> float:
    """`6h`, `90m`, `300s`, `300`, `0` → seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([hms]?)\s*", text.lower())
    if not m:
        raise SimulationError(f"bad duration {text!r}: write e.g. 6h, 90m, 300s or 0")
    return float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]


def parse_incidents(text: str) -> tuple[IncidentRequest, ...]:
    """`leak@60,burst@120` → requests; `none` → no incidents."""
    text = text.strip()
    if text.lower() in {"", "none"}:
        return ()
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([a-z_]+)\s*@\s*(-?[0-9]+(?:\.[0-9]*)?)\s*s?\s*", part)
        if not m or m.group(1) not in INCIDENT_KIND:
            raise SimulationError(
                f"bad incident {part.strip()!r}: write TYPE@SECONDS with TYPE one of "
                f"{', '.join(INCIDENT_KIND)} (e.g. leak@120,contamination@300; negative seconds, "
                "e.g. leak@-7200, fall in the history of --clock live), or 'none'"
            )
        out.append(IncidentRequest(m.group(1), float(m.group(2))))
    return tuple(out)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and how fast. `rate` is readings per second *per sensor*."""

    sensors: int = 300
    rate: float = 1.0
    kinds: tuple[str, ...] = sim.KINDS
    site: str = "site-01"
    gateways: int = 0  # per site; 0 = every sensor publishes as itself
    seed: int = 0
    duration_s: float | None = None  # None: until stopped (the series repeats each cycle)
    incidents: tuple[IncidentRequest, ...] | None = None  # None: one of each type of the kinds
    shape: str = "mixed"  # nested, flat or mixed (even sensors nested, odd flat)
    qos: int = 1
    # live: the simulation starts `history_s` before now; each sensor catches up on its history
    # at `rate`, then publishes each reading when its simulated time comes (stamped with it).
    # wall: `rate` readings/s stamped with the time of publishing; sim: `rate` readings/s stamped
    # with the simulated clock from the start (it runs ahead of now)
    clock: str = "live"
    history_s: float = 6 * 3600.0  # live only; at least MIN_HISTORY_READINGS (unless 0)

    def history_of(self, kind: str) -> float:
        """live: a kind's history — `history_s`, or longer where that would not give the models
        enough (see MIN_HISTORY_READINGS; energy's catch-up is short all the same)."""
        if self.history_s == 0:
            return 0.0
        return max(self.history_s, MIN_HISTORY_READINGS[kind] * INTERVAL_S[kind])

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
        if self.clock not in {"live", "wall", "sim"}:
            raise SimulationError("--clock must be live, wall or sim")
        if self.history_s < 0:
            raise SimulationError("--history must be 0 or more")
        if self.clock == "live" and self.rate * min(INTERVAL_S[k] for k in self.kinds) <= 1:
            raise SimulationError(
                "with --clock live, --rate must be above one reading per interval of the fastest "
                f"kind ({1 / min(INTERVAL_S[k] for k in self.kinds):.4g}/s), or the catch-up never ends"
            )
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
    jitter_ns: int = 0  # the sensor's clock offset in its series (live stamps keep it)


@dataclass
class Plan:
    """Everything decided before the first message: sensors, sources, incidents, round length."""

    config: SimConfig
    slots: list[Slot]
    incidents: list[Incident]
    cycle: int  # readings per sensor before the series repeats (open-ended runs)
    rounds: int | None  # readings per sensor in the run (None: until stopped)
    gateways: dict[str, list[int]] = field(default_factory=dict)  # gateway id → slot indices
    # live only: the simulation's start (history before `now_ns`), and each kind's cycle
    sim_start_ns: dict[str, int] = field(default_factory=dict)  # per kind
    now_ns: int = DEFAULT_START_NS
    cycles: dict[str, int] = field(default_factory=dict)

    def cycle_of(self, s: Slot) -> int:
        return self.cycles.get(s.sensor.kind, self.cycle)

    def live_stamp_ns(self, si: int, w: int) -> int:
        """live: reading w of slot si at its simulated time, which tracks the wall clock."""
        s = self.slots[si]
        return self.sim_start_ns[s.sensor.kind] + w * INTERVAL_S[s.sensor.kind] * NS + s.jitter_ns

    def live_due_s(self, si: int, w: int, run_start_ns: int) -> float:
        """live: when (s after `run_start_ns`) slot si publishes reading w: as soon as `rate`
        allows (phased by rank so the broker sees a smooth flow), never before its timestamp."""
        s, rate = self.slots[si], self.config.rate
        paced = (s.rank / len(self.slots) + w) / rate
        return max(paced, (self.live_stamp_ns(si, w) - run_start_ns) / NS)

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
            row = int(s.source.rows[s.local, s.offset + (w % self.cycle_of(s))])
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


def catch_up_s(config: SimConfig) -> float:
    """live: about when the last sensor has published its history and runs on the clock.

    A sensor of interval I publishing `rate` readings/s catches up with a clock that moves on
    meanwhile after history / (I·rate − 1) s; the rank phase adds up to one reading's time.
    """
    return (
        max(config.history_of(k) / (INTERVAL_S[k] * config.rate - 1) for k in config.kinds) + 1 / config.rate
    )


def _default_live_incidents(config: SimConfig, types: list[str]) -> tuple[IncidentRequest, ...]:
    """Bursts, contamination and energy anomalies a few minutes into the live part, at least five
    minutes apart (an incident starts on its kind's step, so energy ones are 15 minutes apart); a
    leak (it grows over hours) inside the history, so it is well developed when the live part
    begins — unless there is less than an hour of history."""
    t = catch_up_s(config) + 120.0
    gap = 300.0
    leak_early = "leak" in types and config.history_s >= 3600
    live_types = [t for t in types if not (t == "leak" and leak_early)]
    if config.duration_s is not None and live_types:
        t = min(t, 0.3 * config.duration_s)
        gap = min(gap, (config.duration_s - t) / len(live_types))
    out = []
    for kind_type in live_types:
        out.append(IncidentRequest(kind_type, round(t, 1)))
        step_s = INTERVAL_S[INCIDENT_KIND[kind_type]]
        # when it really starts: the first step of its kind at or after t (steps count from the
        # simulation's start, the kind's history before now)
        h = config.history_of(INCIDENT_KIND[kind_type])
        starts = math.ceil((h + t) / step_s) * step_s - h
        t = starts + gap
    if leak_early:
        out.insert(0, IncidentRequest("leak", -min(7200.0, config.history_s / 2)))
    return tuple(out)


def default_incidents(config: SimConfig) -> tuple[IncidentRequest, ...]:
    """One incident of each type of the simulated kinds, spaced evenly after a warm-up."""
    types = [t for t, k in INCIDENT_KIND.items() if k in config.kinds]
    if config.clock == "live":
        return _default_live_incidents(config, types)
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
        if r.at_s < 0 and config.clock != "live":
            raise SimulationError(f"incident {r.type}@{r.at_s:g}: negative times need --clock live")
        if config.clock == "live" and r.at_s < -config.history_of(r.kind):
            raise SimulationError(f"incident {r.type}@{r.at_s:g} is before the history starts (--history)")


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

    Among the candidates, the one with the fewest other incidents inside the run's window, then
    the one whose series is shifted least in time of day (the host's readings move by `off` steps).
    """
    day_steps = 86_400 // clock.interval_s
    best: tuple[int, int, int, int] | None = None  # (others, time-of-day shift, sensor, offset)
    for i, s in enumerate(hot.data.sensors):
        mine = events.get(s.sensor_id, [])
        for e in mine if i not in used else []:
            off = int(clock.step(e.start_ns)) - at_step
            if e.type != r.type or off < 0 or off + steps > hot.rows.shape[1]:
                continue
            others = sum(1 for o in mine if off <= clock.step(o.start_ns) < off + steps) - 1
            shift = min(off % day_steps, day_steps - off % day_steps)
            if best is None or (others, shift) < best[:2]:
                best = (others, shift, i, off)
    return None if best is None else (best[2], best[3])


def _kind_slots(
    config: SimConfig,
    kind: str,
    seed: int,
    n: int,
    steps: int,
    wanted: list[IncidentRequest],
    clock: _Clock,
    at_step_of: Callable[[IncidentRequest], int],
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
        return [dataclasses.replace(sl, jitter_ns=_jitter_ns(sl, clock)) for sl in slots], incidents
    # long enough that an incident can sit anywhere in the run after the warm-up
    hot_steps = 3 * steps + 10 * WARMUP_READINGS
    types = {r.type for r in wanted}
    hots: list[tuple[_Source, dict[str, list[Event]]]] = []
    used: set[int] = set()
    for r in sorted(wanted, key=lambda r: r.at_s):
        at_step = at_step_of(r)
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
                requested = a == at_step and e.type == r.type
                incidents.append(Incident(e.sensor_id, kind, e.type, a, b, requested, reading=a))
    return [dataclasses.replace(sl, jitter_ns=_jitter_ns(sl, clock)) for sl in slots], incidents


def _jitter_ns(s: Slot, clock: _Clock) -> int:
    """The sensor's clock offset: its first reading's timestamp minus its grid step's time."""
    present = np.flatnonzero(s.source.rows[s.local, s.offset :] >= 0)
    if not len(present):
        return 0
    step = s.offset + int(present[0])
    ts = int(s.source.data.timestamp_ns[s.source.rows[s.local, step]])
    return ts - (clock.start_ns + step * clock.interval_s * NS)


def _live_steps(config: SimConfig, kind: str) -> int:
    """live: a kind's series length — the history and the run (a finite run), or one cycle of
    whole days that holds the history with room to spare (an open-ended run repeats it)."""
    interval_s, history_s = INTERVAL_S[kind], config.history_of(kind)
    if config.duration_s is not None:
        # a margin for the time between planning and the first message
        return max(math.ceil((history_s + config.duration_s + 120) / interval_s) + 2, WARMUP_READINGS + 2)
    day = 86_400 // interval_s
    want = max(MAX_CYCLE_STEPS, math.ceil(history_s / interval_s) + 2 * WARMUP_READINGS)
    return math.ceil(want / day) * day


def plan(config: SimConfig, now_ns: int | None = None) -> Plan:
    """Build the whole run (deterministic from the config and, for `clock="live"`, `now_ns`,
    default now): sensors, their series, the schedule."""
    requests = default_incidents(config) if config.incidents is None else config.incidents
    _check(config, requests)
    live = config.clock == "live"
    if live:
        now = (time.time_ns() if now_ns is None else now_ns) // MS * MS
        starts = {k: now - round(config.history_of(k) * 1000) * MS for k in config.kinds}
        rounds = None
    else:
        now = DEFAULT_START_NS
        starts = dict.fromkeys(config.kinds, now)
        rounds = None if config.duration_s is None else math.ceil(config.duration_s * config.rate)
    steps = max(rounds if rounds is not None else MAX_CYCLE_STEPS, WARMUP_READINGS + 2)
    counts = _split(config.sensors, config.kinds)
    slots: list[Slot] = []
    incidents: list[Incident] = []
    cycles: dict[str, int] = {}
    for ki, kind in enumerate(config.kinds):
        wanted = [r for r in requests if r.kind == kind]
        interval = INTERVAL_S[kind]
        clock = _Clock(interval, starts[kind])
        seed = config.seed * 10 + ki
        if live:
            k_steps = cycles[kind] = _live_steps(config, kind)
        else:
            k_steps = steps

        def at_step(r: IncidentRequest, interval: int = interval) -> int:
            if live:  # the first step at or after `now + at_s` on the simulated clock
                return max(0, math.ceil((config.history_of(r.kind) + r.at_s) / interval))
            return math.ceil(r.at_s * config.rate)  # one step per reading from the start

        k_slots, k_incidents = _kind_slots(config, kind, seed, counts[kind], k_steps, wanted, clock, at_step)
        slots.extend(k_slots)
        incidents.extend(k_incidents)
    # interleave the kinds so every part of a round carries all of them
    order = sorted(range(len(slots)), key=lambda j: (slots[j].local / counts[slots[j].sensor.kind], j))
    slots = [dataclasses.replace(slots[j], rank=r) for r, j in enumerate(order)]  # index = rank
    # sensor `rank` publishes its reading w at (w·N + rank)/(N·rate) s
    n, rank_of = len(slots), {s.sensor.sensor_id: s.rank for s in slots}

    def wall(reading: float, sensor_id: str) -> float:
        if live:  # the reading's simulated time, which the live run publishes it at (or after)
            sl = slots[rank_of[sensor_id]]
            t = starts[sl.sensor.kind] + round(reading * INTERVAL_S[sl.sensor.kind] * NS) + sl.jitter_ns
            return (t - now) / NS
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
    return Plan(config, slots, incidents, steps, rounds, gateways, starts, now, cycles)


def _hms(t_ns: int) -> str:
    return dt.datetime.fromtimestamp(t_ns / NS, tz=dt.UTC).strftime("%H:%M:%S")


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _live_schedule_text(p: Plan) -> str:
    c = p.config
    n = len(p.slots)
    counts = _split(c.sensors, c.kinds)
    lines = [
        f"simulating {n} sensors ({', '.join(f'{k} {v}' for k, v in counts.items())}) at site {c.site}, "
        + (f"{len(p.gateways)} gateways" if p.gateways else "one connection per sensor")
        + f", QoS {c.qos}, seed {c.seed}",
        f"live clock: the simulation starts {_span(c.history_s)} before now ({_hms(p.now_ns)} UTC)"
        + "".join(
            f", {k} {_span(c.history_of(k))} (what its models need)"
            for k in c.kinds
            if c.history_of(k) > c.history_s
        )
        + f"; each sensor first publishes its history at {c.rate:g} readings/s ("
        + ", ".join(f"{k} {math.ceil(c.history_of(k) / INTERVAL_S[k])} readings" for k in c.kinds)
        + f"; caught up after about {catch_up_s(c):.0f} s), then each reading when its time comes ("
        + ", ".join(f"{k} every {INTERVAL_S[k]} s" for k in c.kinds)
        + "), stamped with the simulated clock, which tracks the wall clock",
    ]
    if c.duration_s is None:
        lines.append(
            "the series repeat after "
            + ", ".join(f"{p.cycles[k] * INTERVAL_S[k] / 86_400:g} days ({k})" for k in c.kinds)
        )
    if not p.incidents:
        lines.append("no incidents scheduled")
    else:
        lines.append(f"incident schedule ({len(p.incidents)}), wall clock (UTC) and seconds from now:")
        for i in p.incidents:
            a, b = p.now_ns + round(i.start_s * NS), p.now_ns + round(i.end_s * NS)
            lines.append(
                f"  {_hms(a)} – {_hms(b)}  ({i.start_s:+9.0f} s)  {i.type:<17} {i.sensor_id:<10} {i.kind}"
                + (" (in the history)" if i.start_s < 0 else "")
                + ("" if i.requested else "  (also in this sensor's series)")
            )
    return "\n".join(lines)


def schedule_text(p: Plan) -> str:
    """The incident schedule as printed at start."""
    c = p.config
    if c.clock == "live":
        return _live_schedule_text(p)
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
        self.send(items, ts, round_end=True)
        self.log_incidents()

    def send(self, items: Sequence[tuple[int, int]], ts: Sequence[int], *, round_end: bool) -> None:
        """Publish (slot, reading) pairs stamped `ts`. Gateways send a round once its last
        sensor's slot has passed (`round_end`), else whatever they hold after each call."""
        out = self.p.readings(items, ts)
        qos = self.p.config.qos
        if self.p.gateways:
            for si, payload, _ in out:
                self.buffers[str(self.p.slots[si].gateway)].append(payload)
            if round_end:
                for si, _w in items:
                    gid = str(self.p.slots[si].gateway)
                    if self.p.slots[si].rank == self.last_rank[gid]:
                        self.flush(gid)
            else:
                for gid, buf in self.buffers.items():
                    if buf:
                        self.flush(gid)
        else:
            for si, payload, topic in out:
                self.fleet.publish(self.p.slots[si].sensor.sensor_id, topic, payload, qos)
            self.stats.messages += len(out)
        for si, _, _ in out:
            sid = self.p.slots[si].sensor.sensor_id
            self.stats.per_sensor[sid] = self.stats.per_sensor.get(sid, 0) + 1
        self.stats.readings += len(out)

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


class _LiveRun(_Run):
    """clock="live": each sensor's next reading is due at `Plan.live_due_s`; a heap orders them."""

    def __init__(self, p: Plan, fleet: Fleet, say: Progress, status_every_s: float) -> None:
        super().__init__(p, fleet, say, status_every_s)
        self.heap = [(p.live_due_s(si, 0, self.start_ns), si, 0) for si in range(self.n)]
        heapq.heapify(self.heap)
        self.watch: dict[int, list[Incident]] = {}
        index = {s.sensor.sensor_id: si for si, s in enumerate(p.slots)}
        for inc in p.incidents:
            self.watch.setdefault(index[inc.sensor_id], []).append(inc)

    def _due_limit_s(self) -> float:
        d = self.p.config.duration_s
        return self.now_s() if d is None else min(self.now_s(), d)

    def step(self) -> None:
        limit, finite = self._due_limit_s(), self.p.config.duration_s is not None
        items: list[tuple[int, int]] = []
        while self.heap and self.heap[0][0] <= limit:
            _, si, w = heapq.heappop(self.heap)
            items.append((si, w))
            if not finite or w + 1 < self.p.cycle_of(self.p.slots[si]):  # finite runs end their series
                heapq.heappush(self.heap, (self.p.live_due_s(si, w + 1, self.start_ns), si, w + 1))
        if not items:
            return
        self.send(items, [self.p.live_stamp_ns(si, w) for si, w in items], round_end=False)
        for si, w in items:
            for inc in self.watch.get(si, ()):
                if w % self.p.cycle_of(self.p.slots[si]) == inc.reading:
                    self.log_live_incident(inc, self.p.live_stamp_ns(si, w))

    def log_live_incident(self, inc: Incident, t_ns: int) -> None:
        self.stats.incidents_started.append(inc)
        when = "in the history" if t_ns < time.time_ns() - 60 * NS else "live"
        self.say(
            f"[{self.now_s():8.1f} s] incident starts: {inc.type} on {inc.sensor_id} at {_hms(t_ns)} UTC "
            f"({when}; lasts {inc.end_s - inc.start_s:.0f} s)"
        )

    def done(self) -> bool:
        d = self.p.config.duration_s
        return not self.heap or (d is not None and self.heap[0][0] > d)

    def sleep_s(self) -> float:
        if not self.heap:
            return 0.005
        return min(0.5, max(0.005, self.heap[0][0] - self.now_s()))


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
        run = (_LiveRun if config.clock == "live" else _Run)(p, fleet, say, status_every_s)
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
    "MIN_HISTORY_READINGS",
    "Incident",
    "IncidentRequest",
    "Plan",
    "SimConfig",
    "SimStats",
    "SimulationError",
    "catch_up_s",
    "parse_duration",
    "parse_incidents",
    "plan",
    "run_simulation",
    "schedule_text",
    "simulate",
]
