"""`infrawatch simulate`: the plan (sensors, pacing, planted incidents, payloads) and the live run
against a real Mosquitto (the `stack` fixture), checked by a plain subscriber."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.utils.mqtt import Collector, PersistentCollector

from infrawatch import core
from infrawatch.ingest import broker_admin
from infrawatch.ingest.publisher import ConnectError, Fleet
from infrawatch.ingest.simulate import (
    INCIDENT_KIND,
    IncidentRequest,
    Plan,
    SimConfig,
    SimulationError,
    parse_incidents,
    plan,
    run_simulation,
    schedule_text,
    simulate,
)

START_NS = 1_800_000_000_000_000_000
ROOT = Path(__file__).resolve().parents[1]


def all_readings(p: Plan) -> list[tuple[int, bytes, str]]:
    """Every reading of a finite plan, in publishing order, stamped as the live run stamps them."""
    total = p.total_slots()
    assert total is not None
    n = len(p.slots)
    items = [(g % n, g // n) for g in range(total)]
    return p.readings(items, [START_NS + p.slot_offset_ns(g) for g in range(total)])


# ------------------------------------------------------------------------------ incidents spec
def test_parse_incidents() -> None:
    assert parse_incidents("leak@60, burst@120.5,contamination@3s") == (
        IncidentRequest("leak", 60.0),
        IncidentRequest("burst", 120.5),
        IncidentRequest("contamination", 3.0),
    )
    assert parse_incidents("none") == ()
    for bad in ("leak", "flood@10", "leak@-1", "leak@ten"):
        with pytest.raises(SimulationError, match="TYPE@SECONDS"):
            parse_incidents(bad)


def test_config_errors_are_clear() -> None:
    with pytest.raises(SimulationError, match="unknown kinds"):
        SimConfig(sensors=3, kinds=("water_flow", "steam"))
    with pytest.raises(SimulationError, match="rate"):
        SimConfig(rate=0)
    with pytest.raises(SimulationError, match="not simulated"):
        plan(SimConfig(sensors=4, kinds=("energy",), incidents=(IncidentRequest("leak", 10),)))
    with pytest.raises(SimulationError, match="after the end"):
        plan(SimConfig(sensors=4, duration_s=5, incidents=(IncidentRequest("leak", 10),)))


# ------------------------------------------------------------------------------ the plan
def test_plan_is_deterministic_from_the_seed() -> None:
    cfg = SimConfig(sensors=12, rate=2, duration_s=30, seed=3)
    a, b = plan(cfg), plan(cfg)
    assert schedule_text(a) == schedule_text(b)
    assert [r[1] for r in all_readings(a)] == [r[1] for r in all_readings(b)]
    other = plan(SimConfig(sensors=12, rate=2, duration_s=30, seed=4))
    assert [r[1] for r in all_readings(other)] != [r[1] for r in all_readings(a)]


def test_every_payload_decodes_to_the_simulated_reading() -> None:
    p = plan(SimConfig(sensors=9, rate=2, duration_s=40, site="plant-7", shape="mixed"))
    out = all_readings(p)
    payloads, topics = [o[1] for o in out], [o[2] for o in out]
    batch = core.decode(payloads, topics)
    assert batch.errors == []
    assert len(batch) == len(out)
    # the readings are the simulated ones, each stamped with its slot on the wall clock
    n = len(p.slots)
    slot_ts = {}
    for g in range(p.total_slots() or 0):
        slot_ts[(g % n, g // n)] = START_NS + p.slot_offset_ns(g)
    assert set(batch.site) == {"plant-7"}
    for j, (si, _, topic) in enumerate(out):
        s = p.slots[si]
        assert batch.sensor_id[j] == s.sensor.sensor_id
        assert batch.kind[j] == s.sensor.kind
        assert topic == f"infrawatch/plant-7/{s.sensor.kind}/{s.sensor.sensor_id}/telemetry"
    # stamps are the slot times: whole milliseconds, strictly increasing per sensor, 1/rate apart
    for sid in set(batch.sensor_id):
        ts = batch.timestamp_ns[np.array(batch.sensor_id) == sid]
        assert np.all(np.diff(ts) > 0)
        assert np.all(np.diff(ts) % 500_000_000 == 0)  # 1/rate = 0.5 s, dropouts skip whole steps
    # field values are the simulation's, exactly (payloads write floats with repr); in each
    # sensor's publishing order its present steps follow one another
    ids = np.array(batch.sensor_id)
    for s in p.slots:
        rows = s.source.rows[s.local, s.offset : s.offset + (p.rounds or 0)]
        rows = rows[rows >= 0]
        mine = ids == s.sensor.sensor_id
        assert mine.sum() == len(rows)
        for name, values in s.source.data.fields.items():
            want = values[rows]
            have = batch.fields[name][mine]
            np.testing.assert_array_equal(have[~np.isnan(want)], want[~np.isnan(want)])


def test_both_payload_shapes_and_pacing() -> None:
    p = plan(SimConfig(sensors=6, rate=4, duration_s=10, shape="mixed", incidents=()))
    shapes = {s.sensor.sensor_id: s.nested for s in p.slots}
    assert set(shapes.values()) == {True, False}
    for si, payload, _ in all_readings(p):
        body = json.loads(payload)
        assert ("measurements" in body) == p.slots[si].nested
    # slots spread evenly over a round: N sensors at `rate` → one slot every 1/(N·rate) s
    offsets = [p.slot_offset_ns(g) for g in range(60)]
    assert np.all(np.diff(offsets) > 0)
    assert offsets[24] - offsets[0] == 1_000_000_000  # 24 slots = one second at 6 sensors × 4/s
    # the kinds interleave within a round
    assert {p.slots[j].sensor.kind for j in sorted(range(6), key=lambda j: p.slots[j].rank)[:3]} == {
        "water_flow",
        "water_quality",
        "energy",
    }


def test_planted_incidents_happen_where_the_schedule_says() -> None:
    wanted = parse_incidents("leak@20,burst@30,contamination@25,high_consumption@35,low_consumption@40")
    cfg = SimConfig(sensors=30, rate=3, duration_s=60, incidents=wanted)
    p = plan(cfg)
    requested = [i for i in p.incidents if i.requested]
    assert sorted((i.type, i.kind) for i in requested) == sorted((r.type, r.kind) for r in wanted)
    n = len(p.slots)
    for r in wanted:
        inc = next(i for i in requested if i.type == r.type)
        # starts in the first slot of its sensor at or after the requested second
        assert r.at_s <= inc.start_s < r.at_s + 1 / cfg.rate
        slot = next(s for s in p.slots if s.sensor.sensor_id == inc.sensor_id)
        w = round(inc.start_s * cfg.rate * n - slot.rank) // n
        label_names = slot.source.data.label_names
        row_before = slot.source.rows[slot.local, slot.offset + w - 1]
        row_at = slot.source.rows[slot.local, slot.offset + w]
        # the simulator's own label says the incident begins exactly at that reading
        assert label_names[slot.source.data.label[row_at]] == r.type
        assert row_before < 0 or slot.source.data.label[row_before] == 0
    # every other sensor publishes an incident-free series
    hosts = {i.sensor_id for i in p.incidents}
    for s in p.slots:
        if s.sensor.sensor_id not in hosts:
            rows = s.source.rows[s.local, s.offset : s.offset + (p.rounds or 0)]
            assert not s.source.data.label[rows[rows >= 0]].any()


def test_default_schedule_has_one_incident_of_each_type() -> None:
    p = plan(SimConfig(sensors=30, rate=2, duration_s=400))
    assert sorted(i.type for i in p.incidents if i.requested) == sorted(INCIDENT_KIND)
    assert min(i.start_s for i in p.incidents) >= 45  # after the warm-up the models need
    text = schedule_text(p)
    for t in INCIDENT_KIND:
        assert t in text


def test_open_ended_runs_repeat_their_cycle() -> None:
    """Until stopped, each sensor's series repeats after `cycle` readings (memory stays bounded)."""
    p = plan(SimConfig(sensors=3, rate=1, incidents=parse_incidents("leak@100")))
    assert p.rounds is None
    assert p.total_slots() is None
    first = p.readings([(0, 5), (1, 5), (2, 5)], [START_NS] * 3)
    again = p.readings([(0, 5 + p.cycle), (1, 5 + p.cycle), (2, 5 + p.cycle)], [START_NS] * 3)
    assert first == again
    assert "repeats every" in schedule_text(p)


