//! Per-sensor rolling-window features: a ring of each sensor's last `window` folded readings,
//! per-field EWMA state, and the feature row computed for every reading folded in.
//!
//! Window statistics are recomputed from the ring on every reading (two passes over contiguous
//! memory per field) rather than kept as running sums: running sums drift on long streams with
//! large offsets, and a recompute over ≤ `window` values is cheap.
//!
//! State of one sensor is a single allocation laid out as
//! `[timestamps (window, i64 bits) | field 0 values (window) | … | field k-1 values | ewma (k) |
//! time-of-day profiles (2 × 96 per field)]`. Ring slots `0..len` are in use; `head` is the next
//! ring slot to write.
//!
//! `{field}_hod_dev` compares a reading with the sensor's own daily cycle: the sensor keeps, per
//! field, 96 time-of-day slots (the reading's UTC quarter-hour: fine enough that a slot does not
//! average the steep morning rise of demand) for weekdays and another 96 for weekends (people get
//! up later on Saturdays; one shared profile would page every Monday morning), each an EWMA
//! (alpha 0.25) of the values seen then, starting empty (NaN). The feature is the value minus its
//! slot *before* the slot takes the value in: `v − p` (NaN while the slot is empty), then
//! `p ← v` if empty else `0.25·v + 0.75·p`. A missing value gives NaN and leaves the slot
//! unchanged; stale readings (not folded) never touch the profile.
//! Window statistics cannot see a daily cycle: this is what tells a leak (flow above its usual
//! level for the time of day, as in minimum-night-flow analysis) from the morning rise in demand.
//!
//! At one reading a minute that EWMA mostly holds *today's* earlier readings of the slot, so only
//! a slot's first reading or two compare with other days. `{field}_day_dev` is the day-over-day
//! deviation proper: per slot, a profile learnt once a day (when a slot is first seen on a new
//! day, the mean of the values it saw on its previous day enters as `p ← m` if empty else
//! `0.5·m + 0.5·p`), and the feature is `v − p` for every reading of the slot (NaN while the
//! slot has no earlier day). `{field}_day_dev_1h` smooths it over about the last hour (an EWMA
//! in time, weight `1 − exp(−dt / 1 h)` for a reading `dt` after the previous one; missing
//! deviations leave it unchanged): a leak of a few percent hides in minute-to-minute demand
//! noise but not in an hour's mean. `{field}_day_dev_3h` is the same over about three hours
//! (time constant 3 h): steadier still, for the smallest leaks, at the cost of reacting later.

use crate::batch::ReadingBatch;
use crate::fields::{index_of, Kind};
use hashbrown::HashMap;

/// The statistics computed per field, in feature order.
pub const FIELD_STATS: [&str; 13] = [
    "last",
    "mean",
    "std",
    "min",
    "max",
    "delta",
    "slope",
    "ewma",
    "zscore",
    "hod_dev",
    "day_dev",
    "day_dev_1h",
    "day_dev_3h",
];
/// Smoothing of the time-of-day profile: about the last four values seen in a slot count.
pub const HOD_ALPHA: f64 = 0.25;
/// Time-of-day slots of the profile: quarter-hours, for weekdays then for weekends.
const SLOTS: usize = 2 * 96;
/// Weight of a slot's newest day in the once-a-day profile of `day_dev`.
pub const DAY_ALPHA: f64 = 0.5;
/// Time constant of `day_dev_1h`, in seconds.
const DAY_DEV_TAU_S: f64 = 3600.0;
/// Per field and slot, the once-a-day profile's state: profile, sum and count of the values seen
/// on the slot's current day, and that day (days since the epoch).
const DAY_STATE: usize = 4;
const NS_PER_SLOT: i64 = 15 * 60 * 1_000_000_000;
/// The per-reading features that follow the per-field ones, in feature order.
pub const READING_FEATURES: [&str; 7] = [
    "count",
    "dt_s",
    "hour",
    "dow",
    "weekend",
    "night",
    "pressure_flow_ratio",
];
/// Largest accepted window: bounds the per-sensor allocation a caller can ask for.
pub const MAX_WINDOW: usize = 100_000;

