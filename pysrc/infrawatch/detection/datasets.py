"""Adapters from the real, labelled public data sets to the simulator's `SimData` shape.

Each adapter reads a folder (or one CSV of it) as distributed in `../shared/data/` — or a later,
unseen stretch in the same format — and returns readings with canonical field names, per-row
labels and the labelled events, so training, evaluation and replay treat real and simulated
data alike. Mapping decisions:

- `gecco2018_water_quality` → `water_quality`: Tp→temperature_c, Cl→chlorine_mgl, pH→ph,
  Redox→redox_mv, Leit→conductivity_uscm, Trueb→turbidity_ntu; Cl_2, Fm, Fm_2 are kept as
  unknown fields (stored, not modelled). Local German time → UTC. Events: runs of EVENT rows.
- `battledim2019_ltown` → `water_flow`: each of the three SCADA flows is a sensor (m³/h → L/s);
  the tank level is kept as `tank_level_m`. Events: each leak *onset* in the file, on every flow
  sensor, from the onset to its repair or peak (incipient leaks grow for weeks), at most 7 days;
  `abrupt` leaks (full size at once) are bursts, `incipient` ones leaks.
  Rows labelled: inside those spans (the baseline of carried-over leaks is normal).
- `lead1_building_electricity` → `energy`: each building is a sensor, meter_reading → energy_kwh.
  Timestamps are the buildings' local time and kept as if UTC, so hour-of-day features mean local
  hours. Events: runs of anomaly = 1.
- `nab_realknowncause_traffic` → `energy` (a general sanity benchmark): each series is a sensor,
  value → energy_kwh; events: the NAB windows.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from infrawatch.sim import Event, Sensor, SimData

NS = 1_000_000_000
_BERLIN = ZoneInfo("Europe/Berlin")


class DatasetError(Exception):
    """The path does not hold a data set this adapter understands (the message says why)."""


def _csvs(path: Path, pattern: str) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted(path.glob(pattern))
    if not found:
        raise DatasetError(f"no {pattern} file under {path}")
    return found


def _ts(text: str, tz: dt.tzinfo | None = None) -> int:
    t = dt.datetime.fromisoformat(text.strip())
    t = t.replace(tzinfo=tz or dt.UTC) if t.tzinfo is None else t
    return int(t.timestamp()) * NS + t.microsecond * 1000


def _num(text: str) -> float:
    text = text.strip()
    if text in {"", "NA", "NaN", "nan"}:
        return float("nan")
    return float(text)


def _sensor(sensor_id: str, kind: str, site: str, location: str) -> Sensor:
    return Sensor(sensor_id, kind, site, "STANDARD", location, 0.0, 0.0)


def _runs(sensor_id: str, kind: str, ts: np.ndarray, flag: np.ndarray, type_: str) -> list[Event]:
    """Events from runs of consecutive flagged rows (end = last flagged row + 1 ns)."""
    out = []
    f = np.concatenate([[False], flag.astype(bool), [False]])
    starts = np.flatnonzero(~f[:-1] & f[1:])
    ends = np.flatnonzero(f[:-1] & ~f[1:])
    for a, b in zip(starts, ends, strict=True):
        out.append(Event(sensor_id, kind, type_, int(ts[a]), int(ts[b - 1]) + 1))
    return out


def _assemble(
    kind: str,
    label_names: tuple[str, ...],
    parts: list[tuple[Sensor, np.ndarray, dict[str, np.ndarray], np.ndarray, list[Event]]],
) -> SimData:
    """Per-sensor series → one time-ordered SimData (stable sort: sensors interleave by time)."""
    sensors = [p[0] for p in parts]
    idx = np.concatenate([np.full(len(p[1]), i, np.int32) for i, p in enumerate(parts)])
    ts = np.concatenate([p[1] for p in parts])
    names = sorted({k for p in parts for k in p[2]})
    fields = {k: np.concatenate([p[2].get(k, np.full(len(p[1]), np.nan)) for p in parts]) for k in names}
    label = np.concatenate([p[3] for p in parts]).astype(np.int8)
    order = np.argsort(ts, kind="stable")
    return SimData(
        kind=kind,
        sensors=sensors,
        sensor_index=idx[order],
        timestamp_ns=ts[order],
        fields={k: v[order] for k, v in fields.items()},
        label=label[order],
        label_names=label_names,
        events=[e for p in parts for e in p[4]],
    )


# ------------------------------------------------------------------------------------------ GECCO
_GECCO = {
    "Tp": "temperature_c",
    "Cl": "chlorine_mgl",
    "pH": "ph",
    "Redox": "redox_mv",
    "Leit": "conductivity_uscm",
    "Trueb": "turbidity_ntu",
    "Cl_2": "chlorine_2_mgl",
    "Fm": "flow_1_m3h",
    "Fm_2": "flow_2_m3h",
}


def load_gecco(path: Path) -> SimData:
    ts, label, cols = [], [], {v: [] for v in _GECCO.values()}  # type: ignore[var-annotated]
    for f in _csvs(path, "*gecco*water*quality*.csv"):
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                ts.append(_ts(row["Time"], _BERLIN))
                label.append(row["EVENT"].strip().upper() == "TRUE")
                for src, dst in _GECCO.items():
                    cols[dst].append(_num(row.get(src, "")))
    t = np.array(ts, np.int64)
    y = np.array(label, bool)
    s = _sensor("GECCO-1", "water_quality", "gecco", "Thüringer Fernwasserversorgung station")
    fields = {k: np.array(v) for k, v in cols.items()}
    # rows with every sensor empty are dropouts: the station sent nothing
    present = ~np.all([np.isnan(v) for v in fields.values()], axis=0)
    ev = _runs(s.sensor_id, "water_quality", t, y, "contamination")
    fields = {k: v[present] for k, v in fields.items()}
    return _assemble("water_quality", ("normal", "contamination"), [(s, t[present], fields, y[present], ev)])


# ------------------------------------------------------------------------------------ BattLeDIM
def load_battledim(path: Path, max_event_days: float = 7.0) -> SimData:
    scada = _csvs(path, "*scada*leaks*.csv")[0] if path.is_dir() else path
    events_csv = sorted(scada.parent.glob("*leak_events*.csv"))
    with scada.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    t = np.array([_ts(r["Timestamp"]) for r in rows], np.int64)
    onsets: list[tuple[int, int, str]] = []
    if events_csv:
        with events_csv[0].open(newline="") as fh:
            for r in csv.DictReader(fh):
                if r["onset_in_this_file"].strip().lower() != "true":
                    continue
                start = _ts(r["leak_start"])
                end_txt = r.get("leak_end_if_in_this_file", "") or r.get("peak_time_if_in_this_file", "")
                end = _ts(end_txt) if end_txt.strip() else int(t[-1]) + 1
                end = min(end, start + int(max_event_days * 86_400) * NS)
                # an abrupt leak appears at full size at once: that is what a burst looks like
                kind = "burst" if r.get("leak_type", "").strip() == "abrupt" else "leak"
                onsets.append((start, end, kind))
    else:  # no events table beside the file: derive onsets from the per-leak columns
        for c in (c for c in rows[0] if c.startswith("leak_p")):
            v = np.array([_num(r[c]) for r in rows])
            on = np.flatnonzero(v > 0)
            if len(on) and on[0] > 0:
                start = int(t[on[0]])
                end = min(int(t[on[-1]]) + 1, start + int(max_event_days * 86_400) * NS)
                onsets.append((start, end, "leak"))
    y = np.zeros(len(t), np.int8)
    for a, b, kind in onsets:
        y[(t >= a) & (t < b)] = 2 if kind == "burst" else 1
    level = np.array([_num(r["level_T1_m"]) for r in rows])
    parts = []
    for col in ("flow_p227_m3h", "flow_p235_m3h", "flow_PUMP_1_m3h"):
        name = col.removeprefix("flow_").removesuffix("_m3h")
        s = _sensor(f"LTOWN-{name}", "water_flow", "l-town", f"L-Town {name}")
        flow = np.array([_num(r[col]) for r in rows]) / 3.6
        ev = [Event(s.sensor_id, "water_flow", kind, a, b) for a, b, kind in onsets]
        parts.append((s, t, {"flow_rate_lps": flow, "tank_level_m": level}, y, ev))
    return _assemble("water_flow", ("normal", "leak", "burst"), parts)


# ----------------------------------------------------------------------------------------- LEAD
def load_lead(path: Path) -> SimData:
    by_b: dict[str, tuple[list[int], list[float], list[bool]]] = {}
    for f in _csvs(path, "lead1_*.csv"):
        with f.open(newline="") as fh:
            for r in csv.DictReader(fh):
                b = by_b.setdefault(r["building_id"], ([], [], []))
                b[0].append(_ts(r["timestamp"]))
                b[1].append(_num(r["meter_reading"]))
                b[2].append(r["anomaly"].strip() == "1")
    parts = []
    for bid, (ts, kwh, an) in sorted(by_b.items()):
        s = _sensor(f"LEAD-{bid}", "energy", "lead", f"building {bid}")
        t, y = np.array(ts, np.int64), np.array(an, bool)
        parts.append((s, t, {"energy_kwh": np.array(kwh)}, y, _runs(s.sensor_id, "energy", t, y, "anomaly")))
    return _assemble("energy", ("normal", "anomaly"), parts)


# ------------------------------------------------------------------------------------------ NAB
def load_nab(path: Path) -> SimData:
    root = path if path.is_dir() else path.parent.parent
    windows_file = root / "combined_windows.json"
    if not windows_file.is_file():
        raise DatasetError(f"{windows_file} not found: pass the NAB folder holding combined_windows.json")
    windows = json.loads(windows_file.read_text())
    parts = []
    for rel, spans in sorted(windows.items()):
        f = root / rel
        if not f.is_file() or (path.is_file() and f.resolve() != path.resolve()):
            continue
        with f.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        t = np.array([_ts(r["timestamp"]) for r in rows], np.int64)
        v = np.array([_num(r["value"]) for r in rows])
        sid = "NAB-" + Path(rel).stem.replace("_", "-")
        s = _sensor(sid, "energy", "nab", rel)
        y = np.zeros(len(t), bool)
        ev = []
        for a_txt, b_txt in spans:
            a, b = _ts(a_txt), _ts(b_txt) + 1
            y |= (t >= a) & (t < b)
            ev.append(Event(sid, "energy", "anomaly", a, b))
        parts.append((s, t, {"energy_kwh": v}, y, ev))
    if not parts:
        raise DatasetError(f"no NAB series listed in {windows_file} found under {root}")
    return _assemble("energy", ("normal", "anomaly"), parts)


ADAPTERS: dict[str, tuple[str, Callable[[Path], SimData]]] = {
    "gecco2018_water_quality": ("water_quality", load_gecco),
    "battledim2019_ltown": ("water_flow", load_battledim),
    "lead1_building_electricity": ("energy", load_lead),
    "nab_realknowncause_traffic": ("energy", load_nab),
}


def detect(path: Path) -> str:
    """Which data set a path holds, from its folder or file name."""
    text = str(path.resolve()).lower()
    for name in ADAPTERS:
        if name in text or name.split("_")[0] in Path(text).name:
            return name
    names = {
        "gecco": "gecco2018_water_quality",
        "battledim": "battledim2019_ltown",
        "lead1": "lead1_building_electricity",
    }
    for key, name in names.items():
        if key in text:
            return name
    if "realknowncause" in text or "realtraffic" in text or (path / "combined_windows.json").exists():
        return "nab_realknowncause_traffic"
    raise DatasetError(
        f"cannot tell which data set {path} is; name the folder after one of: {', '.join(ADAPTERS)}"
    )


def load(path: str | Path) -> tuple[str, SimData]:
    """(data set name, readings) for a folder or CSV of one of the supported data sets."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p} does not exist")
    name = detect(p)
    return name, ADAPTERS[name][1](p)


def split_by_time(data: SimData, fractions: tuple[float, ...]) -> list[SimData]:
    """Consecutive time slices (e.g. (0.6, 0.2, 0.2) → train, validation, test).

    Events are clipped to each slice so every part is self-contained.
    """
    t0, t1 = int(data.timestamp_ns.min()), int(data.timestamp_ns.max()) + 1
    bounds = [t0 + int((t1 - t0) * c) for c in np.cumsum((0.0, *fractions))]
    bounds[-1] = t1
    out = []
    for a, b in itertools.pairwise(bounds):
        part = data.select((data.timestamp_ns >= a) & (data.timestamp_ns < b))
        part.events = [
            Event(e.sensor_id, e.kind, e.type, max(e.start_ns, a), min(e.end_ns, b))
            for e in data.events
            if e.start_ns < b and e.end_ns > a
        ]
        out.append(part)
    return out
