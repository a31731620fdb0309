"""Write the seed corpus of the `decode` fuzz target into seeds/ (run from anywhere).

Input layout (fuzz_targets/decode.rs): byte 0 picks the topics (0 none, 1 telemetry, 2 gateway,
3 the text up to the first newline); the rest is payloads separated by 0x1E.
"""

import json
from pathlib import Path

NESTED = {
    "sensor_id": "S001",
    "timestamp": "2026-01-25T10:30:00Z",
    "location": "Server Room A",
    "facility_zone": "CRITICAL",
    "measurements": {"pressure_bar": 3.2, "flow_rate_lps": 125.5, "temperature_c": 18.5},
    "device_metadata": {
        "battery_level": 85,
        "signal_strength": -45,
        "last_calibration": "2026-01-20T09:00:00Z",
    },
}
FLAT = {"sensor_id": "123", "kind": "water_quality", "pH": 7.2, "temp": 15.4, "x_1": None}
GATEWAY = [
    {"sensor_id": "a", "kind": "energy", "kwh": 1.5, "ts": 1769337000123},
    {"sensor_id": 42, "kind": "WATER_FLOW", "flow": 2, "time": "2026-01-25 10:30:00.123456789+02:00"},
    {"sensor_id": "b", "kind": "water_quality", "do": float("nan")},
    7,
]
SEEDS = {
    "nested_none": b"\x00" + json.dumps({**NESTED, "kind": "water_flow"}).encode(),
    "nested_telemetry": b"\x01" + json.dumps(NESTED).encode(),
    "flat_none": b"\x00" + json.dumps(FLAT).encode(),
    "gateway": b"\x02" + json.dumps(GATEWAY).encode(),
    "gateway_none": b"\x00" + json.dumps(GATEWAY).encode(),
    "topic_text": b"\x03infrawatch/site/energy/m1/telemetry\n" + b'{"kwh": 1e3, "ts": 1.7693370005e9}',
    "multi": b"\x00"
    + b"\x1e".join(
        [
            json.dumps(FLAT).encode(),
            b'{"sensor_id":"s","kind":"energy","kwh":NaN}',
            b'{"sensor_id":"s\\u00e9\\ud83d\\ude00","kind":"energy","kwh":-0.0e-5}',
            b"[]",
            b'{"a":[[[[{"b":null}]]]]}',
        ]
    ),
}

out = Path(__file__).parent / "seeds"
out.mkdir(exist_ok=True)
for name, data in SEEDS.items():
    (out / name).write_bytes(data)
