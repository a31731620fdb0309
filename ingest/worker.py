"""The ingest worker: MQTT batches → `core.Pipeline` → InfluxDB (or the spool), acked only when safe.

Three stages, one event loop:

- **consume**: the `Inbox` hands out batches by size and time; each goes through one
  `Pipeline.process` call in a thread (it releases the GIL), its decode errors and rate-limited
  readings go to the dead letters, and the result joins a short delivery queue. A full queue stops
  the consumer, and then the broker holds the backlog (it sends at most its in-flight limit —
  `max_inflight_messages`, or our Receive Maximum over MQTT 5 — un-acknowledged).
- **deliver**: writes each body to InfluxDB with retries; on an outage it appends to the spool
  (fsynced) instead. While the spool holds anything, new bodies go behind it, and it is drained
  oldest first, so the order of writes is kept. Only then are the batch's messages acknowledged.
  When the spool is full, nothing is acknowledged until it drains.
- **stats**: a `pipeline` point every `stats_interval_s`, delivered like readings.

Per worker id, the spool lives in `<spool_dir>/<id>/`, dead letters in `<deadletter_dir>/<id>/` and the
pipeline's rolling state in `<state_file's dir>/<id>/<state_file's name>`, so workers sharing one
run directory never share files; a lock file refuses a second worker with the same id (it would also
share the broker session).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiomqtt

from infrawatch import core
from infrawatch.config import Settings
from infrawatch.detection.registry import KINDS, ActiveModels, ModelRegistry
from infrawatch.errors import UserError

from .deadletter import DeadLetters
from .mqtt import BrokerRefusedError, Inbox, MqttSource, Received
from .partition import Partition
from .spool import Spool
from .stats import WorkerStats
from .writer import InfluxWriter, WriteRejectedError, WriteUnavailableError

log = logging.getLogger("infrawatch.worker")

# batches processed but not yet stored; small, so a stalled InfluxDB stops consumption quickly
DELIVERY_QUEUE = 2
RECONNECT_MAX_S = 5.0
DRAIN_BACKOFF_MIN_S = 0.1
DRAIN_BACKOFF_MAX_S = 5.0


class WorkerError(UserError):
    """A problem the operator can fix; the message says how."""


@dataclass(slots=True)
class _Delivery:
    body: bytes
    messages: list[Received] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)


class _Stop:
    pass


_STOP = _Stop()


def worker_paths(settings: Settings) -> tuple[Path, Path, Path]:
    """(spool dir, dead-letter dir, state file) of this worker id."""
    w = settings.worker
    return w.spool_dir / w.id, w.deadletter_dir / w.id, w.state_file.parent / w.id / w.state_file.name


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        w = settings.worker
        try:
            self.partition = Partition.parse(w.partition)
        except ValueError as e:
            raise WorkerError(str(e)) from e
        self.spool_dir, self.deadletter_dir, self.state_file = worker_paths(settings)
        self.stats = WorkerStats()
        self.stopping = asyncio.Event()
        self.subscribed = asyncio.Event()  # set on every (re)subscription; tests wait for it
        self.inbox = Inbox()
        self._lock_file: IO[str] | None = None
        self._queue: asyncio.Queue[_Delivery | _Stop] = asyncio.Queue(DELIVERY_QUEUE)
        self._deliver_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._next_drain = 0.0
        self._drain_backoff = DRAIN_BACKOFF_MIN_S
        self._outage = False
        self._spool_full = False
        self._pipeline_lock = asyncio.Lock()
        self._alert_error_logged = False
        # set in start()
        self.pipeline: core.Pipeline
        self.models: ActiveModels
        self.spool: Spool
        self.deadletters: DeadLetters
        self.writer: InfluxWriter
        self.source: MqttSource

    # ------------------------------------------------------------------ life cycle
    def stop(self) -> None:
        """Begin a clean shutdown: stop consuming, store and ack what was taken, snapshot, return."""
        if not self.stopping.is_set():
            log.info("worker %s: stopping", self.settings.worker.id)
        self.stopping.set()
        self.inbox.close()

    def _start(self) -> None:
        w = self.settings.worker
        self._lock()
        self.spool = Spool(self.spool_dir, w.spool_max_bytes)
        self.deadletters = DeadLetters(self.deadletter_dir, w.deadletter_max_bytes, w.deadletter_backups)
        self.stats.dead_letter = self.deadletters.counts
        self._update_spool_stats()
        self._make_pipeline()
        self.writer = InfluxWriter(self.settings.influx)
        self.source = MqttSource(
            self.settings.broker,
            client_id=f"infrawatch-{w.id}",
            inbox=self.inbox,
            partition=self.partition,
            receive_maximum=4 * w.batch_size,
        )

    def _lock(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / ".lock"
        f = path.open("w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise WorkerError(
                f"another worker with id {self.settings.worker.id!r} is running (it holds {path}); "
                "give each worker its own INFRAWATCH_WORKER__ID"
            ) from None
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    def _make_pipeline(self) -> None:
        w = self.settings.worker
        registry = ModelRegistry(self.settings.model_dir)
        self.models = ActiveModels(registry)
        try:
            window = registry.window() or self.settings.window
        except Exception as e:  # a broken registry must not stop ingestion
            log.error("model registry %s: %s; starting without models", registry.root, e)
            window = self.settings.window
        limiter = core.TokenBucket(rate_per_s=w.rate_per_s, burst=w.burst, max_keys=w.max_keys)
        self.pipeline = core.Pipeline(window=window, limiter=limiter)
        self._refresh_models()
        pipeline = self.pipeline
        if self.state_file.is_file():
            try:
                pipeline.restore(self.state_file.read_bytes())
                log.info("restored the rolling state of %d sensors from %s", len(pipeline), self.state_file)
            except Exception as e:
                aside = self.state_file.with_suffix(self.state_file.suffix + ".unusable")
                os.replace(self.state_file, aside)
                log.warning(
                    "cannot restore %s (%s); moved it to %s and starting fresh", self.state_file, e, aside
                )

    def _refresh_models(self) -> None:
        """Swap in newly activated models; a new feature window means a new pipeline."""
        pipeline = self.pipeline
        try:
            window = self.models.registry.window()
            if window is not None and window != pipeline.window:
                # features of another window would feed the models numbers they were not trained on
                log.warning(
                    "the active models use a window of %d readings, the running pipeline %d: "
                    "starting a fresh pipeline (rolling state starts over)",
                    window,
                    pipeline.window,
                )
                pipeline = core.Pipeline(window=window, limiter=pipeline.limiter)
                self.models.fingerprint = None
            changed = self.models.refresh(pipeline)
            self.pipeline = pipeline
        except Exception as e:
            log.error(
                "model reload from %s failed: %s; keeping the current models", self.settings.model_dir, e
            )
            return
        if changed:
            fp = self.models.fingerprint or {}
            active = {k: v for k, v in fp.items() if v}
            if active:
                log.info("models: %s", ", ".join(f"{k}={v}" for k, v in active.items()))
            missing = [k for k in KINDS if not fp.get(k)]
            if missing:
                log.warning(
                    "no active model for %s in %s: their readings are stored without verdicts "
                    "(`infrawatch train --kind KIND` makes one)",
                    ", ".join(missing),
                    self.settings.model_dir,
                )

    def _snapshot(self) -> None:
        data = self.pipeline.snapshot()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
        fd = os.open(self.state_file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("saved the rolling state of %d sensors to %s", len(self.pipeline), self.state_file)

    async def run(self) -> WorkerStats:
        """Run until `stop()`; returns the final counters. Raises WorkerError for what the operator
        must fix (refused credentials, a second worker with the same id)."""
        w = self.settings.worker
        self._start()
        log.info(
            "worker %s: partition %s, batches of %d / %d ms, broker %s:%d, InfluxDB %s",
            w.id,
            w.partition,
            w.batch_size,
            w.batch_timeout_ms,
            self.settings.broker.host,
            self.settings.broker.port,
            self.settings.influx.url,
        )
        self._deliver_task = asyncio.create_task(self._deliver_loop(), name="deliver")
        consume = asyncio.create_task(self._consume_forever(), name="consume")
        stats = asyncio.create_task(self._stats_loop(), name="stats")
        models = asyncio.create_task(self._models_loop(), name="models")
        try:
            deliver = self._deliver_task
            await asyncio.wait({consume, deliver}, return_when=asyncio.FIRST_COMPLETED)
            if deliver.done() and not deliver.cancelled() and deliver.exception() is not None:
                consume.cancel()  # delivery died (a bug): surface its error, not a stuck consumer
                with contextlib.suppress(asyncio.CancelledError):
                    await consume
                deliver.result()
            await consume  # delivery also ends normally on stop, just before the consumer
        finally:
            for t in (stats, models):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self._finish_delivery(final_stats=True)
            for t in list(self._background):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 2.0)
            await self._close()
        log.info("worker %s stopped: %s", w.id, self.stats.summary())
        return self.stats

    async def _close(self) -> None:
        if self.source.connected:
            await self.source.__aexit__(None, None, None)
        self._snapshot()
        await self.writer.aclose()
        self.spool.close()
        self.deadletters.close()
        if self._lock_file is not None:
            self._lock_file.close()

    async def _finish_delivery(self, *, final_stats: bool = False) -> None:
        task = self._deliver_task
        if task is None or task.done():
            return
        if final_stats:
            await self._queue.put(_Delivery(self._stats_line()))
        await self._queue.put(_STOP)
        await task

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # ------------------------------------------------------------------ consume
    async def _consume_forever(self) -> None:
        backoff = 0.2
        while not self.stopping.is_set():
            try:
                async with self.source:
                    backoff = 0.2
                    log.info("subscribed as %s (session resumed across restarts)", self.source.client_id)
                    self.subscribed.set()
                    await self._consume()
                    if self.stopping.is_set():
                        # acks go out before the DISCONNECT that leaving this block sends
                        await self._finish_delivery(final_stats=True)
            except BrokerRefusedError as e:
                raise WorkerError(str(e)) from e
            except aiomqtt.MqttError as e:
                self.subscribed.clear()
                dropped = self.inbox.clear()
                log.warning(
                    "broker %s:%d: %s; reconnecting in %.1f s (%d unacknowledged messages come again)",
                    self.settings.broker.host,
                    self.settings.broker.port,
                    e,
                    backoff,
                    dropped,
                )
                await self._sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _consume(self) -> None:
        w = self.settings.worker
        linger = w.batch_timeout_ms / 1000
        while True:
            if self.stopping.is_set():
                while len(self.inbox):
                    await self._process(self.inbox.take_now(w.batch_size))
                return
            batch = await self.inbox.take(w.batch_size, linger)
            if batch:
                await self._process(batch)
            if not self.source.connected and not self.stopping.is_set():
                raise aiomqtt.MqttError("connection lost")

    async def _process(self, batch: list[Received]) -> None:
        payloads = [m.payload for m in batch]
        topics = [m.topic for m in batch]
        async with self._pipeline_lock:
            out = await asyncio.to_thread(self.pipeline.process, payloads, topics, time.time_ns())
        s = self.stats
        s.processed += len(batch)
        s.readings += out.count
        s.stale += out.stale
        s.alerts += len(out.alerts)
        s.batch(len(batch))
        dl = self.deadletters
        for i, code, message in out.errors:
            m = batch[i]
            dl.add(topic=m.topic, reason=code, message=message, received_ns=m.received_ns, payload=m.payload)
        if out.rate_limited:
            s.rate_limited += len(out.rate_limited)
            by_message: dict[int, list[str]] = {}
            for i, sensor in zip(out.rate_limited, out.rate_limited_sensors, strict=True):
                by_message.setdefault(i, []).append(sensor)
            for i, sensors in by_message.items():
                m = batch[i]
                dl.add(
                    topic=m.topic,
                    reason="rate_limited",
                    message=f"{len(sensors)} reading(s) over the rate limit "
                    f"({self.settings.worker.rate_per_s}/s, burst {self.settings.worker.burst})",
                    received_ns=m.received_ns,
                    payload=m.payload,
                    sensor_ids=sensors,
                    count=len(sensors),
                )
        if out.errors or out.rate_limited:
            dl.flush()
        await self._queue.put(_Delivery(out.line_protocol, batch, out.alerts))

    async def _models_loop(self) -> None:
        """Poll the registry's active pointers; swap in new versions between batches."""
        while True:
            await asyncio.sleep(self.settings.worker.model_poll_s)
            # in a thread: loading artifacts takes a while; under the lock: the pipeline is not in use
            async with self._pipeline_lock:
                await asyncio.to_thread(self._refresh_models)

    # ------------------------------------------------------------------ deliver
    async def _deliver_loop(self) -> None:
        loop = asyncio.get_running_loop()
        get: asyncio.Task[_Delivery | _Stop] | None = None
        while True:
            timeout = None if self.spool.empty else max(0.0, self._next_drain - loop.time())
            # a get left pending across iterations, not cancelled on timeout: nothing can be lost
            if get is None:
                get = asyncio.create_task(self._queue.get())
            done, _ = await asyncio.wait({get}, timeout=timeout)
            item: _Delivery | _Stop | None = None
            if done:
                item = get.result()
                get = None
            if not self.spool.empty and loop.time() >= self._next_drain:
                await self._drain()
            if isinstance(item, _Stop):
                return
            if item is not None:
                await self._deliver(item)

    async def _deliver(self, item: _Delivery) -> None:
        if not item.body:
            self._ack(item)
            return
        if self.spool.empty:
            try:
                await self.writer.write(item.body)
            except WriteRejectedError as e:
                self._rejected(item, e)
                self._ack(item)
                return
            except WriteUnavailableError as e:
                self._influx_down(e)
            else:
                self._influx_up()
                self.stats.written_batch(item.body, [m.received_ns for m in item.messages])
                self._ack(item)
                self._publish_alerts(item.alerts)
                return
            finally:
                self.stats.write_errors = self.writer.errors
        await self._spool_or_hold(item)

    async def _spool_or_hold(self, item: _Delivery) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.spool.fits(len(item.body)):
                await asyncio.to_thread(self.spool.append, item.body)
                self.stats.spooled_batches_total += 1
                self._update_spool_stats()
                self._ack(item)
                self._publish_alerts(item.alerts)
                return
            if not self._spool_full:
                self._spool_full = True
                log.warning(
                    "spool full (%d bytes in %d batches, INFRAWATCH_WORKER__SPOOL_MAX_BYTES=%d): "
                    "not acknowledging; the broker holds the backlog",
                    self.spool.pending_bytes,
                    self.spool.pending_batches,
                    self.spool.max_bytes,
                )
            if self.stopping.is_set():
                log.warning(
                    "shutting down with %d messages unacknowledged: the broker redelivers them",
                    len(item.messages),
                )
                return
            await self._sleep(max(0.0, self._next_drain - loop.time()))
            await self._drain()

    async def _drain(self) -> None:
        """Write spooled bodies oldest first; on the first failure, back off."""
        loop = asyncio.get_running_loop()
        while not self.spool.empty:
            body = await asyncio.to_thread(self.spool.peek)
            assert body is not None
            try:
                await self.writer.write(body, attempts=1)
            except WriteRejectedError as e:
                self.stats.write_rejected += 1
                log.error("spooled batch rejected: %s; dead-lettered", e)
                self.deadletters.add(
                    topic="",
                    reason="write_rejected",
                    message=str(e),
                    received_ns=time.time_ns(),
                    payload=body,
                )
                self.deadletters.flush()
            except WriteUnavailableError as e:
                self.stats.write_errors = self.writer.errors
                self._influx_down(e)
                self._drain_backoff = min(self._drain_backoff * 2, DRAIN_BACKOFF_MAX_S)
                self._next_drain = loop.time() + self._drain_backoff * (0.5 + random.random())
                return
            else:
                self._influx_up()
                self.stats.written_batch(body, [])
            await asyncio.to_thread(self.spool.pop)
            self._update_spool_stats()
        self._drain_backoff = DRAIN_BACKOFF_MIN_S
        if self._spool_full:
            log.info("spool drained")
        self._spool_full = False

    def _influx_down(self, e: Exception) -> None:
        if not self._outage:
            self._outage = True
            log.warning("InfluxDB unavailable: %s; spooling to %s", e, self.spool_dir)
        loop = asyncio.get_running_loop()
        if self._next_drain < loop.time():
            self._next_drain = loop.time() + self._drain_backoff

    def _influx_up(self) -> None:
        if self._outage:
            self._outage = False
            log.info("InfluxDB accepts writes again; %d spooled batches to drain", self.spool.pending_batches)

    def _rejected(self, item: _Delivery, e: WriteRejectedError) -> None:
        self.stats.write_rejected += 1
        log.error("InfluxDB rejected a batch of %d messages: %s; dead-lettered", len(item.messages), e)
        for m in item.messages:
            self.deadletters.add(
                topic=m.topic,
                reason="write_rejected",
                message=str(e),
                received_ns=m.received_ns,
                payload=m.payload,
            )
        if not item.messages:  # a stats point
            self.deadletters.add(
                topic="",
                reason="write_rejected",
                message=str(e),
                received_ns=time.time_ns(),
                payload=item.body,
            )
        self.deadletters.flush()

    def _ack(self, item: _Delivery) -> None:
        if item.messages:
            self.stats.acked += self.source.ack(item.messages)

    def _update_spool_stats(self) -> None:
        self.stats.spool_batches = self.spool.pending_batches
        self.stats.spool_bytes = self.spool.pending_bytes

    # ------------------------------------------------------------------ alerts and stats
    def _publish_alerts(self, alerts: list[dict[str, Any]]) -> None:
        if alerts:
            task = asyncio.create_task(self._publish(alerts))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _publish(self, alerts: list[dict[str, Any]]) -> None:
        for a in alerts:
            topic = f"infrawatch/{a['site']}/alerts/{a['severity']}"
            try:
                await self.source.publish(topic, json.dumps(a, default=str).encode())
                self.stats.alerts_published += 1
            except aiomqtt.MqttError as e:
                if not self._alert_error_logged:
                    self._alert_error_logged = True
                    log.warning("cannot publish alerts to the broker (%s); they are stored in InfluxDB", e)

    def _stats_line(self) -> bytes:
        self.stats.received = self.source.received
        self.stats.foreign = self.source.foreign
        self.stats.write_errors = self.writer.errors
        return self.stats.line(self.settings.worker.id)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.worker.stats_interval_s)
            await self._queue.put(_Delivery(self._stats_line()))
            log.info("worker %s: %s", self.settings.worker.id, self.stats.summary())


async def run(
    settings: Settings, *, worker: Worker | None = None, install_signal_handlers: bool = False
) -> WorkerStats:
    """Run one worker until it is stopped (`worker.stop()`, or SIGTERM/SIGINT when
    `install_signal_handlers`); returns its counters."""
    worker = worker or Worker(settings)
    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
    try:
        return await worker.run()
    finally:
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
