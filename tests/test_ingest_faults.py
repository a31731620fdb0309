"""Nothing lost (DESIGN.md §7), under the faults issue 4 names, in one stream: the worker SIGKILLed
three times, InfluxDB stopped for 30 s, the broker restarted — while sensors keep publishing.

Twenty sensors publish one reading per second of their own clock (timestamps an hour back, sent
ten times faster than real time, so the stream is dense), each as its own broker user with QoS 1.
Afterwards every published reading is stored exactly once: per sensor, the stored timestamps equal
the published ones and each value is the one sent. The counts of each fault go to the test's
output (`pytest -s`) and to the closing note.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from tests.test_ingest_worker import SECOND, WorkerProcess, worker_settings
from tests.utils.stack import Stack

from infrawatch.ingest import broker_admin
from infrawatch.ingest.deadletter import read_dead_letters
from infrawatch.ingest.worker import worker_paths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENSORS = 20
PER_SECOND = 10  # readings per wall-clock second per sensor (each one second of its own clock)


class StreamingFleet:
    """Sensors publishing in a background thread until stopped; paho queues and re-sends QoS 1
    messages across a broker restart."""

    def __init__(self, stack: Stack, sensors: list[str], t0_ns: int) -> None:
        self.stack = stack
        self.t0 = t0_ns
        passwords = broker_admin.add_users(stack.settings, [(s, "sensor") for s in sensors])
        stack.broker.reload()
        self.clients: dict[str, mqtt.Client] = {}
        for s in sensors:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{s}", clean_session=False)
            c.username_pw_set(s, passwords[s])
            c.reconnect_delay_set(0.1, 1.0)
            c.max_inflight_messages_set(1000)
            c.connect(stack.broker.host, stack.broker.port, keepalive=10)
            c.loop_start()
            self.clients[s] = c
        self.sent: dict[str, list[tuple[int, float]]] = {s: [] for s in sensors}
        self.acked = 0
        self._lock = threading.Lock()
        for c in self.clients.values():
            c.on_publish = self._on_publish
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, *_: Any) -> None:
        with self._lock:
            self.acked += 1

    def _run(self) -> None:
        i = 0
        start = time.monotonic()
        while not self.stop.is_set():
            for s, c in self.clients.items():
                ts = self.t0 + i * SECOND
                flow = round(10.0 + (hash((s, i)) % 1000) / 100, 2)
                payload = json.dumps(
                    {
                        "sensor_id": s,
                        "timestamp": ts,
                        "measurements": {"flow_rate_lps": flow, "pressure_bar": 3.0},
                    }
                ).encode()
                c.publish(f"infrawatch/plant/water_flow/{s}/telemetry", payload, qos=1)
                self.sent[s].append((ts, flow))
            i += 1
            # pace: PER_SECOND readings per sensor per wall-clock second
            delay = start + i / PER_SECOND - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())

    def close(self) -> None:
        for c in self.clients.values():
            c.loop_stop()
            c.disconnect()


def test_every_reading_is_stored_exactly_once_through_kills_an_outage_and_a_broker_restart(
    stack: Stack, tmp_path: Path
) -> None:
    settings = worker_settings(
        stack, tmp_path, id="w-faults", rate_per_s=1.0, burst=1.0, batch_size=200, batch_timeout_ms=50
    )
    env = {"INFRAWATCH_WORKER__ID": "w-faults", "INFRAWATCH_MODEL_DIR": str(tmp_path / "models")}
    for k, v in {
        "BATCH_SIZE": 200,
        "BATCH_TIMEOUT_MS": 50,
        "RATE_PER_S": 1.0,
        "BURST": 1.0,
        "STATS_INTERVAL_S": 1.0,
    }.items():
        env[f"INFRAWATCH_WORKER__{k}"] = str(v)
    sensors = [f"F{i:02d}" for i in range(SENSORS)]
    t0 = (time.time_ns() // SECOND - 3 * 3600) * SECOND
    worker = WorkerProcess(settings, env)
    worker.wait_for("subscribed")
    fleet = StreamingFleet(stack, sensors, t0)
    fleet.thread.start()
    counts: dict[str, Any] = {"kills": []}
    try:
        # 1. three SIGKILLs, a second apart from their restarts
        for _ in range(3):
            time.sleep(2.5)
            counts["kills"].append(fleet.total)
            worker.end(signal.SIGKILL)
            time.sleep(0.5)
            worker = WorkerProcess(settings, env)
            worker.wait_for("subscribed")
        # 2. InfluxDB down for 30 s: the worker spools and keeps acknowledging
        time.sleep(2)
        counts["influx_stopped_at"] = fleet.total
        stack.influx.stop()
        time.sleep(30)
        stack.influx.start()
        counts["influx_started_at"] = fleet.total
        # 3. the broker restarted (graceful: it saves its sessions and in-flight messages)
        time.sleep(2)
        counts["broker_restarted_at"] = fleet.total
        stack.broker.restart()
        time.sleep(3)
    finally:
        fleet.stop.set()
        fleet.thread.join(10)
    counts["published"] = fleet.total

    def stored() -> int:
        rows = stack.rows('SELECT count("flow_rate_lps") AS n FROM "reading"')
        return int(rows[0]["n"]) if rows else 0

    deadline = time.monotonic() + 120
    while stored() < fleet.total and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)  # anything extra would show now
    fleet.close()
    assert worker.end(signal.SIGTERM) == 0, worker.drain_log()

    counts["stored"] = stored()
    for s in sensors:
        rows = stack.rows('SELECT "flow_rate_lps" FROM "reading" WHERE "sensor_id" = $s', {"s": s})
        got = [(r["time"], r["flow_rate_lps"]) for r in rows]
        assert got == fleet.sent[s], f"{s}: {len(got)} stored of {len(fleet.sent[s])} published"
    _, deadletter_dir, _ = worker_paths(settings)
    letters = read_dead_letters(deadletter_dir)
    assert [d for d in letters if d["reason"] == "rate_limited"] == []
    totals = stack.rows(
        'SELECT sum("received") AS received, sum("stale") AS stale, sum("spooled") AS spooled, '
        'sum("written") AS written, sum("write_errors") AS write_errors FROM "pipeline"'
    )
    counts.update(totals[0] if totals else {})
    counts["dead_letters"] = len(letters)
    print("\nfault run:", json.dumps(counts))
    assert counts["stored"] == counts["published"]
    # the faults happened where they were meant to: mid-stream
    assert (
        0
        < counts["kills"][0]
        < counts["influx_stopped_at"]
        < counts["broker_restarted_at"]
        < counts["published"]
    )
    # the outage made the worker spool
    assert counts.get("spooled", 0) > 0
