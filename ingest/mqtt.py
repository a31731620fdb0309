"""The worker's MQTT side: aiomqtt behind a small adapter with manual acknowledgement and batching.

aiomqtt 2 has no public manual-ack API (empicano/aiomqtt#345); the paho-mqtt 2 client beneath it
(`Client._client`) has `manual_ack_set(True)` and `ack(mid, qos)`, which is what that issue thread
recommends. With it, the broker sees a PUBACK only when the worker calls `ack`, after the batch is in
InfluxDB or fsynced to the spool; a worker that dies before that gets the message again, because its
session (stable client id, clean session off) outlives the connection.

Messages are taken from paho's `on_message` straight into an `Inbox` (no per-message task, unlike
`Client.messages`), which hands out batches by size and time. MQTT 3.1.1 by default: paho decodes
MQTT 5 properties on every message (~20 µs each, a third of its per-message cost here), and 3.1.1's
persistent session (clean session off) is all the worker needs; MQTT 5 is there for brokers that
need Receive Maximum to send more than a few messages un-acknowledged. A message is stamped with the
connection it arrived on: after a reconnect, packet ids of the old connection mean nothing, so its
unacknowledged messages are not acked (the broker redelivers them instead). Two more private
hooks trim paho's per-message cost: its socket reads go through `_BufferedSocket` (one `recv` for
many packets), and its per-topic callback trie, which nobody fills, is not walked.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from infrawatch.config import BrokerSettings

from .partition import Partition

log = logging.getLogger(__name__)

TELEMETRY = "infrawatch/+/+/+/telemetry"
GATEWAY = "infrawatch/+/gateway/+/batch"
# a session that never expires: readings published while the worker is down wait for it (bounded
# by the broker's max_queued_messages / max_queued_bytes)
SESSION_EXPIRY_S = 0xFFFFFFFF
_NOT_AUTHORIZED = (
    4,
    5,
    134,
    135,
)  # MQTT 3.1.1 CONNACK 4/5, MQTT 5 "bad user name or password", "not authorized"


class _NoTopicCallbacks:
    """Stands in for paho's per-topic callback matcher: there are none, so nothing matches."""

    def iter_match(self, topic: str) -> tuple[()]:
        return ()

    def __setitem__(self, key: str, value: object) -> None:
        raise TypeError("the worker's MQTT client takes no per-topic callbacks; use on_message")


_NO_TOPIC_CALLBACKS = _NoTopicCallbacks()


class _BufferedSocket:
    """paho's socket with reads served from one large `recv`.

    paho reads a packet with three `recv` calls (command byte, length, rest) and one packet per
    readable event, so every message costs three system calls and a turn of the event loop.
    Behind this wrapper one `recv` takes whatever the kernel holds (up to `BUFSIZE`), and
    `pending()` — which aiomqtt's read callback already consults for TLS sockets, reading on
    while it is positive — hands out the buffered packets in the same callback. Everything else
    (send, fileno, close, …) is the socket's own.
    """

    BUFSIZE = 1 << 16

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos < len(buf):
            chunk = buf[pos : pos + n]
            self._pos = pos + len(chunk)
            return chunk
        data: bytes = self._sock.recv(max(n, self.BUFSIZE))
        if len(data) <= n:
            return data
        self._buf, self._pos = data, n
        return data[:n]

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BrokerRefusedError(Exception):
    """The broker refused the worker's credentials or subscription; the message says what to set."""


class Received:
    """One message from the broker, as the worker needs it."""

    __slots__ = ("generation", "mid", "payload", "qos", "received_ns", "topic")

    def __init__(
        self, topic: str, payload: bytes, mid: int, qos: int, received_ns: int, generation: int
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.received_ns = received_ns
        self.generation = generation


class Inbox:
    """Messages waiting for the pipeline; `take` returns a batch when it is full or has waited long
    enough since its first message.

    `put` wakes the consumer only when its wish is met (the first message, or a full batch), so a
    busy stream costs one wake-up per batch, not per message.
    """

    def __init__(self) -> None:
        self._items: collections.deque[Received] = collections.deque()
        self._event = asyncio.Event()
        self._want = 1
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Received) -> None:
        self._items.append(item)
        if len(self._items) >= self._want:
            self._event.set()

    def close(self) -> None:
        """Wake the consumer now (disconnect or shutdown); `take` returns what it has."""
        self._closed = True
        self._event.set()

    def reopen(self) -> None:
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n

    def take_now(self, max_n: int) -> list[Received]:
        items = self._items
        n = min(max_n, len(items))
        return [items.popleft() for _ in range(n)]

    async def take(self, max_n: int, linger_s: float) -> list[Received]:
        """Wait for a first message, then until it is `linger_s` old for the batch to reach `max_n`.

        The linger counts from the oldest message's receipt, not from this call: messages that
        arrived while the previous batch was being processed or written have already waited.
        """
        while not self._items and not self._closed:
            self._want = 1
            self._event.clear()
            await self._event.wait()
        if self._items and len(self._items) < max_n and not self._closed:
            left_s = linger_s - (time.time_ns() - self._items[0].received_ns) / 1e9
            if left_s <= 0:
                return self.take_now(max_n)
            self._want = max_n
            self._event.clear()
            # a timer that sets the event rather than `asyncio.timeout`: on Python 3.11 a timeout that
            # fires as the wait completes leaves a cancellation pending for the caller's next await
            timer = asyncio.get_running_loop().call_later(left_s, self._event.set)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
        self._want = 1
        return self.take_now(max_n)