const SNAPSHOT_MAGIC: &[u8; 8] = b"IWFSTORE";
// 2: time-of-day profiles, 3: weekday/weekend profiles, 4: once-a-day profiles (day_dev)
const SNAPSHOT_VERSION: u32 = 4;
const NS_PER_S: f64 = 1e9;
const NS_PER_HOUR: i64 = 3_600_000_000_000;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureError {
    #[error("window must be between 2 and {MAX_WINDOW}, got {0}")]
    Window(usize),
    #[error("unknown field {0:?} (expected a canonical field name)")]
    UnknownField(String),
    #[error("field {0:?} given twice")]
    DuplicateField(String),
    #[error("{0}")]
    Shape(String),
    #[error("corrupt feature store snapshot: {0}")]
    Snapshot(String),
}

/// One sensor's ring and EWMA state (see the module doc for the layout of `data`).
#[derive(Debug, Clone)]
struct Sensor {
    head: u32,
    len: u32,
    data: Box<[f64]>,
}

/// Rolling-window feature state for many sensors sharing one window and field set.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    window: usize,
    fields: Vec<String>,
    names: Vec<String>,
    /// Indices of `pressure_bar` and `flow_rate_lps` in `fields`, for the ratio feature.
    pressure: Option<usize>,
    flow: Option<usize>,
    sensors: HashMap<Box<str>, Sensor>,
    stale: u64,
    /// Scratch: time of each ring slot relative to the newest reading, in seconds.
    t: Vec<f64>,
}

/// The default field set: every kind's model fields, deduplicated, in order.
#[must_use]
pub fn default_fields() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in Kind::ALL {
        for f in k.model_fields() {
            if !out.iter().any(|o| o == f) {
                out.push((*f).to_owned());
            }
        }
    }
    out
}

impl FeatureStore {
    /// # Errors
    /// On a window outside `2..=MAX_WINDOW`, an unknown (non-canonical) or repeated field.
    pub fn new(window: usize, fields: &[String]) -> Result<Self, FeatureError> {
        if !(2..=MAX_WINDOW).contains(&window) {
            return Err(FeatureError::Window(window));
        }
        for (i, f) in fields.iter().enumerate() {
            if index_of(f).is_none() {
                return Err(FeatureError::UnknownField(f.clone()));
            }
            if fields[..i].contains(f) {
                return Err(FeatureError::DuplicateField(f.clone()));
            }
        }
        let mut names = Vec::with_capacity(fields.len() * FIELD_STATS.len() + 7);
        for f in fields {
            names.extend(FIELD_STATS.iter().map(|s| format!("{f}_{s}")));
        }
        names.extend(READING_FEATURES.iter().map(|s| (*s).to_owned()));
        Ok(Self {
            window,
            fields: fields.to_vec(),
            names,
            pressure: fields.iter().position(|f| f == "pressure_bar"),
            flow: fields.iter().position(|f| f == "flow_rate_lps"),
            sensors: HashMap::new(),
            stale: 0,
            t: vec![0.0; window],
        })
    }

    #[must_use]
    pub fn window(&self) -> usize {
        self.window
    }

