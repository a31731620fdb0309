"""Simulated readings as the MQTT payloads sensors and gateways publish (DESIGN.md §1).

Three shapes, as in the field: the nested form (measurements + device metadata, RFC 3339 time),
the flat form (epoch-millisecond time, short alias names) and gateway arrays (many readings of a
site in one message). Numbers are written with `repr`, the shortest form that round-trips, so a
decoded reading equals the simulated one exactly.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Literal

import numpy as np

from infrawatch.sim._common import NS, SimData

Shape = Literal["nested", "flat", "mixed"]

# short names a flat-form device might use (aliases of DESIGN.md §1)
_FLAT_ALIAS = {
    "pressure_bar": "pressure",
    "flow_rate_lps": "flow",
    "temperature_c": "temp",
    "total_flow_m3": "volume",
    "turbidity_ntu": "turbidity",
    "conductivity_uscm": "conductivity",
    "chlorine_mgl": "chlorine",
    "redox_mv": "redox",
    "dissolved_oxygen_mgl": "do",
    "energy_kwh": "kwh",
    "voltage_v": "voltage",
    "current_a": "current",
    "ph": "pH",
    "battery_level": "battery",
    "signal_strength_dbm": "rssi",
}
_DEVICE = ("battery_level", "signal_strength_dbm")


def rfc3339(ts_ns: int) -> str:
    """UTC RFC 3339 with milliseconds, e.g. 2026-01-25T10:30:00.123Z."""
    secs, rem = divmod(int(ts_ns), NS)
    base = dt.datetime.fromtimestamp(secs, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rem // 1_000_000:03d}Z"


def topic(site: str, kind: str, sensor_id: str) -> str:
    return f"infrawatch/{site}/{kind}/{sensor_id}/telemetry"


def _reading(data: SimData, i: int, nested: bool) -> dict[str, object]:
    s = data.sensors[int(data.sensor_index[i])]
    values = {k: float(v[i]) for k, v in data.fields.items() if not np.isnan(v[i])}
    if nested:
        out: dict[str, object] = {
            "sensor_id": s.sensor_id,
            "kind": s.kind,
            "timestamp": rfc3339(int(data.timestamp_ns[i])),
            "location": s.location,
            "facility_zone": s.zone,
            "measurements": {k: v for k, v in values.items() if k not in _DEVICE},
        }
        device = {k: v for k, v in values.items() if k in _DEVICE}
        if device:
            out["device_metadata"] = device
        return out
    flat: dict[str, object] = {
        "sensor_id": s.sensor_id,
        "kind": s.kind,
        "timestamp": int(data.timestamp_ns[i]) // 1_000_000,
        "facility_zone": s.zone,
    }
    flat.update({_FLAT_ALIAS.get(k, k): v for k, v in values.items()})
    return flat


def payloads(data: SimData, shape: Shape = "mixed") -> tuple[list[bytes], list[str]]:
    """One MQTT message per reading: (payloads, topics) in time order."""
    out: list[bytes] = []
    topics: list[str] = []
    for i in range(len(data)):
        nested = shape == "nested" or (shape == "mixed" and i % 2 == 0)
        s = data.sensors[int(data.sensor_index[i])]
        out.append(json.dumps(_reading(data, i, nested), separators=(",", ":")).encode())
        topics.append(topic(s.site, s.kind, s.sensor_id))
    return out, topics


def gateway_batches(data: SimData, per_message: int = 100) -> Iterator[tuple[bytes, str]]:
    """Readings grouped per site into gateway messages of at most `per_message` readings."""
    by_site: dict[str, list[int]] = {}
    for i in range(len(data)):
        by_site.setdefault(data.sensors[int(data.sensor_index[i])].site, []).append(i)
    for site, rows in by_site.items():
        gw = f"GW-{site}"
        for start in range(0, len(rows), per_message):
            chunk = [_reading(data, i, i % 2 == 0) for i in rows[start : start + per_message]]
            yield (
                json.dumps(chunk, separators=(",", ":")).encode(),
                f"infrawatch/{site}/gateway/{gw}/batch",
            )


__all__ = ["gateway_batches", "payloads", "rfc3339", "topic"]