class MqttSource:
    """One aiomqtt client with a persistent session; `connect()` is an async context manager that can
    be entered again after a disconnect."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        inbox: Inbox,
        partition: Partition,
        receive_maximum: int,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.inbox = inbox
        self.partition = partition
        self.generation = 0
        self.received = 0  # every message the broker delivered
        self.foreign = 0  # messages of other partitions, acked on arrival
        self.connected = False
        self.receive_maximum = max(1, min(65535, receive_maximum))
        self.protocol = protocol
        self.client = self._new_client()
        self._used = False

    def _new_client(self) -> aiomqtt.Client:
        """A fresh client per connection: aiomqtt keeps the first CONNACK's outcome on a reused one,
        so a refused reconnect would pass for a success."""
        if self.protocol is aiomqtt.ProtocolVersion.V5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            # how many unacknowledged messages the broker may have in flight to us: enough for the
            # batch being collected plus those being processed and written
            props.ReceiveMaximum = self.receive_maximum
            session: dict[str, Any] = {"clean_start": False, "properties": props}
        else:
            # MQTT 3.1.1: the session lasts until the broker's persistent_client_expiration, and the
            # broker's max_inflight_messages bounds what it sends us un-acknowledged
            session = {"clean_session": False}
        client = aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.worker_user,
            password=self.settings.password(),
            identifier=self.client_id,
            protocol=self.protocol,
            keepalive=self.settings.keepalive_s,
            timeout=10,
            **session,
        )
        paho_client: paho.Client = client._client
        paho_client.manual_ack_set(True)
        paho_client.on_message = self._on_message
        # private: paho looks every message's topic up in its per-topic callback trie
        # (`message_callback_add`) before calling on_message — a tenth of the worker's event loop
        # at a few thousand messages/s (py-spy). Neither aiomqtt nor the worker registers any.
        paho_client._on_message_filtered = _NO_TOPIC_CALLBACKS  # type: ignore[assignment]
        # private: paho calls on_socket_open right after creating the socket, before it sends
        # CONNECT; the buffered wrapper takes the socket's place for everything paho does with it
        aiomqtt_on_open = paho_client.on_socket_open
        assert aiomqtt_on_open is not None

        def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
            buffered = _BufferedSocket(sock)
            c._sock = buffered
            aiomqtt_on_open(c, userdata, buffered)

        paho_client.on_socket_open = on_socket_open
        self._paho = paho_client
        return client

    # ------------------------------------------------------------------ connection
    async def __aenter__(self) -> MqttSource:
        if self._used:
            self.client = self._new_client()
        self._used = True
        try:
            await self.client.__aenter__()
        except aiomqtt.MqttCodeError as e:
            if e.rc in _NOT_AUTHORIZED or getattr(e.rc, "value", None) in _NOT_AUTHORIZED:
                raise BrokerRefusedError(
                    f"the broker at {self.settings.host}:{self.settings.port} refused user "
                    f"{self.settings.worker_user!r} ({e}): set INFRAWATCH_BROKER__WORKER_USER and "
                    "INFRAWATCH_BROKER__WORKER_PASSWORD (or INFRAWATCH_BROKER__WORKER_PASSWORD_FILE)"
                ) from e
            raise
        self.generation += 1
        self.connected = True
        self.inbox.reopen()
        # private: aiomqtt resolves this future when the connection drops; wake the consumer then
        disconnected: asyncio.Future[None] = self.client._disconnected
        disconnected.add_done_callback(self._on_disconnected)
        try:
            for topic in (TELEMETRY, GATEWAY):
                granted = await self.client.subscribe(topic, qos=1)
                codes = [c.value if isinstance(c, ReasonCode) else int(c) for c in granted]
                if any(c >= 0x80 for c in codes):
                    raise BrokerRefusedError(
                        f"the broker refused user {self.settings.worker_user!r} a subscription to {topic} "
                        f"(reason {granted}); its ACL must let workers read infrawatch/#"
                    )
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.connected = False
        self.inbox.close()
        try:
            await self.client.__aexit__(None, None, None)
        except aiomqtt.MqttError as e:
            log.debug("disconnect: %s", e)

    def _on_disconnected(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:  # retrieve it: nobody else will
            log.warning(
                "lost the broker at %s:%d: %s", self.settings.host, self.settings.port, fut.exception()
            )
        self.connected = False
        self.inbox.close()

    # ------------------------------------------------------------------ messages
    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        # runs on the event loop thread (aiomqtt reads the socket from a loop reader callback)
        self.received += 1
        topic = message.topic
        if not self.partition.everything and not self.partition.owns_topic(topic):
            self.foreign += 1
            self._paho.ack(message.mid, message.qos)
            return
        self.inbox.put(
            Received(topic, bytes(message.payload), message.mid, message.qos, time.time_ns(), self.generation)
        )

    def ack(self, messages: list[Received]) -> int:
        """PUBACK every message that arrived on the current connection; returns how many."""
        if not self.connected:
            return 0
        generation = self.generation
        ack = self._paho.ack
        n = 0
        for m in messages:
            if m.generation == generation:
                ack(m.mid, m.qos)
                n += 1
        return n

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)