    #[must_use]
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }

    #[must_use]
    pub fn n_features(&self) -> usize {
        self.names.len()
    }

    /// Sensors tracked (those with at least one folded reading).
    #[must_use]
    pub fn n_sensors(&self) -> usize {
        self.sensors.len()
    }

    /// The timestamp of the sensor's newest folded reading (None for a sensor never seen).
    #[must_use]
    pub fn newest_ns(&self, sensor_id: &str) -> Option<i64> {
        let s = self.sensors.get(sensor_id)?;
        (s.len > 0).then(|| ts_of(s.data[(s.head as usize + self.window - 1) % self.window]))
    }

    /// Readings refused because they were not newer than their sensor's newest folded reading.
    #[must_use]
    pub fn stale_count(&self) -> u64 {
        self.stale
    }

    /// Heap bytes of one sensor's ring allocation (excluding its key and the map slot).
    #[must_use]
    pub fn ring_bytes_per_sensor(&self) -> usize {
        self.slots_len() * std::mem::size_of::<f64>()
    }

    fn slots_len(&self) -> usize {
        self.window * (self.fields.len() + 1) + self.fields.len() * (3 + SLOTS * (1 + DAY_STATE))
    }

    /// Fold `rows` of `batch` in order, appending `rows.len() × n_features` values (row-major)
    /// to `out`. Returns, per row, whether it was folded in (false for a reading not newer than
    /// its sensor's newest; its feature row is all NaN).
    pub fn update_rows(
        &mut self,
        batch: &ReadingBatch,
        rows: &[usize],
        out: &mut Vec<f64>,
    ) -> Vec<bool> {
        let cols: Vec<Option<&[f64]>> = self.fields.iter().map(|f| batch.field(f)).collect();
        let ids = |i: usize| batch.sensor_id(i);
        self.fold_many(
            rows.len(),
            |k| rows[k],
            &ids,
            &batch.timestamp_ns,
            &cols,
            out,
        )
    }

    /// Fold readings held in columns (the same as `update_rows` over every row of a batch):
    /// `columns[j]` is the column of `fields()[j]`, `None` when absent (all NaN).
    ///
    /// # Errors
    /// When the columns and ids differ in length or `columns.len() != fields().len()`.
    pub fn update_columns(
        &mut self,
        sensor_ids: &[String],
        ts_ns: &[i64],
        columns: &[Option<&[f64]>],
        out: &mut Vec<f64>,
    ) -> Result<Vec<bool>, FeatureError> {
        let n = sensor_ids.len();
        if ts_ns.len() != n {
            return Err(FeatureError::Shape(format!(
                "timestamp_ns has {} values for {n} sensor ids",
                ts_ns.len()
            )));
        }
        if columns.len() != self.fields.len() {
            return Err(FeatureError::Shape(format!(
                "{} columns for {} fields",
                columns.len(),
                self.fields.len()
            )));
        }
        for (f, c) in self.fields.iter().zip(columns) {
            if let Some(c) = c {
                if c.len() != n {
                    return Err(FeatureError::Shape(format!(
                        "field {f:?} has {} values for {n} readings",
                        c.len()
                    )));
                }
            }
        }
        let ids = |i: usize| sensor_ids[i].as_str();
        Ok(self.fold_many(n, |k| k, &ids, ts_ns, columns, out))
    }

    /// Fold readings `index(0..n)` (indices into `ts_ns`, the columns and `ids`), appending their
    /// rows to `out`: the loop behind `update_rows` and `update_columns`. On x86-64 CPUs with
    /// AVX2 the same code runs compiled for AVX2 (the per-lane window sums then take one vector
    /// instruction instead of two; lane for lane the same operations, so the same results).
    fn fold_many<'c>(
        &mut self,
        n: usize,
        index: impl Fn(usize) -> usize,
        ids: &dyn Fn(usize) -> &'c str,
        ts_ns: &[i64],
        columns: &[Option<&[f64]>],
        out: &mut Vec<f64>,
    ) -> Vec<bool> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.fold_many_avx2(n, &index, ids, ts_ns, columns, out) };
        }
        self.fold_many_generic(n, &index, ids, ts_ns, columns, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fold_many_avx2<'c>(
        &mut self,
        n: usize,
        index: &dyn Fn(usize) -> usize,
        ids: &dyn Fn(usize) -> &'c str,
        ts_ns: &[i64],
        columns: &[Option<&[f64]>],
        out: &mut Vec<f64>,
    ) -> Vec<bool> {
        self.fold_many_generic(n, index, ids, ts_ns, columns, out)
    }

    #[inline(always)]
    fn fold_many_generic<'c>(
        &mut self,
        n: usize,
        index: &dyn Fn(usize) -> usize,
        ids: &dyn Fn(usize) -> &'c str,
        ts_ns: &[i64],
        columns: &[Option<&[f64]>],
        out: &mut Vec<f64>,
    ) -> Vec<bool> {
        let nf = self.n_features();
        let mut values = vec![f64::NAN; columns.len()];
        let start = out.len();
        out.resize(start + n * nf, f64::NAN);
        let mut folded = Vec::with_capacity(n);
        for k in 0..n {
            let i = index(k);
            for (v, c) in values.iter_mut().zip(columns) {
                *v = c.map_or(f64::NAN, |c| c[i]);
            }
            let row = &mut out[start + k * nf..start + (k + 1) * nf];
            folded.push(self.fold(ids(i), ts_ns[i], &values, row));
        }
        folded
    }

    /// Fold one reading (`values` in `fields()` order, NaN where missing; non-finite values count
    /// as missing) and write its feature row into `out`. Returns false, leaving `out` all NaN
    /// and counting it stale, when `ts_ns` is not newer than the sensor's newest folded reading.
    ///
    /// # Panics
    /// If `values.len() != fields().len()` or `out.len() != n_features()` (a caller bug).
    pub fn update_one(
        &mut self,
        sensor_id: &str,
        ts_ns: i64,
        values: &[f64],
        out: &mut [f64],
    ) -> bool {
        self.fold(sensor_id, ts_ns, values, out)
    }

    /// `update_one`, always inlined (so that the AVX2 build of the row loop covers it).
    #[inline(always)]
    fn fold(&mut self, sensor_id: &str, ts_ns: i64, values: &[f64], out: &mut [f64]) -> bool {
        let k = self.fields.len();
        assert_eq!(values.len(), k, "one value per store field");
        assert_eq!(out.len(), self.names.len(), "one output per feature");
        let w = self.window;
        let slots = self.slots_len();
        let s = match self.sensors.get_mut(sensor_id) {
            Some(s) => s,
            None => self
                .sensors
                .entry(Box::from(sensor_id))
                .or_insert_with(|| Sensor {
                    head: 0,
                    len: 0,
                    data: vec![f64::NAN; slots].into_boxed_slice(),
                }),
        };
        let head = s.head as usize;
        let prev = (s.len > 0).then(|| (head + w - 1) % w);
        if let Some(p) = prev {
            if ts_ns <= ts_of(s.data[p]) {
                out.fill(f64::NAN);
                self.stale += 1;
                return false;
            }
        }
        let (ts_ring, rest) = s.data.split_at_mut(w);
        let (vals, state) = rest.split_at_mut(w * k);
        let (ewma, state) = state.split_at_mut(k);
        let (profile, state) = state.split_at_mut(k * SLOTS);
        let (day_profile, day_dev_1h) = state.split_at_mut(k * SLOTS * DAY_STATE);
        let (day_dev_1h, day_dev_3h) = day_dev_1h.split_at_mut(k);
        ts_ring[head] = f64::from_bits(ts_ns as u64);
        let alpha = 2.0 / (w as f64 + 1.0);
        for (j, &v) in values.iter().enumerate() {
            let v = if v.is_finite() { v } else { f64::NAN };
            vals[j * w + head] = v;
            if !v.is_nan() {
                let e = &mut ewma[j];
                *e = if e.is_nan() {
                    v
                } else {
                    alpha * v + (1.0 - alpha) * *e
                };
            }
        }
        s.head = ((head + 1) % w) as u32;
        s.len = (s.len + 1).min(w as u32);
        let len = s.len as usize;

        // time of every used slot relative to the newest reading, in seconds: a branch-free loop
        // (it vectorises) with the i128 fallback of `rel_seconds` only if a difference overflowed
        let mut overflow = false;
        for (t, &b) in self.t[..len].iter_mut().zip(&ts_ring[..len]) {
            let (d, o) = ts_of(b).overflowing_sub(ts_ns);
            overflow |= o;
            *t = d as f64 / NS_PER_S;
        }
        if overflow {
            for (t, &b) in self.t[..len].iter_mut().zip(&ts_ring[..len]) {
                *t = rel_seconds(ts_of(b), ts_ns);
            }
        }
        let t = &self.t[..len];
        let dt_s = prev.map_or(f64::NAN, |p| -rel_seconds(ts_of(ts_ring[p]), ts_ns));
        let keep_1h = (-dt_s / DAY_DEV_TAU_S).exp(); // NaN for a sensor's first reading
        let keep_3h = (-dt_s / (3.0 * DAY_DEV_TAU_S)).exp();
        let day = ts_ns.div_euclid(NS_PER_DAY);
        let hour = ts_ns.rem_euclid(NS_PER_DAY) / NS_PER_HOUR;
        let dow = (day + 3).rem_euclid(7); // 1970-01-01 was a Thursday
        let quarter = (ts_ns.rem_euclid(NS_PER_DAY) / NS_PER_SLOT) as usize
            + if dow >= 5 { SLOTS / 2 } else { 0 };
        for j in 0..k {
            let ring = &vals[j * w..j * w + len];
            let last = ring[head];
            let delta = prev.map_or(f64::NAN, |p| last - vals[j * w + p]);
            let o = &mut out[j * FIELD_STATS.len()..(j + 1) * FIELD_STATS.len()];
            field_stats(ring, t, last, delta, ewma[j], o);
            // deviation from this sensor's usual level at this time of day, then learn it
            let slot = &mut profile[j * SLOTS + quarter];
            o[9] = last - *slot; // NaN while the slot is empty or the value is missing
            if !last.is_nan() {
                *slot = if slot.is_nan() {
                    last
                } else {
                    HOD_ALPHA * last + (1.0 - HOD_ALPHA) * *slot
                };
            }
            let d = &mut day_profile[(j * SLOTS + quarter) * DAY_STATE..][..DAY_STATE];
            o[10] = day_dev(d, day as f64, last);
            o[11] = smooth(&mut day_dev_1h[j], keep_1h, o[10]);
            o[12] = smooth(&mut day_dev_3h[j], keep_3h, o[10]);
        }
        let o = &mut out[k * FIELD_STATS.len()..];
        o[0] = len as f64;
        o[1] = dt_s;
        o[2] = hour as f64;
        o[3] = dow as f64;
        o[4] = f64::from(u8::from(dow >= 5));
        o[5] = f64::from(u8::from(!(6..22).contains(&hour)));
        o[6] = match (self.pressure, self.flow) {
            (Some(p), Some(f)) => {
                let (p, f) = (vals[p * w + head], vals[f * w + head]);
                if f == 0.0 {
                    f64::NAN
                } else {
                    p / f // NaN when either is missing
                }
            }
            _ => f64::NAN,
        };
        true
    }

    /// Serialise the whole state (versioned binary format; sensors sorted by id so equal states
    /// give equal bytes).
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let per = self.slots_len() * 8 + 8;
        let mut out = Vec::with_capacity(64 + self.sensors.len() * (per + 16));
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.window as u32).to_le_bytes());
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        for f in &self.fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out.extend_from_slice(&self.stale.to_le_bytes());
        out.extend_from_slice(&(self.sensors.len() as u64).to_le_bytes());
        let mut keys: Vec<&Box<str>> = self.sensors.keys().collect();
        keys.sort_unstable();
        for key in keys {
            let s = &self.sensors[key];
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&s.head.to_le_bytes());
            out.extend_from_slice(&s.len.to_le_bytes());
            for v in s.data.iter() {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        out
    }

    /// Rebuild a store from `snapshot` bytes.
    ///
    /// # Errors
    /// On a foreign, truncated, corrupt or unsupported-version blob.
    pub fn restore(data: &[u8]) -> Result<Self, FeatureError> {
        let mut r = Reader { data, pos: 0 };
        if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return Err(corrupt("not a feature store snapshot (bad magic)"));
        }
        let version = r.u32()?;
        if version != SNAPSHOT_VERSION {
            return Err(corrupt(&format!(
                "unsupported version {version} (this build reads {SNAPSHOT_VERSION})"
            )));
        }
        let window = r.u32()? as usize;
        let n_fields = r.u32()? as usize;
        if n_fields > crate::fields::CANONICAL_FIELDS.len() {
            return Err(corrupt("too many fields"));
        }
        let mut fields = Vec::with_capacity(n_fields);
        for _ in 0..n_fields {
            let n = r.u32()? as usize;
            let f =
                std::str::from_utf8(r.take(n)?).map_err(|_| corrupt("field name is not UTF-8"))?;
            fields.push(f.to_owned());
        }
        let mut store = Self::new(window, &fields).map_err(|e| corrupt(&e.to_string()))?;
        store.stale = r.u64()?;
        let n_sensors = r.u64()?;
        let slots = store.slots_len();
        // every sensor needs at least this many bytes: bounds the count before allocating
        let min_rec = 4 + 8 + slots * 8;
        if n_sensors > (r.remaining() / min_rec) as u64 {
            return Err(corrupt("sensor count exceeds the data"));
        }
        store.sensors.reserve(n_sensors as usize);
        for _ in 0..n_sensors {
            let n = r.u32()? as usize;
            let key =
                std::str::from_utf8(r.take(n)?).map_err(|_| corrupt("sensor id is not UTF-8"))?;
            let head = r.u32()?;
            let len = r.u32()?;
            let (h, l) = (head as usize, len as usize);
            // the ring fills slots 0..len in order, then wraps: head == len % window until full
            if l == 0 || l > window || h >= window || (l < window && h != l % window) {
                return Err(corrupt(&format!("bad ring position for sensor {key:?}")));
            }
            let raw = r.take(slots * 8)?;
            let data: Box<[f64]> = raw
                .chunks_exact(8)
                .map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
                .collect();
            if store
                .sensors
                .insert(Box::from(key), Sensor { head, len, data })
                .is_some()
            {
                return Err(corrupt(&format!("sensor {key:?} appears twice")));
            }
        }
        if r.remaining() != 0 {
            return Err(corrupt("trailing bytes"));
        }
        Ok(store)
    }
}

