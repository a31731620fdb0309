"""TokenBucket.allow_many against what a user would write instead (the `limits` library per key, a
plain-Python dict token bucket), and its memory per key at 1M and 10M keys (RSS, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

try:  # core.py re-exports every kernel; fall back while sibling kernels are placeholders
    from infrawatch.core import TokenBucket
except ImportError:  # pragma: no cover
    from infrawatch._core import TokenBucket

POOL = 100_000  # sensor ids
BATCH = 10_000  # keys per allow_many call
S = 1_000_000_000
T0 = 1_780_000_000 * S


@pytest.fixture(scope="module")
def batches() -> list[list[str]]:
    rng = np.random.default_rng(0)
    ids = [f"wq-{i:07d}" for i in range(POOL)]
    return [[ids[i] for i in rng.integers(0, POOL, BATCH)] for _ in range(64)]


class DictBucket:
    """The plain-Python token bucket a user would write: dict of key → (tokens, last seen)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.state: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self.state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self.state[key] = (tokens - 1.0, now)
            return True
        self.state[key] = (tokens, now)
        return False


def _rotating(batches: list[list[str]]) -> Any:
    """Each round gets the next batch at a later instant, like a live ingest stream."""
    state = {"i": 0}

    def next_batch() -> tuple[list[str], int]:
        i = state["i"] = state["i"] + 1
        return batches[i % len(batches)], T0 + i * S // 10

    return next_batch


@pytest.mark.benchmark(group="limiter-allow-10k-of-100k")
def test_rust_allow_many(benchmark: Any, batches: list[list[str]]) -> None:
    lim = TokenBucket(rate_per_s=1.0, burst=1.0)
    nxt = _rotating(batches)

    def run() -> int:
        keys, now = nxt()
        return int(lim.allow_many(keys, now).sum())

    assert benchmark(run) > 0


@pytest.mark.benchmark(group="limiter-allow-10k-of-100k")
def test_python_dict_bucket(benchmark: Any, batches: list[list[str]]) -> None:
    lim = DictBucket(1.0, 1.0)
    nxt = _rotating(batches)

    def run() -> int:
        keys, now = nxt()
        t = now / 1e9
        return sum(lim.allow(k, t) for k in keys)

    assert benchmark(run) > 0


@pytest.mark.benchmark(group="limiter-allow-10k-of-100k")
@pytest.mark.parametrize("strategy", [MovingWindowRateLimiter, FixedWindowRateLimiter])
def test_limits_library(benchmark: Any, batches: list[list[str]], strategy: type) -> None:
    # `limits` reads the wall clock itself; "1 per second" per sensor is the user's configuration
    limiter = strategy(MemoryStorage())
    item = RateLimitItemPerSecond(1)
    nxt = _rotating(batches)

    def run() -> int:
        keys, _ = nxt()
        return sum(limiter.hit(item, k) for k in keys)

    assert benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1) > 0


# Inserts `n` distinct keys in chunks (so the key strings do not pile up) and reports RSS growth.
MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys
    import psutil
    from infrawatch._core import TokenBucket

    n, kind = int(sys.argv[1]), sys.argv[2]
    proc = psutil.Process()
    chunk = 100_000
    gc.collect()
    if kind == "dict":  # the plain-Python twin, for scale
        state = {}
        before = proc.memory_info().rss
        for start in range(0, n, chunk):
            for i in range(start, min(start + chunk, n)):
                state[f"wq-{i:08d}"] = (0.0, 1.0)
        after = proc.memory_info().rss
        tracked = len(state)
    else:
        lim = TokenBucket(rate_per_s=1.0, burst=1.0)
        keys = [f"wq-{i:08d}" for i in range(chunk)]  # warm the allocator the same way
        lim.allow_many(keys, 0)
        lim = TokenBucket(rate_per_s=1.0, burst=1.0)
        del keys
        gc.collect()
        before = proc.memory_info().rss
        for start in range(0, n, chunk):
            lim.allow_many([f"wq-{i:08d}" for i in range(start, min(start + chunk, n))], 0)
        gc.collect()
        after = proc.memory_info().rss
        tracked = len(lim)
    print(json.dumps({"n": n, "tracked": tracked, "bytes_per_key": (after - before) / n}))
    """
)


def _measure(n: int, kind: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(n), kind], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.benchmark(group="limiter-memory-per-key")
@pytest.mark.parametrize(
    ("n", "kind"),
    [(1_000_000, "rust"), (10_000_000, "rust"), (1_000_000, "dict")],
    ids=["1M", "10M", "dict-1M"],
)
def test_memory_per_key(benchmark: Any, n: int, kind: str) -> None:
    result = benchmark.pedantic(_measure, args=(n, kind), rounds=1, iterations=1)
    assert result["tracked"] == n
    benchmark.extra_info.update(result)
    print(f"\n{kind} {n:>10,} keys: {result['bytes_per_key']:.1f} bytes/key (RSS growth)")
