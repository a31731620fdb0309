"""`infrawatch simulate`: a live simulated facility publishing over MQTT, with scheduled incidents.

The readings come from `infrawatch.sim` (deterministic from the seed) on each kind's own sampling
interval — the one the models were trained on (water flow 60 s, water quality 300 s, energy
900 s) — and are published faster than that: each sensor publishes `rate` readings per wall-clock
second, each reading the sensor's next simulated step, stamped with the wall-clock time of its
slot. So simulated time runs `interval × rate` times faster than the wall clock (at the demo's 0.2
readings/s, 12× for water flow), which is what lets a leak that grows over hours show up in
minutes; hour-of-day in the stored timestamps is the wall clock's, not the simulation's.

Incidents are planted, not hoped for: for each requested incident the plan simulates a second
fleet with incidents (same sensors: same ids, zones, coordinates — the simulator draws them first)
and gives one sensor that fleet's series, started at the step that puts the requested incident
at the requested second. The schedule (every incident on every such sensor in the run, with its
wall-clock start and end) is known before the first message is sent.

Sensors are paced evenly: sensor k of N publishes reading w at `start + (w·N + k) / (N·rate)` s, so
the broker sees a smooth N·rate messages/s rather than bursts. Gateways batch their sensors'
readings of one round into one message per round.
"""

from __future__ import annotations

import asyncio
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
        return int(round(g * self.period_s / n * 1000)) * MS

    def total_slots(self) -> int | None:
        return None if self.rounds is None else self.rounds * len(self.slots)

    def readings(self, items: Sequence[tuple[int, int]], ts_ns: Sequence[int]) -> list[tuple[int, bytes, str]]:
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


def _source(data: SimData, interval_s: int) -> _Source:
    # sensors' clock jitter is under a quarter interval, so the floor is the grid step
    step = (data.timestamp_ns - DEFAULT_START_NS) // (interval_s * NS)
    n_steps = int(step.max()) + 1
    rows = np.full((len(data.sensors), n_steps), -1, dtype=np.int64)
    rows[data.sensor_index, step] = np.arange(len(data), dtype=np.int64)
    return _Source(data, rows)


def _event_step(e_ns: int, interval_s: int) -> int:
    return (e_ns - DEFAULT_START_NS) // (interval_s * NS)


def _incident_fleet(kind: str, seed: int, n: int, days: float, types: set[str]) -> SimData:
    """The same sensors with plenty of incidents of the wanted types (about two per sensor)."""
    weeks = days / 7.0
    per_week = 2.0 / weeks
    kwargs: dict[str, Any] = {"n_sensors": n, "days": days, "sites": 1}
    if kind == "water_flow":
        kwargs["leaks_per_sensor_week"] = per_week if "leak" in types else 0.0
        kwargs["bursts_per_sensor_week"] = per_week if "burst" in types else 0.0
    elif kind == "water_quality":
        kwargs["events_per_sensor_week"] = per_week
    else:
        kwargs["anomalies_per_sensor_week"] = 2 * per_week  # the type is drawn per anomaly
    return sim.simulate(kind, seed=seed, **kwargs)


def _calm_fleet(kind: str, seed: int, n: int, days: float) -> SimData:
    """The facility's everyday series: no incidents (sensor faults stay: they must not page)."""
    kwargs: dict[str, Any] = {"n_sensors": n, "days": days, "sites": 1}
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
    span = config.duration_s if config.duration_s is not None else warm + 600.0 * len(types)
    usable = max(span - warm, 1.0)
    gap = usable / (len(types) + 1)
    return tuple(IncidentRequest(t, round(warm + gap * i, 1)) for i, t in enumerate(types))


