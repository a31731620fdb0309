"""The ingest worker against real Mosquitto and InfluxDB (the `stack` fixture).

The worker runs as an asyncio task in the test's loop, or as an `infrawatch worker` subprocess where
it has to die (SIGKILL). Waiting is for a condition, with a generous limit; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from pydantic import SecretStr
from tests.utils import factories
from tests.utils.factories import train_models, water_flow_stream
from tests.utils.lineproto import parse
from tests.utils.stack import Stack

from infrawatch import core
from infrawatch.config import Settings
from infrawatch.detection.registry import ModelRegistry
from infrawatch.ingest import broker_admin
from infrawatch.ingest.deadletter import read_dead_letters
from infrawatch.ingest.servers import free_port
from infrawatch.ingest.stack import stack_env
from infrawatch.ingest.worker import Worker, WorkerError, run, worker_paths

pytestmark = pytest.mark.integration

SECOND = 10**9


def now_base() -> int:
    # recent timestamps: the raw tier keeps 7 days, older points would be refused by InfluxDB
    return (time.time_ns() // SECOND - 3600) * SECOND


def worker_settings(stack: Stack, tmp: Path, **worker: Any) -> Settings:
    s = stack.settings
    w = s.worker.model_copy(
        update={
            "batch_size": 50,
            "batch_timeout_ms": 20,
            "stats_interval_s": 0.5,
            "rate_per_s": 0.001,  # no token comes back during a test: the burst is each sensor's budget
            "burst": 30.0,
            "model_poll_s": 0.2,
            **worker,
        }
    )
    return s.model_copy(update={"worker": w, "model_dir": tmp / "models"})


async def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(settings)
    task = asyncio.create_task(run(settings, worker=worker))
    waiter = asyncio.create_task(worker.subscribed.wait())
    await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises the worker's error
    assert worker.subscribed.is_set()
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


class Publisher:
    """Sensors and gateways with their own broker credentials (the ACL pins each to its topics)."""

    def __init__(self, stack: Stack, sensors: list[str], gateways: list[str] = ()) -> None:  # type: ignore[assignment]
        self.stack = stack
        self.passwords = broker_admin.add_users(
            stack.settings, [(s, "sensor") for s in sensors] + [(g, "gateway") for g in gateways]
        )
        stack.broker.reload()

    async def send(self, user: str, messages: list[tuple[str, bytes]]) -> None:
        b = self.stack.settings.broker
        async with aiomqtt.Client(b.host, b.port, username=user, password=self.passwords[user]) as c:
            for topic, payload in messages:
                await c.publish(topic, payload, qos=1)


def count_by_sensor(stack: Stack, field: str, where: str = "") -> dict[str, int]:
    rows = stack.rows(f'SELECT count("{field}") AS n FROM "reading" {where} GROUP BY "sensor_id"')
    return {r["sensor_id"]: r["n"] for r in rows}


def nested(sensor: str, ts: int, flow: float, pressure: float) -> bytes:
    return json.dumps(
        {
            "sensor_id": sensor,
            "timestamp": ts,
            "facility_zone": "CRITICAL",
            "measurements": {"flow_rate_lps": flow, "pressure_bar": pressure},
            "device_metadata": {"battery_level": 80},
        }
    ).encode()


def test_good_readings_become_points_and_bad_ones_dead_letters(stack: Stack, tmp_path: Path) -> None:
    settings = worker_settings(stack, tmp_path)
    t0 = now_base()
    wf = "infrawatch/plant/water_flow/{}/telemetry"
    pub = Publisher(stack, ["W1", "W2", "Q1", "E1"], ["G1"])
    msgs: dict[str, list[tuple[str, bytes]]] = {
        "W1": [(wf.format("W1"), nested("W1", t0 + i * SECOND, 10 + i, 3.0)) for i in range(20)],
        "W2": [(wf.format("W2"), nested("W2", t0 + i * SECOND, 12.0, 3.1)) for i in range(20)],
        "Q1": [
            (
                "infrawatch/plant/water_quality/Q1/telemetry",
                json.dumps(
                    {"sensor_id": "Q1", "timestamp": t0 + i * SECOND, "pH": 7.1, "turbidity": 0.3}
                ).encode(),
            )
            for i in range(20)
        ],
        # 40 readings against a burst of 30: 10 are rate-limited
        "E1": [
            (
                "infrawatch/plant/energy/E1/telemetry",
                json.dumps({"timestamp": t0 + i * SECOND, "kwh": 0.5}).encode(),
            )
            for i in range(40)
        ],
        # two gateway batches of 10 readings for each of GA and GB
        "G1": [
            (
                "infrawatch/plant/gateway/G1/batch",
                json.dumps(
                    [
                        {
                            "sensor_id": s,
                            "kind": "energy",
                            "timestamp": t0 + (10 * b + i) * SECOND,
                            "kwh": 1.0,
                        }
                        for s in ("GA", "GB")
                        for i in range(10)
                    ]
                ).encode(),
            )
            for b in range(2)
        ],
    }
    bad = [
        (b"{not json", "invalid_json"),
        (b"42", "not_object"),
        (json.dumps({"sensor_id": "OTHER", "flow": 1}).encode(), "sensor_mismatch"),
        (json.dumps({"sensor_id": "W1", "timestamp": t0}).encode(), "no_measurements"),
        (json.dumps({"timestamp": "yesterday", "flow": 1}).encode(), "bad_timestamp"),
        (b'{"flow": "abc"}', "bad_value"),
        (json.dumps({"flow": 1, "pad": "x" * 70_000}).encode(), "too_large"),
        (b'{"kind": "energy", "flow": 1}', "kind_mismatch"),
        (b'{"site": "", "flow": 1}', "bad_site"),
        (b'{"site": "elsewhere", "flow": 1}', "site_mismatch"),
        (b'{"zone": 3, "flow": 1}', "bad_zone"),
        (b'{"flow": 1, "2nd": 1}', "bad_field_name"),
        (b'{"temp": 1, "temperature": 2}', "duplicate_field"),
        (("{" + ", ".join(f'"f{i}": {i}' for i in range(65)) + "}").encode(), "too_many_fields"),
    ]
    gw = "infrawatch/plant/gateway/G1/batch"
    ok = '{"sensor_id": "GA", "kind": "energy", "kwh": 1}'
    bad_gateway = [
        (b'[{"kind": "energy", "kwh": 1}]', "missing_sensor_id"),
        (b'[{"sensor_id": "", "kind": "energy", "kwh": 1}]', "bad_sensor_id"),
        (("[" + ",".join([ok] + ["{}"] * 10_000) + "]").encode(), "too_many_readings"),
        (b"[]", "empty_batch"),
    ]
    msgs["W1"] += [(wf.format("W1"), p) for p, _ in bad]
    msgs["W1"].append(("infrawatch/plant/steam/W1/telemetry", b'{"flow": 1}'))
    msgs["G1"] += [(gw, p) for p, _ in bad_gateway]
    bad += bad_gateway
    expected_reasons = sorted([r for _, r in bad] + ["unknown_kind"])
    # every reason code can arrive over MQTT but `bad_topic`: the broker's ACL refuses a topic that
    # is not a sensor's telemetry or a gateway's batch before any worker sees it
    assert sorted(set(expected_reasons) | {"bad_topic"}) == sorted(core.REASON_CODES)
    n_messages = sum(len(m) for m in msgs.values())

    async def scenario() -> Worker:
        async with running(settings) as w:
            await asyncio.gather(*(pub.send(user, m) for user, m in msgs.items()))
            await wait_until(lambda: w.stats.acked == n_messages, "every message acknowledged")
        return w

    w = asyncio.run(scenario())
    s = w.stats
    assert s.processed == n_messages
    assert s.written == 20 + 20 + 20 + 30 + 40
    assert s.rate_limited == 10
    assert count_by_sensor(stack, "flow_rate_lps") == {"W1": 20, "W2": 20}
    assert count_by_sensor(stack, "ph") == {"Q1": 20}
    assert count_by_sensor(stack, "energy_kwh") == {"E1": 30, "GA": 20, "GB": 20}
    # nested fields and tags arrive as sent
    (row,) = stack.rows('SELECT * FROM "reading" WHERE "sensor_id" = \'W1\' ORDER BY time LIMIT 1')
    assert row["time"] == t0
    assert (row["zone"], row["site"], row["kind"], row["battery_level"]) == (
        "CRITICAL",
        "plant",
        "water_flow",
        80,
    )

    letters = read_dead_letters(worker_paths(settings)[1])
    decode_letters = [d for d in letters if d["reason"] != "rate_limited"]
    assert sorted(d["reason"] for d in decode_letters) == expected_reasons
    by_reason = {d["reason"]: d for d in decode_letters}
    assert by_reason["invalid_json"]["topic"] == wf.format("W1")
    assert by_reason["invalid_json"]["payload_b64"] == "e25vdCBqc29u"  # b"{not json"
    assert by_reason["unknown_kind"]["topic"] == "infrawatch/plant/steam/W1/telemetry"
    limited = [d for d in letters if d["reason"] == "rate_limited"]
    assert len(limited) == 10
    assert {tuple(d["sensor_ids"]) for d in limited} == {("E1",)}
    assert s.dead_letter["rate_limited"] == 10
    assert sum(s.dead_letter.values()) == len(bad) + 1 + 10

    # the `pipeline` points add up to the worker's counters
    (stats,) = stack.rows(
        'SELECT sum("written") AS w, sum("rate_limited") AS r, sum("dead_letter") AS d FROM "pipeline"'
    )
    assert (stats["w"], stats["r"], stats["d"]) == (s.written, 10, len(bad) + 1 + 10)


def test_spool_holds_readings_while_influx_is_down_and_drains_them_once(stack: Stack, tmp_path: Path) -> None:
    settings = worker_settings(stack, tmp_path)
    t0 = now_base()
    pub = Publisher(stack, ["S1", "S2"])

    def batch(sensor: str, start: int) -> list[tuple[str, bytes]]:
        topic = f"infrawatch/plant/water_flow/{sensor}/telemetry"
        return [(topic, nested(sensor, t0 + i * SECOND, 10.0, 3.0)) for i in range(start, start + 10)]

    async def scenario() -> Worker:
        async with running(settings) as w:
            await asyncio.gather(pub.send("S1", batch("S1", 0)), pub.send("S2", batch("S2", 0)))
            await wait_until(lambda: w.stats.written == 20, "the first readings written")
            await asyncio.to_thread(stack.influx.stop)
            await asyncio.gather(pub.send("S1", batch("S1", 10)), pub.send("S2", batch("S2", 10)))
            # spooled (fsynced) counts as stored: the broker gets its acknowledgements
            await wait_until(lambda: w.stats.acked == 40 and w.spool.pending_batches > 0, "readings spooled")
            assert w.stats.written == 20
            await asyncio.to_thread(stack.influx.start)
            await wait_until(lambda: w.spool.empty and w.stats.written == 40, "the spool drained")
        return w

    w = asyncio.run(scenario())
    assert count_by_sensor(stack, "flow_rate_lps") == {"S1": 20, "S2": 20}
    # each spooled reading was written once: the drain neither lost nor repeated a batch
    assert w.stats.written == 40
    assert w.stats.spooled_batches_total >= 1
    assert w.stats.write_errors > 0
    assert not read_dead_letters(worker_paths(settings)[1])
    assert list(worker_paths(settings)[0].glob("*.seg")) == []


class WorkerProcess:
    """`infrawatch worker` as a child process, its log lines collected as they come."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        full_env = {**os.environ, **stack_env(settings), **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infrawatch.cli", "worker"],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def end(self, sig: signal.Signals) -> int:
        """Send `sig`, wait for the exit, close the pipe; the exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.log.append(line)
            if text in line:
                return
        raise AssertionError(f"worker never logged {text!r}; its log:\n{''.join(self.log)}")

    def drain_log(self) -> str:
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return "".join(self.log)


def test_unacknowledged_messages_are_redelivered_after_sigkill(stack: Stack, tmp_path: Path) -> None:
    settings = worker_settings(stack, tmp_path, id="killed")
    common = {
        "INFRAWATCH_WORKER__ID": "killed",
        "INFRAWATCH_WORKER__BATCH_SIZE": "5",
        "INFRAWATCH_WORKER__BATCH_TIMEOUT_MS": "20",
        "INFRAWATCH_WORKER__STATE_FILE": str(settings.worker.state_file),
        "INFRAWATCH_WORKER__RATE_PER_S": "1000",
        "INFRAWATCH_WORKER__BURST": "1000",
        "INFRAWATCH_MODEL_DIR": str(tmp_path / "models"),
    }
    t0 = now_base()
    pub = Publisher(stack, ["K1", "K2", "K3"])
    sent = {
        s: [
            (f"infrawatch/plant/water_flow/{s}/telemetry", nested(s, t0 + i * SECOND, 10.0, 3.0))
            for i in range(20)
        ]
        for s in ("K1", "K2", "K3")
    }
    # first life: InfluxDB unreachable and a spool of 1 KiB, so after one spooled batch the worker
    # holds every further batch un-acknowledged
    first = WorkerProcess(
        settings,
        {
            **common,
            "INFRAWATCH_INFLUX__URL": f"http://127.0.0.1:{free_port()}",
            "INFRAWATCH_WORKER__SPOOL_MAX_BYTES": "1024",
        },
    )
    try:
        first.wait_for("subscribed as infrawatch-killed")

        async def publish() -> None:
            await asyncio.gather(*(pub.send(s, m) for s, m in sent.items()))

        asyncio.run(publish())
        first.wait_for("spool full")
    finally:
        code = first.end(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert count_by_sensor(stack, "flow_rate_lps") == {}  # nothing could reach InfluxDB

    second = WorkerProcess(settings, common)
    try:
        second.wait_for("subscribed as infrawatch-killed")
        deadline = time.monotonic() + 30
        while count_by_sensor(stack, "flow_rate_lps") != {"K1": 20, "K2": 20, "K3": 20}:
            assert time.monotonic() < deadline, f"readings missing: {count_by_sensor(stack, 'flow_rate_lps')}"
            time.sleep(0.1)
    finally:
        code = second.end(signal.SIGTERM)
    log = second.drain_log()
    assert code == 0, log
    assert "saved the rolling state" in log
    # the 1 KiB spool held at most two batches (10 readings): the other 50 came from the broker again
    assert count_by_sensor(stack, "flow_rate_lps") == {"K1": 20, "K2": 20, "K3": 20}
    assert worker_paths(settings)[2].is_file()


def test_refused_credentials_say_which_variable_to_set(stack: Stack, tmp_path: Path) -> None:
    settings = worker_settings(stack, tmp_path)
    b = settings.broker.model_copy(
        update={"worker_password_file": None, "worker_password": SecretStr("wrong")}
    )
    settings = settings.model_copy(update={"broker": b})

    async def scenario() -> None:
        async with running(settings):
            pass

    with pytest.raises(WorkerError, match="INFRAWATCH_BROKER__WORKER_PASSWORD"):
        asyncio.run(scenario())


@pytest.fixture(scope="module")
def trained_models() -> dict[str, dict[str, Any]]:
    return train_models(window=20)


def save_models(models: dict[str, dict[str, Any]], root: Path) -> None:
    reg = ModelRegistry(root)
    for kind, entry in models.items():
        ensembles = {k: v for k, v in entry.items() if isinstance(v, core.TreeEnsemble)}
        reg.save(kind, ensembles, {"window": 20})


def test_two_partitioned_workers_store_the_verdicts_of_one(
    stack: Stack, tmp_path: Path, trained_models: dict[str, dict[str, Any]]
) -> None:
    save_models(trained_models, tmp_path / "models")
    sensors = [f"L{i}" for i in range(6)]
    pub = Publisher(stack, sensors)
    rng = np.random.default_rng(7)
    t0 = now_base() - 7200 * SECOND
    streams = {s: water_flow_stream(rng, 90, leak_at=45 if i % 2 else None)[0] for i, s in enumerate(sensors)}

    def messages(site: str, sensor: str) -> list[tuple[str, bytes]]:
        cols = streams[sensor]
        return [
            (
                f"infrawatch/{site}/water_flow/{sensor}/telemetry",
                factories.nested(
                    sensor, t0 + i * 60 * SECOND, zone="CRITICAL", **{k: float(v[i]) for k, v in cols.items()}
                ),
            )
            for i in range(90)
        ]

    n = 90 * len(sensors)
    alerts: list[dict[str, Any]] = []

    async def listen(ready: asyncio.Event) -> None:
        b = stack.settings.broker
        async with aiomqtt.Client(b.host, b.port, username=b.worker_user, password=b.password()) as c:
            await c.subscribe("infrawatch/+/alerts/+", qos=1)
            ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                alerts.append({"topic": m.topic.value, **json.loads(m.payload)})

    async def scenario(site: str, partitions: list[str]) -> list[Worker]:
        ready = asyncio.Event()
        listener = asyncio.create_task(listen(ready))
        await ready.wait()
        configs = [
            worker_settings(stack, tmp_path, id=f"{site}-{p.replace('/', 'of')}", partition=p, burst=1000.0)
            for p in partitions
        ]
        async with contextlib.AsyncExitStack() as es:
            workers = [await es.enter_async_context(running(c)) for c in configs]
            await asyncio.gather(*(pub.send(s, messages(site, s)) for s in sensors))
            await wait_until(lambda: sum(w.stats.written for w in workers) == n, f"{n} readings written")
            await wait_until(
                lambda: (
                    sum(w.stats.alerts_published for w in workers) == sum(w.stats.alerts for w in workers)
                ),
                "alerts published",
            )
        await wait_until(
            lambda: sum(a["site"] == site for a in alerts) == sum(w.stats.alerts for w in workers),
            "alerts heard",
        )
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        return workers

    (solo,) = asyncio.run(scenario("one", ["0/1"]))
    pair = asyncio.run(scenario("two", ["0/2", "1/2"]))
    # each sensor went to exactly one of the pair, and together they saw everything once
    assert [w.stats.processed for w in pair] == [n - w.stats.foreign for w in pair]
    assert sum(w.stats.processed for w in pair) == n
    assert all(w.stats.processed > 0 for w in pair)

    def verdicts(site: str) -> list[tuple[Any, ...]]:
        rows = stack.rows(
            'SELECT "leak_probability", "burst_probability", "risk", "risk_level", "model_version" '
            'FROM "reading" WHERE "site" = $site GROUP BY "sensor_id"',
            {"site": site},
        )
        return sorted(
            (
                r["sensor_id"],
                r["time"],
                r["leak_probability"],
                r["burst_probability"],
                r["risk"],
                r["risk_level"],
            )
            for r in rows
        )

    one, two = verdicts("one"), verdicts("two")
    assert len(one) == n
    assert sum(v[2] is not None for v in one) > n // 2  # scored by the models, not stored bare
    assert one == [tuple(v) for v in two]
    # alerts: published on infrawatch/{site}/alerts/{severity}, the same ones either way
    assert solo.stats.alerts > 0
    heard = {
        site: sorted((a["sensor_id"], a["timestamp_ns"], a["severity"]) for a in alerts if a["site"] == site)
        for site in ("one", "two")
    }
    assert heard["one"] == heard["two"]
    assert all(a["topic"] == f"infrawatch/{a['site']}/alerts/{a['severity']}" for a in alerts)


def test_models_hot_reload_and_rolling_state_survives_a_restart(
    stack: Stack, tmp_path: Path, trained_models: dict[str, dict[str, Any]]
) -> None:
    settings = worker_settings(stack, tmp_path, id="reload", burst=1000.0)
    pub = Publisher(stack, ["H1"])
    t0 = now_base() - 7200 * SECOND
    cols = water_flow_stream(np.random.default_rng(3), 60)[0]
    msgs = [
        (
            "infrawatch/plant/water_flow/H1/telemetry",
            factories.nested("H1", t0 + i * 60 * SECOND, **{k: float(v[i]) for k, v in cols.items()}),
        )
        for i in range(60)
    ]

    async def scenario() -> tuple[Worker, Worker]:
        async with running(settings) as w:
            await pub.send("H1", msgs[:20])  # no model yet: stored without verdicts
            await wait_until(lambda: w.stats.written == 20, "unscored readings written")
            save_models(trained_models, settings.model_dir)
            await wait_until(
                lambda: bool((w.models.fingerprint or {}).get("water_flow")), "the model picked up"
            )
            await pub.send("H1", msgs[20:40])
            await wait_until(lambda: w.stats.written == 40, "scored readings written")
        async with running(settings) as again:
            restored = len(again.pipeline)
            await pub.send("H1", msgs[40:])
            await wait_until(lambda: again.stats.written == 20, "readings after the restart written")
        assert restored == 1  # H1's window came back from the snapshot
        return w, again

    asyncio.run(scenario())
    rows = stack.rows(
        'SELECT "flow_rate_lps", "risk", "model_version" FROM "reading" WHERE "sensor_id" = \'H1\''
    )
    assert len(rows) == 60
    assert all(r["risk"] is None for r in rows[:20])
    version = ModelRegistry(settings.model_dir).active_version("water_flow")
    assert all(r["model_version"] == version for r in rows[20:])
    # the models' window (20) differs from the default (60), so the worker started a fresh pipeline
    # with them: scoring began at reading 20 with an empty history, and went on across the restart
    # from the snapshot as if the worker had never stopped
    pipe = core.Pipeline(models=ModelRegistry(settings.model_dir).load_active(), window=20)
    out = pipe.process([p for _, p in msgs[20:]], [t for t, _ in msgs[20:]], time.time_ns())
    expected = [p.fields["leak_probability"] for p in parse(out.line_protocol) if p.measurement == "reading"]
    stored = stack.rows('SELECT "leak_probability" FROM "reading" WHERE "sensor_id" = \'H1\'')  # scored ones
    assert [r["leak_probability"] for r in stored] == pytest.approx(expected, rel=1e-12)


def test_broker_restart_mid_stream_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    settings = worker_settings(stack, tmp_path, id="resilient", burst=1000.0)
    pub = Publisher(stack, ["B1", "B2"])
    t0 = now_base()

    def batch(sensor: str, start: int) -> list[tuple[str, bytes]]:
        topic = f"infrawatch/plant/water_flow/{sensor}/telemetry"
        return [(topic, nested(sensor, t0 + i * SECOND, 10.0, 3.0)) for i in range(start, start + 15)]

    async def scenario() -> Worker:
        async with running(settings) as w:
            await asyncio.gather(pub.send("B1", batch("B1", 0)), pub.send("B2", batch("B2", 0)))
            await asyncio.to_thread(stack.broker.restart)
            await asyncio.gather(pub.send("B1", batch("B1", 15)), pub.send("B2", batch("B2", 15)))
            await wait_until(
                lambda: count_by_sensor(stack, "flow_rate_lps") == {"B1": 30, "B2": 30}, "all readings"
            )
        return w

    w = asyncio.run(scenario())
    assert w.source.generation >= 2  # it did reconnect, to its old session
    # messages whose PUBACK the broker had not saved come again: stored again, idempotently
    assert w.stats.processed >= 60
    assert w.stats.written == w.stats.processed
    assert count_by_sensor(stack, "flow_rate_lps") == {"B1": 30, "B2": 30}


def test_a_batch_influx_rejects_is_dead_lettered_not_retried(stack: Stack, tmp_path: Path) -> None:
    settings = worker_settings(stack, tmp_path, id="rejected")
    t0 = now_base()
    # a string in flow_rate_lps first: InfluxDB then refuses float values there (field type conflict, 400)
    with stack.client("admin") as c:
        tags = "kind=water_flow,sensor_id=R0,site=plant,zone=STANDARD"
        c.write(f'reading,{tags} flow_rate_lps="oops" {t0}'.encode())
    pub = Publisher(stack, ["R1"])
    topic = "infrawatch/plant/water_flow/R1/telemetry"
    msgs = [(topic, nested("R1", t0 + i * SECOND, 10.0, 3.0)) for i in range(5)]

    async def scenario() -> Worker:
        async with running(settings) as w:
            await pub.send("R1", msgs)
            await wait_until(lambda: w.stats.acked == 5, "the rejected messages acknowledged")
        return w

    w = asyncio.run(scenario())
    assert w.stats.write_rejected >= 1
    assert w.stats.written == 0
    letters = read_dead_letters(worker_paths(settings)[1])
    assert [d["reason"] for d in letters] == ["write_rejected"] * 5
    assert {d["topic"] for d in letters} == {topic}
    assert all("400" in d["message"] and "conflict" in d["message"] for d in letters)
    assert sorted(base64.b64decode(d["payload_b64"]) for d in letters) == sorted(p for _, p in msgs)
