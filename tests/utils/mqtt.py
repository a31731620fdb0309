"""A plain subscriber for tests: what the broker actually delivers, as the worker user sees it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiomqtt

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