def plan(config: SimConfig) -> Plan:
    """Build the whole run (deterministic from the config): sensors, their series, the schedule."""
    requests = default_incidents(config) if config.incidents is None else config.incidents
    for r in requests:
        if r.kind not in config.kinds:
            raise SimulationError(f"incident {r.type} needs kind {r.kind}, which is not simulated")
        if config.duration_s is not None and r.at_s >= config.duration_s:
            raise SimulationError(f"incident {r.type}@{r.at_s:g} is after the end (--duration)")
    rounds = None if config.duration_s is None else math.ceil(config.duration_s * config.rate)
    counts = _split(config.sensors, config.kinds)
    slots: list[Slot] = []
    incidents: list[Incident] = []
    cycle_len: dict[str, int] = {}
    for ki, kind in enumerate(config.kinds):
        interval = INTERVAL_S[kind]
        n = counts[kind]
        steps = rounds if rounds is not None else MAX_CYCLE_STEPS
        steps = max(steps, WARMUP_READINGS + 2)
        seed = config.seed * 10 + ki
        calm = _source(_on_site(_calm_fleet(kind, seed, n, steps * interval / 86_400), config.site), interval)
        cycle_len[kind] = steps
        kind_slots = [
            Slot(s, 0, calm, i, 0, nested=config.shape == "nested" or (config.shape == "mixed" and i % 2 == 0))
            for i, s in enumerate(calm.data.sensors)
        ]
        wanted = [r for r in requests if r.kind == kind]
        if wanted:
            # long enough that an incident can sit anywhere in the run after the warm-up
            b_steps = 3 * steps + 10 * WARMUP_READINGS
            hot_data = _incident_fleet(kind, seed, n, b_steps * interval / 86_400, {r.type for r in wanted})
            hot = _source(_on_site(hot_data, config.site), interval)
            by_sensor: dict[str, list[Event]] = {}
            for e in hot.data.events:
                by_sensor.setdefault(e.sensor_id, []).append(e)
            used: set[int] = set()
            for r in sorted(wanted, key=lambda r: r.at_s):
                at_step = math.ceil(r.at_s * config.rate)
                best: tuple[int, int, int] | None = None  # (other events in window, sensor, offset)
                for i, s in enumerate(hot.data.sensors):
                    if i in used:
                        continue
                    for e in by_sensor.get(s.sensor_id, []):
                        if e.type != r.type:
                            continue
                        a = _event_step(e.start_ns, interval)
                        off = a - at_step
                        if off < 0 or off + steps > hot.rows.shape[1]:
                            continue
                        others = sum(
                            1
                            for o in by_sensor[s.sensor_id]
                            if o is not e and off <= _event_step(o.start_ns, interval) < off + steps
                        )
                        if best is None or others < best[0]:
                            best = (others, i, off)
                if best is None:
                    raise SimulationError(
                        f"cannot plant {r.type}@{r.at_s:g}: no simulated {kind} sensor has one there; "
                        "use more sensors, another --seed or a later time"
                    )
                _, i, off = best
                used.add(i)
                sl = kind_slots[i]
                kind_slots[i] = dataclasses.replace(sl, sensor=hot.data.sensors[i], source=hot, offset=off)
                for e in by_sensor[hot.data.sensors[i].sensor_id]:
                    a = _event_step(e.start_ns, interval) - off
                    b = _event_step(e.end_ns - 1, interval) + 1 - off
                    if 0 <= a < steps:
                        incidents.append(
                            Incident(e.sensor_id, kind, e.type, a / config.rate, b / config.rate,
                                     requested=a == at_step and e.type == r.type)
                        )
        slots.extend(kind_slots)
    # interleave the kinds so every part of a round carries all of them
    order = sorted(range(len(slots)), key=lambda j: (slots[j].local / max(1, counts[slots[j].sensor.kind]), j))
    slots = [dataclasses.replace(slots[j], rank=r) for r, j in enumerate(order)]
    cycle = min(cycle_len.values())
    # wall times of incidents: sensor `rank` publishes reading w at (w·N + rank)/(N·rate)
    n_all = len(slots)
    rank_of = {s.sensor.sensor_id: s.rank for s in slots}
    incidents = sorted(
        (
            dataclasses.replace(
                inc,
                start_s=(inc.start_s * config.rate * n_all + rank_of[inc.sensor_id]) / (n_all * config.rate),
                end_s=(inc.end_s * config.rate * n_all + rank_of[inc.sensor_id]) / (n_all * config.rate),
            )
            for inc in incidents
        ),
        key=lambda i: i.start_s,
    )
    gateways: dict[str, list[int]] = {}
    if config.gateways:
        for j, s in enumerate(slots):
            gid = f"GW-{config.site}-{(s.rank % config.gateways) + 1:02d}"
            slots[j] = dataclasses.replace(s, gateway=gid)
            gateways.setdefault(gid, []).append(j)
    return Plan(config, slots, incidents, cycle, rounds, gateways)


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
        + " (one simulated step per reading)",
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
    settings: Settings, users: Sequence[tuple[str, str]], known: Mapping[str, str] | None
) -> dict[str, str]:
    """Passwords for (user, role) pairs: from `known`, else created with `broker_admin` (re-keyed)."""
    from infrawatch.ingest import broker_admin

    known = dict(known or {})
    missing = [(u, r) for u, r in users if u not in known]
    if missing:
        known |= broker_admin.add_users(settings, missing)  # type: ignore[arg-type]
    return {u: known[u] for u, _ in users}


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
    from infrawatch.ingest.publisher import Fleet

    say = progress or (lambda _m: None)
    p = plan(config)
    say(schedule_text(p))
    users = (
        [(g, "gateway") for g in p.gateways]
        if p.gateways
        else [(s.sensor.sensor_id, "sensor") for s in p.slots]
    )
    creds = ensure_credentials(settings, users, credentials)
    if reload is not None and len(creds) > len(credentials or {}):
        reload()
    stats = SimStats()
    stop = stop or asyncio.Event()
    b = settings.broker
    async with Fleet(b.host, b.port, client_prefix="sim", keepalive_s=b.keepalive_s) as fleet:
        await fleet.add_many(creds)
        say(f"connected {len(fleet.connections)} broker identities to {b.host}:{b.port}")
        t0 = time.monotonic()
        start_ns = time.time_ns() // MS * MS
        # incident i starts at global slot (round · N + rank); open-ended runs repeat every cycle
        starts = sorted(
            (round(i.start_s * config.rate * n), k) for k, i in enumerate(p.incidents)
        )
        next_inc, cycle_base = 0, 0
        last_status = t0
        last_acked = 0
        n = len(p.slots)
        gw_buffers: dict[str, list[bytes]] = {gid: [] for gid in p.gateways}
        g = 0  # next global slot
        total = p.total_slots()
        while not stop.is_set() and (total is None or g < total):
            now_s = time.monotonic() - t0
            due_g = min(int(now_s * config.rate * n) + 1, total if total is not None else 1 << 62)
            items: list[tuple[int, int]] = []
            ts: list[int] = []
            while g < due_g:
                items.append((g % n, g // n))
                ts.append(start_ns + p.slot_offset_ns(g))
                g += 1
            if items:
                out = p.readings(items, ts)
                if p.gateways:
                    _publish_gateways(p, fleet, out, items, gw_buffers, config.qos, stats)
                else:
                    for si, payload, tp in out:
                        fleet.publish(p.slots[si].sensor.sensor_id, tp, payload, config.qos)
                    stats.messages += len(out)
                for si, _, _ in out:
                    sid = p.slots[si].sensor.sensor_id
                    stats.per_sensor[sid] = stats.per_sensor.get(sid, 0) + 1
                stats.readings += len(out)
                while starts and starts[next_inc][0] + cycle_base < g:
                    inc = p.incidents[starts[next_inc][1]]
                    stats.incidents_started.append(inc)
                    say(
                        f"[{now_s:8.1f} s] incident starts: {inc.type} on {inc.sensor_id} "
                        f"(scheduled {inc.start_s + cycle_base / (config.rate * n):.1f} s, "
                        f"lasts {inc.end_s - inc.start_s:.0f} s)"
                    )
                    next_inc += 1
                    if next_inc == len(starts):
                        if p.rounds is not None:
                            starts = []
                            break
                        next_inc, cycle_base = 0, cycle_base + p.cycle * n
            t = time.monotonic()
            if t - last_status >= status_every_s:
                c = fleet.counters
                say(
                    f"[{t - t0:8.1f} s] published {stats.readings} readings in {stats.messages} messages, "
                    f"acked {c.acked} ({(c.acked - last_acked) / (t - last_status):.0f}/s), "
                    f"pending {c.pending}, failures {c.failed}, reconnects {c.reconnects}"
                )
                last_status, last_acked = t, c.acked
            # sleep until the next slot is due (at least 5 ms: high rates go out in small bursts)
            next_s = (g + 0.5) / (config.rate * n)
            delay = max(0.005, next_s - (time.monotonic() - t0))
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(delay, 0.5))
            except TimeoutError:
                pass
        await fleet.drain(30.0)
        c = fleet.counters
        stats.acked, stats.failed, stats.reconnects = c.acked, c.failed, c.reconnects
        stats.failures = dict(c.failures)
        stats.elapsed_s = time.monotonic() - t0
    say(
        f"done: {stats.readings} readings in {stats.messages} messages over {stats.elapsed_s:.1f} s, "
        f"acked {stats.acked}, failures {stats.failed}"
    )
    return stats


def _publish_gateways(
    p: Plan,
    fleet: Any,
    out: list[tuple[int, bytes, str]],
    items: list[tuple[int, int]],
    buffers: dict[str, list[bytes]],
    qos: int,
    stats: SimStats,
) -> None:
    """A gateway sends its sensors' readings of a round once its last sensor's slot has passed."""
    last_rank = {g: max(p.slots[j].rank for j in js) for g, js in p.gateways.items()}
    for si, payload, _ in out:
        gid = p.slots[si].gateway
        assert gid is not None
        buffers[gid].append(payload)
    for si, _w in items:
        gid = p.slots[si].gateway
        assert gid is not None
        if p.slots[si].rank == last_rank[gid] and buffers[gid]:
            chunk = buffers[gid]
            buffers[gid] = []
            for a in range(0, len(chunk), MAX_BATCH_READINGS):
                body = b"[" + b",".join(chunk[a : a + MAX_BATCH_READINGS]) + b"]"
                fleet.publish(gid, f"infrawatch/{p.config.site}/gateway/{gid}/batch", body, qos)
                stats.messages += 1


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