/// Fold `x` into the EWMA `e` (`keep` = the weight of the old value, NaN: start afresh), a
/// missing `x` leaving it as it is; returns the new value.
#[inline(always)]
fn smooth(e: &mut f64, keep: f64, x: f64) -> f64 {
    if !x.is_nan() {
        *e = if e.is_nan() || keep.is_nan() {
            x
        } else {
            keep * *e + (1.0 - keep) * x
        };
    }
    *e
}

/// `v − p` against a slot's once-a-day profile `d = [p, Σ today, n today, today]` (see the module
/// doc), after folding the slot's previous day into `p` when `day` is a new one; then `v` joins
/// today's sum. A missing `v` gives NaN and adds nothing.
#[inline(always)]
fn day_dev(d: &mut [f64], day: f64, v: f64) -> f64 {
    if d[3] != day {
        if d[2] > 0.0 {
            let m = d[1] / d[2];
            d[0] = if d[0].is_nan() {
                m
            } else {
                DAY_ALPHA * m + (1.0 - DAY_ALPHA) * d[0]
            };
        }
        d[1] = 0.0;
        d[2] = 0.0;
        d[3] = day;
    }
    if v.is_nan() {
        return f64::NAN;
    }
    d[1] += v;
    d[2] += 1.0;
    v - d[0]
}

