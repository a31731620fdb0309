"""TokenBucket: exact token-bucket semantics against an exact rational reference, bounds, eviction."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:  # core.py re-exports every kernel; fall back while sibling kernels are placeholders
    from infrawatch.core import TokenBucket
except ImportError:  # pragma: no cover
    from infrawatch._core import TokenBucket

S = 1_000_000_000
T0 = 1_780_000_000 * S  # an epoch-ns instant in 2026

rates = st.sampled_from([0.5, 1.0, 3.0, 7.5, 10.0, 250.0]) | st.floats(0.01, 1000.0)
bursts = st.sampled_from([1.0, 1.5, 2.5, 4.0]) | st.floats(1.0, 20.0)
# steps in ns; small steps on purpose so buckets run dry
steps = st.lists(st.integers(0, 3 * S), min_size=1, max_size=80)
fast = settings(max_examples=60, deadline=None)


class ExactBucket:
    """Reference: a textbook token bucket in exact rational arithmetic (no floats)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = Fraction(rate)
        self.burst = Fraction(burst)
        self.tokens: dict[str, Fraction] = {}
        self.last: dict[str, int] = {}

    def tokens_at(self, key: str, now: int) -> Fraction:
        if key not in self.tokens:
            return self.burst
        elapsed = max(now - self.last[key], 0)
        return min(self.burst, self.tokens[key] + self.rate * Fraction(elapsed, S))

    def take(self, key: str, now: int, allowed: bool) -> None:
        tokens = self.tokens_at(key, now)
        self.tokens[key] = tokens - 1 if allowed else tokens
        self.last[key] = max(now, self.last.get(key, now))


def test_rejects_invalid_parameters() -> None:
    for rate, burst in [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1), (1, 0.5), (1, float("inf"))]:
        with pytest.raises(ValueError, match=r"rate_per_s|burst"):
            TokenBucket(rate, burst)
    with pytest.raises(ValueError, match="max_keys"):
        TokenBucket(1.0, 1.0, max_keys=0)
    with pytest.raises(OverflowError):
        TokenBucket(1.0, 1.0, max_keys=-1)
    lim = TokenBucket()
    with pytest.raises(ValueError, match="rate_per_s"):
        lim.set_rate("s", 0.0, 1.0)
    with pytest.raises(TypeError):
        lim.allow_many("not-a-list")
    with pytest.raises(TypeError):
        lim.allow_many(["ok", 3])  # type: ignore[list-item]


def test_defaults_and_properties() -> None:
    lim = TokenBucket()
    assert (lim.rate_per_s, lim.burst, lim.max_keys, lim.evictions, len(lim)) == (1.0, 1.0, None, 0, 0)
    lim = TokenBucket(rate_per_s=2.0, burst=2.5, max_keys=10)
    assert (lim.rate_per_s, lim.burst, lim.max_keys) == (2.0, 2.5, 10)
    assert "TokenBucket(rate_per_s=2.0" in repr(lim)


@fast
@given(rate=rates, burst=bursts, steps=steps, keys=st.lists(st.sampled_from("abc"), min_size=80, max_size=80))
def test_matches_exact_reference(rate: float, burst: float, steps: list[int], keys: list[str]) -> None:
    lim, ref = TokenBucket(rate, burst), ExactBucket(rate, burst)
    now = T0
    for step, key in zip(steps, keys, strict=False):
        now += step
        expected = ref.tokens_at(key, now) >= 1
        got = lim.allow(key, now)
        # f64 state may round the other way only a hair from the boundary
        if abs(ref.tokens_at(key, now) - 1) > Fraction(1, 10**6):
            assert got == expected, (key, now - T0)
        ref.take(key, now, got)
    assert len(lim) <= 3


@fast
@given(rate=rates, burst=bursts, steps=steps, probe=st.integers(0, 2 * S))
def test_retry_after_is_exact_to_the_nanosecond(
    rate: float, burst: float, steps: list[int], probe: int
) -> None:
    lim = TokenBucket(rate, burst)
    now = T0
    for step in steps:
        now += step
        lim.allow_many(["k", "k"], now)
    now += probe
    wait = lim.retry_after_s("k", now)
    assert wait >= 0.0
    wait_ns = round(wait * 1e9)
    if wait_ns > 0:
        assert not lim.allow("k", now + wait_ns - 1)  # a refused call consumes nothing
        assert not lim.allow("k", now)
    assert lim.allow("k", now + wait_ns)
    # and it agrees with the exact reference: the deficit (1 - tokens) refills at `rate`
    assert lim.retry_after_s("never-seen", now) == 0.0


@fast
@given(rate=rates, burst=bursts, steps=steps)
def test_retry_after_agrees_with_exact_refill_time(rate: float, burst: float, steps: list[int]) -> None:
    lim, ref = TokenBucket(rate, burst), ExactBucket(rate, burst)
    now = T0
    for step in steps:
        now += step
        ref.take("k", now, lim.allow("k", now))
    deficit = 1 - ref.tokens_at("k", now)
    expected = max(float(deficit / Fraction(rate)), 0.0)
    assert lim.retry_after_s("k", now) == pytest.approx(expected, rel=1e-6, abs=2e-9)


