"""Worker stats (the `pipeline` point), partitioning, body splitting and batching."""

from __future__ import annotations

import asyncio
import time
import zlib

import pytest
from tests.utils.lineproto import parse

from infrawatch.ingest.mqtt import Inbox, Received
from infrawatch.ingest.partition import Partition, PartitionError
from infrawatch.ingest.stats import WorkerStats, count_readings, reading_timestamps
from infrawatch.ingest.writer import split_body

NOW = 1_767_225_600 * 10**9


def body(n: int, t0: int = NOW) -> bytes:
    lines = [
        f"reading,kind=energy,sensor_id=E{i},site=a,zone=STANDARD energy_kwh={i}.0 {t0 + i}" for i in range(n)
    ]
    lines.append(f"alert,kind=energy,sensor_id=E0,site=a,severity=high,zone=STANDARD risk=2i {t0}")
    return ("\n".join(lines) + "\n").encode()


def test_counts_and_samples_reading_points() -> None:
    b = body(500)
    assert count_readings(b) == 500
    ts = reading_timestamps(b, limit=50)
    assert 40 <= len(ts) <= 60
    assert all(NOW <= t < NOW + 500 for t in ts)
    assert len(set(ts)) == len(ts)
    assert max(ts) - min(ts) > 400  # spread over the body, not its first lines
    assert reading_timestamps(b"", limit=5) == []
    assert reading_timestamps(b"alert,x=1 risk=2i 5\n", limit=5) == []


def test_pipeline_point_has_counters_and_lag_percentiles() -> None:
    s = WorkerStats()
    s.processed = 7
    s.dead_letter["invalid_json"] = 2
    s.batch(7)
    s.written_batch(body(10, t0=NOW - 2_000_000_000), [NOW - 1_000_000_000] * 3, now_ns=NOW)
    (point,) = parse(s.line("w 1", now_ns=NOW))
    assert point.measurement == "pipeline"
    assert point.tags == {"worker": "w 1"}
    assert point.timestamp == NOW
    fields = point.fields
    assert fields["written"] == 10
    assert fields["processed"] == 7
    assert fields["dead_letter"] == 2
    assert fields["dead_letter_invalid_json"] == 2
    assert fields["lag_p50_ms"] == pytest.approx(2000, abs=1)
    assert fields["ingest_p99_ms"] == pytest.approx(1000)
    assert fields["batch_max"] == 7
    assert fields["written_total"] == 10
    # the next point counts its own interval; totals go on
    s.written_batch(body(3), [], now_ns=NOW)
    (again,) = parse(s.line("w 1", now_ns=NOW + 10**9))
    assert again.fields["written"] == 3
    assert again.fields["written_total"] == 13
    assert again.fields["dead_letter"] == 0
    assert again.fields["interval_s"] == pytest.approx(1.0)
    assert "ingest_p50_ms" not in again.fields


def test_partition_parsing_and_stable_ownership() -> None:
    assert Partition.parse("1/3") == Partition(1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(PartitionError, match="i/N"):
            Partition.parse(bad)
    parts = [Partition(i, 3) for i in range(3)]
    topics = [f"infrawatch/s/water_flow/S{i}/telemetry" for i in range(300)]
    topics += [f"infrawatch/s/gateway/G{i}/batch" for i in range(30)]
    for t in topics:
        owners = [p.index for p in parts if p.owns_topic(t)]
        assert owners == [zlib.crc32(t.split("/")[3].encode()) % 3]  # exactly one, by CRC-32 (not hash())
    counts = [sum(p.owns_topic(t) for t in topics) for p in parts]
    assert min(counts) > 60
    assert [p.index for p in parts if p.owns_topic("odd/topic")] == [0]


def test_split_body_cuts_at_line_ends() -> None:
    b = body(1000)
    pieces = split_body(b, limit=4096)
    assert b"".join(pieces) == b
    assert all(len(p) <= 4096 and p.endswith(b"\n") for p in pieces)
    assert split_body(b"short", limit=4096) == [b"short"]


def _msg(i: int, received_ns: int | None = None) -> Received:
    return Received("t", b"%d" % i, i, 1, time.time_ns() if received_ns is None else received_ns, 1)


def test_inbox_gives_full_batches_at_once_and_partial_ones_after_the_linger() -> None:
    async def scenario() -> None:
        inbox = Inbox()
        for i in range(25):
            inbox.put(_msg(i))
        first = await inbox.take(10, linger_s=60)  # full: no waiting
        assert [m.mid for m in first] == list(range(10))
        assert len(await inbox.take(10, linger_s=60)) == 10
        rest = await inbox.take(10, linger_s=0.01)  # 5 left: returned after the linger
        assert [m.mid for m in rest] == list(range(20, 25))

        waiter = asyncio.create_task(inbox.take(3, linger_s=60))
        await asyncio.sleep(0)
        for i in range(3):
            inbox.put(_msg(100 + i))
        assert [m.mid for m in await waiter] == [100, 101, 102]

        waiter = asyncio.create_task(inbox.take(3, linger_s=60))
        await asyncio.sleep(0)
        inbox.put(_msg(7))
        inbox.close()  # a disconnect or a stop hands out what there is
        assert [m.mid for m in await waiter] == [7]
        assert await inbox.take(3, linger_s=60) == []

    asyncio.run(scenario())


def test_inbox_linger_counts_from_the_oldest_messages_receipt() -> None:
    """Messages that queued while the previous batch was processed or written have waited already:
    a partial batch whose oldest message is past the linger is handed out at once, a younger one
    only after the rest of its linger."""

    async def scenario() -> None:
        inbox = Inbox()
        inbox.put(_msg(1, received_ns=time.time_ns() - 2_000_000_000))  # arrived 2 s ago
        inbox.put(_msg(2))
        t = time.perf_counter()
        assert [m.mid for m in await inbox.take(10, linger_s=1.0)] == [1, 2]
        assert time.perf_counter() - t < 0.5

        inbox.put(_msg(3, received_ns=time.time_ns() - 1_000_000_000))  # 1 s ago, linger 1.5 s
        t = time.perf_counter()
        assert [m.mid for m in await inbox.take(10, linger_s=1.5)] == [3]
        waited = time.perf_counter() - t
        assert 0.3 < waited < 1.2, waited  # the rest of its linger (~0.5 s), not a whole one

    asyncio.run(scenario())
