"""Many MQTT identities from one event loop: the publishing side of `simulate` and `replay`.

Each simulated sensor (or gateway) is its own broker user, so a facility of a few hundred sensors
is a few hundred connections. One paho-mqtt 2.x client per identity, all driven by the running
asyncio loop (paho's external-loop callbacks register each socket with the loop, as aiomqtt does)
and one shared task for keep-alives: no thread per client.

Why not aiomqtt: its `publish` waits for each PUBACK in turn and drops the PUBACK reason code, and
both matter here — a publisher keeps many QoS 1 messages in flight, and an MQTT 5 broker answers a
publish its ACL forbids with reason 0x87 (not authorized), which must count as a failure rather
than as published. paho keeps unacknowledged QoS 1 messages across a reconnect and re-sends them,
so a broker restart loses nothing (at least once; the store makes repeats harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

_RECONNECT_MIN_S = 0.2
_RECONNECT_MAX_S = 5.0


class PublishError(Exception):
    """The broker refused a message (MQTT 5 PUBACK reason code) or the client gave up on it."""


class ConnectError(Exception):
    """The broker refused the connection (bad credentials) or could not be reached."""


@dataclass
class Counters:
    """What a set of connections has done; `pending` is sent but not yet acknowledged."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    reconnects: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.sent - self.acked - self.failed

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1


