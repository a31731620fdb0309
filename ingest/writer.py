"""POST line protocol to InfluxDB's v1 `/write` with a pooled HTTP client, retrying what may pass.

Connection errors, timeouts, 5xx, and a missing database (404: `infrawatch influx init` not run yet)
are outages: retried with exponential backoff and jitter, then reported as `WriteUnavailableError` so the
worker spools the batch. 401/403 are outages too (credentials can be fixed while the spool holds the
data) but say which variable to set. Any other 4xx means the body itself is wrong — a bug — and is
`WriteRejectedError`, so the worker dead-letters the batch instead of retrying it forever.
"""

from __future__ import annotations

import asyncio
import logging
import random

import httpx

from infrawatch.config import InfluxSettings

log = logging.getLogger(__name__)

# InfluxDB 1.x refuses bodies over `max-body-size` (25 MB by default); stay well below it
MAX_BODY_BYTES = 4 * 1024 * 1024


class WriteRejectedError(Exception):
    """InfluxDB refused the body (4xx other than auth / missing database)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"InfluxDB rejected the write with {status}: {body[:500]}")
        self.status = status


class WriteUnavailableError(Exception):
    """InfluxDB did not accept the body after the retries; it may later."""


def split_body(body: bytes, limit: int = MAX_BODY_BYTES) -> list[bytes]:
    """Cut a line-protocol body at line ends into pieces of at most `limit` bytes (a longer line
    stays whole)."""
    if len(body) <= limit:
        return [body]
    out = []
    start = 0
    while start < len(body):
        end = start + limit
        if end >= len(body):
            out.append(body[start:])
            break
        cut = body.rfind(b"\n", start, end)
        if cut < start:
            cut = body.find(b"\n", end)
            if cut < 0:
                out.append(body[start:])
                break
        out.append(body[start : cut + 1])
        start = cut + 1
    return out


class InfluxWriter:
    def __init__(
        self,
        settings: InfluxSettings,
        *,
        retention_policy: str = "raw",
        attempts: int = 4,
        base_delay_s: float = 0.05,
        max_delay_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.errors = 0  # failed attempts, for the stats
        self._params = {"db": settings.database, "rp": retention_policy, "precision": "ns"}
        self._client = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            auth=(settings.writer_user, settings.password("writer")),
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def write(self, body: bytes, *, attempts: int | None = None) -> None:
        """Store `body`; raises WriteRejectedError or WriteUnavailableError."""
        for piece in split_body(body):
            await self._write_piece(piece, self.attempts if attempts is None else attempts)

    async def _write_piece(self, body: bytes, attempts: int) -> None:
        problem = ""
        for attempt in range(attempts):
            if attempt:
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                resp = await self._client.post("/write", params=self._params, content=body)
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
                self.errors += 1
                continue
            if resp.status_code < 300:
                return
            self.errors += 1
            text = resp.text.strip()
            if resp.status_code in (401, 403):
                problem = (
                    f"InfluxDB at {self.settings.url} refused user {self.settings.writer_user!r} "
                    f"({resp.status_code}): "
                    "set INFRAWATCH_INFLUX__WRITER_USER and INFRAWATCH_INFLUX__WRITER_PASSWORD "
                    "(or INFRAWATCH_INFLUX__WRITER_PASSWORD_FILE)"
                )
            elif resp.status_code == 404:
                problem = f"InfluxDB: {text} — run `infrawatch influx init`"
            elif resp.status_code >= 500:
                problem = f"InfluxDB answered {resp.status_code}: {text[:300]}"
            else:
                raise WriteRejectedError(resp.status_code, text)
        raise WriteUnavailableError(problem or "no attempt made")