/// The nine statistics of one field over the used ring slots `ring` (NaN = missing) with slot
/// times `t` (seconds relative to the newest reading).
///
/// Sums run over deviations from a shift (the newest value when present, else the first valid
/// one): with large offsets (1e6 + noise) the mean, spread and z-score then lose precision to
/// the noise's magnitude, not the offset's.
#[inline(always)]
fn field_stats(ring: &[f64], t: &[f64], last: f64, delta: f64, ewma: f64, o: &mut [f64]) {
    let shift = if last.is_nan() {
        ring.iter()
            .copied()
            .find(|v| !v.is_nan())
            .unwrap_or(f64::NAN)
    } else {
        last
    };
    o[0] = last;
    o[5] = delta;
    o[7] = ewma;
    if shift.is_nan() {
        // no value of this field in the window
        for i in [1, 2, 3, 4, 6] {
            o[i] = f64::NAN;
        }
        o[8] = f64::NAN;
        return;
    }
    let [n, sd, st, lo, hi] = first_pass(ring, t, shift);
    let (mean, std, slope, z);
    if lo == hi {
        // all equal: exact mean and zero spread, free of rounding in sum / n
        mean = lo;
        std = 0.0;
        slope = if n >= 2.0 { 0.0 } else { f64::NAN };
        z = 0.0;
    } else {
        let dmean = sd / n;
        let mt = st / n;
        let [sdd, sxy, sxx] = second_pass(ring, t, shift, dmean, mt);
        mean = shift + dmean;
        std = (sdd / n).sqrt();
        slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
        z = if std > 0.0 {
            ((last - shift) - dmean) / std
        } else {
            0.0
        };
    }
    o[1] = mean;
    o[2] = std;
    o[3] = lo;
    o[4] = hi;
    o[6] = slope;
    o[8] = if last.is_nan() { f64::NAN } else { z };
}

