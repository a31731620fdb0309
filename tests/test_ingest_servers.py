"""The local servers, the InfluxDB schema and users, and the broker's credentials and ACL — against
real `influxd` and `mosquitto` processes (the `stack` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from tests.utils.stack import COARSE, FINE, Stack

from infrawatch.config import InfluxSettings
from infrawatch.ingest import broker_admin, influx_admin

pytestmark = pytest.mark.integration
NS = 1_000_000_000


# -- InfluxDB -------------------------------------------------------------------------------


def test_schema_has_the_three_tiers_and_the_rollups(stack: Stack) -> None:
    rps = {r["name"]: r for r in stack.rows("SHOW RETENTION POLICIES")}
    assert rps["raw"]["default"] is True
    assert rps["raw"]["duration"] == "168h0m0s"
    assert rps["rollup_1m"]["duration"] == "2160h0m0s"
    assert rps["rollup_1h"]["duration"] == "43680h0m0s"
    cqs = {r["name"]: r["query"] for r in stack.rows("SHOW CONTINUOUS QUERIES")}
    assert set(cqs) == {f"cq_{m}_rollup_{t}" for m in ("reading", "alert", "pipeline") for t in ("1m", "1h")}
    assert f"GROUP BY time({FINE}), *" in cqs["cq_reading_rollup_1m"]
    assert "INTO infrawatch.rollup_1h.reading FROM infrawatch.raw.reading" in cqs["cq_reading_rollup_1h"]


def test_init_is_idempotent_and_applies_changed_durations(stack: Stack) -> None:
    before = (stack.rows("SHOW RETENTION POLICIES"), stack.rows("SHOW CONTINUOUS QUERIES"))
    influx_admin.init(stack.settings, fine=FINE, coarse=COARSE)
    assert (stack.rows("SHOW RETENTION POLICIES"), stack.rows("SHOW CONTINUOUS QUERIES")) == before
    changed = stack.settings.model_copy(
        update={"influx": stack.settings.influx.model_copy(update={"raw_duration": "3d"})}
    )
    done = influx_admin.init(changed, fine="3s", coarse=COARSE)
    assert not any("created" in d for d in done)  # users exist already
    rps = {r["name"]: r for r in stack.rows("SHOW RETENTION POLICIES")}
    assert rps["raw"]["duration"] == "72h0m0s"
    cqs = {r["name"]: r["query"] for r in stack.rows("SHOW CONTINUOUS QUERIES")}
    assert "GROUP BY time(3s), *" in cqs["cq_reading_rollup_1m"]
    assert len(cqs) == 6


def test_each_role_has_only_its_privileges(stack: Stack) -> None:
    # (a timestamp inside `raw`'s 7 days: older points are dropped as beyond the retention policy)
    line = f"reading,kind=water_flow,sensor_id=S1,site=a,zone=STANDARD x=1.5 {time.time_ns()}\n".encode()
    stack.client("writer").write(line)
    with pytest.raises(influx_admin.InfluxError, match=r"not authorized|authorization"):
        stack.client("writer").query("SELECT * FROM reading")
    for reader in ("grafana", "api"):
        rows = [r for s in stack.client(reader).query("SELECT * FROM reading") for r in s["values"]]
        assert len(rows) == 1
        with pytest.raises(influx_admin.InfluxError, match=r"403|not authorized|authorization"):
            stack.client(reader).write(line)
        with pytest.raises(influx_admin.InfluxError, match=r"requires admin|not authorized|authorization"):
            stack.client(reader).raw_query("DROP DATABASE infrawatch")
    users = {r["user"]: r["admin"] for r in stack.rows("SHOW USERS")}
    assert users == {"admin": True, "writer": False, "grafana": False, "api": False}


def test_a_wrong_password_is_refused_with_a_hint(stack: Stack) -> None:
    bad = stack.settings.model_copy(
        update={
            "influx": InfluxSettings(
                **{**stack.settings.influx.model_dump(exclude={"api_password_file"}), "api_password": "nope"}
            )
        }
    )
    with (
        influx_admin.InfluxClient(bad, "api") as c,
        pytest.raises(influx_admin.InfluxError, match="INFRAWATCH_INFLUX"),
    ):
        c.query("SHOW MEASUREMENTS")


def test_bad_durations_and_identifiers_are_refused_before_anything_runs(stack: Stack) -> None:
    for update, what in (
        ({"raw_duration": "7 days; DROP"}, "raw_duration"),
        ({"database": "x y"}, "database"),
    ):
        bad = stack.settings.model_copy(update={"influx": stack.settings.influx.model_copy(update=update)})
        with pytest.raises(influx_admin.InfluxError, match=what):
            influx_admin.schema_statements(bad)


def test_continuous_queries_fill_both_rollup_tiers(stack: Stack) -> None:
    """Readings written now show up, aggregated per interval, in rollup_1m and rollup_1h."""
    start = time.time_ns() - 2 * NS
    lines = []
    expected: dict[int, list[float]] = {}
    for i in range(40):
        ts = start + i * 50_000_000  # 2 s of readings, 20 per second: two or three fine intervals
        flow = 10.0 + i
        risk = 3 if i == 7 else 0
        lines.append(
            f"reading,kind=water_flow,sensor_id=S1,site=a,zone=CRITICAL flow_rate_lps={flow},"
            f'risk={risk}i,risk_level="{"CRITICAL" if risk else "LOW"}",leak_probability={i / 100} {ts}'
        )
        bucket = ts // (2 * NS) * (2 * NS)
        expected.setdefault(bucket, []).append(flow)
    stack.client("writer").write(("\n".join(lines) + "\n").encode())
    # each tier's CQ runs when its interval ends, covering the two last intervals
    deadline = time.monotonic() + 20
    fine: list[dict[str, Any]] = []
    coarse: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        fine = stack.rows('SELECT * FROM "rollup_1m"."reading"')
        coarse = stack.rows('SELECT * FROM "rollup_1h"."reading"')
        if (
            sum(r["count_flow_rate_lps"] for r in fine) == 40
            and sum(r["count_flow_rate_lps"] for r in coarse) == 40
        ):
            break
        time.sleep(0.5)
    assert sum(r["count_flow_rate_lps"] for r in fine) == 40, fine
    for r in fine:
        assert r["mean_flow_rate_lps"] == pytest.approx(sum(expected[r["time"]]) / len(expected[r["time"]]))
        assert r["min_flow_rate_lps"] == min(expected[r["time"]])
        assert r["max_flow_rate_lps"] == max(expected[r["time"]])
        assert r["sensor_id"] == "S1"
        assert r["zone"] == "CRITICAL"
    assert max(r["max_risk"] for r in fine) == 3
    assert max(r["max_risk"] for r in coarse) == 3
    assert max(r["max_leak_probability"] for r in coarse) == pytest.approx(0.39)
    assert sum(r["count_flow_rate_lps"] for r in coarse) == 40


# -- Mosquitto ------------------------------------------------------------------------------


class _Client:
    """A synchronous MQTT v5 client for the test: connect, publish QoS 1, collect what arrives."""

    def __init__(self, stack: Stack, user: str, password: str) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.received: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, ReasonCode] = {}
        self.connected = threading.Event()
        self.rc: ReasonCode | None = None
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.received.append(m)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.c.connect(stack.broker.host, stack.broker.port)
        self.c.loop_start()
        self.connected.wait(5)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self.rc = rc
        self.connected.set()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks[info.mid]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _wait_for(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_sensors_and_gateways_publish_only_under_their_own_id(stack: Stack) -> None:
    s = stack.settings
    creds = broker_admin.add_users(s, [("S1", "sensor"), ("S2", "sensor"), ("GW1", "gateway")])
    stack.broker.reload()
    worker = _Client(stack, s.broker.worker_user, s.broker.password())
    assert worker.rc is not None
    assert not worker.rc.is_failure
    worker.c.subscribe([("infrawatch/+/+/+/telemetry", 1), ("infrawatch/+/gateway/+/batch", 1)])
    time.sleep(0.3)
    s1 = _Client(stack, "S1", creds["S1"])
    gw = _Client(stack, "GW1", creds["GW1"])
    ok = s1.publish("infrawatch/site-a/water_flow/S1/telemetry", b'{"flow": 1}')
    denied = s1.publish("infrawatch/site-a/water_flow/S2/telemetry", b'{"flow": 2}')
    denied_gw = s1.publish("infrawatch/site-a/gateway/S1/batch", b"[]")
    ok_gw = gw.publish("infrawatch/site-a/gateway/GW1/batch", b'[{"sensor_id": "S9"}]')
    denied_telemetry = gw.publish("infrawatch/site-a/water_flow/GW1/telemetry", b"{}")
    assert not ok.is_failure
    assert not ok_gw.is_failure
    for rc in (denied, denied_gw, denied_telemetry):
        assert rc.value == 135, rc  # Not authorized
    assert _wait_for(lambda: len(worker.received) >= 2)
    time.sleep(0.3)
    assert sorted(m.topic for m in worker.received) == [
        "infrawatch/site-a/gateway/GW1/batch",
        "infrawatch/site-a/water_flow/S1/telemetry",
    ]
    for c in (worker, s1, gw):
        c.close()


def test_wrong_or_unknown_credentials_are_refused_and_reload_admits_new_sensors(stack: Stack) -> None:
    s = stack.settings
    pw = broker_admin.add_sensor(s, "S1")
    # not yet reloaded: the running broker does not know S1
    early = _Client(stack, "S1", pw)
    assert early.rc is not None
    assert early.rc.is_failure
    early.close()
    stack.broker.reload()
    good = _Client(stack, "S1", pw)
    assert good.rc is not None
    assert not good.rc.is_failure
    bad = _Client(stack, "S1", pw + "x")
    assert bad.rc is not None
    assert bad.rc.is_failure
    # re-keying replaces the password; removing the user locks it out
    pw2 = broker_admin.add_sensor(s, "S1")
    assert pw2 != pw
    assert broker_admin.remove_user(s, "S1")
    stack.broker.reload()
    gone = _Client(stack, "S1", pw2)
    assert gone.rc is not None
    assert gone.rc.is_failure
    for c in (good, bad, gone):
        c.close()


@pytest.mark.parametrize("ident", ["", "a/b", "s+1", "#", "has space", "x" * 65, "-lead"])
def test_ids_that_cannot_be_a_topic_level_are_refused(stack: Stack, ident: str) -> None:
    with pytest.raises(broker_admin.BrokerAdminError, match="MQTT username"):
        broker_admin.add_sensor(stack.settings, ident)


def test_password_hash_matches_mosquitto_format() -> None:
    h = broker_admin.hash_password("secret", salt=b"0123456789ab")
    algo, iterations, salt, digest = h.split("$")[1:]
    assert (algo, iterations, salt) == ("7", "101", "MDEyMzQ1Njc4OWFi")
    assert len(digest) == 88  # base64 of 64 bytes


def test_the_cli_applies_the_schema_and_prints_credentials_once(stack: Stack) -> None:
    s = stack.settings
    env = {
        **os.environ,
        "INFRAWATCH_INFLUX__URL": s.influx.url,
        **{
            f"INFRAWATCH_INFLUX__{r.upper()}_PASSWORD_FILE": str(getattr(s.influx, f"{r}_password_file"))
            for r in ("admin", "writer", "grafana", "api")
        },
        "INFRAWATCH_BROKER__PASSWORD_FILE": str(s.broker.password_file),
        "INFRAWATCH_BROKER__ACL_FILE": str(s.broker.acl_file),
    }
    cli = [sys.executable, "-m", "infrawatch.cli"]
    init = subprocess.run([*cli, "influx", "init"], env=env, capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    assert "schema ready" in init.stderr
    add = subprocess.run(
        [*cli, "broker", "add-sensor", "S7", "S8"], env=env, capture_output=True, text=True, check=False
    )
    assert add.returncode == 0, add.stderr
    creds = dict(line.split("\t") for line in add.stdout.splitlines())
    assert set(creds) == {"S7", "S8"}
    assert creds["S7"] not in s.broker.password_file.read_text()  # stored hashed only
    stack.broker.reload()
    c = _Client(stack, "S7", creds["S7"])
    assert c.rc is not None
    assert not c.rc.is_failure
    c.close()
    bad = subprocess.run(
        [*cli, "broker", "add-sensor", "a/b"], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert "infrawatch: error:" in bad.stderr
    assert "Traceback" not in bad.stderr
    no_secret = {k: v for k, v in env.items() if "ADMIN_PASSWORD" not in k}
    missing = subprocess.run(
        [*cli, "influx", "init"], env=no_secret, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1
    assert "INFRAWATCH_INFLUX__ADMIN_PASSWORD" in missing.stderr


def test_backfill_rolls_up_readings_that_arrived_too_late_for_the_queries(stack: Stack) -> None:
    # an hour ago: far outside the continuous queries' RESAMPLE FOR window
    t0 = (time.time_ns() - 3600 * NS) // (4 * NS) * (4 * NS)
    lines = [
        f"reading,kind=energy,sensor_id=E1,site=a,zone=STANDARD energy_kwh={i} {t0 + i * NS}"
        for i in range(8)
    ]
    stack.client("writer").write(("\n".join(lines) + "\n").encode())
    time.sleep(3)
    assert stack.rows('SELECT * FROM "rollup_1m"."reading" WHERE sensor_id = \'E1\'') == []
    assert influx_admin.backfill(stack.settings, t0, t0 + 8 * NS, fine=FINE, coarse=COARSE) == 6
    fine = stack.rows('SELECT * FROM "rollup_1m"."reading" WHERE sensor_id = \'E1\'')
    coarse = stack.rows('SELECT * FROM "rollup_1h"."reading" WHERE sensor_id = \'E1\'')
    assert [r["mean_energy_kwh"] for r in fine] == [0.5, 2.5, 4.5, 6.5]
    assert [r["count_energy_kwh"] for r in coarse] == [4, 4]
    assert [r["max_energy_kwh"] for r in coarse] == [3, 7]