def test_gateways_batch_every_sensor_once() -> None:
    p = plan(SimConfig(sensors=12, rate=1, duration_s=5, gateways=3, incidents=()))
    assert len(p.gateways) == 3
    members = sorted(j for js in p.gateways.values() for j in js)
    assert members == list(range(12))


# ------------------------------------------------------------------------------ over a real broker
def _worker_creds(stack: Any) -> tuple[str, str]:
    return stack.settings.broker.worker_user, stack.settings.broker.password()


def test_each_sensor_publishes_as_itself(stack: Any) -> None:
    cfg = SimConfig(sensors=24, rate=5, duration_s=2, incidents=parse_incidents("burst@1"))

    async def main() -> tuple[Any, Collector]:
        async with Collector(stack.settings, "infrawatch/#") as col:
            stats = await simulate(stack.settings, cfg, reload=stack.broker.reload)
            await col.wait_for(stats.readings)
            return stats, col

    stats, col = asyncio.run(main())
    expected = all_readings(plan(cfg))
    assert stats.failed == 0
    assert stats.acked == stats.readings == len(expected)
    assert len(col.messages) == len(expected)
    assert {m.qos for m in col.messages} == {1}
    # one topic per sensor, with the expected number of readings each
    per_topic: dict[str, int] = {}
    for m in col.messages:
        per_topic[m.topic] = per_topic.get(m.topic, 0) + 1
    want: dict[str, int] = {}
    for _, _, topic in expected:
        want[topic] = want.get(topic, 0) + 1
    assert per_topic == want
    batch = core.decode([m.payload for m in col.messages], [m.topic for m in col.messages])
    assert batch.errors == []
    assert len(batch) == len(expected)
    assert [i.type for i in stats.incidents_started] == ["burst"]


