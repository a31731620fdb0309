"""The worker's counters and latency samples, and the `pipeline` point they become (DESIGN.md §4).

Each point describes the interval since the previous one: its counts, latency percentiles and batch
sizes; `_total` twins carry the counts since the worker started. Latencies are sampled
(a bounded number of readings per batch), so the stats cost does not grow with the batch.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# readings per written batch whose latency is recorded, and samples kept per interval
SAMPLES_PER_BATCH = 64
MAX_SAMPLES = 20_000


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def reading_timestamps(line_protocol: bytes, limit: int = SAMPLES_PER_BATCH) -> list[int]:
    """Timestamps (ns) of up to `limit` `reading` points spread evenly over a line-protocol body.

    Samples by byte offset — the line around each of `limit` evenly spaced offsets — instead of
    splitting the body (tens of megabytes for a gateway backlog) into lines on the event loop."""
    out: list[int] = []
    n = len(line_protocol)
    if n == 0:
        return out
    seen: set[int] = set()
    for k in range(limit):
        at = k * n // limit
        start = line_protocol.rfind(b"\n", 0, at) + 1
        if start in seen:
            continue
        seen.add(start)
        end = line_protocol.find(b"\n", start)
        line = line_protocol[start : end if end >= 0 else n]
        if line.startswith(b"reading,"):
            ts = line[line.rfind(b" ") + 1 :]
            try:
                out.append(int(ts))
            except ValueError:
                continue
    return out


def count_readings(line_protocol: bytes) -> int:
    """How many `reading` points a line-protocol body holds (each point is one line)."""
    n = line_protocol.count(b"\nreading,")
    return n + 1 if line_protocol.startswith(b"reading,") else n


@dataclass
class WorkerStats:
    """Everything the `pipeline` point reports; the worker updates it, tests read it."""

    received: int = 0  # messages taken from the broker
    foreign: int = 0  # messages of other partitions, acknowledged unprocessed
    processed: int = 0  # messages of this partition through the pipeline
    readings: int = 0  # good readings the pipeline produced
    written: int = 0  # readings InfluxDB accepted (directly or from the spool)
    rate_limited: int = 0
    stale: int = 0  # readings not newer than their sensor's newest (redeliveries, late data)
    alerts: int = 0
    alerts_published: int = 0
    batches: int = 0
    spooled_batches_total: int = 0  # batches that went to the spool
    write_errors: int = 0  # failed write attempts (each retry counts)
    write_rejected: int = 0  # batches InfluxDB refused with a 4xx
    acked: int = 0
    dead_letter: Counter[str] = field(default_factory=Counter)
    # gauges, set by the worker from its spool
    spool_batches: int = 0
    spool_bytes: int = 0
    # interval samples
    _lag_ms: list[float] = field(default_factory=list)
    _ingest_ms: list[float] = field(default_factory=list)
    _batch_sizes: list[int] = field(default_factory=list)
    _last: dict[str, int] = field(default_factory=dict)
    _last_ns: int = 0
    _started_ns: int = field(default_factory=time.time_ns)

    def batch(self, size: int) -> None:
        self.batches += 1
        if len(self._batch_sizes) < MAX_SAMPLES:
            self._batch_sizes.append(size)

    def written_batch(self, line_protocol: bytes, received_ns: list[int], now_ns: int | None = None) -> None:
        """A body InfluxDB accepted: count its readings, sample reading→stored and receipt→stored lag."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        self.written += count_readings(line_protocol)
        if len(self._lag_ms) < MAX_SAMPLES:
            self._lag_ms.extend((now_ns - ts) / 1e6 for ts in reading_timestamps(line_protocol))
        if received_ns and len(self._ingest_ms) < MAX_SAMPLES:
            picks = (
                received_ns
                if len(received_ns) <= SAMPLES_PER_BATCH
                else random.sample(received_ns, SAMPLES_PER_BATCH)
            )
            self._ingest_ms.extend((now_ns - ts) / 1e6 for ts in picks)

    def percentiles(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, samples in (("lag", self._lag_ms), ("ingest", self._ingest_ms)):
            if samples:
                p50, p95, p99 = np.percentile(np.asarray(samples), [50, 95, 99])
                out.update(
                    {f"{name}_p50_ms": float(p50), f"{name}_p95_ms": float(p95), f"{name}_p99_ms": float(p99)}
                )
        if self._batch_sizes:
            sizes = np.asarray(self._batch_sizes)
            out.update({"batch_mean": float(sizes.mean()), "batch_max": float(sizes.max())})
        return out

    def counters(self) -> dict[str, int]:
        """The cumulative counters since the worker started."""
        out = {
            "received": self.received,
            "foreign": self.foreign,
            "processed": self.processed,
            "readings": self.readings,
            "written": self.written,
            "rate_limited": self.rate_limited,
            "stale": self.stale,
            "alerts": self.alerts,
            "batches": self.batches,
            "spooled": self.spooled_batches_total,
            "write_errors": self.write_errors,
            "write_rejected": self.write_rejected,
            "dead_letter": sum(self.dead_letter.values()),
        }
        out.update({f"dead_letter_{reason}": n for reason, n in sorted(self.dead_letter.items())})
        return out

    def line(self, worker: str, now_ns: int | None = None) -> bytes:
        """The `pipeline` point for the interval since the previous one, and reset the interval.

        Counter fields hold the interval's counts (so `sum()` over a time range and rates work across
        worker restarts), each with a `_total` twin since the worker started; `spooled_batches` and
        `spooled_bytes` are what the spool holds now.
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        totals = self.counters()
        fields = [f"{k}={v - self._last.get(k, 0)}i" for k, v in totals.items()]
        fields += [f"{k}_total={v}i" for k, v in totals.items()]
        fields += [f"spooled_batches={self.spool_batches}i", f"spooled_bytes={self.spool_bytes}i"]
        interval_ns = now_ns - (self._last_ns or self._started_ns)
        fields.append(f"interval_s={max(0, interval_ns) / 1e9:.3f}")
        fields += [f"{k}={v:.3f}" for k, v in self.percentiles().items()]
        self._last = totals
        self._last_ns = now_ns
        self._lag_ms.clear()
        self._ingest_ms.clear()
        self._batch_sizes.clear()
        return f"pipeline,worker={_escape_tag(worker)} {','.join(fields)} {now_ns}\n".encode()

    def summary(self) -> str:
        """One status line for the log."""
        dl = sum(self.dead_letter.values())
        return (
            f"received {self.received} written {self.written} rate_limited {self.rate_limited} "
            f"dead_letter {dl} spool {self.spool_batches} batches/{self.spool_bytes} B "
            f"write_errors {self.write_errors}"
        )
