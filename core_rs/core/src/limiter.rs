//! Per-key token bucket (GCRA form) with bounded memory, for millions of sensor ids.
//!
//! # Semantics
//!
//! Each key owns a bucket of capacity `burst` (a float ≥ 1, e.g. 2.5) that refills continuously at
//! `rate_per_s` tokens per second; an `allow` takes one token when at least one is available. A key
//! never seen (or forgotten, see below) starts full.
//!
//! The bucket is stored in its GCRA form: one *theoretical arrival time* `tat` per key, the instant
//! at which the bucket is full again. With the emission interval `T = 1 s / rate` and tolerance
//! `τ = (burst − 1)·T`, the bucket holds `burst − max(tat − now, 0)/T` tokens, so
//! `allow(now)` succeeds iff `tat − now ≤ τ`, and then sets `tat = max(tat, now) + T`. Consequences:
//!
//! * Over any interval of length `t`, a key gets at most `burst + rate·t` allows.
//! * [`TokenBucket::retry_after_s`] is exact: it returns the smallest whole number of nanoseconds
//!   `w ≥ 0` (as seconds) such that `allow(now + w)` succeeds — evaluated with the very predicate
//!   `allow` uses, so `allow(now + w)` is true and `allow(now + w − 1 ns)` is false.
//! * A clock that goes backwards never mints tokens: `tat − now` only grows when `now` decreases,
//!   so an earlier `now` sees fewer tokens, never more than at the latest instant seen.
//!
//! # Precision
//!
//! `tat` is an `f64` count of nanoseconds relative to a base instant (the first `now` seen), not an
//! absolute `i64`: the emission interval `1e9 / rate` is rarely a whole number of nanoseconds, and
//! rounding it to whole ns would bias the rate (by 0.3 % at 3 M/s). Offsets below 2⁵³ ns (104 days)
//! are exact integers in an `f64`, so `now − base` is exact; when `now` drifts 2⁵² ns (52 days) from
//! the base, every `tat` is shifted to a new base by a whole number of ns — a subtraction that is
//! exact for live entries — so the `allow` predicate (and `retry_after_s`) is unchanged by a rebase.
//!
//! # Memory and eviction
//!
//! Key strings are not stored: a key is identified by a 64-bit seeded hash (foldhash, random seed
//! per limiter). Two distinct keys share a bucket (both get stricter, never looser) with probability
//! about `n² / 2⁶⁵` over `n` keys — 3·10⁻⁶ at 10 M keys. A slot is `(u64 hash, f64 tat)` = 16 bytes
//! plus one control byte in an open-addressing table (hashbrown `HashTable` keyed by the hash itself),
//! about 20–40 bytes per key depending on the load factor.
//!
//! A key whose bucket has refilled (`tat ≤ now`) is indistinguishable from an absent key, so such
//! entries are dropped losslessly: without `max_keys`, once before each table growth (growth happens
//! anyway when the sweep frees less than 1/8 of the table, so inserts stay amortised O(1)); with
//! `max_keys`, whenever an insert finds the table full. If that sweep frees less than 1/16 of
//! `max_keys`, the entries closest to full (smallest `tat`: the least recently or least heavily used)
//! are evicted until 1/16 is free — O(n) once per n/16 inserts. An evicted key restarts full, so an
//! eviction can make that key more permissive by at most one `burst` (the tokens it was missing), and
//! never stricter. [`TokenBucket::evictions`] counts these lossy evictions; lossless drops are not
//! counted.
//!
//! # Per-key overrides
//!
//! [`TokenBucket::set_rate`] gives one key its own rate and burst (kept in a separate small map so the
//! common path stays one table probe). Changing a key's parameters keeps its current token count
//! (evaluated at the latest `now` seen, capped at the new burst).

use std::hash::BuildHasher;

use hashbrown::{HashMap, HashTable};

/// Offsets from the base instant beyond this (52 days) trigger a rebase, keeping `f64` ns exact.
const REBASE_AFTER_NS: i128 = 1 << 52;