/// Lanes of independent accumulators: breaks the floating-point add dependency chain, and the
/// masked (select, not branch) updates keep NaN holes from costing mispredictions.
const LANES: usize = 4;

/// Count, Σ(v − shift), Σt, min and max over the non-NaN values.
#[inline(always)]
fn first_pass(ring: &[f64], t: &[f64], shift: f64) -> [f64; 5] {
    let mut n = [0.0; LANES];
    let mut sd = [0.0; LANES];
    let mut st = [0.0; LANES];
    let mut lo = [f64::INFINITY; LANES];
    let mut hi = [f64::NEG_INFINITY; LANES];
    let mut step = |l: usize, v: f64, ti: f64| {
        let m = !v.is_nan();
        n[l] += if m { 1.0 } else { 0.0 };
        sd[l] += if m { v - shift } else { 0.0 };
        st[l] += if m { ti } else { 0.0 };
        // a NaN compares false: no mask needed (and plain selects, not NaN-aware min/max)
        lo[l] = if v < lo[l] { v } else { lo[l] };
        hi[l] = if v > hi[l] { v } else { hi[l] };
    };
    for_lanes(ring, t, &mut step);
    [
        sum_lanes(&n),
        sum_lanes(&sd),
        sum_lanes(&st),
        lo.iter().copied().fold(f64::INFINITY, f64::min),
        hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ]
}

