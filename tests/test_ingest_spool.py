"""The disk spool: order, bounds, persistence across reopen, and torn or corrupt tails."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrawatch.ingest.spool import Spool, SpoolFullError


def drain(spool: Spool) -> list[bytes]:
    out = []
    while (rec := spool.peek()) is not None:
        out.append(rec)
        spool.pop()
    return out


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    records = [f"reading,sensor_id=S{i} v={i} {i}\n".encode() * (i % 3 + 1) for i in range(40)]
    for r in records:
        spool.append(r)
    assert len(segments(tmp_path)) > 3
    assert spool.pending_batches == 40
    assert spool.pending_bytes == sum(len(r) + 8 for r in records)
    assert drain(spool) == records
    assert spool.empty
    assert spool.pending_bytes == 0
    assert segments(tmp_path) == []  # written segments are removed


def test_pending_records_survive_a_reopen_and_popped_ones_stay_popped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for i in range(10):
        spool.append(b"batch %d" % i)
    for _ in range(4):
        spool.pop()
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    assert again.pending_batches == 6
    assert drain(again) == [b"batch %d" % i for i in range(4, 10)]


def test_appends_after_a_full_drain_are_kept_on_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"first")
    assert drain(spool) == [b"first"]
    spool.append(b"second")
    spool.close()
    assert drain(Spool(tmp_path, max_bytes=1 << 20)) == [b"second"]


def test_full_spool_refuses_until_drained(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1024)
    body = b"x" * 200
    for _ in range(4):
        spool.append(body)
    assert not spool.fits(len(body))
    with pytest.raises(SpoolFullError, match="SPOOL_MAX_BYTES"):
        spool.append(body)
    assert spool.pending_batches == 4
    spool.pop()
    spool.append(body)
    assert spool.pending_batches == 4
    spool.close()


def test_an_empty_spool_takes_one_record_larger_than_its_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1024)
    spool.append(b"y" * 5000)
    assert spool.peek() == b"y" * 5000
    with pytest.raises(SpoolFullError):
        spool.append(b"z")
    spool.close()


@pytest.mark.parametrize("cut", [1, 5, 8, 12])
def test_a_torn_last_record_is_dropped_on_reopen(tmp_path: Path, cut: int) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"complete one")
    spool.append(b"complete two")
    spool.append(b"torn record....")
    spool.close()
    (seg,) = segments(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - cut])  # a crash in the middle of the last write
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.pending_batches == 2
    again.append(b"after the crash")
    assert drain(again) == [b"complete one", b"complete two", b"after the crash"]


def test_a_corrupt_last_record_is_dropped_on_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"good")
    spool.append(b"flipped bits")
    spool.close()
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert drain(Spool(tmp_path, max_bytes=1 << 20)) == [b"good"]


def test_a_cursor_off_a_record_boundary_resends_its_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for r in (b"a", b"b", b"c"):
        spool.append(r)
    spool.pop()
    spool.close()
    seq, _ = (tmp_path / "cursor").read_text().split()
    (tmp_path / "cursor").write_text(f"{seq} 3\n")
    # re-sending is safe: InfluxDB writes are idempotent
    assert drain(Spool(tmp_path, max_bytes=1 << 20)) == [b"a", b"b", b"c"]