/// Invalid limiter parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimiterError {
    #[error("rate_per_s must be a positive finite number, got {0}")]
    Rate(f64),
    #[error("burst must be a finite number >= 1, got {0}")]
    Burst(f64),
    #[error("max_keys must be at least 1")]
    MaxKeys,
    #[error("rate_per_s={rate} with burst={burst} is out of range (interval overflows)")]
    Range { rate: f64, burst: f64 },
}

/// The hasher that turns a key into its 64-bit identity. Cheap to copy, so a binding can hash keys
/// while holding its interpreter lock and touch the (locked) table only with the hashes.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(foldhash::fast::RandomState);

impl KeyHasher {
    #[must_use]
    pub fn hash(&self, key: &str) -> u64 {
        self.0.hash_one(key)
    }
}

/// Rate parameters in the GCRA form (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Params {
    rate_per_s: f64,
    burst: f64,
    /// `T`: nanoseconds per token.
    interval_ns: f64,
    /// `τ = (burst − 1)·T`: how far `tat` may run ahead of `now` and still allow.
    tolerance_ns: f64,
}

impl Params {
    fn new(rate_per_s: f64, burst: f64) -> Result<Self, LimiterError> {
        if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            return Err(LimiterError::Rate(rate_per_s));
        }
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(LimiterError::Burst(burst));
        }
        let interval_ns = 1e9 / rate_per_s;
        let tolerance_ns = (burst - 1.0) * interval_ns;
        // `burst·T` must stay finite and far below the i64 ns range used by retry_after.
        if !(interval_ns > 0.0 && (burst * interval_ns) < 4e18) {
            return Err(LimiterError::Range {
                rate: rate_per_s,
                burst,
            });
        }
        Ok(Self {
            rate_per_s,
            burst,
            interval_ns,
            tolerance_ns,
        })
    }

    /// Tokens in a bucket whose `tat` is `tat`, at relative time `rel`.
    fn tokens(&self, tat: f64, rel: f64) -> f64 {
        self.burst - (tat - rel).max(0.0) / self.interval_ns
    }
}

/// One table slot: the key's hash and its theoretical arrival time (ns relative to the base).
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    tat: f64,
}

fn slot_hash(s: &Slot) -> u64 {
    s.hash
}

/// Per-key token bucket; see the module documentation for the exact semantics.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    default: Params,
    max_keys: Option<usize>,
    hasher: KeyHasher,
    table: HashTable<Slot>,
    overrides: HashMap<u64, Params>,
    /// Base instant of the relative `tat` offsets; `None` until the first call.
    base_ns: Option<i64>,
    /// Latest `now` seen (for converting state when a key's parameters change).
    last_ns: i64,
    evictions: u64,
}

impl TokenBucket {
    /// A limiter allowing `rate_per_s` per key on average with bursts of `burst`, tracking at most
    /// `max_keys` keys (unbounded when `None`; full buckets are still dropped).
    ///
    /// # Errors
    /// When rate is not positive and finite, burst is not finite or below 1, `max_keys` is 0, or the
    /// combination overflows the nanosecond range.
    pub fn new(rate_per_s: f64, burst: f64, max_keys: Option<usize>) -> Result<Self, LimiterError> {
        let default = Params::new(rate_per_s, burst)?;
        if max_keys == Some(0) {
            return Err(LimiterError::MaxKeys);
        }
        Ok(Self {
            default,
            max_keys,
            hasher: KeyHasher(foldhash::fast::RandomState::default()),
            table: HashTable::new(),
            overrides: HashMap::new(),
            base_ns: None,
            last_ns: i64::MIN,
            evictions: 0,
        })
    }

    #[must_use]
    pub fn rate_per_s(&self) -> f64 {
        self.default.rate_per_s
    }

    #[must_use]
    pub fn burst(&self) -> f64 {
        self.default.burst
    }

