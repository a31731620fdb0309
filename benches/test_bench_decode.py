"""Decoding sensor payloads: `core.decode` (columnar, GIL released) against the Python JSON
libraries a user would pick instead — msgspec into typed Structs, orjson and json.

Each `core.decode` round touches `.fields`, `.timestamp_ns` and `.sensor_id`, so the Python
objects are really built. Run against a release build:

    PROFILE=release scripts/dev-build.sh
    PYTHONPATH=pysrc .venv/bin/python -m pytest benches/test_bench_decode.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from infrawatch import core

N = 1000
GATEWAY_MESSAGES = 10
GATEWAY_READINGS = 100


def _nested(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "sensor_id": f"S{i:05d}",
        "timestamp": f"2026-01-25T10:{i // 60 % 60:02d}:{i % 60:02d}.{rng.randrange(1000):03d}Z",
        "location": "Server Room A",
        "facility_zone": rng.choice(["CRITICAL", "STANDARD"]),
        "measurements": {
            "pressure_bar": round(rng.uniform(1, 6), 2),
            "flow_rate_lps": round(rng.uniform(0, 200), 1),
            "temperature_c": round(rng.uniform(5, 30), 1),
        },
        "device_metadata": {
            "battery_level": rng.randrange(101),
            "signal_strength": -rng.randrange(30, 100),
            "last_calibration": "2026-01-20T09:00:00Z",
        },
    }


def _flat(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "sensor_id": str(100_000 + i),
        "kind": "water_quality",
        "pH": round(rng.uniform(6, 9), 2),
        "temp": round(rng.uniform(5, 30), 1),
        "turbidity": round(rng.uniform(0, 5), 3),
    }


def _gateway_reading(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "sensor_id": f"M{i:05d}",
        "kind": "energy",
        "ts": 1_769_337_000_000 + i,
        "energy_kwh": round(rng.uniform(0, 50), 3),
        "occupancy": rng.randrange(40),
        "voltage": round(rng.uniform(225, 235), 1),
    }


RNG = random.Random(7)
NESTED = [json.dumps(_nested(RNG, i)).encode() for i in range(N)]
NESTED_TOPICS = [f"infrawatch/plant-1/water_flow/S{i:05d}/telemetry" for i in range(N)]
FLAT = [json.dumps(_flat(RNG, i)).encode() for i in range(N)]
GATEWAY = [
    json.dumps([_gateway_reading(RNG, m * GATEWAY_READINGS + j) for j in range(GATEWAY_READINGS)]).encode()
    for m in range(GATEWAY_MESSAGES)
]
GATEWAY_TOPICS = [f"infrawatch/hq/gateway/gw{m}/batch" for m in range(GATEWAY_MESSAGES)]


# msgspec schemas: what a user would write for the same payloads.
class Measurements(msgspec.Struct):
    pressure_bar: float | None = None
    flow_rate_lps: float | None = None
    temperature_c: float | None = None


class DeviceMetadata(msgspec.Struct):
    battery_level: float | None = None
    signal_strength: float | None = None
    last_calibration: str | None = None


class Nested(msgspec.Struct):
    sensor_id: str
    timestamp: datetime
    measurements: Measurements
    location: str | None = None
    facility_zone: str = "STANDARD"
    device_metadata: DeviceMetadata | None = None


class NestedStrTime(msgspec.Struct):
    sensor_id: str
    timestamp: str
    measurements: Measurements
    location: str | None = None
    facility_zone: str = "STANDARD"
    device_metadata: DeviceMetadata | None = None


class Flat(msgspec.Struct):
    sensor_id: str
    kind: str
    pH: float | None = None  # noqa: N815 - the payload's key
    temp: float | None = None
    turbidity: float | None = None


class GatewayReading(msgspec.Struct):
    sensor_id: str
    kind: str
    ts: int
    energy_kwh: float | None = None
    occupancy: float | None = None
    voltage: float | None = None


def _core_decode(payloads: list[bytes], topics: list[str] | None) -> int:
    b = core.decode(payloads, topics, received_ns=0)
    b.fields  # noqa: B018 - building the outputs is part of the work
    b.timestamp_ns  # noqa: B018
    b.sensor_id  # noqa: B018
    return len(b)


def _core_decode_all(payloads: list[bytes], topics: list[str] | None) -> int:
    """`_core_decode`, and every other attribute too (kind, site, zone, source, errors)."""
    b = core.decode(payloads, topics, received_ns=0)
    for name in ("fields", "timestamp_ns", "sensor_id", "kind", "site", "zone", "source", "errors"):
        getattr(b, name)
    return len(b)


def _nested_columns(payloads: list[bytes]) -> int:
    """msgspec, then the same columns `core.decode` returns (what the pipeline needs)."""
    dec = msgspec.json.Decoder(Nested)
    rows = [dec.decode(p) for p in payloads]
    np.array([r.timestamp.timestamp() * 1e9 for r in rows], dtype=np.int64)
    np.array([r.measurements.pressure_bar for r in rows], dtype=np.float64)
    np.array([r.measurements.flow_rate_lps for r in rows], dtype=np.float64)
    np.array([r.measurements.temperature_c for r in rows], dtype=np.float64)
    return len(rows)


NESTED_DEC = msgspec.json.Decoder(Nested)
NESTED_STR_DEC = msgspec.json.Decoder(NestedStrTime)
FLAT_DEC = msgspec.json.Decoder(Flat)
GATEWAY_DEC = msgspec.json.Decoder(list[GatewayReading])


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_core(benchmark: Any) -> None:
    assert benchmark(_core_decode, NESTED, NESTED_TOPICS) == N


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_core_all_attributes(benchmark: Any) -> None:
    assert benchmark(_core_decode_all, NESTED, NESTED_TOPICS) == N


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_core_no_topics(benchmark: Any) -> None:
    # Without topics the nested payload lacks `kind`: every message is an error. Measures the
    # error path; kept to show it is not slower than the happy path.
    assert benchmark(_core_decode, NESTED, None) == 0


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_msgspec_struct(benchmark: Any) -> None:
    assert len(benchmark(lambda: [NESTED_DEC.decode(p) for p in NESTED])) == N


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_msgspec_struct_str_timestamp(benchmark: Any) -> None:
    assert len(benchmark(lambda: [NESTED_STR_DEC.decode(p) for p in NESTED])) == N


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_msgspec_to_columns(benchmark: Any) -> None:
    assert benchmark(_nested_columns, NESTED) == N


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_orjson(benchmark: Any) -> None:
    assert len(benchmark(lambda: [orjson.loads(p) for p in NESTED])) == N


@pytest.mark.benchmark(group="decode-nested-1000")
def test_nested_json(benchmark: Any) -> None:
    assert len(benchmark(lambda: [json.loads(p) for p in NESTED])) == N


@pytest.mark.benchmark(group="decode-flat-1000")
def test_flat_core(benchmark: Any) -> None:
    assert benchmark(_core_decode, FLAT, None) == N


@pytest.mark.benchmark(group="decode-flat-1000")
def test_flat_msgspec_struct(benchmark: Any) -> None:
    assert len(benchmark(lambda: [FLAT_DEC.decode(p) for p in FLAT])) == N


@pytest.mark.benchmark(group="decode-flat-1000")
def test_flat_orjson(benchmark: Any) -> None:
    assert len(benchmark(lambda: [orjson.loads(p) for p in FLAT])) == N


@pytest.mark.benchmark(group="decode-flat-1000")
def test_flat_json(benchmark: Any) -> None:
    assert len(benchmark(lambda: [json.loads(p) for p in FLAT])) == N


@pytest.mark.benchmark(group="decode-gateway-10x100")
def test_gateway_core(benchmark: Any) -> None:
    assert benchmark(_core_decode, GATEWAY, GATEWAY_TOPICS) == GATEWAY_MESSAGES * GATEWAY_READINGS


@pytest.mark.benchmark(group="decode-gateway-10x100")
def test_gateway_core_all_attributes(benchmark: Any) -> None:
    assert benchmark(_core_decode_all, GATEWAY, GATEWAY_TOPICS) == GATEWAY_MESSAGES * GATEWAY_READINGS


@pytest.mark.benchmark(group="decode-gateway-10x100")
def test_gateway_msgspec_struct(benchmark: Any) -> None:
    assert len(benchmark(lambda: [GATEWAY_DEC.decode(p) for p in GATEWAY])) == GATEWAY_MESSAGES


@pytest.mark.benchmark(group="decode-gateway-10x100")
def test_gateway_orjson(benchmark: Any) -> None:
    assert len(benchmark(lambda: [orjson.loads(p) for p in GATEWAY])) == GATEWAY_MESSAGES


@pytest.mark.benchmark(group="decode-gateway-10x100")
def test_gateway_json(benchmark: Any) -> None:
    assert len(benchmark(lambda: [json.loads(p) for p in GATEWAY])) == GATEWAY_MESSAGES
