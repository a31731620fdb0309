"""Dead letters: JSONL records with the raw payload, rotation by size, counts by reason."""

from __future__ import annotations

import base64
from pathlib import Path

from infrawatch.ingest.deadletter import DeadLetters, read_dead_letters


def test_records_carry_topic_reason_time_and_payload(tmp_path: Path) -> None:
    dl = DeadLetters(tmp_path, max_bytes=1 << 20, backups=2)
    raw = b"\xff not json"
    dl.add(
        topic="infrawatch/a/energy/E1/telemetry",
        reason="invalid_json",
        message="bad",
        received_ns=10**18,
        payload=raw,
    )
    dl.add(
        topic="infrawatch/a/gateway/G1/batch",
        reason="rate_limited",
        message="2 readings",
        received_ns=10**18 + 1,
        payload=b"[]",
        sensor_ids=["E1", "E2"],
        count=2,
    )
    dl.close()
    first, second = read_dead_letters(tmp_path)
    assert first["topic"] == "infrawatch/a/energy/E1/telemetry"
    assert first["reason"] == "invalid_json"
    assert base64.b64decode(first["payload_b64"]) == raw
    assert first["received"].startswith("2001-09-09T01:46:40")
    assert second["sensor_ids"] == ["E1", "E2"]
    assert dl.counts == {"invalid_json": 1, "rate_limited": 2}
    assert dl.total == 3


def test_rotation_keeps_the_newest_files_in_order(tmp_path: Path) -> None:
    dl = DeadLetters(tmp_path, max_bytes=2048, backups=2)
    for i in range(60):
        dl.add(topic="t", reason="too_large", message=str(i), received_ns=i, payload=b"p" * 64)
    dl.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["deadletter.jsonl", "deadletter.jsonl.1", "deadletter.jsonl.2"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    kept = [int(r["message"]) for r in read_dead_letters(tmp_path)]
    assert kept == list(range(60 - len(kept), 60))  # the oldest rotated away, the rest in order
    assert 10 < len(kept) < 60
    assert dl.counts["too_large"] == 60


def test_reopening_appends(tmp_path: Path) -> None:
    for i in range(2):
        dl = DeadLetters(tmp_path, max_bytes=1 << 20, backups=1)
        dl.add(topic="t", reason="not_object", message=str(i), received_ns=i, payload=b"1")
        dl.close()
    assert [r["message"] for r in read_dead_letters(tmp_path)] == ["0", "1"]
