"""End to end: real Mosquitto → the real ingest worker (real models) → real InfluxDB, side by side
with the two ceilings it cannot beat, in one run.

Groups (each compares the same number of readings, so the times compare directly):

- single-reading messages: the broker + a bare aiomqtt subscriber (QoS 1, persistent session, does
  nothing but count) against the system, live (publishers running, as in the system's rounds) and
  draining a backlog queued while it was away (no publisher competing for the 2 cores);
- gateway batches of 100: InfluxDB alone (the Pipeline's own line protocol for the same readings,
  POSTed in the pieces the worker's writer sends, one request at a time like the worker; run
  right before the system's rounds) and the broker + bare subscriber against the system;
- latency: publish→stored percentiles at a paced 5,000 readings/s.

Publishers are separate processes (paho, one connection per sensor or gateway, payloads built
before the clock starts); a system round ends when the worker has had every reading accepted by
InfluxDB (a 204 on `/write`), and each round's count is checked in InfluxDB afterwards. The
models are the small real forests of tests/utils/factories.py (`train_models`: 15 trees, depth 6,
window 20), scored in the Rust core. The token bucket is opened wide (rate and burst 1e9): over-rate
dropping is not what is measured here.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import httpx
import numpy as np
import pytest
from benches.ingest_support import (
    SECOND,
    Child,
    LoopThread,
    Plan,
    Publishers,
    gateway_messages,
    poller_main,
    split,
    wait_for,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tests.utils.factories import train_models
from tests.utils.stack import Stack, start_stack

from infrawatch import core
from infrawatch.config import Settings
from infrawatch.detection.registry import ModelRegistry
from infrawatch.ingest import broker_admin
from infrawatch.ingest.influx_admin import InfluxClient
from infrawatch.ingest.mqtt import GATEWAY, SESSION_EXPIRY_S, TELEMETRY, MqttSource
from infrawatch.ingest.worker import Worker, run
from infrawatch.ingest.writer import MAX_BODY_BYTES, split_body

pytestmark = pytest.mark.integration

ROUNDS = 3
WINDOW = 20
SENSORS = 10  # single-reading publishers: one connection each
SINGLE_STEPS = 2_000  # messages per sensor per round → 20,000 readings a round
GATEWAYS = 10  # gateway publishers, 100 sensors each
GATEWAY_STEPS = 100  # batches per gateway per round → 100,000 readings a round
PER_GATEWAY = 100
PUBLISHER_PROCESSES = 2
LATENCY_RATE = 5_000.0  # readings/s
LATENCY_SECONDS = 4.0
POLL_S = 0.02
BATCH_SIZE = 2000  # the worker's default batch size (messages)

GROUP_SINGLE = "ingest: single-reading messages (20k readings/round)"
GROUP_GATEWAY = "ingest: gateway batches of 100 (100k readings/round)"

N_SINGLE = SENSORS * SINGLE_STEPS
N_GATEWAY = GATEWAYS * GATEWAY_STEPS * PER_GATEWAY

# figures for the summary printed at the end: name → readings/s of the best and median round
RESULTS: dict[str, dict[str, Any]] = {}


@dataclass
class Env:
    stack: Stack
    settings: Settings
    models: dict[str, dict[str, Any]]
    sensors: list[tuple[str, str]]
    gateways: list[tuple[str, str]]
    probes: list[tuple[str, str]]
    influx: InfluxClient
    _sites: Iterator[int] = field(default_factory=itertools.count)
    _t: int = 0

    def site(self, prefix: str) -> str:
        return f"{prefix}{next(self._sites)}"

    def timestamps(self, steps: int, step_ns: int) -> int:
        """A start time for `steps` readings per sensor, after every earlier round's: the feature
        store treats a reading not newer than its sensor's newest as stale."""
        t0 = self._t
        self._t += steps * step_ns + SECOND
        return t0

    def count(self, site: str) -> int:
        rows = self.influx.rows(
            'SELECT count("flow_rate_lps") AS n FROM "reading" WHERE "site" = $site', {"site": site}
        )
        return int(rows[0]["n"]) if rows else 0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("e2e")
    stack = start_stack(tmp / "run")
    try:
        models = train_models(window=WINDOW)
        reg = ModelRegistry(tmp / "models")
        for kind, entry in models.items():
            reg.save(
                kind, {k: v for k, v in entry.items() if isinstance(v, core.TreeEnsemble)}, {"window": WINDOW}
            )
        w = stack.settings.worker.model_copy(
            update={
                "batch_size": BATCH_SIZE,
                "rate_per_s": 1e9,
                "burst": 1e9,
                "stats_interval_s": 1.0,
            }
        )
        settings = stack.settings.model_copy(update={"worker": w, "model_dir": tmp / "models"})
        names = (
            [(f"S{i}", "sensor") for i in range(SENSORS)]
            + [(f"G{i}", "gateway") for i in range(GATEWAYS)]
            + [(f"L{i}", "sensor") for i in range(SENSORS)]
        )
        pw = broker_admin.add_users(settings, names)  # type: ignore[arg-type]
        stack.broker.reload()
        creds = [(u, pw[u]) for u, _ in names]
        e = Env(
            stack=stack,
            settings=settings,
            models=models,
            sensors=creds[:SENSORS],
            gateways=creds[SENSORS : SENSORS + GATEWAYS],
            probes=creds[SENSORS + GATEWAYS :],
            influx=InfluxClient(settings),
            _t=(time.time_ns() // SECOND - 3 * 3600) * SECOND,
        )
        yield e
        e.influx.close()
        print_summary()
    finally:
        stack.close()


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def publishers(env: Env, shape: str, site: str, users: list[tuple[str, str]], **plan: Any) -> Publishers:
    b = env.settings.broker
    return Publishers(
        b.host, b.port, [Plan(shape, site, part, **plan) for part in split(users, PUBLISHER_PROCESSES)]
    )


def record(benchmark: Any, name: str, readings: int, messages: int, bound: str, **extra: Any) -> None:
    times = benchmark.stats.stats.data if benchmark.stats else []
    best, median = min(times), float(np.median(times))
    RESULTS[name] = {
        "best": readings / best,
        "median": readings / median,
        "msgs_best": messages / best,
    }
    benchmark.extra_info.update(
        {
            "readings_per_round": readings,
            "messages_per_round": messages,
            "readings_per_s_best": round(readings / best),
            "readings_per_s_median": round(readings / median),
            "messages_per_s_best": round(messages / best),
            "bound_by": bound,
            **extra,
        }
    )
    pubs = ""
    if "publish_share" in extra:
        pubs = (
            "; publishers done at " + ", ".join(f"{x:.0%}" for x in extra["publish_share"]) + " of each round"
        )
    print(
        f"\n{name}: {readings / best:,.0f} readings/s best, {readings / median:,.0f} median "
        f"({messages / best:,.0f} messages/s) — bound by {bound}{pubs}"
    )


def publisher_share(pub: list[dict[str, float]], stored_s: list[float]) -> dict[str, Any]:
    """How long the publishers took to hand over every message (last PUBACK), against the round:
    near 1.0 means the round could not have been faster than the publishers."""
    shares = [round((p["acked_ns"] - p["first_ns"]) / 1e9 / s, 2) for p, s in zip(pub, stored_s, strict=True)]
    return {
        "publish_s": [round((p["acked_ns"] - p["first_ns"]) / 1e9, 3) for p in pub],
        "publish_share": shares,
    }


# ---------------------------------------------------------------------------- ceiling B: broker + aiomqtt
# the bare subscriber speaks the protocol the worker speaks by default (its session options too)
WORKER_PROTOCOL: aiomqtt.ProtocolVersion = inspect.signature(MqttSource).parameters["protocol"].default


def bare_client(settings: Settings, identifier: str) -> aiomqtt.Client:
    """An aiomqtt client with the worker's credentials and session options (persistent session)."""
    b = settings.broker
    if WORKER_PROTOCOL is aiomqtt.ProtocolVersion.V5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = 4 * BATCH_SIZE  # as the worker asks for
        session: dict[str, Any] = {"clean_start": False, "properties": props}
    else:
        session = {"clean_session": False}
    return aiomqtt.Client(
        b.host,
        b.port,
        username=b.worker_user,
        password=b.password(),
        identifier=identifier,
        protocol=WORKER_PROTOCOL,
        **session,
    )


class BareSubscriber:
    """aiomqtt with QoS 1 and a persistent session that counts messages and does nothing else."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.messages = 0
        self.close: Callable[[], None] = lambda: None  # set by the fixture: unsubscribe and disconnect

    async def run(self, subscribed: asyncio.Event, stop: asyncio.Event) -> None:
        async with bare_client(self.settings, "bench-bare-subscriber") as client:
            await client.subscribe(TELEMETRY, qos=1)
            await client.subscribe(GATEWAY, qos=1)
            subscribed.set()
            reader = asyncio.create_task(self._count(client))
            await stop.wait()
            reader.cancel()
            # leave no subscription behind: the session would queue the system rounds' messages
            await client.unsubscribe(TELEMETRY)
            await client.unsubscribe(GATEWAY)

    async def _count(self, client: aiomqtt.Client) -> None:
        async for _ in client.messages:
            self.messages += 1


@pytest.fixture(scope="module")
def bare(env: Env, loop_thread: LoopThread) -> Iterator[BareSubscriber]:
    sub = BareSubscriber(env.settings)

    async def make() -> tuple[asyncio.Event, asyncio.Event]:
        return asyncio.Event(), asyncio.Event()

    subscribed, stop = loop_thread.run(make())
    fut = loop_thread.start(sub.run(subscribed, stop))
    wait_for(subscribed.is_set, "the bare subscriber to subscribe", 20)

    def close() -> None:
        if not fut.done():
            loop_thread.call(stop.set)
            fut.result(20)

    sub.close = close
    yield sub
    close()


def shape_round(env: Env, shape: str) -> tuple[str, list[tuple[str, str]], int, int, int]:
    """A round of `shape` ("single" / "gateway"): its group, publishers, steps per publisher,
    messages and readings — the same for a ceiling and the system, so their times compare."""
    users = env.sensors if shape == "single" else env.gateways
    steps = SINGLE_STEPS if shape == "single" else GATEWAY_STEPS
    n_msgs = len(users) * steps
    readings = n_msgs * (1 if shape == "single" else PER_GATEWAY)
    return (GROUP_SINGLE if shape == "single" else GROUP_GATEWAY), users, steps, n_msgs, readings


@pytest.mark.parametrize("shape", ["single", "gateway"])
def test_ceiling_mqtt_receive(benchmark: Any, env: Env, bare: BareSubscriber, shape: str) -> None:
    benchmark.group, users, steps, n_msgs, readings = shape_round(env, shape)
    pub_results: list[dict[str, float]] = []
    round_s: list[float] = []
    state: dict[str, Any] = {}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        state["pub"] = publishers(
            env, shape, env.site("bare"), users, steps=steps, t0=env.timestamps(steps, SECOND // 100)
        )
        state["target"] = bare.messages + n_msgs
        return (), {}

    def round_() -> None:
        t = time.perf_counter()
        state["pub"].go()
        wait_for(lambda: bare.messages >= state["target"], "every message at the bare subscriber")
        round_s.append(time.perf_counter() - t)
        pub_results.append(state["pub"].finish())

    benchmark.pedantic(round_, setup=setup, rounds=ROUNDS, iterations=1)
    assert bare.messages == state["target"]  # nothing more than was sent
    share = publisher_share(pub_results, round_s)
    record(
        benchmark,
        f"ceiling B: broker + bare aiomqtt ({shape})",
        readings,
        n_msgs,
        "the subscriber's Python per message (aiomqtt/paho), or the publishers where publish_share ≈ 1",
        protocol=WORKER_PROTOCOL.name,
        **share,
    )


async def drain_backlog(settings: Settings, n: int, *, subscribe_only: bool = False) -> None:
    """Resume the persistent session "bench-drain" and count `n` messages the broker queued for it
    while it was away (or, `subscribe_only`, just create the session's subscriptions)."""
    async with bare_client(settings, "bench-drain") as client:
        if subscribe_only:
            await client.subscribe(TELEMETRY, qos=1)
            await client.subscribe(GATEWAY, qos=1)
            return
        got = 0
        async for _ in client.messages:
            got += 1
            if got == n:
                break
        # leave no subscription behind: the session would queue every later round's messages
        await client.unsubscribe(TELEMETRY)
        await client.unsubscribe(GATEWAY)


def test_ceiling_mqtt_drain_backlog(
    benchmark: Any, env: Env, bare: BareSubscriber, loop_thread: LoopThread
) -> None:
    """Ceiling B without publishers in the timed part: the messages are published (and PUBACKed)
    while the subscriber is away, then it reconnects and the broker hands it the queued backlog.
    Where the live ceiling B's publishers finish close to its rounds' end, this is the figure
    that shows what aiomqtt alone receives."""
    benchmark.group = GROUP_SINGLE
    n_msgs = N_SINGLE

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        loop_thread.run(drain_backlog(env.settings, 0, subscribe_only=True))
        target = bare.messages + n_msgs  # the live bare subscriber gets them too: let it finish
        pub = publishers(
            env,
            "single",
            env.site("drain"),
            env.sensors,
            steps=SINGLE_STEPS,
            t0=env.timestamps(SINGLE_STEPS, SECOND // 100),
        )
        pub.go()
        pub.finish()
        wait_for(lambda: bare.messages >= target, "the live bare subscriber to catch up")
        return (), {}

    benchmark.pedantic(
        lambda: loop_thread.run(drain_backlog(env.settings, n_msgs)), setup=setup, rounds=ROUNDS, iterations=1
    )
    record(
        benchmark,
        "ceiling B: bare aiomqtt draining a backlog (single)",
        n_msgs,
        n_msgs,
        "the subscriber's Python per message (paho/aiomqtt) and Mosquitto; no publisher in the timed part",
        protocol=WORKER_PROTOCOL.name,
    )


# ---------------------------------------------------------------------------- the system
@pytest.fixture(scope="module")
def worker(env: Env, loop_thread: LoopThread, bare: BareSubscriber) -> Iterator[Worker]:
    """The real worker in the background loop, started after the bare subscriber has left (it
    would otherwise receive every message too, on the same event loop and GIL)."""
    bare.close()
    w = Worker(env.settings)
    fut = loop_thread.start(run(env.settings, worker=w))
    wait_for(lambda: w.subscribed.is_set() or fut.done(), "the worker to subscribe", 30)
    if fut.done():
        fut.result()
    yield w
    loop_thread.call(w.stop)
    fut.result(60)


def run_system(benchmark: Any, env: Env, worker: Worker, shape: str) -> None:
    benchmark.group, users, steps, n_msgs, readings = shape_round(env, shape)
    pub_results: list[dict[str, float]] = []
    round_s: list[float] = []
    sites: list[str] = []
    state: dict[str, Any] = {}
    batches0, processed0 = worker.stats.batches, worker.stats.processed

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        site = env.site(f"sys-{shape}-")
        sites.append(site)
        state["pub"] = publishers(
            env, shape, site, users, steps=steps, t0=env.timestamps(steps, SECOND // 100)
        )
        state["target"] = worker.stats.written + readings
        return (), {}

    def round_() -> None:
        t = time.perf_counter()
        state["pub"].go()
        wait_for(lambda: worker.stats.written >= state["target"], "every reading stored")
        round_s.append(time.perf_counter() - t)
        pub_results.append(state["pub"].finish())

    benchmark.pedantic(round_, setup=setup, rounds=ROUNDS, iterations=1)
    for site in sites:
        assert env.count(site) == readings
    assert worker.stats.rate_limited == 0
    assert not worker.stats.dead_letter
    batches = worker.stats.batches - batches0
    share = publisher_share(pub_results, round_s)
    record(
        benchmark,
        f"system: MQTT → worker → InfluxDB ({shape})",
        readings,
        n_msgs,
        "the worker's one event loop (per-message Python in paho/aiomqtt and the inbox, then the "
        "sequential /write), sharing 2 cores with Mosquitto, InfluxDB and the publishers",
        mean_messages_per_batch=round((worker.stats.processed - processed0) / max(1, batches), 1),
        mean_readings_per_write=round(readings * ROUNDS / max(1, batches)),
        **share,
    )


def test_system_single(benchmark: Any, env: Env, worker: Worker) -> None:
    run_system(benchmark, env, worker, "single")


# ---------------------------------------------------------------------------- ceiling A: InfluxDB alone
def test_ceiling_influx_write(benchmark: Any, env: Env) -> None:
    """Pre-encoded line protocol (the Pipeline's output for the same gateway readings) POSTed to
    `/write` one request at a time in the pieces the worker's writer sends (a gateway batch of the
    worker runs to tens of thousands of readings, cut into bodies of at most MAX_BODY_BYTES).
    Runs right before the system's gateway rounds, so both meet InfluxDB in the same state (it
    compacts what the earlier rounds wrote)."""
    benchmark.group = GROUP_GATEWAY
    sites: list[str] = []

    def setup() -> tuple[tuple[list[bytes]], dict[str, Any]]:
        site = env.site("influx")
        sites.append(site)
        t0 = env.timestamps(GATEWAY_STEPS, SECOND // 100)
        pipeline = core.Pipeline(models=env.models, window=WINDOW)
        msgs = [
            m
            for g, _ in env.gateways
            for m in gateway_messages(site, g, PER_GATEWAY, GATEWAY_STEPS, t0, SECOND // 100)
        ]
        lines = []
        for i in range(0, len(msgs), 20):
            chunk = msgs[i : i + 20]
            out = pipeline.process([p for _, p in chunk], [t for t, _ in chunk], time.time_ns())
            assert out.count == len(chunk) * PER_GATEWAY
            assert not out.errors
            lines.append(out.line_protocol)
        # cut as the worker's writer cuts a batch: pieces of at most MAX_BODY_BYTES at line ends
        return (split_body(b"".join(lines), MAX_BODY_BYTES),), {}

    s = env.settings.influx
    http = httpx.Client(
        base_url=s.url,
        auth=(s.writer_user, s.password("writer")),
        timeout=30,
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    params = {"db": s.database, "rp": "raw", "precision": "ns"}

    n_bodies = [0]

    def write(bodies: list[bytes]) -> None:
        n_bodies[0] = len(bodies)
        for body in bodies:
            r = http.post("/write", params=params, content=body)
            assert r.status_code == 204, r.text

    try:
        benchmark.pedantic(write, setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        http.close()
    for site in sites:
        assert env.count(site) == N_GATEWAY
    record(
        benchmark,
        "ceiling A: InfluxDB /write alone",
        N_GATEWAY,
        n_bodies[0],
        "InfluxDB (sequential POSTs of pre-encoded bodies; the client only sends)",
        bodies_per_round=n_bodies[0],
    )


def test_system_gateway(benchmark: Any, env: Env, worker: Worker) -> None:
    run_system(benchmark, env, worker, "gateway")


# ---------------------------------------------------------------------------- latency
@pytest.mark.parametrize("shape", ["single", "gateway"])
def test_latency_publish_to_stored(benchmark: Any, env: Env, worker: Worker, shape: str) -> None:
    """Readings paced at LATENCY_RATE (single-reading messages, or gateway batches of 100), each
    stamped with its publish time; a poller process asks InfluxDB every POLL_S for what has arrived.
    A reading's latency is (first poll that saw it) − (its publish time): an upper bound, late by up
    to one poll interval plus the query. The worker's own figure (reading timestamp → InfluxDB's 204,
    sampled in its `pipeline` points every second) is reported next to it."""
    benchmark.group = "ingest: publish→stored latency at 5,000 readings/s"
    n = int(LATENCY_RATE * LATENCY_SECONDS)
    per_msg = 1 if shape == "single" else PER_GATEWAY
    n_msgs = n // per_msg
    users = env.probes if shape == "single" else env.gateways
    site = env.site(f"lat-{shape}-")
    s = env.settings.influx
    out: dict[str, Any] = {}
    time.sleep(1.5)  # the previous rounds' stats intervals are over

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        # one probe sensor per connection: every single-reading sensor, each gateway's first sensor
        probes = [u for u, _ in users] if shape == "single" else [f"{g}S000" for g, _ in users]
        out["poller"] = Child(
            poller_main, s.url, s.database, s.admin_user, s.password("admin"), site, probes, POLL_S
        )
        out["pub"] = publishers(
            env,
            "paced" if shape == "single" else "paced-gateway",
            site,
            users,
            steps=n_msgs // PUBLISHER_PROCESSES,
            rate=LATENCY_RATE / per_msg / PUBLISHER_PROCESSES,
        )
        out["target"] = worker.stats.written + n
        return (), {}

    def round_() -> None:
        out["start_ns"] = time.time_ns()
        out["pub"].go()
        out["published"] = out["pub"].finish()
        wait_for(lambda: worker.stats.written >= out["target"], "every paced reading stored")
        time.sleep(3 * POLL_S)
        out["poller"].send("stop")
        out["seen"], out["query_ms"] = out["poller"].recv()
        out["poller"].join()
        out["end_ns"] = time.time_ns()

    benchmark.pedantic(round_, setup=setup, rounds=1, iterations=1)
    assert env.count(site) == n
    seen: dict[tuple[str, int], int] = out["seen"]  # one probe reading per message
    # a message the poller never saw (its probe's cursor passed it) counts as stored when the round
    # ended: an upper bound, so a missed slow reading cannot flatter the percentiles
    missed = n_msgs - len(seen)
    assert 0 <= missed <= n_msgs // 1000, f"the poller missed {missed} of {n_msgs} messages"
    lat = np.array(
        [(arrived - ts) / 1e6 for (_, ts), arrived in seen.items()]
        + [(out["end_ns"] - ts) / 1e6 for ts in missed_timestamps(env, site, seen, missed)]
    )
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    q = np.array(out["query_ms"])
    pub = out["published"]
    achieved = pub["messages"] * per_msg / ((pub["published_ns"] - pub["first_ns"]) / 1e9)
    rows = env.influx.rows(
        'SELECT "lag_p50_ms", "lag_p99_ms", "ingest_p50_ms", "ingest_p99_ms", "batch_mean" FROM "pipeline" '
        "WHERE time > $a AND time <= $b",
        {"a": out["start_ns"] + SECOND, "b": out["end_ns"]},
    )
    w99 = [r["lag_p99_ms"] for r in rows if r.get("lag_p99_ms") is not None]
    w50 = [r["lag_p50_ms"] for r in rows if r.get("lag_p50_ms") is not None]
    worker_p99 = max(w99) if w99 else float("nan")
    worker_p50 = float(np.median(w50)) if w50 else float("nan")
    # receipt by the worker → stored: what of the latency is the worker's own (batching, scoring,
    # the write); the rest is publisher → broker → the worker's socket
    i99 = [r["ingest_p99_ms"] for r in rows if r.get("ingest_p99_ms") is not None]
    i50 = [r["ingest_p50_ms"] for r in rows if r.get("ingest_p50_ms") is not None]
    in_worker_p99 = max(i99) if i99 else float("nan")
    in_worker_p50 = float(np.median(i50)) if i50 else float("nan")
    resolution = f"poll every {POLL_S * 1000:.0f} ms + query {q.mean():.1f} ms mean / {q.max():.1f} ms max"
    RESULTS[f"latency ({shape})"] = {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "rate": achieved,
        "worker_p50": worker_p50,
        "worker_p99": worker_p99,
        "resolution": resolution,
    }
    benchmark.extra_info.update(
        {
            "readings": n,
            "messages": n_msgs,
            "messages_seen_by_poller": len(seen),
            "messages_missed_by_poller": missed,
            "publish_rate_achieved": round(achieved),
            "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1),
            "resolution": resolution,
            "worker_lag_p50_ms_median_of_1s": round(worker_p50, 1),
            "worker_lag_p99_ms_max_of_1s": round(worker_p99, 1),
            "receipt_to_stored_p50_ms_median_of_1s": round(in_worker_p50, 1),
            "receipt_to_stored_p99_ms_max_of_1s": round(in_worker_p99, 1),
        }
    )
    print(
        f"\nlatency ({shape}) at {achieved:,.0f} readings/s: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms (poller saw {len(seen)}/{n_msgs} messages, the rest counted at the end; "
        f"{resolution}; "
        f"worker's own lag p50 {worker_p50:.1f} ms, p99 {worker_p99:.1f} ms; of it from receipt by the "
        f"worker p50 {in_worker_p50:.1f} ms, p99 {in_worker_p99:.1f} ms)"
    )


def missed_timestamps(env: Env, site: str, seen: dict[tuple[str, int], int], missed: int) -> list[int]:
    """Timestamps of the probe readings of `site` the poller did not see (empty when none)."""
    if not missed:
        return []
    probes = {p for p, _ in seen}
    rows = env.influx.rows(
        'SELECT "flow_rate_lps" FROM "reading" WHERE "site" = $site GROUP BY "sensor_id"', {"site": site}
    )
    return [r["time"] for r in rows if r["sensor_id"] in probes and (r["sensor_id"], r["time"]) not in seen]


# ---------------------------------------------------------------------------- summary
def print_summary() -> None:
    r = RESULTS
    lines = ["", "=== ingest end to end: ratios of best rounds [of median rounds] ==="]
    for name, v in r.items():
        if not name.startswith("latency"):
            lines.append(
                f"{name:<46} {v['best']:>9,.0f} readings/s [{v['median']:,.0f}]"
                f"  {v['msgs_best']:>7,.0f} msg/s"
            )

    def ratio(a: str, b: str, target: float | None) -> None:
        if a in r and b in r:
            best, med = r[a]["best"] / r[b]["best"], r[a]["median"] / r[b]["median"]
            goal = (
                "" if target is None else f" — target ≥ {target:.0%}: {'met' if best >= target else 'missed'}"
            )
            lines.append(f"{a} ÷ {b}: {best:.0%} [{med:.0%}]{goal}")

    sys_single, sys_gw = (
        "system: MQTT → worker → InfluxDB (single)",
        "system: MQTT → worker → InfluxDB (gateway)",
    )
    ratio(sys_single, "ceiling B: broker + bare aiomqtt (single)", 0.8)
    ratio(sys_single, "ceiling B: bare aiomqtt draining a backlog (single)", None)
    ratio(sys_gw, "ceiling A: InfluxDB /write alone", 0.7)
    ratio(sys_gw, "ceiling B: broker + bare aiomqtt (gateway)", None)
    for name, v in r.items():
        if name.startswith("latency"):
            lines.append(
                f"publish→stored, {name[9:-1]} messages at {v['rate']:,.0f} readings/s: "
                f"p50 {v['p50']:.0f} ms, p95 {v['p95']:.0f} ms, p99 {v['p99']:.0f} ms — target p99 < 250 ms: "
                f"{'met' if v['p99'] < 250 else 'missed'} "
                f"({v['resolution']}; worker's own p99 {v['worker_p99']:.0f} ms)"
            )
    print("\n".join(lines))
