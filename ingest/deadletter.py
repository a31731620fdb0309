"""The dead-letter store: messages the worker will not store, as rotated JSONL, with counts by reason.

One line per message:
`{"received": RFC 3339, "received_ns", "topic", "reason", "message", "payload_b64"[, "sensor_ids"]}`.
Reasons are the decoder's codes (docs/reason-codes.md), `rate_limited` (DESIGN.md §7) and
`write_rejected` (InfluxDB refused the batch with a 4xx: a bug to look at, not to retry forever).
`deadletter.jsonl` rotates to `deadletter.jsonl.1` … `.N` by size, like logrotate.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import IO, Any

FILE_NAME = "deadletter.jsonl"


class DeadLetters:
    def __init__(self, directory: Path, max_bytes: int, backups: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.backups = backups
        self.counts: Counter[str] = Counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / FILE_NAME
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(
        self,
        *,
        topic: str,
        reason: str,
        message: str,
        received_ns: int,
        payload: bytes,
        sensor_ids: list[str] | None = None,
        count: int = 1,
    ) -> None:
        """Record one message; `count` is how many readings it stands for (a gateway batch's
        rate-limited readings share one line but each counts)."""
        record: dict[str, Any] = {
            "received": dt.datetime.fromtimestamp(received_ns / 1e9, dt.UTC).isoformat(),
            "received_ns": received_ns,
            "topic": topic,
            "reason": reason,
            "message": message,
            "payload_b64": base64.b64encode(payload).decode("ascii"),
        }
        if sensor_ids is not None:
            record["sensor_ids"] = sensor_ids
        line = json.dumps(record, separators=(",", ":")) + "\n"
        if self._size > 0 and self._size + len(line) > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._size += len(line)
        self.counts[reason] += count

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        oldest = self.path.with_name(f"{FILE_NAME}.{self.backups}")
        oldest.unlink(missing_ok=True)
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{FILE_NAME}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{FILE_NAME}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{FILE_NAME}.1"))
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0


def read_dead_letters(directory: Path) -> list[dict[str, Any]]:
    """Every dead letter under `directory`, oldest first (rotated files included)."""
    directory = Path(directory)
    rotated = [p for p in directory.glob(f"{FILE_NAME}.*") if p.suffix[1:].isdigit()]
    files = sorted(rotated, key=lambda p: -int(p.suffix[1:]))
    files.append(directory / FILE_NAME)
    out: list[dict[str, Any]] = []
    for f in files:
        if f.exists():
            out.extend(json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line)
    return out
