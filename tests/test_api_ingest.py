"""HTTP ingest against a real InfluxDB: the token bucket per sensor (429 + Retry-After), the
decoder's reason codes (422), the registry's per-sensor rate, and the readings stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiomqtt
import pytest
from tests.utils.api import ApiHarness, api_settings
from tests.utils.stack import Stack, start_stack

pytestmark = pytest.mark.integration
Api = tuple[ApiHarness, dict[str, str], dict[str, str]]  # harness, ingest key, admin


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One real InfluxDB + Mosquitto for the module (tests use distinct sensors)."""
    s = start_stack(tmp_path_factory.mktemp("ingest") / "run")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = api_settings(
        tmp_path_factory.mktemp("api"), stack.settings, broker_pid_file=stack.broker.pid_file
    )
    h = ApiHarness(settings)
    h.add_user("root", "admin")
    admin = h.bearer("root")
    assert h.post("/api/v1/sites", json={"id": "plant", "name": "Plant"}, headers=admin).status_code == 201
    for sid, extra in (
        ("S1", {}),
        ("FAST", {"rate_per_s": 100.0}),
        ("BATCH", {"rate_per_s": 100.0}),
        ("BAD", {}),
        ("WARM", {}),
    ):
        body = {"id": sid, "kind": "water_flow", "site_id": "plant", "zone": "CRITICAL", **extra}
        r = h.post("/api/v1/sensors", json=body, headers=admin)
        assert r.status_code == 201, r.text
    try:
        yield h, {"X-API-Key": h.add_key("ingest")}, admin
    finally:
        h.close()


def test_ten_readings_in_a_second_one_accepted(api: Api, stack: Stack) -> None:
    h, key, _ = api
    # warm the app (first queries, the writer's connection): the burst measures the bucket only
    assert h.post("/api/v1/ingest", json={"sensor_id": "WARM", "flow": 1.0}, headers=key).status_code == 200
    bodies = [
        {"json": {"sensor_id": "S1", "flow_rate_lps": 100.0 + i, "pressure_bar": 3.2}, "headers": key}
        for i in range(10)
    ]
    t0 = time.monotonic()
    responses = h.concurrently("POST", "/api/v1/ingest", bodies)  # ten arrivals at once
    print(
        "ELAPSED",
        time.monotonic() - t0,
        sorted((r.status_code, round(r.elapsed.total_seconds(), 3)) for r in responses),
    )
    assert time.monotonic() - t0 < 1.0, "the ten requests must fall within one second"
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [429] * 9
    retry = [r.headers["Retry-After"] for r in responses if r.status_code == 429]
    assert all(v.isdigit() and int(v) >= 1 for v in retry)
    assert all("over the rate" in r.json()["detail"] for r in responses if r.status_code == 429)
    accepted = next(r.json() for r in responses if r.status_code == 200)
    assert (accepted["accepted"], accepted["rate_limited"], accepted["errors"]) == (1, [], [])
    value = bodies[[r.status_code for r in responses].index(200)]["json"]["flow_rate_lps"]
    rows = stack.rows('SELECT * FROM "raw"."reading" WHERE "sensor_id" = $s', {"s": "S1"})
    assert len(rows) == 1
    assert rows[0]["flow_rate_lps"] == value
    assert rows[0]["site"] == "plant"
    assert rows[0]["kind"] == "water_flow"
    assert rows[0]["zone"] == "CRITICAL"  # from the registry: the payload named no zone


def test_per_sensor_rate_from_the_registry(api: Api, stack: Stack) -> None:
    h, key, _ = api
    codes = [
        h.post(
            "/api/v1/ingest", json={"sensor_id": "FAST", "flow_rate_lps": float(i)}, headers=key
        ).status_code
        for i in range(10)
    ]
    assert codes == [200] * 10
    rows = stack.rows(
        'SELECT count("flow_rate_lps") AS n FROM "raw"."reading" WHERE "sensor_id" = $s', {"s": "FAST"}
    )
    assert rows[0]["n"] == 10