class Connection:
    """One MQTT 5 identity, its socket registered with the running event loop.

    `publish` returns a future that resolves when the broker acknowledges the message (QoS 1) and
    fails with `PublishError` when the broker refuses it. Disconnections are retried with backoff
    for the life of the connection; messages published meanwhile wait in paho's queue.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        client_id: str,
        counters: Counters,
        keepalive_s: int = 30,
        max_inflight: int = 100,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self.keepalive_s = keepalive_s
        self.counters = counters
        self._loop = asyncio.get_running_loop()
        self._futures: dict[int, asyncio.Future[None]] = {}
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        self._backoff = _RECONNECT_MIN_S
        self._retry: asyncio.TimerHandle | None = None
        self._ever_connected = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        c.username_pw_set(username, password)
        c.max_inflight_messages_set(max_inflight)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self._client = c

    # ------------------------------------------------------------------ connection life cycle
    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and wait for the broker's CONNACK; `ConnectError` if refused or unreachable."""
        try:
            # loopback and LAN connects are immediate; paho's connect blocks only for the TCP handshake
            self._client.connect(self.host, self.port, self.keepalive_s)
        except OSError as e:
            raise ConnectError(f"{self.username}: cannot reach {self.host}:{self.port}: {e}") from e
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout_s)
        except TimeoutError:
            raise ConnectError(f"{self.username}: no CONNACK from {self.host}:{self.port}") from None

    @property
    def is_connected(self) -> bool:
        return self._client.is_connected()

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            if not self._connected.done():
                self._connected.set_exception(ConnectError(f"{self.username}: broker refused: {reason}"))
            return
        self._backoff = _RECONNECT_MIN_S
        if self._ever_connected:
            self.counters.reconnects += 1
        self._ever_connected = True
        if not self._connected.done():
            self._connected.set_result(None)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if self._closing or not self._ever_connected:
            return
        log.debug("%s disconnected (%s); reconnecting", self.username, reason)
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closing or self._retry is not None:
            return
        self._retry = self._loop.call_later(self._backoff, self._reconnect)
        self._backoff = min(self._backoff * 2, _RECONNECT_MAX_S)

    def _reconnect(self) -> None:
        self._retry = None
        if self._closing:
            return
        try:
            self._client.reconnect()
        except OSError:
            self._schedule_reconnect()

    def tick(self) -> None:
        """Keep-alive and retry housekeeping (the shared misc task calls it about once a second)."""
        if self._closing:
            return
        rc = self._client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._ever_connected and not self.is_connected:
            self._schedule_reconnect()

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Wait (bounded) for outstanding acknowledgements, then disconnect cleanly."""
        if self._futures:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._futures.values(), return_exceptions=True), drain_timeout_s
                )
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        for fut in self._futures.values():
            if not fut.done():
                self.counters.fail("unacknowledged at close")
                fut.set_exception(PublishError(f"{self.username}: closed before the broker acknowledged"))
                fut.exception()  # retrieved: nobody else may be waiting on it
        self._futures.clear()
        if self._client.is_connected():
            self._client.disconnect()
        # the socket may already be gone (broker down); make sure the loop forgets it
        sock = self._client.socket()
        if sock is not None:
            self._forget(sock)
            with contextlib.suppress(OSError):
                sock.close()

    # ------------------------------------------------------------------ publishing
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos)
        self.counters.sent += 1
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho queues the message and sends it after the reconnect
            self.counters.fail(mqtt.error_string(info.rc))
            fut.set_exception(PublishError(f"{self.username}: {mqtt.error_string(info.rc)}"))
            return fut
        if qos == 0:
            self.counters.acked += 1
            fut.set_result(None)
        else:
            self._futures[info.mid] = fut
        return fut

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        fut = self._futures.pop(mid, None)
        if fut is None or fut.done():
            return
        if reason.is_failure:
            self.counters.fail(str(reason))
            fut.set_exception(PublishError(f"{self.username}: broker refused the message: {reason}"))
        else:
            self.counters.acked += 1
            fut.set_result(None)

    # ------------------------------------------------------------------ socket ↔ event loop
    def _read(self) -> None:
        self._client.loop_read()

    def _write(self) -> None:
        self._client.loop_write()

    def _on_socket_open(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self._loop.add_reader(sock, self._read)

    def _on_socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self._forget(sock)

    def _forget(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_register_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self._loop.add_writer(sock, self._write)

    def _on_unregister_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)


class Fleet:
    """A set of connections (one per identity) with one keep-alive task and shared counters.

    `async with Fleet(host, port) as fleet: await fleet.add(user, password); fleet.publish(...)`.
    Publishing never waits for acknowledgements; `drain()` does, and leaving the block drains
    (bounded) and disconnects every identity.
    """

    def __init__(self, host: str, port: int, *, client_prefix: str = "sim", keepalive_s: int = 30) -> None:
        self.host, self.port = host, port
        self.client_prefix = client_prefix
        self.keepalive_s = keepalive_s
        self.counters = Counters()
        self.connections: dict[str, Connection] = {}
        self._misc: asyncio.Task[None] | None = None
        self._outstanding: set[asyncio.Future[None]] = set()
        self.on_failure: Callable[[str, BaseException], None] | None = None

    async def __aenter__(self) -> Fleet:
        self._misc = asyncio.get_running_loop().create_task(self._misc_loop())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for c in list(self.connections.values()):
                c.tick()

    async def add(self, username: str, password: str, *, retries: int = 20) -> Connection:
        """Connect one identity; retried for a while (a broker may still be re-reading its passwd)."""
        delay = 0.1
        for attempt in range(retries + 1):
            conn = Connection(
                self.host,
                self.port,
                username,
                password,
                client_id=f"{self.client_prefix}-{username}",
                counters=self.counters,
                keepalive_s=self.keepalive_s,
            )
            try:
                await conn.connect()
            except ConnectError:
                await conn.close(drain_timeout_s=0)
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.connections[username] = conn
            return conn
        raise AssertionError("unreachable")

    async def add_many(self, credentials: dict[str, str], concurrency: int = 32) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(user: str, pw: str) -> None:
            async with sem:
                await self.add(user, pw)

        await asyncio.gather(*(one(u, p) for u, p in credentials.items()))

    def publish(self, username: str, topic: str, payload: bytes, qos: int = 1) -> asyncio.Future[None]:
        fut = self.connections[username].publish(topic, payload, qos)
        if not fut.done():
            self._outstanding.add(fut)
            fut.add_done_callback(self._settled)
        else:
            self._settled(fut)
        return fut

    def _settled(self, fut: asyncio.Future[None]) -> None:
        self._outstanding.discard(fut)
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None and self.on_failure is not None:
            self.on_failure(str(exc), exc)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every message published so far is acknowledged or refused; False on timeout."""
        if not self._outstanding:
            return True
        _done, pending = await asyncio.wait(set(self._outstanding), timeout=timeout_s)
        return not pending

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        await self.drain(drain_timeout_s)
        await asyncio.gather(*(c.close(drain_timeout_s=0) for c in self.connections.values()))
        self.connections.clear()
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
            self._misc = None


__all__ = ["ConnectError", "Connection", "Counters", "Fleet", "PublishError"]
