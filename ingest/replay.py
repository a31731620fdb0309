"""`infrawatch replay`: a real data set from `../shared/data/` through the broker, as its sensors.

The data set adapters (`infrawatch.detection.datasets`) give time-ordered readings with canonical
field names; each is published as the nested JSON payload (DESIGN.md §1) by its own sensor
identity; its timestamps moved as a whole so the last reading is now (the `raw` tier keeps 7 days;
`--keep-timestamps` sends the originals), spacing kept, so the stored series is the data set's.
Pacing keeps the data set's own spacing divided by `speed` (`speed=0`: as fast as the broker
acknowledges, with a bounded number of messages in flight).

Readings where every field is missing (the adapters keep a sensor's empty rows as NaN) are not
sent: a device with nothing to report sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infrawatch import sim
from infrawatch.config import Settings
from infrawatch.detection import datasets
from infrawatch.ingest.broker_admin import Role
from infrawatch.ingest.publisher import Fleet
from infrawatch.ingest.simulate import ensure_credentials
from infrawatch.sim import SimData

CHUNK = 2000  # readings turned into payloads at a time
MAX_IN_FLIGHT = 5000  # messages published but not yet acknowledged (speed 0)


class ReplayError(ValueError):
    """The path or options do not make a replay (the message says what to change)."""


@dataclass(frozen=True)
class ReplayConfig:
    speed: float = 1.0  # times real time; 0 = as fast as possible
    kind: str | None = None  # only data sets of this kind (needed for a folder of several)
    limit: int | None = None  # at most this many readings (the first ones in time)
    qos: int = 1
    # Move the data set in time so its last reading lands now (spacing kept): the `raw` tier keeps
    # 7 days and InfluxDB refuses older points, so a 2019 data set replayed as it is stores nothing.
    shift_to_now: bool = True

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ReplayError("--speed must be 0 (as fast as possible) or positive")
        if self.limit is not None and self.limit < 1:
            raise ReplayError("--limit must be at least 1")
        if self.kind is not None and self.kind not in sim.KINDS:
            raise ReplayError(f"unknown kind {self.kind!r}; choose from {', '.join(sim.KINDS)}")


@dataclass
class ReplayStats:
    readings: int = 0  # published
    acked: int = 0
    failed: int = 0
    skipped_empty: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    per_sensor: dict[str, int] = field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0
    elapsed_s: float = 0.0


def load(path: str | Path, kind: str | None = None) -> list[tuple[str, SimData]]:
    """The data sets at `path`: one (a data set folder or CSV), or each of `kind` under a folder of them."""
    p = Path(path)
    if not p.exists():
        raise ReplayError(f"{p} does not exist")
    try:
        found = [datasets.load(p)]
    except datasets.DatasetError as e:
        if not p.is_dir():
            raise ReplayError(str(e)) from e
        names = [c for c in sorted(p.iterdir()) if c.is_dir() and c.name in datasets.ADAPTERS]
        if kind is not None:
            names = [c for c in names if datasets.ADAPTERS[c.name][0] == kind]
        if not names:
            raise ReplayError(
                f"{p} is neither a data set nor a folder of data sets"
                + (f" of kind {kind}" if kind else "")
                + f" (known: {', '.join(datasets.ADAPTERS)})"
            ) from e
        if kind is None and len(names) > 1:
            raise ReplayError(
                f"{p} holds several data sets ({', '.join(c.name for c in names)}); "
                "pass one of them, or --kind to replay those of one kind"
            ) from e
        found = [datasets.load(c) for c in names]
    if kind is not None:
        wrong = [(n, d.kind) for n, d in found if d.kind != kind]
        if wrong and len(found) == 1:
            raise ReplayError(f"{p} is a {wrong[0][1]} data set ({wrong[0][0]}), not {kind}")
    return found


def merge(parts: list[tuple[str, SimData]], limit: int | None = None) -> SimData:
    """Several data sets as one time-ordered stream (the first `limit` readings, empty rows dropped)."""
    if len(parts) == 1:
        data = parts[0][1]
    else:
        sensors = [s for _, d in parts for s in d.sensors]
        base = np.cumsum([0] + [len(d.sensors) for _, d in parts[:-1]])
        names = sorted({k for _, d in parts for k in d.fields})
        data = SimData(
            kind=parts[0][1].kind,
            sensors=sensors,
            sensor_index=np.concatenate([d.sensor_index + b for (_, d), b in zip(parts, base, strict=True)]),
            timestamp_ns=np.concatenate([d.timestamp_ns for _, d in parts]),
            fields={
                k: np.concatenate([d.fields.get(k, np.full(len(d), np.nan)) for _, d in parts]) for k in names
            },
            label=np.concatenate([d.label for _, d in parts]),
            label_names=parts[0][1].label_names,
            events=[e for _, d in parts for e in d.events],
        )
        data = data.select(np.argsort(data.timestamp_ns, kind="stable"))
    return data if limit is None else data.select(np.arange(min(limit, len(data))))


def nonempty(data: SimData) -> np.ndarray:
    """Rows with at least one value."""
    if not data.fields:
        return np.zeros(len(data), bool)
    return np.asarray(~np.all(np.isnan(np.vstack(list(data.fields.values()))), axis=0))


def payload_chunks(data: SimData, size: int = CHUNK) -> list[tuple[int, int]]:
    return [(a, min(a + size, len(data))) for a in range(0, len(data), size)]


async def replay(
    settings: Settings,
    data: SimData,
    config: ReplayConfig,
    *,
    stop: asyncio.Event | None = None,
    credentials: Mapping[str, str] | None = None,
    reload: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
    status_every_s: float = 2.0,
) -> ReplayStats:
    """Publish `data` (time-ordered readings) as its sensors; returns what was published."""
    say = progress or (lambda _m: None)
    stats = ReplayStats()
    keep = nonempty(data)
    stats.skipped_empty = int((~keep).sum())
    data = data.select(keep)
    if len(data) == 0:
        raise ReplayError("nothing to replay: every reading is empty")
    if config.shift_to_now:
        offset = time.time_ns() - int(data.timestamp_ns.max())
        data = dataclasses.replace(data, timestamp_ns=data.timestamp_ns + offset)
        say(f"timestamps moved by {offset / 86_400e9:+.1f} days so the last reading is now")
    used = sorted({int(i) for i in np.unique(data.sensor_index)})
    users: list[tuple[str, Role]] = [(data.sensors[i].sensor_id, "sensor") for i in used]
    creds = ensure_credentials(settings, users, credentials)
    if reload is not None and len(creds) > len(credentials or {}):
        reload()
    stop = stop or asyncio.Event()
    t_first = int(data.timestamp_ns[0])
    stats.first_ns, stats.last_ns = t_first, int(data.timestamp_ns[-1])
    span_s = (stats.last_ns - t_first) / 1e9
    say(
        f"replaying {len(data)} readings of {len(used)} sensors spanning {span_s / 86_400:.1f} days "
        + (
            f"at {config.speed:g}x (about {span_s / config.speed:.0f} s)"
            if config.speed
            else "as fast as possible"
        )
        + (f"; {stats.skipped_empty} empty rows skipped" if stats.skipped_empty else "")
    )
    b = settings.broker
    async with Fleet(b.host, b.port, client_prefix="replay", keepalive_s=b.keepalive_s) as fleet:
        await fleet.add_many(creds)
        t0 = time.monotonic()
        last_status, last_acked = t0, 0
        for a, z in payload_chunks(data):
            if stop.is_set():
                break
            chunk = data.select(np.arange(a, z))
            payloads, topics = sim.payloads(chunk, "nested")
            ids = chunk.sensor_id
            ts = chunk.timestamp_ns
            for j in range(len(payloads)):
                if config.speed > 0:
                    due = (int(ts[j]) - t_first) / 1e9 / config.speed
                    wait = due - (time.monotonic() - t0)
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=wait)
                        if stop.is_set():
                            break
                while fleet.counters.pending >= MAX_IN_FLIGHT:
                    await asyncio.sleep(0.005)
                sid = str(ids[j])
                fleet.publish(sid, topics[j], payloads[j], config.qos)
                stats.readings += 1
                stats.per_sensor[sid] = stats.per_sensor.get(sid, 0) + 1
                now = time.monotonic()
                if now - last_status >= status_every_s:
                    c = fleet.counters
                    say(
                        f"[{now - t0:8.1f} s] published {stats.readings}/{len(data)}, acked {c.acked} "
                        f"({(c.acked - last_acked) / (now - last_status):.0f}/s), pending {c.pending}, "
                        f"failures {c.failed}, data time {sim.rfc3339(int(ts[j]))}"
                    )
                    last_status, last_acked = now, c.acked
            # let the loop breathe between chunks at full speed
            await asyncio.sleep(0)
        await fleet.drain(60.0)
        c = fleet.counters
        stats.acked, stats.failed, stats.failures = c.acked, c.failed, dict(c.failures)
        stats.elapsed_s = time.monotonic() - t0
    say(
        f"done: {stats.readings} readings in {stats.elapsed_s:.1f} s "
        f"({stats.readings / max(stats.elapsed_s, 1e-9):.0f}/s), acked {stats.acked}, failures {stats.failed}"
    )
    return stats


def run_replay(
    settings: Settings,
    path: str | Path,
    config: ReplayConfig,
    *,
    credentials: Mapping[str, str] | None = None,
    reload: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReplayStats:
    """Load `path` and replay it on a fresh event loop."""
    data = merge(load(path, config.kind), config.limit)
    return asyncio.run(
        replay(settings, data, config, credentials=credentials, reload=reload, progress=progress)
    )


__all__ = ["ReplayConfig", "ReplayError", "ReplayStats", "load", "merge", "replay", "run_replay"]
