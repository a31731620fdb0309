"""The `sensor` measurement: where each sensor sits, for the facility map (and the API's registry).

One point per sensor — tags site, kind, sensor_id, zone; fields lat, lon, location — written to the
longest tier (`rollup_1h`, years) because it describes the sensor, not a moment: rewriting it is
idempotent (same series, same timestamp when the caller passes one), and it outlives raw's 7 days.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

RETENTION_POLICY = "rollup_1h"


class SensorLike(Protocol):
    @property
    def sensor_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


def _tag(value: str) -> str:
    if not value:
        raise ValueError("sensor tags must not be empty (InfluxDB drops empty tag values)")
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sensor_lines(sensors: Iterable[SensorLike], ts_ns: int | None = None) -> bytes:
    """Line protocol of the `sensor` points (write it with rp=RETENTION_POLICY)."""
    ts = time.time_ns() if ts_ns is None else int(ts_ns)
    out = []
    for s in sensors:
        out.append(
            f"sensor,kind={_tag(s.kind)},sensor_id={_tag(s.sensor_id)},"
            f"site={_tag(s.site)},zone={_tag(s.zone)} "
            f"lat={float(s.lat)!r},lon={float(s.lon)!r},location={_string(s.location)} {ts}\n"
        )
    return "".join(out).encode()