def test_gateway_batches_over_the_broker(stack: Any) -> None:
    cfg = SimConfig(sensors=30, rate=4, duration_s=1.5, gateways=2, incidents=())

    async def main() -> tuple[Any, Collector]:
        async with Collector(stack.settings, "infrawatch/#") as col:
            stats = await simulate(stack.settings, cfg, reload=stack.broker.reload)
            await col.wait_for(stats.messages)
            return stats, col

    stats, col = asyncio.run(main())
    assert stats.failed == 0
    assert {m.topic for m in col.messages} == {
        "infrawatch/site-01/gateway/GW-site-01-01/batch",
        "infrawatch/site-01/gateway/GW-site-01-02/batch",
    }
    readings = [r for m in col.messages for r in json.loads(m.payload)]
    assert len(readings) == stats.readings == len(all_readings(plan(cfg)))
    batch = core.decode([m.payload for m in col.messages], [m.topic for m in col.messages])
    assert batch.errors == []
    assert len(batch) == stats.readings
    assert sorted(set(batch.sensor_id)) == sorted(s.sensor.sensor_id for s in plan(cfg).slots)


def test_acl_rejects_publishing_under_another_id(stack: Any) -> None:
    settings = stack.settings
    pw = broker_admin.add_users(settings, [("S-A", "sensor"), ("S-B", "sensor"), ("GW-A", "gateway")])
    stack.broker.reload()

    async def main() -> tuple[list[BaseException | None], Collector]:
        async with (
            Collector(settings, "infrawatch/#") as col,
            Fleet(settings.broker.host, settings.broker.port) as fleet,
        ):
            await fleet.add("S-A", pw["S-A"])
            await fleet.add("GW-A", pw["GW-A"])
            futs = [
                fleet.publish("S-A", "infrawatch/x/water_flow/S-B/telemetry", b'{"flow":1}'),
                fleet.publish("GW-A", "infrawatch/x/gateway/GW-B/batch", b"[]"),
                fleet.publish("S-A", "infrawatch/x/gateway/GW-A/batch", b"[]"),
                fleet.publish("S-A", "infrawatch/x/water_flow/S-A/telemetry", b'{"flow":1}'),
            ]
            await fleet.drain(10)
            await col.wait_for(1)
            await asyncio.sleep(0.3)  # nothing else may arrive (the allowed one came after the others)
            return [f.exception() for f in futs], col

    results, col = asyncio.run(main())
    assert [str(e) if e else None for e in results[:3]] == [
        "S-A: broker refused the message: Not authorized",
        "GW-A: broker refused the message: Not authorized",
        "S-A: broker refused the message: Not authorized",
    ]
    assert results[3] is None
    assert [m.topic for m in col.messages] == ["infrawatch/x/water_flow/S-A/telemetry"]


def test_run_simulation_stops_on_the_event(stack: Any) -> None:
    """Open-ended run in a thread: setting `stop` ends it, with everything sent acknowledged."""
    stop = threading.Event()
    lines: list[str] = []
    done: dict[str, Any] = {}

    def progress(line: str) -> None:
        lines.append(line)
        if "published" in line and not stop.is_set():
            stop.set()  # the first status line: enough has gone out

    def run() -> None:
        done["stats"] = run_simulation(
            stack.settings,
            SimConfig(sensors=9, rate=10, incidents=()),
            stop=stop,
            reload=stack.broker.reload,
            progress=progress,
        )

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive()
    stats = done["stats"]
    assert stats.readings > 0
    assert stats.acked == stats.readings
    assert stats.failed == 0
    assert any(line.startswith("done:") for line in lines)