    #[must_use]
    pub fn max_keys(&self) -> Option<usize> {
        self.max_keys
    }

    /// Keys evicted while not yet full (lossy evictions under `max_keys` pressure).
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Keys currently tracked (full buckets may or may not have been dropped yet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key hasher, for callers that hash outside a lock (see [`KeyHasher`]).
    #[must_use]
    pub fn key_hasher(&self) -> KeyHasher {
        self.hasher
    }

    /// Take one token from `key`'s bucket at `now_ns` if one is available.
    pub fn allow(&mut self, key: &str, now_ns: i64) -> bool {
        let hash = self.hasher.hash(key);
        self.allow_hashed(hash, now_ns)
    }

    /// [`allow`](Self::allow) for a key already hashed with [`key_hasher`](Self::key_hasher).
    pub fn allow_hashed(&mut self, hash: u64, now_ns: i64) -> bool {
        let rel = self.observe(now_ns);
        let p = self.params(hash);
        if let Some(slot) = self.table.find_mut(hash, |s| s.hash == hash) {
            if slot.tat - rel <= p.tolerance_ns {
                slot.tat = slot.tat.max(rel) + p.interval_ns;
                return true;
            }
            return false;
        }
        // absent = full, and burst ≥ 1, so the first call always passes
        self.insert(
            Slot {
                hash,
                tat: rel + p.interval_ns,
            },
            rel,
        );
        true
    }

    /// Seconds until `allow(key, now + w)` would succeed: the smallest whole number of nanoseconds
    /// `w ≥ 0`, returned in seconds (`0.0` when a token is available now). Does not consume.
    #[must_use]
    pub fn retry_after_s(&self, key: &str, now_ns: i64) -> f64 {
        self.retry_after_hashed(self.hasher.hash(key), now_ns)
    }

    /// [`retry_after_s`](Self::retry_after_s) for a pre-hashed key.
    #[must_use]
    pub fn retry_after_hashed(&self, hash: u64, now_ns: i64) -> f64 {
        let (Some(base), Some(slot)) = (self.base_ns, self.table.find(hash, |s| s.hash == hash))
        else {
            return 0.0;
        };
        let p = self.params(hash);
        let now = i128::from(now_ns);
        let allowed_at = |w: i128| slot.tat - rel_f64(now + w, base) <= p.tolerance_ns;
        if allowed_at(0) {
            return 0.0;
        }
        // Closed form first, then settle on the exact boundary of the predicate `allow` uses: the
        // predicate is monotone in `now`, so gallop up from the estimate and bisect (the estimate is
        // off by a few ns of rounding at most, so this is a handful of steps).
        let estimate = (slot.tat - p.tolerance_ns - rel_f64(now, base))
            .ceil()
            .max(1.0);
        #[allow(clippy::cast_possible_truncation)] // bounded by burst·T < 4e18 (checked in Params)
        let estimate = estimate as i128;
        let (mut lo, mut hi, mut step) = (0i128, estimate, 1i128);
        while !allowed_at(hi) {
            lo = hi;
            hi += step;
            step *= 2;
        }
        if estimate - 2 > lo && !allowed_at(estimate - 2) {
            lo = estimate - 2;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if allowed_at(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let w = hi;
        #[allow(clippy::cast_precision_loss)]
        // w < 2^62 ns; seconds as f64 round-trip to w via round
        let seconds = w as f64 / 1e9;
        seconds
    }

    /// Give `key` its own rate and burst. Its current token count (at the latest `now` seen) is kept,
    /// capped at the new burst.
    ///
    /// # Errors
    /// Same conditions as [`new`](Self::new) for rate and burst.
    pub fn set_rate(&mut self, key: &str, rate_per_s: f64, burst: f64) -> Result<(), LimiterError> {
        let params = Params::new(rate_per_s, burst)?;
        let hash = self.hasher.hash(key);
        self.convert_state(hash, params);
        self.overrides.insert(hash, params);
        Ok(())
    }

    /// Return `key` to the default rate and burst; true when it had an override.
    pub fn clear_rate(&mut self, key: &str) -> bool {
        let hash = self.hasher.hash(key);
        if !self.overrides.contains_key(&hash) {
            return false;
        }
        self.convert_state(hash, self.default);
        self.overrides.remove(&hash);
        true
    }

    /// The override of `key`, as `(rate_per_s, burst)`, if any.
    #[must_use]
    pub fn rate_of(&self, key: &str) -> Option<(f64, f64)> {
        self.overrides
            .get(&self.hasher.hash(key))
            .map(|p| (p.rate_per_s, p.burst))
    }

    /// Number of per-key overrides.
    #[must_use]
    pub fn overrides_len(&self) -> usize {
        self.overrides.len()
    }

    fn params(&self, hash: u64) -> Params {
        if self.overrides.is_empty() {
            return self.default;
        }
        self.overrides.get(&hash).copied().unwrap_or(self.default)
    }

    /// Record `now_ns` and return it relative to the base, rebasing when it drifts too far.
    fn observe(&mut self, now_ns: i64) -> f64 {
        self.last_ns = self.last_ns.max(now_ns);
        let base = *self.base_ns.get_or_insert(now_ns);
        let offset = i128::from(now_ns) - i128::from(base);
        if offset.abs() > REBASE_AFTER_NS {
            self.rebase(now_ns);
            return 0.0;
        }
        rel_f64(i128::from(now_ns), base)
    }

    /// Move the base to `now_ns`: drop full buckets, shift the others by a whole number of ns.
    fn rebase(&mut self, now_ns: i64) {
        let old = self.base_ns.unwrap_or(now_ns);
        let shift = rel_f64(i128::from(now_ns), old);
        self.table.retain(|s| {
            s.tat -= shift;
            s.tat > 0.0
        });
        self.base_ns = Some(now_ns);
    }

    fn convert_state(&mut self, hash: u64, new: Params) {
        let old = self.params(hash);
        let Some(base) = self.base_ns else { return };
        let rel = rel_f64(i128::from(self.last_ns), base);
        let Some(slot) = self.table.find_mut(hash, |s| s.hash == hash) else {
            return;
        };
        let tokens = old.tokens(slot.tat, rel).min(new.burst);
        slot.tat = rel + (new.burst - tokens) * new.interval_ns;
    }

    fn insert(&mut self, slot: Slot, rel: f64) {
        match self.max_keys {
            Some(max) if self.table.len() >= max => self.make_room(max, rel),
            None if self.table.len() == self.table.capacity() => {
                let before = self.table.len();
                self.drop_full(rel);
                // Grow unless the sweep freed a good share, so sweeps stay amortised O(1).
                if before - self.table.len() < before / 8 {
                    self.table.reserve(self.table.len().max(1), slot_hash);
                }
            }
            _ => {}
        }
        self.table.insert_unique(slot.hash, slot, slot_hash);
    }

    /// Lossless: a bucket whose `tat ≤ now` is full, the same as an absent key.
    fn drop_full(&mut self, rel: f64) {
        self.table.retain(|s| s.tat > rel);
    }

    /// Free 1/16 of `max` slots: full buckets first, then those closest to full.
    fn make_room(&mut self, max: usize, rel: f64) {
        self.drop_full(rel);
        let target = (max / 16).max(1);
        let free = max.saturating_sub(self.table.len());
        if free >= target {
            return;
        }
        let k = (target - free).min(self.table.len());
        if k == 0 {
            return;
        }
        let mut tats: Vec<f64> = self.table.iter().map(|s| s.tat).collect();
        let (_, threshold, _) = tats.select_nth_unstable_by(k - 1, f64::total_cmp);
        let threshold = *threshold;
        let mut ties = k - tats.iter().filter(|&&t| t < threshold).count();
        drop(tats);
        self.table.retain(|s| {
            if s.tat < threshold {
                return false;
            }
            if s.tat == threshold && ties > 0 {
                ties -= 1;
                return false;
            }
            true
        });
        self.evictions += k as u64;
    }
}

/// `now − base` in ns as `f64` (exact below 2⁵³).
#[allow(clippy::cast_precision_loss)]
fn rel_f64(now: i128, base: i64) -> f64 {
    (now - i128::from(base)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_780_000_000 * S; // an epoch-ns instant in 2026

    /// xorshift64*: enough randomness for property-style tests without a dev-dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        #[allow(clippy::cast_precision_loss)]
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A straightforward float token bucket (tokens + last refill time): the reference model.
    struct Naive {
        tokens: f64,
        last: i64,
        rate: f64,
        burst: f64,
    }
    impl Naive {
        #[allow(clippy::cast_precision_loss)]
        fn allow(&mut self, now: i64) -> bool {
            if now > self.last {
                self.tokens =
                    (self.tokens + (now - self.last) as f64 / 1e9 * self.rate).min(self.burst);
                self.last = now;
            }
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        for (rate, burst) in [
            (0.0, 1.0),
            (-1.0, 1.0),
            (f64::NAN, 1.0),
            (f64::INFINITY, 1.0),
            (1.0, 0.5),
            (1.0, f64::NAN),
        ] {
            assert!(
                TokenBucket::new(rate, burst, None).is_err(),
                "{rate} {burst}"
            );
        }
        assert_eq!(
            TokenBucket::new(1.0, 1.0, Some(0)).unwrap_err(),
            LimiterError::MaxKeys
        );
        assert!(TokenBucket::new(1e-300, 1.0, None).is_err());
        assert!(TokenBucket::new(1.0, 1e300, None).is_err());
        let mut lim = TokenBucket::new(1.0, 1.0, None).unwrap();
        assert!(lim.set_rate("a", 0.0, 1.0).is_err());
        assert!(lim.set_rate("a", 1.0, 0.0).is_err());
    }

    #[test]
    fn new_key_starts_full_and_refills_continuously() {
        let mut lim = TokenBucket::new(2.0, 2.5, None).unwrap();
        assert!(lim.allow("s1", T0));
        assert!(lim.allow("s1", T0));
        assert!(!lim.allow("s1", T0)); // 0.5 left
        assert!(lim.allow("s2", T0)); // keys are independent
        assert!(!lim.allow("s1", T0 + S / 4 - 1)); // 0.5 + 0.5 - ε
        assert!(lim.allow("s1", T0 + S / 4)); // exactly 1 token after 250 ms at 2/s
        assert_eq!(lim.len(), 2);
    }

    #[test]
    fn matches_naive_bucket_on_random_histories() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200 {
            let rate = 0.1 + rng.unit() * 50.0;
            let burst = 1.0 + rng.unit() * 5.0;
            let mut lim = TokenBucket::new(rate, burst, None).unwrap();
            let mut naive = Naive {
                tokens: burst,
                last: T0,
                rate,
                burst,
            };
            let mut now = T0;
            let mut agree = 0;
            for _ in 0..300 {
                #[allow(clippy::cast_possible_truncation)]
                let step = (rng.unit() * 2e9 / rate) as i64;
                now += step;
                // the two models round differently exactly at a boundary; skip near-ties
                let tokens = naive.tokens
                    + ((now - naive.last) as f64 / 1e9 * rate)
                        .min(burst - naive.tokens)
                        .max(0.0);
                let near_tie = (tokens - 1.0).abs() < 1e-6;
                let (a, b) = (lim.allow("k", now), naive.allow(now));
                if !near_tie {
                    assert_eq!(a, b, "rate {rate} burst {burst} now {now}");
                    agree += 1;
                }
            }
            assert!(agree > 250);
        }
    }

    #[test]
    fn retry_after_is_the_exact_boundary() {
        let mut rng = Rng(42);
        for _ in 0..500 {
            let rate = 10f64.powf(rng.unit() * 8.0 - 3.0); // 1e-3 .. 1e5 per second
            let burst = 1.0 + (rng.unit() * 4.0 * 4.0).round() / 4.0;
            let mut lim = TokenBucket::new(rate, burst, None).unwrap();
            let mut now = T0 + i64::try_from(rng.below(1 << 40)).unwrap();
            for _ in 0..rng.below(20) {
                now += i64::try_from(rng.below(2 * S as u64)).unwrap();
                lim.allow("k", now);
            }
            let probe = now + i64::try_from(rng.below(S as u64)).unwrap();
            let w = lim.retry_after_s("k", probe);
            assert!(w >= 0.0);
            #[allow(clippy::cast_possible_truncation)]
            let w_ns = (w * 1e9).round() as i64;
            if w_ns > 0 {
                let mut before = lim.clone();
                assert!(
                    !before.allow("k", probe + w_ns - 1),
                    "rate {rate} burst {burst} w {w}"
                );
            }
            let mut at = lim.clone();
            assert!(
                at.allow("k", probe + w_ns),
                "rate {rate} burst {burst} w {w}"
            );
            assert!(lim.allow("k", probe) == (w == 0.0));
        }
    }

    #[test]
    fn never_more_than_burst_plus_rate_times_t() {
        let mut rng = Rng(7);
        for _ in 0..100 {
            let rate = 0.5 + rng.unit() * 20.0;
            let burst = 1.0 + rng.unit() * 6.0;
            let mut lim = TokenBucket::new(rate, burst, None).unwrap();
            let mut now = T0;
            let mut allowed: Vec<i64> = Vec::new();
            for _ in 0..400 {
                #[allow(clippy::cast_possible_truncation)]
                let step = (rng.unit().powi(3) * 3e9 / rate) as i64;
                now += step;
                if lim.allow("k", now) {
                    allowed.push(now);
                }
            }
            for i in 0..allowed.len() {
                for j in i..allowed.len() {
                    #[allow(clippy::cast_precision_loss)]
                    let t = (allowed[j] - allowed[i]) as f64 / 1e9;
                    #[allow(clippy::cast_precision_loss)]
                    let count = (j - i + 1) as f64;
                    assert!(count <= burst + rate * t + 1e-9, "{count} allows in {t}s");
                }
            }
        }
    }

    #[test]
    fn backwards_clock_never_mints_tokens() {
        let mut rng = Rng(3);
        for _ in 0..200 {
            let mut lim =
                TokenBucket::new(1.0 + rng.unit() * 3.0, 1.0 + rng.unit() * 3.0, None).unwrap();
            let mut latest = T0;
            for _ in 0..50 {
                let jump = i64::try_from(rng.below(3 * S as u64)).unwrap() - S;
                let now = latest + jump;
                let before = lim.clone();
                let granted = lim.allow("k", now);
                if now < latest && granted {
                    // whatever a backwards `now` grants must also be granted at the latest instant
                    let mut at_latest = before;
                    assert!(at_latest.allow("k", latest));
                }
                latest = latest.max(now);
            }
        }
        // a plain example: emptied at T0 + 10 s, a clock at T0 sees no tokens
        let mut lim = TokenBucket::new(1.0, 1.0, None).unwrap();
        assert!(lim.allow("k", T0 + 10 * S));
        assert!(!lim.allow("k", T0));
        assert!(!lim.allow("k", T0 + 10 * S));
        assert!(lim.allow("k", T0 + 11 * S));
    }

    #[test]
    fn overrides_apply_per_key_and_keep_tokens() {
        let mut lim = TokenBucket::new(1.0, 1.0, None).unwrap();
        lim.set_rate("fast", 10.0, 5.0).unwrap();
        for _ in 0..5 {
            assert!(lim.allow("fast", T0));
        }
        assert!(!lim.allow("fast", T0));
        assert!(lim.allow("fast", T0 + S / 10));
        assert!(lim.allow("slow", T0));
        assert!(!lim.allow("slow", T0));
        assert_eq!(lim.rate_of("fast"), Some((10.0, 5.0)));
        assert_eq!(lim.rate_of("slow"), None);
        // "fast" is empty: back on the default (1/s, burst 1) it still has 0 tokens → 1 s wait
        assert!(lim.clear_rate("fast"));
        assert!(!lim.clear_rate("fast"));
        assert!((lim.retry_after_s("fast", T0 + S / 10) - 1.0).abs() < 1e-9);
        // raising the burst keeps the token count (0 here), so "slow" still waits for its token
        lim.set_rate("slow", 1.0, 10.0).unwrap();
        assert!(!lim.allow("slow", T0 + S / 2));
        assert!(lim.allow("slow", T0 + S));
    }

    #[test]
    fn full_buckets_are_dropped_losslessly_without_max_keys() {
        let mut lim = TokenBucket::new(1.0, 1.0, None).unwrap();
        for i in 0..10_000 {
            assert!(lim.allow(&format!("k{i}"), T0));
        }
        // a second later all are full again; new keys reuse the space instead of growing
        let cap = lim.table.capacity();
        for i in 0..10_000 {
            assert!(lim.allow(&format!("n{i}"), T0 + 2 * S));
        }
        assert!(lim.table.capacity() <= cap);
        assert_eq!(lim.evictions(), 0);
        // and the old keys are full: allowed again
        assert!(lim.allow("k1", T0 + 2 * S));
    }

    #[test]
    fn max_keys_bounds_memory_and_evicts_closest_to_full() {
        let max = 1_000;
        let mut lim = TokenBucket::new(1.0, 1.0, Some(max)).unwrap();
        // keys used at increasing times: the earliest are closest to full
        for i in 0..max as i64 {
            assert!(lim.allow(&format!("k{i}"), T0 + i * 1_000));
        }
        assert_eq!(lim.len(), max);
        assert!(lim.allow("new", T0 + 1_000_000)); // table full: evicts 1/16, the oldest
        assert!(lim.len() <= max);
        assert_eq!(lim.evictions(), (max / 16) as u64);
        let now = T0 + 1_000_000;
        // evicted keys (the oldest) start full again — at most one burst more permissive
        assert!(lim.allow("k0", now));
        // recent keys kept their state
        assert!(!lim.allow(&format!("k{}", max - 1), now));
        for i in 0..100_000 {
            lim.allow(&format!("x{i}"), now + i);
            assert!(lim.len() <= max);
        }
        // once the buckets refill, a sweep frees them without counting evictions
        let evicted = lim.evictions();
        for i in 0..max / 2 {
            lim.allow(&format!("y{i}"), now + 10 * S + i as i64);
        }
        assert_eq!(lim.evictions(), evicted);
    }

    #[test]
    fn rebase_keeps_state_and_retry_exact() {
        let mut lim = TokenBucket::new(3.0, 2.0, None).unwrap();
        assert!(lim.allow("k", T0));
        assert!(lim.allow("k", T0));
        let far = T0 + (1i64 << 53);
        assert!(lim.allow("far", far)); // rebase; "k" is full and dropped
        assert!(lim.allow("far", far));
        assert!(!lim.allow("far", far));
        let w = lim.retry_after_s("far", far);
        #[allow(clippy::cast_possible_truncation)]
        let w_ns = (w * 1e9).round() as i64;
        assert!(!lim.clone().allow("far", far + w_ns - 1));
        assert!(lim.allow("far", far + w_ns));
        assert!(lim.allow("k", far));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut lim = TokenBucket::new(1.0, 1.0, Some(4)).unwrap();
        for now in [i64::MIN, i64::MAX, 0, -1, i64::MAX, i64::MIN] {
            lim.allow("a", now);
            let _ = lim.retry_after_s("a", now);
            let _ = lim.retry_after_s("b", now);
        }
    }
}
