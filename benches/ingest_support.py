"""Helpers of the end-to-end ingest benchmark: payload builders, a publisher process, a latency
poller process, and an event loop in a background thread (for the worker and the bare subscriber).

The publisher and the poller run in processes of their own (spawned, so they import only what is
at the top of this module: json, paho, httpx), so their Python does not share the benchmark
process's GIL with the worker or the subscriber being measured.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

SECOND = 10**9
T = TypeVar("T")


# ---------------------------------------------------------------------------- payloads
def reading(sensor: str, ts_ns: int, i: int) -> dict[str, Any]:
    """One nested water-flow reading (DESIGN.md §1); values vary a little so features do."""
    return {
        "sensor_id": sensor,
        "timestamp": ts_ns,
        "location": "Plant room",
        "facility_zone": "STANDARD",
        "measurements": {
            "pressure_bar": 3.2 + (i % 7) * 0.01,
            "flow_rate_lps": 10.0 + (i % 11) * 0.1,
            "temperature_c": 12.0 + (i % 5) * 0.1,
        },
        "device_metadata": {"battery_level": 80, "signal_strength": -50},
    }


def single_messages(site: str, sensor: str, steps: int, t0: int, step_ns: int) -> list[tuple[str, bytes]]:
    """`steps` single-reading messages of one sensor on its own telemetry topic."""
    topic = f"infrawatch/{site}/water_flow/{sensor}/telemetry"
    return [(topic, json.dumps(reading(sensor, t0 + k * step_ns, k)).encode()) for k in range(steps)]


def gateway_sensors(gateway: str, per_gateway: int) -> list[str]:
    return [f"{gateway}S{j:03d}" for j in range(per_gateway)]


def gateway_messages(
    site: str, gateway: str, per_gateway: int, batches: int, t0: int, step_ns: int
) -> list[tuple[str, bytes]]:
    """`batches` gateway messages of `per_gateway` readings each (one per sensor of the gateway)."""
    topic = f"infrawatch/{site}/gateway/{gateway}/batch"
    sensors = gateway_sensors(gateway, per_gateway)
    out = []
    for k in range(batches):
        ts = t0 + k * step_ns
        out.append(
            (topic, json.dumps([{**reading(s, ts, k), "kind": "water_flow"} for s in sensors]).encode())
        )
    return out


@dataclass(frozen=True)
class Plan:
    """What one publisher process sends: each user's messages, built in the child before `go`.

    shape "single": every user is a sensor publishing `steps` messages; "gateway": every user is a
    gateway publishing `steps` batches of `per_gateway` readings; "paced" / "paced-gateway":
    `steps` messages in all, round-robin over the users at `rate` messages/s, each reading stamped
    with its publish time.
    """

    shape: str
    site: str
    users: tuple[tuple[str, str], ...]  # (user, password)
    steps: int
    t0: int = 0
    step_ns: int = SECOND // 100
    per_gateway: int = 100
    rate: float = 0.0

    def messages(self) -> list[list[tuple[str, bytes]]]:
        if self.shape == "single":
            return [single_messages(self.site, u, self.steps, self.t0, self.step_ns) for u, _ in self.users]
        if self.shape == "gateway":
            return [
                gateway_messages(self.site, u, self.per_gateway, self.steps, self.t0, self.step_ns)
                for u, _ in self.users
            ]
        return [[] for _ in self.users]


# ---------------------------------------------------------------------------- publisher process
def publisher_main(conn: Connection, host: str, port: int, plan: Plan) -> None:
    """Child process: connect one paho client per user, say "ready", wait for "go", publish every
    message with QoS 1, wait for every PUBACK, send back (first publish ns, last publish call ns,
    last PUBACK ns, count)."""
    per_user = plan.messages()
    acked = [0] * len(plan.users)
    last_ack = [0] * len(plan.users)
    clients = [
        _connect(host, port, user, password, i, acked, last_ack)
        for i, (user, password) in enumerate(plan.users)
    ]
    deadline = time.monotonic() + 20
    while not all(c.is_connected() for c in clients):
        if time.monotonic() > deadline:
            conn.send(("error", "publisher clients did not connect"))
            return
        time.sleep(0.01)
    conn.send(("ready",))
    conn.recv()  # go
    first = time.time_ns()
    if plan.shape in ("paced", "paced-gateway"):
        sent = _publish_paced(clients, plan)
    else:
        sent = _publish_all(clients, per_user)
    published = time.time_ns()
    while any(a < s for a, s in zip(acked, sent, strict=True)):
        time.sleep(0.001)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    conn.send(("done", first, published, max(last_ack), sum(sent)))


def _connect(
    host: str, port: int, user: str, password: str, i: int, acked: list[int], last: list[int]
) -> paho.Client:
    def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        acked[i] += 1
        last[i] = time.time_ns()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{user}", protocol=paho.MQTTv311)
    c.username_pw_set(user, password)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(host, port, keepalive=60)
    c.loop_start()
    return c


def _publish_all(clients: list[paho.Client], per_user: list[list[tuple[str, bytes]]]) -> list[int]:
    """Pre-built messages, round robin over the connections so they all stay busy."""
    sent = [0] * len(clients)
    for k in range(max(len(m) for m in per_user)):
        for i, msgs in enumerate(per_user):
            if k < len(msgs):
                topic, payload = msgs[k]
                clients[i].publish(topic, payload, qos=1)
                sent[i] += 1
    return sent


def _publish_paced(clients: list[paho.Client], plan: Plan) -> list[int]:
    """`plan.steps` messages at `plan.rate` per second, round robin, stamped when sent."""
    gateway = plan.shape == "paced-gateway"
    users = [u for u, _ in plan.users]
    if gateway:
        topics = [f"infrawatch/{plan.site}/gateway/{g}/batch" for g in users]
        members = [gateway_sensors(g, plan.per_gateway) for g in users]
    else:
        topics = [f"infrawatch/{plan.site}/water_flow/{s}/telemetry" for s in users]
    sent = [0] * len(clients)
    start = time.perf_counter()
    for k in range(plan.steps):
        delay = start + k / plan.rate - time.perf_counter()
        if delay > 0.0005:
            time.sleep(delay)
        i = k % len(clients)
        # stamped as late as possible: the reading's timestamp is its publish time
        ts = time.time_ns()
        if gateway:
            body: Any = [{**reading(s, ts, k), "kind": "water_flow"} for s in members[i]]
        else:
            body = reading(users[i], ts, k)
        clients[i].publish(topics[i], json.dumps(body).encode(), qos=1)
        sent[i] += 1
    return sent


# ---------------------------------------------------------------------------- latency poller process
def poller_main(
    conn: Connection,
    url: str,
    db: str,
    user: str,
    password: str,
    site: str,
    probes: list[str],
    interval_s: float,
) -> None:
    """Child process: every `interval_s`, ask InfluxDB which readings of the `probes` sensors of
    `site` are stored past each probe's newest seen one, and note when each timestamp first
    appears. One cursor per probe: a probe's readings come over one connection, in order, and the
    worker writes them in order, so nothing can land behind its cursor (across probes they can:
    one connection's backlog may be longer than another's). On "stop", poll once more and send
    back ({(probe, timestamp ns): first seen ns}, query durations in ms)."""
    seen: dict[tuple[str, int], int] = {}
    query_ms: list[float] = []
    cursor = dict.fromkeys(probes, 0)

    def poll(http: httpx.Client) -> None:
        q = ";".join(
            f'SELECT "flow_rate_lps" FROM "reading" WHERE "site" = \'{site}\' AND "sensor_id" = \'{p}\' '
            f"AND time > {cursor[p]}"
            for p in probes
        )
        t = time.perf_counter()
        r = http.get("/query", params={"db": db, "q": q, "epoch": "ns"})
        now = time.time_ns()
        query_ms.append((time.perf_counter() - t) * 1000)
        for probe, res in zip(probes, r.json().get("results", []), strict=True):
            for series in res.get("series", []):
                for ts, _ in series["values"]:
                    seen.setdefault((probe, ts), now)
                    cursor[probe] = max(cursor[probe], ts)

    with httpx.Client(base_url=url, auth=(user, password), timeout=10) as http:
        conn.send(("ready",))
        while not conn.poll(interval_s):
            poll(http)
        conn.recv()
        poll(http)
    conn.send((seen, query_ms))


# ---------------------------------------------------------------------------- background loop
class LoopThread:
    """An asyncio event loop in a daemon thread: the measured consumer runs there while the
    benchmark's main thread only starts rounds and waits (sleeping, so it holds no GIL)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self.thread.start()

    def start(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.start(coro).result(timeout)

    def call(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 60.0, poll_s: float = 0.002) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------- parent-side handles
class Child:
    """A spawned helper process and its pipe; it reports "ready" before it is told to go."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        reply = self.recv(30)
        if reply[0] != "ready":
            raise RuntimeError(f"{target.__name__}: {reply}")

    def recv(self, timeout_s: float = 60) -> Any:
        if not self.conn.poll(timeout_s):
            self.proc.kill()
            raise AssertionError(f"helper process silent for {timeout_s} s")
        return self.conn.recv()

    def send(self, msg: Any) -> None:
        self.conn.send(msg)

    def join(self) -> None:
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()


class Publishers:
    """Several publisher processes, each with its share of the users (one connection per user)."""

    def __init__(self, host: str, port: int, plans: list[Plan]) -> None:
        self.children = [Child(publisher_main, host, port, p) for p in plans]

    def go(self) -> None:
        for c in self.children:
            c.send("go")

    def finish(self) -> dict[str, float]:
        """Wait for every PUBACK; returns the first publish, the last publish call and last PUBACK
        (ns) and how many messages were sent."""
        results = [c.recv() for c in self.children]
        for c in self.children:
            c.join()
        for r in results:
            if r[0] != "done":
                raise RuntimeError(f"publisher: {r}")
        return {
            "first_ns": min(r[1] for r in results),
            "published_ns": max(r[2] for r in results),
            "acked_ns": max(r[3] for r in results),
            "messages": sum(r[4] for r in results),
        }


def split(users: list[tuple[str, str]], parts: int) -> list[tuple[tuple[str, str], ...]]:
    return [tuple(users[i::parts]) for i in range(parts) if users[i::parts]]