/// Feed `(lane, value, time)` to `step` over the window, `LANES` independent accumulators wide
/// (so the sums vectorise), the remainder into the first lanes.
#[inline(always)]
fn for_lanes(ring: &[f64], t: &[f64], step: &mut impl FnMut(usize, f64, f64)) {
    let (rc, tc) = (ring.chunks_exact(LANES), t.chunks_exact(LANES));
    let (rr, tr) = (rc.remainder(), tc.remainder());
    for (vs, ts) in rc.zip(tc) {
        for l in 0..LANES {
            step(l, vs[l], ts[l]);
        }
    }
    for (l, (&v, &ti)) in rr.iter().zip(tr).enumerate() {
        step(l, v, ti);
    }
}

/// Σ(v − mean)², Σ(t − t̄)(v − mean) and Σ(t − t̄)² over the non-NaN values (deviations taken
/// as `(v − shift) − dmean` for precision with large offsets).
#[inline(always)]
fn second_pass(ring: &[f64], t: &[f64], shift: f64, dmean: f64, mt: f64) -> [f64; 3] {
    let mut sdd = [0.0; LANES];
    let mut sxy = [0.0; LANES];
    let mut sxx = [0.0; LANES];
    let mut step = |l: usize, v: f64, ti: f64| {
        let m = !v.is_nan();
        let dv = if m { (v - shift) - dmean } else { 0.0 };
        let dt = if m { ti - mt } else { 0.0 };
        sdd[l] += dv * dv;
        sxy[l] += dt * dv;
        sxx[l] += dt * dt;
    };
    for_lanes(ring, t, &mut step);
    [sum_lanes(&sdd), sum_lanes(&sxy), sum_lanes(&sxx)]
}

#[inline(always)]
fn sum_lanes(a: &[f64; LANES]) -> f64 {
    (a[0] + a[1]) + (a[2] + a[3])
}

#[inline(always)]
fn ts_of(bits: f64) -> i64 {
    bits.to_bits() as i64
}

/// `(ts - newest)` in seconds: the difference is exact before its one rounding to f64 (i128
/// only when it overflows i64, since i128 → f64 conversion is slow).
#[inline(always)]
fn rel_seconds(ts: i64, newest: i64) -> f64 {
    match ts.checked_sub(newest) {
        Some(d) => d as f64 / NS_PER_S,
        None => (i128::from(ts) - i128::from(newest)) as f64 / NS_PER_S,
    }
}

fn corrupt(msg: &str) -> FeatureError {
    FeatureError::Snapshot(msg.to_owned())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FeatureError> {
        if n > self.remaining() {
            return Err(corrupt("truncated"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn u32(&mut self) -> Result<u32, FeatureError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FeatureError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests;
