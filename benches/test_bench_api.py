"""Read latency of the HTTP API: 50 concurrent clients over 1,000 sensors × 1 day of data.

A real InfluxDB (the tests' stack) holds one water-flow reading a minute from each of 1,000
sensors over the last 24 hours (1.44 M points); the API runs as its own process (`infrawatch api
serve`, uvicorn) with the stack's settings; 50 asyncio clients each send requests back to back
through their own connection. Two workloads, each its own pytest-benchmark round set:

- latest: `GET /readings/latest?sensor_id=S…` (the newest reading and verdict of a random sensor)
- history: `GET /readings/S…/history` — half the last hour of raw points (60), half the whole day
  at 15-minute steps (96 means over 1,440 raw points)

p50/p95/p99 of the per-request latency over all rounds are printed and stored in extra_info
(target from the network-analytics design: p95 < 50 ms).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from tests.utils.served_api import served_api
from tests.utils.stack import Stack, start_stack

SENSORS = 1000
MINUTES = 24 * 60
CLIENTS = 50
REQUESTS_PER_CLIENT = 20  # per round: 1,000 requests
ROUNDS = 3
PASSWORD = "benchmark admin password"


@dataclass
class Api:
    stack: Stack
    base: str
    auth: dict[str, str]
    now_s: int


def _load(stack: Stack, now_s: int) -> None:
    rng = np.random.default_rng(0)
    with stack.client("writer") as w:
        for first in range(0, SENSORS, 25):
            lines = []
            for i in range(first, first + 25):
                flow = 100 + 10 * rng.standard_normal(MINUTES)
                for m in range(MINUTES):
                    t = (now_s - (MINUTES - m) * 60) * 10**9
                    lines.append(
                        f"reading,kind=water_flow,sensor_id=S{i},site=site-{i % 10},zone=STANDARD "
                        f"flow_rate_lps={flow[m]:.3f},pressure_bar=3.1,leak_probability=0.02,risk=0i {t}"
                    )
            w.write("\n".join(lines).encode())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    stack = start_stack(tmp_path_factory.mktemp("api-bench") / "run")
    try:
        now_s = int(time.time())
        t0 = time.perf_counter()
        _load(stack, now_s)
        print(f"\nloaded {SENSORS * MINUTES:,} readings in {time.perf_counter() - t0:.1f} s")
        with served_api(stack.settings, "bench", PASSWORD, role="viewer") as served:
            yield Api(stack, served.base, served.auth, now_s)
    finally:
        stack.close()


def _latest_url(rng: random.Random, _: int) -> str:
    return f"/api/v1/readings/latest?sensor_id=S{rng.randrange(SENSORS)}"


def _history_url(rng: random.Random, now_s: int) -> str:
    sid = f"S{rng.randrange(SENSORS)}"
    if rng.random() < 0.5:
        return f"/api/v1/readings/{sid}/history?start={now_s - 3600}&end={now_s}&fields=flow_rate_lps,risk"
    return (
        f"/api/v1/readings/{sid}/history?start={now_s - 86400}&end={now_s}&interval=15m&tier=raw"
        "&fields=flow_rate_lps,pressure_bar,risk"
    )


def _round(api: Api, make_url: Any, latencies: list[float], seed: int) -> None:
    async def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=api.base, headers=api.auth, timeout=30) as c:
            for _ in range(REQUESTS_PER_CLIENT):
                url = make_url(rng, api.now_s)
                t = time.perf_counter()
                r = await c.get(url)
                latencies.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body if isinstance(body, list) else body["rows"], url

    async def main() -> None:
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))

    asyncio.run(main())


def _run(benchmark: Any, api: Api, name: str, make_url: Any) -> None:
    latencies: list[float] = []
    seeds = iter(range(1, 100))
    benchmark.group = "api read latency (50 clients, 1,000 sensors × 1 day)"
    benchmark.pedantic(lambda: _round(api, make_url, latencies, next(seeds)), rounds=ROUNDS, iterations=1)
    ms = np.asarray(latencies) * 1000
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    rounds = benchmark.stats.stats.data if benchmark.stats else []
    rate = CLIENTS * REQUESTS_PER_CLIENT / min(rounds) if rounds else float("nan")
    benchmark.extra_info.update(
        {"requests": len(ms), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1)}
    )
    print(
        f"\n{name}: {len(ms)} requests from {CLIENTS} clients — p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms; {rate:.0f} requests/s (best round); target p95 < 50 ms"
    )


def test_latest_latency(benchmark: Any, api: Api) -> None:
    _run(benchmark, api, "latest", _latest_url)


def test_history_latency(benchmark: Any, api: Api) -> None:
    _run(benchmark, api, "history", _history_url)