@fast
@given(rate=rates, burst=bursts, gaps=st.lists(st.integers(0, S // 2), min_size=50, max_size=300))
def test_at_most_burst_plus_rate_times_t_on_any_interval(rate: float, burst: float, gaps: list[int]) -> None:
    times = T0 + np.cumsum(np.asarray(gaps, dtype=np.int64))
    lim = TokenBucket(rate, burst)
    allowed = np.array([lim.allow_many(["k"] * 3, int(t)) for t in times])  # 3 tries per instant
    granted = np.repeat(times, allowed.sum(axis=1))
    # for every start i, allows within [granted[i], granted[j]] number j - i + 1
    i, j = np.triu_indices(len(granted))
    count = (j - i + 1).astype(np.float64)
    span = (granted[j] - granted[i]).astype(np.float64) / 1e9
    assert np.all(count <= burst + rate * span + 1e-9)


def test_allow_many_in_order_and_repeats_consume() -> None:
    lim, twin = TokenBucket(1.0, 2.0), TokenBucket(1.0, 2.0)
    keys = ["a", "b", "a", "a", "c", "b", "b", "a"]
    got = lim.allow_many(keys, T0)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.bool_
    assert got.shape == (len(keys),)
    np.testing.assert_array_equal(got, [twin.allow(k, T0) for k in keys])
    np.testing.assert_array_equal(got, [True, True, True, False, True, True, False, False])
    # tuples, generators, numpy str arrays are sequences too; empty gives an empty array
    assert lim.allow_many(("z",), T0).tolist() == [True]
    assert lim.allow_many(np.array(["y", "y"]), T0).tolist() == [True, True]
    assert lim.allow_many((k for k in ["x"]), T0).tolist() == [True]
    assert lim.allow_many([], T0).shape == (0,)


def test_new_key_full_and_continuous_refill() -> None:
    lim = TokenBucket(rate_per_s=2.0, burst=2.5)
    assert lim.allow_many(["s"] * 3, T0).tolist() == [True, True, False]  # 0.5 left
    assert lim.retry_after_s("s", T0) == 0.25
    assert not lim.allow("s", T0 + S // 4 - 1)
    assert lim.allow("s", T0 + S // 4)


def test_backwards_clock_never_mints_tokens() -> None:
    lim = TokenBucket(rate_per_s=1.0, burst=3.0)
    assert lim.allow_many(["k"] * 3, T0 + 10 * S).all()
    for back in (1, S, 10 * S, 10**6 * S):
        assert not lim.allow("k", T0 + 10 * S - back)
        assert lim.retry_after_s("k", T0 + 10 * S - back) >= 1.0
    assert not lim.allow("k", T0 + 10 * S)
    assert lim.allow("k", T0 + 11 * S)


def test_now_defaults_to_wall_clock() -> None:
    lim = TokenBucket(rate_per_s=0.5, burst=1.0)
    before = time.time_ns()
    assert lim.allow("k")
    after = time.time_ns()
    assert not lim.allow("k")
    # emptied at some instant in [before, after]: the wait seen from `after` is 2 s minus the lag
    wait = lim.retry_after_s("k", after)
    assert 2.0 - (after - before) / 1e9 - 1e-9 <= wait <= 2.0
    assert 0.0 < lim.retry_after_s("k") <= 2.0


def test_per_key_overrides() -> None:
    lim = TokenBucket(rate_per_s=1.0, burst=1.0)
    lim.set_rate("pump-7", 10.0, 5.0)
    assert lim.rate_of("pump-7") == (10.0, 5.0)
    assert lim.rate_of("other") is None
    assert lim.allow_many(["pump-7"] * 6 + ["other"] * 2, T0).tolist() == [True] * 5 + [False, True, False]
    assert lim.retry_after_s("pump-7", T0) == pytest.approx(0.1)
    assert lim.clear_rate("pump-7")
    assert not lim.clear_rate("pump-7")
    # back on 1/s with 0 tokens kept: a whole second to wait
    assert lim.retry_after_s("pump-7", T0) == pytest.approx(1.0)


def test_max_keys_bounds_len_and_evicts_closest_to_full() -> None:
    n = 1024
    lim = TokenBucket(rate_per_s=1.0, burst=2.0, max_keys=n)
    keys = [f"sensor-{i}" for i in range(n)]
    for i, key in enumerate(keys):  # each emptied by 2 allows, the earlier ones at earlier instants
        assert lim.allow_many([key, key], T0 + i * 1000).all()
    assert len(lim) == n
    assert lim.evictions == 0
    now = T0 + S // 2  # nobody has refilled
    assert lim.allow("newcomer", now)
    assert len(lim) <= n
    assert lim.evictions == n // 16
    evicted, kept = keys[: n // 16], keys[n // 16 :]
    # an evicted key restarts full: at most one burst (2) more permissive
    assert lim.allow_many([evicted[0]] * 3, now).tolist() == [True, True, False]
    # the most recent keys were not evicted: still empty
    assert not lim.allow(kept[-1], now)
    for i in range(20 * n):
        lim.allow(f"flood-{i}", now)
        if i % 997 == 0:
            assert len(lim) <= n
    assert len(lim) <= n
    # refilled buckets are dropped for free: no further eviction counted
    count = lim.evictions
    lim.allow_many([f"late-{i}" for i in range(n // 2)], now + 100 * S)
    assert lim.evictions == count


def test_unbounded_limiter_reuses_space_of_full_buckets() -> None:
    lim = TokenBucket(rate_per_s=10.0, burst=1.0)
    for round_ in range(5):
        lim.allow_many([f"r{round_}-{i}" for i in range(20_000)], T0 + round_ * S)
    # each round's buckets are full again 100 ms later: the table does not keep all 100k
    assert len(lim) < 60_000
    assert lim.evictions == 0


def test_threads_share_one_state() -> None:
    lim = TokenBucket(rate_per_s=1.0, burst=100.0)
    results: list[int] = []

    def worker() -> None:
        results.append(int(lim.allow_many(["shared"] * 1000, T0).sum()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 100