def test_an_array_of_readings(api: Api, stack: Stack) -> None:
    h, key, _ = api
    now = time.time()
    batch = [{"sensor_id": "BATCH", "timestamp": now - 10 + i, "flow_rate_lps": 10.0 + i} for i in range(5)]
    batch.append({"sensor_id": "GHOST", "flow_rate_lps": 1.0})
    r = h.post("/api/v1/ingest", json=batch, headers=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 5
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [(5, "unregistered_sensor")]
    assert len(stack.rows('SELECT * FROM "raw"."reading" WHERE "sensor_id" = $s', {"s": "BATCH"})) == 5


BAD = [
    (b'{"sensor_id": "BAD", "flow": 1,}', ["invalid_json"]),
    (b'{"sensor_id": "BAD", "flow": NaN}', ["bad_value"]),
    (b'{"sensor_id": "BAD", "flow": "high"}', ["bad_value"]),
    (b'{"sensor_id": "BAD", "flow": null}', ["no_measurements"]),
    (b'{"sensor_id": "BAD", "timestamp": "1969-12-31T23:59:59Z", "flow": 1}', ["bad_timestamp"]),
    (b'{"sensor_id": "BAD", "kind": "energy", "flow": 1}', ["kind_mismatch"]),
    (b'{"flow": 1}', ["missing_sensor_id"]),
    (b'{"sensor_id": "NOPE", "flow": 1}', ["unregistered_sensor"]),
    (b"[1, 2]", ["not_object", "not_object"]),
    (b"[]", ["empty_batch"]),
]


def test_bad_payloads_get_reason_codes(api: Api, stack: Stack) -> None:
    h, key, _ = api
    got = []
    for content, _ in BAD:
        r = h.post("/api/v1/ingest", content=content, headers={**key, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        got.append([e["reason"] for e in r.json()["detail"]])
    assert got == [reasons for _, reasons in BAD]
    assert stack.rows('SELECT * FROM "raw"."reading" WHERE "sensor_id" = $s', {"s": "BAD"}) == []


def test_ingest_scope_required(api: Api) -> None:
    h, _, _ = api
    reader = {"X-API-Key": h.add_key("read")}
    assert h.post("/api/v1/ingest", json={"sensor_id": "S1", "flow": 1.0}, headers=reader).status_code == 403
    assert h.post("/api/v1/ingest", json={"sensor_id": "S1", "flow": 1.0}).status_code == 401


async def _connect(stack: Stack, user: str, password: str) -> None:
    b = stack.settings.broker
    async with aiomqtt.Client(b.host, b.port, username=user, password=password, identifier=None) as c:
        await c.publish(f"infrawatch/plant/water_flow/{user}/telemetry", b'{"flow": 1}', qos=1)


def test_sensor_and_gateway_get_broker_credentials(api: Api, stack: Stack) -> None:
    h, _, admin = api
    body = {"id": "MQ1", "kind": "water_flow", "site_id": "plant", "broker_credentials": True}
    r = h.post("/api/v1/sensors", json=body, headers=admin)
    assert r.status_code == 201, r.text
    password = r.json()["broker_password"]
    assert len(password) >= 20
    gw = h.post(
        "/api/v1/gateways", json={"id": "GW1", "site_id": "plant", "broker_credentials": True}, headers=admin
    )
    assert gw.status_code == 201
    assert gw.json()["broker_password"]
    assert "topic write infrawatch/+/gateway/GW1/batch" in stack.settings.broker.acl_file.read_text()
    # the API SIGHUPed the broker: the new sensor connects and publishes as itself
    deadline = time.monotonic() + 10
    while True:
        try:
            asyncio.run(_connect(stack, "MQ1", password))
            break
        except aiomqtt.MqttError:
            assert time.monotonic() < deadline, "the broker never accepted the new sensor"
            time.sleep(0.2)
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(_connect(stack, "MQ1", "not-its-password"))
    assert h.get("/api/v1/sensors/MQ1", headers=admin).json()["kind"] == "water_flow"