def test_nothing_is_lost_across_a_broker_restart(stack: Any) -> None:
    """The broker restarts mid-run: every connection comes back and every reading is delivered
    (QoS 1 is at least once: a reading may arrive twice, never not at all)."""
    cfg = SimConfig(sensors=30, rate=5, duration_s=4, incidents=())

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        run = loop.create_task(simulate(stack.settings, cfg, reload=stack.broker.reload))
        while not run.done() and (stack.broker.proc is None or not col.snapshot()):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # well into the run
        await loop.run_in_executor(None, stack.broker.restart)
        return await run

    # the live run stamps its own start time, so compare what each sensor sent, distinct messages
    want: dict[str, int] = {}
    for _, _, topic in all_readings(plan(cfg)):
        want[topic] = want.get(topic, 0) + 1

    def per_topic(msgs: list[Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for topic, _ in {(m.topic, m.payload) for m in msgs}:
            out[topic] = out.get(topic, 0) + 1
        return out

    with PersistentCollector(stack.settings, "infrawatch/#") as col:
        stats = asyncio.run(main())
        asyncio.run(_until(lambda: per_topic(col.snapshot()) == want))
        got = col.snapshot()
    assert stats.failed == 0
    assert stats.acked == stats.readings == sum(want.values())
    assert stats.reconnects >= 30  # every sensor's connection was dropped and came back
    assert per_topic(got) == want
    assert len(got) >= stats.readings


async def _until(cond: Any, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def test_simulate_command_ends_cleanly_on_sigterm(stack: Any, tmp_path: Path) -> None:
    """`infrawatch simulate` as the local stack runs it: a child process, settings from the
    environment, the broker told through `--pid-file`; SIGTERM drains and exits 0."""
    b = stack.settings.broker
    assert stack.broker.proc is not None
    pid_file = tmp_path / "broker.pid"
    pid_file.write_text(f"{stack.broker.proc.pid}\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "pysrc"), str(ROOT)]),
        "INFRAWATCH_BROKER__HOST": b.host,
        "INFRAWATCH_BROKER__PORT": str(b.port),
        "INFRAWATCH_BROKER__PASSWORD_FILE": str(b.password_file),
        "INFRAWATCH_BROKER__ACL_FILE": str(b.acl_file),
    }
    cmd = [sys.executable, "-m", "infrawatch.cli", "simulate", "--sensors", "6", "--rate", "5"]
    proc = subprocess.Popen(
        [*cmd, "--incidents", "none", "--pid-file", str(pid_file)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the first status line: it is publishing
        lines.append(line)
        if "published" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    lines += rest.splitlines()
    assert proc.returncode == 0, "".join(lines)
    done = [line for line in lines if line.startswith("done:")]
    assert len(done) == 1
    assert "failures 0" in done[0]
    assert "connected 6 broker identities" in "".join(lines)


def test_wrong_credentials_are_a_clear_error(stack: Any) -> None:
    settings = stack.settings
    broker_admin.add_users(settings, [("S-C", "sensor")])
    stack.broker.reload()

    async def main() -> None:
        async with Fleet(settings.broker.host, settings.broker.port) as fleet:
            await fleet.add("S-C", "not-its-password", retries=1)

    with pytest.raises(ConnectError, match="S-C: broker refused: Not authorized"):
        asyncio.run(main())


def test_sim_clock_stamps_each_kind_on_its_own_interval() -> None:
    p = plan(SimConfig(sensors=6, rate=2, duration_s=20, incidents=(), clock="sim"))
    out = [
        (si, payload, topic)
        for g in range(p.total_slots() or 0)
        for si, payload, topic in p.readings([(g % 6, g // 6)], [p.stamp_ns(g, START_NS)])
    ]
    batch = core.decode([o[1] for o in out], [o[2] for o in out])
    assert batch.errors == []
    interval = {"water_flow": 60, "water_quality": 300, "energy": 900}
    ids = np.array(batch.sensor_id)
    for s in p.slots:
        ts = batch.timestamp_ns[ids == s.sensor.sensor_id]
        steps = np.diff(ts) / (interval[s.sensor.kind] * 1e9)
        assert np.all(steps >= 1)
        assert np.all(steps == np.round(steps))  # whole intervals (a dropout skips one)
