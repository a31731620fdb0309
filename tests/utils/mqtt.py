"""A plain subscriber for tests: what the broker actually delivers, as the worker user sees it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from infrawatch.config import Settings


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int


class Collector:
    """`async with Collector(settings, "infrawatch/#") as col: ...; await col.wait_for(n)`."""

    def __init__(self, settings: Settings, topic: str, qos: int = 1) -> None:
        b = settings.broker
        self._client = aiomqtt.Client(
            b.host, b.port, username=b.worker_user, password=b.password(), identifier=None
        )
        self.topic, self.qos = topic, qos
        self.messages: list[Received] = []
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Collector:
        await self._client.__aenter__()
        await self._client.subscribe(self.topic, qos=self.qos)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        async for m in self._client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            self.messages.append(Received(str(m.topic), payload, m.qos))
            self._arrived.set()

    async def wait_for(self, n: int, timeout_s: float = 20.0) -> None:
        """Until `n` messages have arrived; fails the test (not a timing check) if they never do."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.messages) < n:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"only {len(self.messages)} of {n} messages arrived")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        await self._client.__aexit__(None, None, None)


class PersistentCollector:
    """A paho subscriber on its own thread with a persistent session: it reconnects by itself and
    the broker keeps its QoS 1 messages meanwhile, so it sees everything across a broker restart."""

    def __init__(self, settings: Settings, topic: str, client_id: str = "test-collector") -> None:
        b = settings.broker
        self.topic = topic
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.username_pw_set(b.worker_user, b.password())
        c.reconnect_delay_set(0.1, 1.0)
        c.on_connect = lambda cl, _u, _f, _rc, _p: cl.subscribe(self.topic, qos=1)
        c.on_subscribe = lambda *_a: self._subscribed.set()
        c.on_message = self._on_message
        self._client = c
        self._host, self._port = b.host, b.port

    def _on_message(self, _c: object, _u: object, m: object) -> None:
        with self._lock:
            self.messages.append(Received(m.topic, bytes(m.payload), m.qos))  # type: ignore[attr-defined]

    def __enter__(self) -> PersistentCollector:
        self._client.connect(self._host, self._port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the collector could not subscribe")
        return self

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()
