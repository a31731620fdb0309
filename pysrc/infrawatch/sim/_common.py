"""What every simulated kind shares: the fleet layout, the time grid, the result container, events.

Everything is generated as (sensor, step) matrices with NumPy, then flattened time-major, so a
million readings take a fraction of a second and come out interleaved as a broker delivers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

NS = 1_000_000_000
DEFAULT_START_NS = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Sensor:
    """One simulated sensor and where it sits (the registry and the facility map use this)."""

    sensor_id: str
    kind: str
    site: str
    zone: str  # CRITICAL or STANDARD
    location: str
    lat: float
    lon: float
    beds: int = 0  # energy rooms only


@dataclass(frozen=True)
class Event:
    """A labelled incident: what it is, on which sensor, from when to when (end exclusive)."""

    sensor_id: str
    kind: str
    type: str
    start_ns: int
    end_ns: int

    @classmethod
    def span(cls, sensor_id: str, kind: str, type_: str, t_ns: np.ndarray, a: int, b: int) -> Event:
        """The event covering grid steps a..b-1 (end exclusive, one ns past the last step)."""
        return cls(sensor_id, kind, type_, int(t_ns[a]), int(t_ns[b - 1]) + 1)


@dataclass
class SimData:
    """Simulated readings in columns, time-major, plus per-reading labels and the event table.

    `label` is an index into `label_names` (0 is always `normal`); sensor faults that are not
    incidents (stuck values, spikes, drift, dropouts) are labelled normal on purpose: the
    models must learn not to page on them.
    """

    kind: str
    sensors: list[Sensor]
    sensor_index: np.ndarray  # int32 index into `sensors`, per reading
    timestamp_ns: np.ndarray  # int64
    fields: dict[str, np.ndarray]  # float64, NaN where the reading lacks the field
    label: np.ndarray  # int8
    label_names: tuple[str, ...]
    events: list[Event] = field(default_factory=list)
    faults: list[Event] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.timestamp_ns)

    @property
    def sensor_id(self) -> np.ndarray:
        ids = np.array([s.sensor_id for s in self.sensors], dtype=object)
        return np.asarray(ids[self.sensor_index])

    @property
    def zone(self) -> np.ndarray:
        zones = np.array([s.zone for s in self.sensors], dtype=object)
        return np.asarray(zones[self.sensor_index])

    @property
    def site(self) -> np.ndarray:
        sites = np.array([s.site for s in self.sensors], dtype=object)
        return np.asarray(sites[self.sensor_index])

    def is_incident(self) -> np.ndarray:
        return self.label > 0

    def select(self, mask: np.ndarray) -> SimData:
        """The readings where `mask` holds (events are kept whole: they are sensor-level facts)."""
        return SimData(
            kind=self.kind,
            sensors=self.sensors,
            sensor_index=self.sensor_index[mask],
            timestamp_ns=self.timestamp_ns[mask],
            fields={k: v[mask] for k, v in self.fields.items()},
            label=self.label[mask],
            label_names=self.label_names,
            events=self.events,
            faults=self.faults,
        )

    def chunks(self, size: int) -> Iterator[SimData]:
        """Consecutive slices of at most `size` readings (for replay and streaming training)."""
        for start in range(0, len(self), size):
            yield self.select(np.arange(start, min(start + size, len(self))))


@dataclass(frozen=True)
class Grid:
    """A regular time grid: `n_steps` samples every `interval_s` from `start_ns`."""

    start_ns: int
    interval_s: int
    n_steps: int

    @property
    def t_ns(self) -> np.ndarray:
        return self.start_ns + np.arange(self.n_steps, dtype=np.int64) * self.interval_s * NS

    @property
    def hour(self) -> np.ndarray:
        """Fractional UTC hour of day per step."""
        return ((self.t_ns // NS) % 86_400) / 3600.0

    @property
    def dow(self) -> np.ndarray:
        """Day of week per step, 0 = Monday (1970-01-01 was a Thursday)."""
        return ((self.t_ns // NS // 86_400) + 3) % 7

    @property
    def day_of_year(self) -> np.ndarray:
        return ((self.t_ns // NS) % (365 * 86_400)) / 86_400.0


def make_grid(days: float, interval_s: int, start_ns: int = DEFAULT_START_NS) -> Grid:
    if days <= 0 or interval_s <= 0:
        raise ValueError("days and interval_s must be positive")
    return Grid(start_ns, interval_s, max(2, int(days * 86_400 // interval_s)))


def make_sensors(
    rng: np.random.Generator,
    kind: str,
    n: int,
    sites: int,
    critical_share: float,
    prefix: str,
) -> list[Sensor]:
    """`n` sensors spread over `sites` facilities, a share of them in CRITICAL zones.

    Coordinates scatter around a per-site centre (a small city grid) for the facility map.
    """
    if n <= 0:
        raise ValueError("n_sensors must be positive")
    site_names = [f"site-{i + 1:02d}" for i in range(max(1, sites))]
    centres = [(52.37 + 0.05 * i, 4.89 + 0.07 * i) for i in range(len(site_names))]
    out = []
    for i in range(n):
        s = i % len(site_names)
        zone = "CRITICAL" if rng.random() < critical_share else "STANDARD"
        lat = centres[s][0] + float(rng.normal(0, 0.01))
        lon = centres[s][1] + float(rng.normal(0, 0.015))
        beds = int(rng.choice([2, 4, 6])) if kind == "energy" else 0
        place = {"water_flow": "main", "water_quality": "station", "energy": "room"}[kind]
        out.append(
            Sensor(
                sensor_id=f"{prefix}{i + 1:05d}",
                kind=kind,
                site=site_names[s],
                zone=zone,
                location=f"{site_names[s]} {place} {i + 1}",
                lat=round(lat, 6),
                lon=round(lon, 6),
                beds=beds,
            )
        )
    return out


def ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, sigma: float) -> np.ndarray:
    """Stationary AR(1) noise along axis 1 (sensor-wise), vectorised over sensors.

    Uses the closed form via a scan over steps in blocks; shape[1] steps are cheap with cumsum of
    scaled innovations: x_t = phi x_{t-1} + e_t  ⇔  x_t = phi^t Σ_{k≤t} phi^{-k} e_k, computed in
    blocks of 256 steps so phi^{-k} stays well inside float range.
    """
    n, m = shape
    e = rng.normal(0.0, sigma * np.sqrt(1 - phi * phi), size=shape)
    out = np.empty(shape)
    prev = rng.normal(0.0, sigma, size=n)
    block = 256
    for start in range(0, m, block):
        stop = min(start + block, m)
        k = np.arange(1, stop - start + 1)
        pw = phi**k
        acc = np.cumsum(e[:, start:stop] / pw, axis=1) * pw
        out[:, start:stop] = acc + prev[:, None] * pw
        prev = out[:, stop - 1]
    return out


def diurnal(hour: np.ndarray, peaks: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """Sum of circular Gaussian bumps (centre hour, width h, height) over the hour of day."""
    out = np.zeros_like(hour, dtype=float)
    for centre, width, height in peaks:
        d = np.abs(hour - centre)
        d = np.minimum(d, 24 - d)
        out += height * np.exp(-0.5 * (d / width) ** 2)
    return out


def place_intervals(
    rng: np.random.Generator,
    n_sensors: int,
    n_steps: int,
    rate_per_sensor: float,
    min_len: int,
    max_len: int,
    busy: np.ndarray | None = None,
    margin: int = 0,
) -> list[tuple[int, int, int]]:
    """Non-overlapping (sensor, start, end) step intervals, Poisson count per sensor.

    `busy` (n_sensors, n_steps) bool marks steps already taken by other events; new intervals
    keep `margin` steps clear of them so labels stay unambiguous. Intervals start after a warm-up
    of 10% of the series (the features need a window of history).
    """
    out = []
    taken = np.zeros((n_sensors, n_steps), bool) if busy is None else busy
    warm = max(1, n_steps // 10)
    for s in range(n_sensors):
        for _ in range(int(rng.poisson(rate_per_sensor))):
            length = int(rng.integers(min_len, max_len + 1))
            if n_steps - warm - length - 1 <= 0:
                continue
            for _try in range(20):
                start = int(rng.integers(warm, n_steps - length))
                lo, hi = max(0, start - margin), min(n_steps, start + length + margin)
                if not taken[s, lo:hi].any():
                    taken[s, start : start + length] = True
                    out.append((s, start, start + length))
                    break
    return out


def flatten(
    kind: str,
    sensors: list[Sensor],
    grid: Grid,
    fields: dict[str, np.ndarray],
    label: np.ndarray,
    label_names: tuple[str, ...],
    present: np.ndarray,
    events: list[Event],
    faults: list[Event],
    jitter_s: np.ndarray | None = None,
) -> SimData:
    """(sensor, step) matrices → time-major columns, dropping readings where `present` is False."""
    n, m = label.shape
    t = np.broadcast_to(grid.t_ns[None, :], (n, m))
    if jitter_s is not None:
        # whole milliseconds: payload timestamps (RFC 3339 .sss / epoch ms) carry them exactly
        shift = np.round(np.broadcast_to(jitter_s, (n, 1)) * 1000).astype(np.int64)[:, 0] * 1_000_000
        t = t + shift[:, None]
        # events and faults move with their sensor's clock offset
        index = {s.sensor_id: i for i, s in enumerate(sensors)}

        def moved(e: Event) -> Event:
            d = int(shift[index[e.sensor_id]])
            return Event(e.sensor_id, e.kind, e.type, e.start_ns + d, e.end_ns + d)

        events = [moved(e) for e in events]
        faults = [moved(e) for e in faults]
    order = present.T.reshape(-1)  # time-major
    sensor_index = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], (n, m)).T.reshape(-1)
    return SimData(
        kind=kind,
        sensors=sensors,
        sensor_index=sensor_index[order],
        timestamp_ns=np.ascontiguousarray(t.T.reshape(-1)[order]),
        fields={k: np.ascontiguousarray(v.T.reshape(-1)[order]) for k, v in fields.items()},
        label=label.T.reshape(-1)[order].astype(np.int8),
        label_names=label_names,
        events=events,
        faults=faults,
    )


def concat(parts: list[SimData]) -> SimData:
    """Several fleets of one kind as one (e.g. validation seeds scored together): part i's sensor
    ids get the prefix `i:`, so fleets simulated over the same days stay apart. One part is
    returned as it is."""
    if len(parts) == 1:
        return parts[0]
    if not parts or len({p.kind for p in parts}) != 1 or len({p.label_names for p in parts}) != 1:
        raise ValueError("concat needs one or more fleets of the same kind")

    def moved(i: int, e: Event) -> Event:
        return replace(e, sensor_id=f"{i}:{e.sensor_id}")

    offsets = np.cumsum([0] + [len(p.sensors) for p in parts])
    fields = sorted({f for p in parts for f in p.fields})
    nan = [np.full(len(p), np.nan) for p in parts]
    return SimData(
        kind=parts[0].kind,
        sensors=[replace(s, sensor_id=f"{i}:{s.sensor_id}") for i, p in enumerate(parts) for s in p.sensors],
        sensor_index=np.concatenate(
            [p.sensor_index + o for p, o in zip(parts, offsets, strict=False)]
        ).astype(np.int32),
        timestamp_ns=np.concatenate([p.timestamp_ns for p in parts]),
        fields={
            f: np.concatenate([p.fields.get(f, n) for p, n in zip(parts, nan, strict=True)]) for f in fields
        },
        label=np.concatenate([p.label for p in parts]),
        label_names=parts[0].label_names,
        events=[moved(i, e) for i, p in enumerate(parts) for e in p.events],
        faults=[moved(i, e) for i, p in enumerate(parts) for e in p.faults],
    )
